//! Just-in-time access requests: a user asks for extra roles with a
//! reason; a reviewer allowed by their roles approves or denies; approved
//! roles count for the request's lifetime only, everywhere at once (API,
//! node access checks, certificates, which never outlive the request).

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::resources::now;
use crate::resources::{self, REQUESTS};
use crate::routes::Serve;
use crate::server::AuthServer;
use axum::extract::{Path, State};
use axum::{Extension, Json, Router};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use warden_types::api::{CreateRequestRequest, LoginResponse, RenewRequest, ReviewRequest};
use warden_types::audit::{codes, AuditEvent};
use warden_types::endpoints;
use warden_types::resource::kind;
use warden_types::{
    AccessRequestSpec, ApprovalRuleSpec, Document, IdentityKind, NodeSpec, RequestState,
    RequestedNode, Review, RoleSpec, UserSpec,
};

/// Default and longest access a request grants.
const DEFAULT_TTL: u64 = 4 * 3600;
const MAX_TTL: u64 = 24 * 3600;

pub fn routes() -> Router<AuthServer> {
    Router::new()
        .serve(&endpoints::REQUESTS, list)
        .serve(&endpoints::CREATE_REQUEST, create)
        .serve(&endpoints::REQUEST, show)
        .serve(&endpoints::REVIEW_REQUEST, review)
        .serve(&endpoints::DROP_REQUEST, drop_request)
        .serve(&endpoints::RENEW, renew)
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

pub(crate) use warden_policy::Effective;

impl AuthServer {
    /// What a request for `roles` (or, for a resource request, through
    /// `search_as`) by a holder of `current` gets: its longest duration
    /// (the shortest max_session_ttl of the roles involved and the
    /// max_duration of the roles that let the user ask) and the approvals
    /// it needs (the strictest of those roles).
    pub(crate) fn request_terms(
        &self,
        current: &[Document<RoleSpec>],
        roles: &[String],
        search_as: &[String],
    ) -> (u64, u32) {
        let asking_via: Vec<&Document<RoleSpec>> = current
            .iter()
            .filter(|r| {
                let a = &r.spec.allow.request;
                if roles.is_empty() {
                    a.search_as_roles
                        .iter()
                        .any(|x| search_as.contains(x) || x == "*")
                } else {
                    a.roles.iter().any(|x| roles.contains(x) || x == "*")
                }
            })
            .collect();
        let cap = roles
            .iter()
            .chain(search_as)
            .filter_map(|r| self.inner.roles.get(r))
            .map(|r| r.spec.options.max_session_ttl.0.as_secs())
            .chain(
                asking_via
                    .iter()
                    .filter_map(|r| r.spec.allow.request.max_duration.map(|d| d.0.as_secs())),
            )
            .min()
            .unwrap_or(DEFAULT_TTL)
            .min(MAX_TTL);
        let approvals = asking_via
            .iter()
            .filter_map(|r| r.spec.allow.request.approvals)
            .max()
            .unwrap_or(1)
            .max(1);
        (cap, approvals)
    }

    /// A user's access in force now; see [`Effective`].
    pub(crate) fn effective(&self, user: &Document<UserSpec>) -> Effective {
        warden_policy::effective(
            user,
            &self.inner.requests.list(),
            &self.active_locks(),
            now(),
        )
    }

    /// Deletes every access request of `user`; returns how many.
    pub(crate) async fn delete_requests_of(&self, user: &str) -> Result<usize> {
        let mut n = 0;
        for r in self.inner.requests.list() {
            if r.spec.user == user
                && self
                    .backend()
                    .delete(&format!("{REQUESTS}{}", r.name()))
                    .await?
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every role a decision on `req` involves (asked for, or searched as).
    fn can_review(&self, c: &Caller, req: &AccessRequestSpec) -> Result<bool> {
        let roles = self.caller_roles(c)?;
        Ok(req.roles.iter().chain(&req.search_as_roles).all(|r| {
            grants(&roles, r, |s| {
                (
                    &s.allow.review_requests.roles,
                    &s.deny.review_requests.roles,
                )
            })
        }))
    }

    /// The first approval rule that approves this new request, with the
    /// reasons the others did not.
    async fn auto_approval(
        &self,
        user: &Document<UserSpec>,
        req: &AccessRequestSpec,
        node_labels: &[BTreeMap<String, String>],
    ) -> Result<Option<String>> {
        let rules: Vec<Document<ApprovalRuleSpec>> =
            resources::list(self.backend(), resources::APPROVAL_RULES).await?;
        let input = warden_policy::ApprovalInput {
            requester_roles: &user.spec.roles,
            traits: &user.spec.traits,
            roles: &req.roles,
            nodes: node_labels,
            reason: &req.reason,
            duration: std::time::Duration::from_secs(req.duration_secs),
            now: OffsetDateTime::now_utc(),
        };
        for rule in rules {
            match warden_policy::rule_approves(&rule.spec, &input) {
                Ok(()) => return Ok(Some(rule.name().to_string())),
                Err(why) => tracing::debug!(rule = rule.name(), %why, "rule does not approve"),
            }
        }
        Ok(None)
    }

    /// Resolves a node named in a resource request (by id or name).
    pub(crate) async fn resolve_node(&self, wanted: &str) -> Result<Document<NodeSpec>> {
        let nodes: Vec<Document<NodeSpec>> =
            resources::list(self.backend(), resources::NODES).await?;
        if let Some(n) = nodes.iter().find(|n| n.name() == wanted) {
            return Ok(n.clone());
        }
        let mut named = nodes.into_iter().filter(|n| n.spec.hostname == wanted);
        match (named.next(), named.next()) {
            (Some(n), None) => Ok(n),
            (Some(_), Some(_)) => Err(AuthError::BadRequest(format!(
                "several nodes are named {wanted:?}; ask for one by id (warden ls -v)"
            ))),
            (None, _) => Err(AuthError::NotFound(format!(
                "no node {wanted:?}; 'warden ls' lists nodes"
            ))),
        }
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
    if req.roles.is_empty() == req.resources.is_empty() || req.reason.trim().is_empty() {
        return Err(AuthError::BadRequest(
            "ask for roles (--roles) or for nodes (--resource with --login), not both, and say why (--reason)".into(),
        ));
    }
    if req.resources.len() > 16 {
        return Err(AuthError::BadRequest(
            "ask for at most 16 nodes in one request".into(),
        ));
    }
    let user = s
        .inner
        .users
        .get(&c.identity.username)
        .ok_or_else(|| AuthError::Unauthenticated("your user no longer exists".into()))?;
    let current = s.roles(&user.spec.roles);
    // Resource requests: each node and login must be allowed by a role the
    // user may search as; the request then grants exactly that pair.
    let searchable: Vec<String> = s
        .inner
        .roles
        .list()
        .into_iter()
        .map(|r| r.name().to_string())
        .filter(|r| {
            grants(&current, r, |sp| {
                (
                    &sp.allow.request.search_as_roles,
                    &sp.deny.request.search_as_roles,
                )
            })
        })
        .collect();
    let mut nodes = Vec::new();
    let mut node_labels = Vec::new();
    let mut search_as: Vec<String> = Vec::new();
    for want in &req.resources {
        if searchable.is_empty() {
            return Err(AuthError::AccessDenied(
                "your roles do not let you request nodes (see allow.request.search_as_roles)"
                    .into(),
            ));
        }
        let node = s.resolve_node(&want.node).await?;
        let by: Vec<String> = searchable
            .iter()
            .filter(|r| {
                let roles = s.roles(std::slice::from_ref(*r));
                warden_policy::check_node_access(
                    &roles,
                    &user.spec.traits,
                    &want.login,
                    &node.metadata.labels,
                )
                .allowed
            })
            .cloned()
            .collect();
        if by.is_empty() {
            return Err(AuthError::AccessDenied(format!(
                "none of the roles you may search as ({}) allows login {:?} on {}",
                searchable.join(", "),
                want.login,
                node.spec.hostname
            )));
        }
        for r in by {
            if !search_as.contains(&r) {
                search_as.push(r);
            }
        }
        nodes.push(RequestedNode {
            node: node.name().to_string(),
            name: node.spec.hostname.clone(),
            login: want.login.clone(),
        });
        node_labels.push(node.metadata.labels.clone());
    }
    for role in &req.roles {
        if s.inner.roles.get(role).is_none() {
            return Err(AuthError::BadRequest(format!(
                "role {role:?} does not exist"
            )));
        }
        let d = warden_policy::check_request_roles(&current, std::slice::from_ref(role));
        if !d.allowed {
            return Err(AuthError::AccessDenied(format!(
                "your roles do not let you request {role:?}: {} (see allow.request.roles)",
                d.summary()
            )));
        }
    }
    let (cap, approvals_needed) = s.request_terms(&current, &req.roles, &search_as);
    let duration = req
        .ttl_secs
        .unwrap_or(DEFAULT_TTL.min(cap))
        .clamp(60, cap.max(60));
    let id = uuid::Uuid::new_v4().to_string();
    let mut doc = Document::new(
        kind::ACCESS_REQUEST,
        id.clone(),
        AccessRequestSpec {
            user: c.identity.username.clone(),
            roles: req.roles.clone(),
            resources: nodes,
            search_as_roles: search_as,
            reason: req.reason.chars().take(1024).collect(),
            state: RequestState::Pending,
            reviews: vec![],
            duration_secs: duration,
            approvals_needed,
            access_until: 0,
            created: now(),
            user_uid: user.spec.uid.clone(),
        },
    );
    // Unreviewed requests go away after a day; decided ones after their access.
    let mut gc = std::time::SystemTime::now() + std::time::Duration::from_secs(24 * 3600);
    let rule = s.auto_approval(&user, &doc.spec, &node_labels).await?;
    if let Some(rule) = &rule {
        doc.spec.state = RequestState::Approved;
        doc.spec.access_until = now() + duration as i64;
        doc.spec.reviews.push(Review {
            reviewer: format!("approval_rule/{rule}"),
            approve: true,
            reason: "approved by rule".into(),
            time: now(),
        });
        gc = std::time::SystemTime::now() + std::time::Duration::from_secs(duration + 3600);
    }
    let rev = s
        .backend()
        .create(
            &format!("{REQUESTS}{id}"),
            resources::encode(&doc),
            Some(gc),
        )
        .await?;
    doc.metadata.revision = Some(rev);
    s.audit_with(
        AuditEvent::new(
            codes::REQUEST_CREATE,
            s.cluster(),
            &c.identity.username,
            format!("requested {}: {}", doc.spec.describe(), req.reason),
        )
        .with("request_id", id.clone())
        .with("roles", req.roles.clone())
        .with(
            "resources",
            serde_json::to_value(&doc.spec.resources).unwrap_or_default(),
        ),
        Some(&doc),
    )
    .await;
    if let Some(rule) = rule {
        s.audit_with(
            AuditEvent::new(
                codes::REQUEST_AUTO_APPROVE,
                s.cluster(),
                &c.identity.username,
                format!("approved request {id} by approval rule {rule}"),
            )
            .with("request_id", id)
            .with("rule", rule)
            .with("approved", true),
            Some(&doc),
        )
        .await;
    }
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
    s.audit_with(
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
        Some(&r),
    )
    .await;
    Ok(Json(r))
}

/// The requester stops using an approved request: its access ends now,
/// everywhere at once (nodes and the API read requests live), and later
/// certificates leave it out. Its record stays, with when it was dropped.
async fn drop_request(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Document<AccessRequestSpec>>> {
    let key = format!("{REQUESTS}{id}");
    let mut r = resources::get::<AccessRequestSpec>(s.backend(), &key)
        .await?
        .filter(|r| r.spec.user == c.identity.username)
        .ok_or_else(|| AuthError::NotFound(format!("you have no request {id}")))?;
    if !r.spec.active(now()) {
        return Err(AuthError::Conflict(format!(
            "request {id} is {} and grants nothing now; nothing to drop",
            if r.spec.state == RequestState::Approved {
                "over".to_string()
            } else {
                r.spec.state.to_string()
            }
        )));
    }
    r.spec.access_until = now();
    let rev = r.metadata.revision.unwrap_or_default();
    let new_rev = s
        .backend()
        .compare_and_swap(
            &key,
            rev,
            resources::encode(&r),
            Some(std::time::SystemTime::now() + std::time::Duration::from_secs(3600)),
        )
        .await?;
    r.metadata.revision = Some(new_rev);
    s.audit(
        AuditEvent::new(
            codes::REQUEST_DROP,
            s.cluster(),
            &c.identity.username,
            format!("dropped request {id} ({})", r.spec.describe()),
        )
        .with("request_id", id),
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
    if let Some(lock) = s.user_lock(&user, &c.identity.requests) {
        return Err(AuthError::Locked(crate::locks::lock_message(&lock)));
    }
    // A renewal continues the login that started the chain and never
    // outlives it, however often it is made.
    let deadline = c.identity.login_deadline();
    let left = (deadline - now()).max(0) as u64;
    let resp = s
        .issue_user_certs(
            &user,
            &req.ssh_public_key,
            &req.tls_csr_pem,
            Some(left),
            Some(deadline),
        )
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
