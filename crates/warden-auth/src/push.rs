//! The state nodes decide logins from, pushed: `GET /v1/nodes/policy` is a
//! long poll answered as soon as users, roles, requests or locks change
//! after the node's version (fed by the backend's watch streams), so a
//! node decides a login without a round trip and learns a role removal in
//! the store's propagation time.
//!
//! A version is the store revision of each of the four caches, not their
//! maximum: each cache follows its own watch, so one may lag another, and
//! a maximum would let a late change hide behind an earlier-applied later
//! one for good.

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::nodes::require_node;
use crate::routes::Serve;
use crate::server::AuthServer;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden_types::api::{
    parse_policy_version, policy_version_at_least as at_least, NodePolicy, PolicyQuery,
};
use warden_types::endpoints;
use warden_types::{AccessRequestSpec, Document};

pub fn routes() -> Router<AuthServer> {
    Router::new().serve(&endpoints::NODE_POLICY, node_policy)
}

/// The policy of one version, built once for every node.
pub(crate) struct Built {
    version: [i64; 4],
    /// Everything but resource requests, which go only to their node.
    shared: NodePolicy,
    /// `shared` encoded: the answer to every node without a resource
    /// request of its own.
    shared_json: Bytes,
    /// Approved resource requests, for the nodes they name.
    resource_requests: Vec<Document<AccessRequestSpec>>,
}

/// The last policy built; one builder at a time, however many nodes wake.
#[derive(Default)]
pub(crate) struct PolicyCache(tokio::sync::Mutex<Option<Arc<Built>>>);

impl AuthServer {
    /// The store revision each of the policy's caches reflects.
    fn policy_version(&self) -> [i64; 4] {
        let i = &self.inner;
        [
            i.users.revision(),
            i.roles.revision(),
            i.requests.revision(),
            i.locks.revision(),
        ]
    }

    /// Waits until any of the policy's caches moves past `from`, or `wait`.
    async fn wait_policy_change(&self, from: [i64; 4], wait: Duration) {
        let i = &self.inner;
        tokio::select! {
            _ = i.users.wait_past(from[0], wait) => {}
            _ = i.roles.wait_past(from[1], wait) => {}
            _ = i.requests.wait_past(from[2], wait) => {}
            _ = i.locks.wait_past(from[3], wait) => {}
        }
    }

    /// The policy as it stands, built once per version.
    async fn built_policy(&self) -> Result<Arc<Built>> {
        let mut cache = self.inner.node_policy.0.lock().await;
        // Read the version first: the lists read after it are at least as
        // new, and a later change moves it past what the node holds.
        let version = self.policy_version();
        if let Some(b) = cache.as_ref().filter(|b| b.version == version) {
            return Ok(b.clone());
        }
        let now = crate::resources::now();
        let (resource_requests, role_requests): (Vec<_>, Vec<_>) = self
            .inner
            .requests
            .list()
            .into_iter()
            .filter(|r| r.spec.active(now))
            .map(|mut r| {
                r.spec.reason.clear();
                r.spec.reviews.clear();
                r.metadata.description = None;
                r.metadata.labels.clear();
                r
            })
            .partition(|r| !r.spec.resources.is_empty());
        let shared = NodePolicy {
            epoch: self.inner.epoch.clone(),
            version,
            now,
            unchanged: false,
            users: self
                .inner
                .users
                .list()
                .into_iter()
                .map(|mut u| {
                    u.spec.created_by = None;
                    u.metadata.description = None;
                    u.metadata.labels.clear();
                    u
                })
                .collect(),
            roles: self.inner.roles.list(),
            requests: role_requests,
            locks: self
                .active_locks()
                .into_iter()
                .map(|mut l| {
                    l.spec.created_by = None;
                    l
                })
                .collect(),
        };
        let shared_json = Bytes::from(
            serde_json::to_vec(&shared).map_err(|e| AuthError::Internal(e.to_string()))?,
        );
        let built = Arc::new(Built {
            version,
            shared,
            shared_json,
            resource_requests,
        });
        *cache = Some(built.clone());
        Ok(built)
    }

    /// The policy for node `node`: the shared one, plus the resource
    /// requests naming this node (and only their entries for it).
    async fn node_policy_json(&self, node: &str) -> Result<Bytes> {
        let built = self.built_policy().await?;
        let mine: Vec<Document<AccessRequestSpec>> = built
            .resource_requests
            .iter()
            .filter(|r| r.spec.resources.iter().any(|n| n.node == node))
            .cloned()
            .map(|mut r| {
                r.spec.resources.retain(|n| n.node == node);
                r
            })
            .collect();
        // Auth's clock of now, not of the build.
        let now = crate::resources::now();
        if mine.is_empty() && now == built.shared.now {
            return Ok(built.shared_json.clone());
        }
        let mut policy = built.shared.clone();
        policy.now = now;
        policy.requests.extend(mine);
        Ok(Bytes::from(
            serde_json::to_vec(&policy).map_err(|e| AuthError::Internal(e.to_string()))?,
        ))
    }
}

async fn node_policy(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Query(q): Query<PolicyQuery>,
) -> Result<Response> {
    let node = require_node(&c)?.to_string();
    let ours = q.epoch.as_deref() == Some(s.inner.epoch.as_str());
    if let Some(held) = q.version.as_deref().filter(|_| ours) {
        let held = parse_policy_version(held)
            .ok_or_else(|| AuthError::BadRequest(format!("version {held:?}: expected U.R.Q.L")))?;
        let wait = Duration::from_secs(q.wait.unwrap_or(25).min(55));
        let deadline = Instant::now() + wait;
        // Wait while nothing changed (or, should the node hold revisions
        // this process has not reached, until it does).
        loop {
            let current = s.policy_version();
            let newer = current != held && at_least(&current, &held);
            let left = deadline.saturating_duration_since(Instant::now());
            if newer || left.is_zero() {
                break;
            }
            s.wait_policy_change(current, left).await;
        }
        let current = s.policy_version();
        if current == held {
            let unchanged = NodePolicy {
                epoch: s.inner.epoch.clone(),
                version: current,
                now: crate::resources::now(),
                unchanged: true,
                ..Default::default()
            };
            return Ok(Json(unchanged).into_response());
        }
        if !at_least(&current, &held) {
            // Never an older copy (this process's caches only move on, so
            // this is a node that heard of revisions we have not): the node
            // keeps what it has, and its staleness bound applies.
            return Err(AuthError::Unavailable(
                "this auth server is behind the policy the node holds; ask again".into(),
            ));
        }
    }
    let body = s.node_policy_json(&node).await?;
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::at_least;

    #[test]
    fn newer_means_no_kind_went_back() {
        assert!(at_least(&[2, 2, 2, 2], &[1, 2, 2, 2]));
        assert!(at_least(&[1, 2, 3, 4], &[1, 2, 3, 4]));
        // Users moved on but roles went back (a lagging watch): not newer.
        assert!(!at_least(&[5, 1, 2, 2], &[4, 2, 2, 2]));
    }
}
