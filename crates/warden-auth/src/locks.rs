//! Locks: block a user, role, node or login at once. New logins and
//! sessions are refused by auth; nodes end live sessions within seconds.

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::resources::{self, LOCKS};
use crate::server::AuthServer;
use axum::extract::{Path, State};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use time::{Duration, OffsetDateTime};
use warden_types::api::{Change, ChangeResponse, CreateLockRequest};
use warden_types::audit::{codes, AuditEvent};
use warden_types::resource::{kind, resources as res, verbs};
use warden_types::{Document, IdentityKind, LockSpec};

pub fn routes() -> Router<AuthServer> {
    Router::new()
        .route("/v1/locks", get(list_locks).post(create_lock))
        .route("/v1/locks/{id}", delete(delete_lock))
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

    /// The first lock that blocks this access, if any.
    pub(crate) fn lock_for(
        &self,
        user: &str,
        roles: &[String],
        node: Option<(&str, &str)>,
        login: Option<&str>,
    ) -> Option<Document<LockSpec>> {
        self.active_locks()
            .into_iter()
            .find(|l| l.spec.target.matches(user, roles, node, login))
    }
}

/// How a lock reads in refusals.
pub fn lock_message(l: &Document<LockSpec>) -> String {
    format!("locked ({}): {}", l.spec.target.describe(), l.spec.reason)
}

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
