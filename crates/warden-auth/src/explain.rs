//! `warden admin access check`: the node-login decision for a real user,
//! or a hypothetical one, with each role's verdict; the same evaluator the
//! nodes use, over the same state.

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::nodes::LiveState;
use crate::routes::Serve;
use crate::server::AuthServer;
use axum::extract::State;
use axum::{Extension, Json, Router};
use warden_policy::{AccessState, NodeLogin};
use warden_types::api::{AccessExplainRequest, AccessExplainResponse, RequestExplain};
use warden_types::resource::{kind, resources as res, verbs};
use warden_types::{
    endpoints, AccessRequestSpec, Document, LockSpec, NodeSpec, RoleSpec, UserSpec,
};

pub fn routes() -> Router<AuthServer> {
    Router::new().serve(&endpoints::ACCESS_EXPLAIN, explain)
}

/// The name a hypothetical user goes by.
const HYPOTHETICAL: &str = "(hypothetical)";

/// The live state, with one hypothetical user added.
struct WithUser<'a> {
    live: LiveState<'a>,
    user: Document<UserSpec>,
}

impl AccessState for WithUser<'_> {
    fn user(&self, name: &str) -> Option<Document<UserSpec>> {
        (name == self.user.name()).then(|| self.user.clone())
    }
    fn role(&self, name: &str) -> Option<Document<RoleSpec>> {
        self.live.role(name)
    }
    fn requests(&self) -> Vec<Document<AccessRequestSpec>> {
        Vec::new()
    }
    fn locks(&self) -> Vec<Document<LockSpec>> {
        self.live.locks()
    }
}

/// A login as `user` (with a certificate issued to them now) on `node`,
/// as a plain `ssh` would ask it (no per-session MFA certificate: roles
/// that require one say so).
fn query<'a>(
    node: &'a Document<NodeSpec>,
    login: &'a str,
    user: &'a Document<UserSpec>,
) -> NodeLogin<'a> {
    NodeLogin {
        node_id: node.name(),
        node_name: &node.spec.hostname,
        labels: &node.metadata.labels,
        user: user.name(),
        user_id: Some(&user.spec.uid),
        login,
        mfa_node: None,
    }
}

/// Reads users and roles: an explanation shows both.
async fn explain(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<AccessExplainRequest>,
) -> Result<Json<AccessExplainResponse>> {
    s.authorize(&c, res::USER, verbs::READ).await?;
    s.authorize(&c, res::ROLE, verbs::READ).await?;
    if !req.request_roles.is_empty() {
        return explain_request(&s, &req).map(Json);
    }
    let node = s.resolve_node(&req.node).await?;
    let live = LiveState(&s);
    let now = crate::resources::now();
    let decision = match (&req.user, req.roles.is_empty()) {
        (Some(user), true) => {
            let Some(user) = live.user(user) else {
                return Err(AuthError::NotFound(format!(
                    "no user {user:?}; for someone who does not exist yet, give --roles (and --traits)"
                )));
            };
            warden_policy::decide_node_login(&live, &query(&node, &req.login, &user), now)
        }
        (None, false) => {
            for r in &req.roles {
                if live.role(r).is_none() {
                    return Err(AuthError::NotFound(format!(
                        "no role {r:?}; 'warden admin roles ls' lists them"
                    )));
                }
            }
            let user = Document::new(
                kind::USER,
                HYPOTHETICAL,
                UserSpec {
                    roles: req.roles.clone(),
                    traits: req.traits.clone(),
                    ..Default::default()
                },
            );
            let q = query(&node, &req.login, &user);
            let state = WithUser {
                live,
                user: user.clone(),
            };
            warden_policy::decide_node_login(&state, &q, now)
        }
        _ => {
            return Err(AuthError::BadRequest(
                "name a user (--user) or the roles of a hypothetical one (--roles), not both"
                    .into(),
            ))
        }
    };
    Ok(Json(AccessExplainResponse {
        node: node.spec.hostname.clone(),
        node_id: node.name().to_string(),
        decision,
        request: None,
    }))
}

/// May the user (or a hypothetical one) request `request_roles`, and what
/// would the request get: the same checks and terms as creating it.
fn explain_request(s: &AuthServer, req: &AccessExplainRequest) -> Result<AccessExplainResponse> {
    let live = LiveState(s);
    let holds = match (&req.user, req.roles.is_empty()) {
        (Some(user), true) => match live.user(user) {
            Some(u) => u.spec.roles,
            None => return Err(AuthError::NotFound(format!("no user {user:?}"))),
        },
        (None, false) => req.roles.clone(),
        _ => {
            return Err(AuthError::BadRequest(
                "name a user (--user) or the roles of a hypothetical one (--roles), not both"
                    .into(),
            ))
        }
    };
    for r in holds.iter().chain(&req.request_roles) {
        if live.role(r).is_none() {
            return Err(AuthError::NotFound(format!(
                "no role {r:?}; 'warden admin roles ls' lists them"
            )));
        }
    }
    let current = s.roles(&holds);
    let d = warden_policy::check_request_roles(&current, &req.request_roles);
    let (max_duration_secs, approvals_needed) = s.request_terms(&current, &req.request_roles, &[]);
    Ok(AccessExplainResponse {
        request: Some(RequestExplain {
            allowed: d.allowed,
            reason: d.summary(),
            explanation: d.reasons,
            approvals_needed,
            max_duration_secs,
        }),
        ..Default::default()
    })
}
