//! The audit trail of `warden policy sync`: the service (run with the
//! local admin identity) reports each commit it applied or refused, and
//! auth records it as `policy.sync` or `policy.sync_failed`.

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::routes::Serve;
use crate::server::AuthServer;
use axum::extract::State;
use axum::{Extension, Json, Router};
use warden_types::api::PolicySyncReport;
use warden_types::audit::{codes, AuditEvent};
use warden_types::endpoints;

pub fn routes() -> Router<AuthServer> {
    Router::new().serve(&endpoints::POLICY_SYNC, policy_sync)
}

/// Audits what `warden policy sync` did with a commit. The caller must be
/// one who may change roles (the sync applies them with its identity).
async fn policy_sync(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(r): Json<PolicySyncReport>,
) -> Result<Json<serde_json::Value>> {
    // Only the sync service, which runs with the local admin identity;
    // others who may change roles cannot write sync events.
    if c.identity.kind != warden_types::IdentityKind::Admin {
        return Err(AuthError::AccessDenied(
            "policy sync events come from 'warden policy sync' with the local admin identity"
                .into(),
        ));
    }
    let r = PolicySyncReport {
        repo: r.repo.chars().take(512).collect(),
        branch: r.branch.chars().take(256).collect(),
        commit: r.commit.chars().take(128).collect(),
        ..r
    };
    let short = r.commit.chars().take(12).collect::<String>();
    let (code, message) = match r.outcome.as_str() {
        "applied" => (
            codes::POLICY_SYNC,
            format!(
                "policy sync applied {short} of {} ({}): {} created, {} updated, {} deleted",
                r.repo,
                r.branch,
                r.created.len(),
                r.updated.len(),
                r.deleted.len()
            ),
        ),
        "refused" | "failed" => (
            codes::POLICY_SYNC_FAILED,
            format!(
                "policy sync {} {short} of {} ({}); the last good state stays: {}",
                r.outcome, r.repo, r.branch, r.reason
            ),
        ),
        other => {
            return Err(AuthError::BadRequest(format!(
                "unknown outcome {other:?}: applied, refused or failed"
            )))
        }
    };
    let cap = |v: &[String]| v.iter().take(200).cloned().collect::<Vec<_>>();
    s.audit(
        AuditEvent::new(code, s.cluster(), &c.identity.username, message)
            .with("repo", r.repo.clone())
            .with("branch", r.branch.clone())
            .with("commit", r.commit.clone())
            .with("outcome", r.outcome.clone())
            .with("created", cap(&r.created))
            .with("updated", cap(&r.updated))
            .with("deleted", cap(&r.deleted))
            .with("reason", r.reason.chars().take(4000).collect::<String>()),
    )
    .await;
    Ok(Json(serde_json::json!({})))
}
