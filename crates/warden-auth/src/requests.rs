//! Just-in-time access requests: a user asks for extra roles with a
//! reason; a reviewer allowed by their roles approves or denies; approved
//! roles count for the request's lifetime only, everywhere at once (API,
//! node access checks, certificates, which never outlive the request).

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::resources::{self, REQUESTS};
use crate::server::AuthServer;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use time::OffsetDateTime;
use warden_types::api::{CreateRequestRequest, LoginResponse, RenewRequest, ReviewRequest};
use warden_types::audit::{codes, AuditEvent};
use warden_types::resource::kind;
use warden_types::{
    AccessRequestSpec, Document, IdentityKind, RequestState, Review, RoleSpec, UserSpec,
};

/// Default and longest access a request grants.
const DEFAULT_TTL: u64 = 4 * 3600;
const MAX_TTL: u64 = 24 * 3600;

pub fn routes() -> Router<AuthServer> {
    Router::new()
        .route("/v1/requests", get(list).post(create))
        .route("/v1/requests/{id}", get(show))
        .route("/v1/requests/{id}/review", post(review))
        .route("/v1/certs/renew", post(renew))
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Roles granted by an allow list and not denied by any role.
fn grants(
    roles: &[Document<RoleSpec>],
    wanted: &str,
    pick: impl Fn(&RoleSpec) -> (&Vec<String>, &Vec<String>),
) -> bool {
    let allowed = roles
        .iter()
        .any(|r| pick(&r.spec).0.iter().any(|x| x == wanted || x == "*"));
    let denied = roles
        .iter()
        .any(|r| pick(&r.spec).1.iter().any(|x| x == wanted || x == "*"));
    allowed && !denied
}

impl AuthServer {
    /// A user's roles in force now: their own plus those of approved,
    /// unexpired requests; with those request ids and when the earliest
    /// of them ends.
    pub(crate) fn effective_roles(
        &self,
        user: &Document<UserSpec>,
    ) -> (Vec<String>, Vec<String>, Option<i64>) {
        let mut roles = user.spec.roles.clone();
        let mut ids = Vec::new();
        let mut until: Option<i64> = None;
        let now = now();
        for r in self.inner.requests.list() {
            let locked = self
                .active_locks()
                .iter()
                .any(|l| l.spec.target.request.as_deref() == Some(r.name()));
            if r.spec.user == user.name() && r.spec.active(now) && !locked {
                ids.push(r.name().to_string());
                until = Some(until.map_or(r.spec.access_until, |u| u.min(r.spec.access_until)));
                for role in &r.spec.roles {
                    if !roles.contains(role) {
                        roles.push(role.clone());
                    }
                }
            }
        }
        (roles, ids, until)
    }

    fn can_review(&self, c: &Caller, req: &AccessRequestSpec) -> Result<bool> {
        let roles = self.caller_roles(c)?;
        Ok(req.roles.iter().all(|r| {
            grants(&roles, r, |s| {
                (
                    &s.allow.review_requests.roles,
                    &s.deny.review_requests.roles,
                )
            })
        }))
    }
}

async fn create(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<CreateRequestRequest>,
) -> Result<Json<Document<AccessRequestSpec>>> {
    if c.identity.kind != IdentityKind::User {
        return Err(AuthError::AccessDenied("only users request access".into()));
    }
    if req.roles.is_empty() || req.reason.trim().is_empty() {
        return Err(AuthError::BadRequest(
            "name the roles you need (--roles) and why (--reason)".into(),
        ));
    }
    let user = s
        .inner
        .users
        .get(&c.identity.username)
        .ok_or_else(|| AuthError::Unauthenticated("your user no longer exists".into()))?;
    let current = s.roles(&user.spec.roles);
    for role in &req.roles {
        if s.inner.roles.get(role).is_none() {
            return Err(AuthError::BadRequest(format!(
                "role {role:?} does not exist"
            )));
        }
        if !grants(&current, role, |sp| {
            (&sp.allow.request.roles, &sp.deny.request.roles)
        }) {
            return Err(AuthError::AccessDenied(format!(
                "your roles do not let you request {role:?} (see allow.request.roles)"
            )));
        }
    }
    // Never longer than the shortest max_session_ttl of the roles asked for.
    let cap = req
        .roles
        .iter()
        .filter_map(|r| s.inner.roles.get(r))
        .map(|r| r.spec.options.max_session_ttl.0.as_secs())
        .min()
        .unwrap_or(DEFAULT_TTL)
        .min(MAX_TTL);
    let duration = req.ttl_secs.unwrap_or(DEFAULT_TTL).clamp(60, cap);
    // The strictest threshold among the roles that let the user ask.
    let approvals_needed = current
        .iter()
        .filter(|r| {
            r.spec
                .allow
                .request
                .roles
                .iter()
                .any(|x| req.roles.contains(x) || x == "*")
        })
        .filter_map(|r| r.spec.allow.request.approvals)
        .max()
        .unwrap_or(1)
        .max(1);
    let id = uuid::Uuid::new_v4().to_string();
    let mut doc = Document::new(
        kind::ACCESS_REQUEST,
        id.clone(),
        AccessRequestSpec {
            user: c.identity.username.clone(),
            roles: req.roles.clone(),
            reason: req.reason.chars().take(1024).collect(),
            state: RequestState::Pending,
            reviews: vec![],
            duration_secs: duration,
            approvals_needed,
            access_until: 0,
            created: now(),
        },
    );
    // Unreviewed requests go away after a day; decided ones after their access.
    let gc = std::time::SystemTime::now() + std::time::Duration::from_secs(24 * 3600);
    let rev = s
        .backend()
        .create(
            &format!("{REQUESTS}{id}"),
            resources::encode(&doc),
            Some(gc),
        )
        .await?;
    doc.metadata.revision = Some(rev);
    s.audit(
        AuditEvent::new(
            codes::REQUEST_CREATE,
            s.cluster(),
            &c.identity.username,
            format!("requested {}: {}", req.roles.join(","), req.reason),
        )
        .with("request_id", id)
        .with("roles", req.roles.clone()),
    )
    .await;
    Ok(Json(doc))
}

async fn list(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
) -> Result<Json<Vec<Document<AccessRequestSpec>>>> {
    let mut out = Vec::new();
    for r in resources::list::<AccessRequestSpec>(s.backend(), REQUESTS).await? {
        if r.spec.user == c.identity.username || s.can_review(&c, &r.spec)? {
            out.push(r);
        }
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.spec.created));
    Ok(Json(out))
}

async fn show(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Document<AccessRequestSpec>>> {
    let r = resources::get::<AccessRequestSpec>(s.backend(), &format!("{REQUESTS}{id}"))
        .await?
        .ok_or_else(|| AuthError::NotFound(format!("request {id} not found")))?;
    if r.spec.user != c.identity.username && !s.can_review(&c, &r.spec)? {
        return Err(AuthError::NotFound(format!("request {id} not found")));
    }
    Ok(Json(r))
}

async fn review(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    Json(body): Json<ReviewRequest>,
) -> Result<Json<Document<AccessRequestSpec>>> {
    let key = format!("{REQUESTS}{id}");
    let mut r = resources::get::<AccessRequestSpec>(s.backend(), &key)
        .await?
        .ok_or_else(|| AuthError::NotFound(format!("request {id} not found")))?;
    if r.spec.user == c.identity.username {
        return Err(AuthError::AccessDenied(
            "you cannot review your own request".into(),
        ));
    }
    if !s.can_review(&c, &r.spec)? {
        return Err(AuthError::AccessDenied(format!(
            "your roles do not let you review requests for {} (see allow.review_requests.roles)",
            r.spec.roles.join(", ")
        )));
    }
    if r.spec.state != RequestState::Pending {
        return Err(AuthError::Conflict(format!(
            "request {id} is already {}",
            r.spec.state
        )));
    }
    if r.spec
        .reviews
        .iter()
        .any(|v| v.reviewer == c.identity.username)
    {
        return Err(AuthError::Conflict(format!(
            "you already reviewed request {id}; it needs other reviewers"
        )));
    }
    r.spec.reviews.push(Review {
        reviewer: c.identity.username.clone(),
        approve: body.approve,
        reason: body.reason.chars().take(1024).collect(),
        time: now(),
    });
    let mut gc = None;
    let approvals = r.spec.reviews.iter().filter(|v| v.approve).count() as u32;
    if body.approve && approvals < r.spec.approvals_needed {
        // Still pending: more reviewers must approve.
    } else if body.approve {
        r.spec.state = RequestState::Approved;
        r.spec.access_until = now() + r.spec.duration_secs as i64;
        gc = Some(
            std::time::SystemTime::now()
                + std::time::Duration::from_secs(r.spec.duration_secs + 3600),
        );
    } else {
        r.spec.state = RequestState::Denied;
    }
    let rev = r.metadata.revision.unwrap_or_default();
    let new_rev = s
        .backend()
        .compare_and_swap(&key, rev, resources::encode(&r), gc)
        .await?;
    r.metadata.revision = Some(new_rev);
    s.audit(
        AuditEvent::new(
            codes::REQUEST_REVIEW,
            s.cluster(),
            &c.identity.username,
            format!(
                "{} request {id} of {}: {}",
                r.spec.state, r.spec.user, body.reason
            ),
        )
        .with("request_id", id)
        .with("requester", r.spec.user.clone())
        .with("approved", body.approve),
    )
    .await;
    Ok(Json(r))
}

/// New certificates for the caller's keys, with the roles in force now
/// (approved requests included, never past their end).
async fn renew(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<RenewRequest>,
) -> Result<Json<LoginResponse>> {
    if c.identity.kind != IdentityKind::User {
        return Err(AuthError::AccessDenied("only users renew this way".into()));
    }
    let user = resources::get::<UserSpec>(
        s.backend(),
        &format!("{}{}", resources::USERS, c.identity.username),
    )
    .await?
    .ok_or_else(|| AuthError::Unauthenticated("your user no longer exists".into()))?;
    if let Some(lock) = s.lock_for(&c.identity.username, &user.spec.roles, None, None) {
        return Err(AuthError::Locked(crate::locks::lock_message(&lock)));
    }
    // A renewal never extends past the certificate it is made with.
    let left = (c.identity.expires - now()).max(60) as u64;
    let resp = s
        .issue_user_certs(&user, &req.ssh_public_key, &req.tls_csr_pem, Some(left))
        .await?;
    s.audit(
        AuditEvent::new(
            codes::CERT_RENEW,
            s.cluster(),
            &c.identity.username,
            "certificates renewed",
        )
        .with("roles", resp.identity.roles.clone())
        .with("requests", resp.identity.requests.clone()),
    )
    .await;
    Ok(Json(resp))
}
