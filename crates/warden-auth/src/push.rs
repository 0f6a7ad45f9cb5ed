//! The state nodes decide logins from, pushed: `GET /v1/nodes/policy` is a
//! long poll answered as soon as users, roles, requests or locks change
//! after the node's revision (fed by the backend's watch streams), so a
//! node decides a login without a round trip and learns a role removal in
//! the store's propagation time.

use crate::api::Caller;
use crate::error::Result;
use crate::nodes::require_node;
use crate::routes::Serve;
use crate::server::AuthServer;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use std::time::Duration;
use warden_types::api::NodePolicy;
use warden_types::endpoints;

pub fn routes() -> Router<AuthServer> {
    Router::new().serve(&endpoints::NODE_POLICY, node_policy)
}

/// Query of `GET /v1/nodes/policy`.
#[derive(serde::Deserialize)]
struct WatchQuery {
    /// The revision the node has; without it, answer at once.
    after: Option<i64>,
    /// Seconds to wait for a change (at most 55; default 25).
    wait: Option<u64>,
}

impl AuthServer {
    /// The revision of the node policy: the latest of its four caches (one
    /// store, one revision counter).
    fn policy_revision(&self) -> i64 {
        let i = &self.inner;
        i.users
            .revision()
            .max(i.roles.revision())
            .max(i.requests.revision())
            .max(i.locks.revision())
    }

    /// Waits until any of the node policy's caches moves past `after`.
    async fn wait_policy_past(&self, after: i64, wait: Duration) {
        let i = &self.inner;
        tokio::select! {
            _ = i.users.wait_past(after, wait) => {}
            _ = i.roles.wait_past(after, wait) => {}
            _ = i.requests.wait_past(after, wait) => {}
            _ = i.locks.wait_past(after, wait) => {}
        }
    }

    /// The node policy as JSON, encoded once per revision.
    fn node_policy_json(&self) -> Result<Bytes> {
        // Read the revision first: the lists read after it are at least as
        // new, and a later change raises it past what the node holds.
        let revision = self.policy_revision();
        {
            let cached = self
                .inner
                .node_policy
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some((r, body)) = cached.as_ref() {
                if *r == revision {
                    return Ok(body.clone());
                }
            }
        }
        let now = crate::resources::now();
        let policy = NodePolicy {
            revision,
            unchanged: false,
            users: self
                .inner
                .users
                .list()
                .into_iter()
                .map(|mut u| {
                    u.spec.created_by = None;
                    u
                })
                .collect(),
            roles: self.inner.roles.list(),
            requests: self
                .inner
                .requests
                .list()
                .into_iter()
                .filter(|r| r.spec.active(now))
                .map(|mut r| {
                    r.spec.reason.clear();
                    r.spec.reviews.clear();
                    r
                })
                .collect(),
            locks: self.active_locks(),
        };
        let body = Bytes::from(
            serde_json::to_vec(&policy)
                .map_err(|e| crate::error::AuthError::Internal(e.to_string()))?,
        );
        *self
            .inner
            .node_policy
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((revision, body.clone()));
        Ok(body)
    }
}

async fn node_policy(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Query(q): Query<WatchQuery>,
) -> Result<Response> {
    require_node(&c)?;
    if let Some(after) = q.after {
        let wait = Duration::from_secs(q.wait.unwrap_or(25).min(55));
        if s.policy_revision() <= after {
            s.wait_policy_past(after, wait).await;
        }
        let revision = s.policy_revision();
        if revision == after {
            let unchanged = NodePolicy {
                revision,
                unchanged: true,
                ..Default::default()
            };
            return Ok(Json(unchanged).into_response());
        }
    }
    let body = s.node_policy_json()?;
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}
