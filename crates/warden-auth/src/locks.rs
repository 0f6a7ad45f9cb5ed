//! Locks: block a user, role, node or login at once. New logins and
//! sessions are refused by auth; nodes end live sessions within seconds.

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::resources::{self, LOCKS};
use crate::routes::Serve;
use crate::server::AuthServer;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use time::{Duration, OffsetDateTime};
use warden_policy::LockSubject;
use warden_types::api::{Change, ChangeResponse, CreateLockRequest, LockWatch};
use warden_types::audit::{codes, AuditEvent};
use warden_types::endpoints;
use warden_types::resource::{kind, resources as res, verbs};
use warden_types::{Document, IdentityKind, LockSpec, UserSpec};

pub fn routes() -> Router<AuthServer> {
    Router::new()
        .serve(&endpoints::LOCKS, list_locks)
        .serve(&endpoints::CREATE_LOCK, create_lock)
        .serve(&endpoints::LOCKS_WATCH, watch_locks)
        .serve(&endpoints::DELETE_LOCK, delete_lock)
}

impl AuthServer {
    /// Locks in force now.
    pub(crate) fn active_locks(&self) -> Vec<Document<LockSpec>> {
        let now = OffsetDateTime::now_utc();
        self.inner
            .locks
            .list()
            .into_iter()
            .filter(|l| l.metadata.expires.is_none_or(|e| e > now))
            .collect()
    }

    /// The first lock in force that binds `subject`, if any.
    pub(crate) fn lock_for(&self, subject: &LockSubject) -> Option<Document<LockSpec>> {
        warden_policy::lock_for(&self.active_locks(), subject).cloned()
    }

    /// The lock that binds `user` everywhere (logins, renewals, API calls):
    /// on the user, a role in force (requests included), or one of the
    /// access requests in force or named in `cert_requests`.
    pub(crate) fn user_lock(
        &self,
        user: &Document<UserSpec>,
        cert_requests: &[String],
    ) -> Option<Document<LockSpec>> {
        let locks = self.active_locks();
        if locks.is_empty() {
            return None;
        }
        let mut e = self.effective(user);
        e.requests.extend(cert_requests.iter().cloned());
        // A request lock also drops the request from `effective`, so its
        // roles no longer count; a certificate naming it is still refused.
        let subject = LockSubject {
            user: user.name(),
            roles: &e.roles,
            requests: &e.requests,
            ..Default::default()
        };
        warden_policy::lock_for(&locks, &subject).cloned()
    }

    /// The lock that binds an authenticated API caller, if any.
    /// Also refuses a user certificate issued to an earlier user of the
    /// same name.
    async fn caller_lock(&self, c: &Caller, path: &str) -> Result<Option<Document<LockSpec>>> {
        let id = &c.identity;
        if id.kind == IdentityKind::User {
            if let Some(user) = self.inner.users.get(&id.username) {
                if !crate::nodes::same_user(&user, Some(&id.user_id)) {
                    return Err(AuthError::Unauthenticated(format!(
                        "this certificate was issued to an earlier user named {}, since deleted; run 'warden login'",
                        id.username
                    )));
                }
            }
        }
        let locks = self.active_locks();
        if locks.is_empty() {
            return Ok(None);
        }
        Ok(match id.kind {
            IdentityKind::User => match self.inner.users.get(&id.username) {
                Some(user) => self.user_lock(&user, &id.requests),
                // The handler answers for users that no longer exist.
                None => None,
            },
            // The local admin identity needs the auth host's data dir: it is
            // the break-glass way in (to lift a lock, too), not bound by locks.
            IdentityKind::Admin => None,
            IdentityKind::Node => {
                // What a locked node already holds is still taken, so
                // nothing it recorded or audited is lost.
                if allowed_while_locked(path) {
                    return Ok(None);
                }
                let name = self.node_name(&id.username).await?;
                warden_policy::node_lock(&locks, &id.username, &name).cloned()
            }
            // Proxies act for others, whose locks are checked per call.
            IdentityKind::Proxy => None,
        })
    }
}

/// Calls a locked node may still make: handing over the recordings and
/// audit events it holds, and reading the locks (so it ends its own live
/// sessions).
fn allowed_while_locked(path: &str) -> bool {
    use endpoints::{EVENT, EVENTS, LOCKS, LOCKS_WATCH, RECORDINGS};
    [EVENT.path, EVENTS.path, LOCKS.path, LOCKS_WATCH.path].contains(&path)
        || path
            .strip_prefix(RECORDINGS.path)
            .is_some_and(|id| id.starts_with('/'))
}

/// Refuses every call of a locked caller with 403 and the lock's reason.
pub(crate) async fn enforce(State(s): State<AuthServer>, req: Request, next: Next) -> Response {
    let Some(c) = req.extensions().get::<Caller>().cloned() else {
        return next.run(req).await;
    };
    match s.caller_lock(&c, req.uri().path()).await {
        Ok(None) => next.run(req).await,
        Ok(Some(lock)) => {
            let msg = lock_message(&lock);
            s.audit(
                AuditEvent::new(
                    codes::ACCESS_DENIED,
                    s.cluster(),
                    &c.identity.username,
                    format!("{} {}: {msg}", req.method(), req.uri().path()),
                )
                .source(Some(c.addr.to_string()))
                .with("lock_id", lock.name().to_string()),
            )
            .await;
            AuthError::Locked(msg).into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub use warden_policy::lock_message;

async fn list_locks(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
) -> Result<Json<Vec<Document<LockSpec>>>> {
    // Nodes and proxies enforce locks, so they read them.
    if !matches!(c.identity.kind, IdentityKind::Node | IdentityKind::Proxy) {
        s.authorize(&c, res::LOCK, verbs::LIST).await?;
    }
    Ok(Json(s.active_locks()))
}

/// Query of `GET /v1/locks/watch`.
#[derive(serde::Deserialize)]
struct WatchQuery {
    /// The revision the caller has; without it, answer at once.
    after: Option<i64>,
    /// Seconds to wait for a change (at most 55; default 25).
    wait: Option<u64>,
}

/// Locks pushed to nodes and proxies: a long poll that answers as soon as
/// the locks change after the caller's revision (fed by the backend's watch
/// stream), so a lock reaches live sessions in the store's propagation time
/// rather than a polling interval.
async fn watch_locks(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Query(q): Query<WatchQuery>,
) -> Result<Json<LockWatch>> {
    if !matches!(c.identity.kind, IdentityKind::Node | IdentityKind::Proxy) {
        s.authorize(&c, res::LOCK, verbs::LIST).await?;
    }
    if let Some(after) = q.after {
        let wait = std::time::Duration::from_secs(q.wait.unwrap_or(25).min(55));
        s.inner.locks.wait_past(after, wait).await;
    }
    Ok(Json(LockWatch {
        revision: s.inner.locks.revision(),
        locks: s.active_locks(),
    }))
}

async fn create_lock(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<CreateLockRequest>,
) -> Result<Json<Document<LockSpec>>> {
    s.authorize(&c, res::LOCK, verbs::CREATE).await?;
    if req.target.is_empty() {
        return Err(AuthError::BadRequest(
            "a lock needs a target: --user, --role, --node and/or --login".into(),
        ));
    }
    if req.reason.trim().is_empty() {
        return Err(AuthError::BadRequest(
            "a lock needs a --reason (it is shown to the people it blocks)".into(),
        ));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let mut doc = Document::new(
        kind::LOCK,
        id.clone(),
        LockSpec {
            target: req.target.clone(),
            reason: req.reason.chars().take(1024).collect(),
            created_by: Some(c.identity.username.clone()),
        },
    );
    let expires = req
        .ttl_secs
        .map(|t| OffsetDateTime::now_utc() + Duration::seconds(t.min(10 * 365 * 86400) as i64));
    doc.metadata.expires = expires;
    let rev = s
        .backend()
        .create(
            &format!("{LOCKS}{id}"),
            resources::encode(&doc),
            expires.map(std::time::SystemTime::from),
        )
        .await?;
    doc.metadata.revision = Some(rev);
    s.audit(
        AuditEvent::new(
            codes::LOCK_CREATE,
            s.cluster(),
            &c.identity.username,
            format!("locked {}: {}", req.target.describe(), req.reason),
        )
        .with("lock_id", id)
        .with("target", req.target.describe()),
    )
    .await;
    Ok(Json(doc))
}

async fn delete_lock(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<ChangeResponse>> {
    s.authorize(&c, res::LOCK, verbs::DELETE).await?;
    if !s.backend().delete(&format!("{LOCKS}{id}")).await? {
        return Err(AuthError::NotFound(format!(
            "lock {id} not found; see 'warden admin locks ls'"
        )));
    }
    s.audit(
        AuditEvent::new(
            codes::LOCK_DELETE,
            s.cluster(),
            &c.identity.username,
            format!("removed lock {id}"),
        )
        .with("lock_id", id.clone()),
    )
    .await;
    Ok(Json(ChangeResponse {
        name: id,
        change: Change::Deleted,
        revision: None,
    }))
}
