//! Who is connected where now: SSH sessions that started and have not
//! ended, read from the audit log (nodes record both ends, and a session
//! ended by a lock or a crash-recovered node records its end too), on
//! nodes still online.

use crate::api::Caller;
use crate::error::Result;
use crate::resources::{self, NODES};
use crate::routes::Serve;
use crate::server::AuthServer;
use axum::extract::State;
use axum::{Extension, Json, Router};
use std::collections::{HashMap, HashSet};
use warden_types::api::{ActiveSession, AuditQuery};
use warden_types::audit::codes;
use warden_types::resource::{resources as res, verbs};
use warden_types::{endpoints, NodeSpec};

/// How far back sessions are looked for.
const WINDOW_SECS: i64 = 24 * 3600;
/// Events of each kind read at most.
const MAX_EVENTS: u32 = 10_000;

pub fn routes() -> Router<AuthServer> {
    Router::new().serve(&endpoints::ACTIVE_SESSIONS, active)
}

async fn active(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
) -> Result<Json<Vec<ActiveSession>>> {
    s.authorize(&c, res::SESSION, verbs::LIST).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let search = |event_type: &str| AuditQuery {
        event_type: Some(event_type.to_string()),
        since: Some(now - WINDOW_SECS),
        limit: Some(MAX_EVENTS),
        ..Default::default()
    };
    let mut ended = HashSet::new();
    for kind in [codes::SESSION_END.0, codes::SESSION_TERMINATED.0] {
        for e in s.inner.audit.search(&search(kind)).await? {
            ended.extend(e.session_id);
        }
    }
    let nodes: HashMap<String, NodeSpec> = resources::list::<NodeSpec>(s.backend(), NODES)
        .await?
        .into_iter()
        .map(|d| (d.name().to_string(), d.spec))
        .collect();
    let mut out = Vec::new();
    for e in s
        .inner
        .audit
        .search(&search(codes::SESSION_START.0))
        .await?
    {
        let (Some(id), Some(node)) = (e.session_id.clone(), e.node.clone()) else {
            continue;
        };
        let Some(spec) = nodes.get(&node).filter(|n| n.online(now)) else {
            continue; // a node gone offline takes its sessions with it
        };
        if ended.contains(&id) {
            continue;
        }
        out.push(ActiveSession {
            session_id: id,
            user: e.user.clone(),
            login: e.login.clone().unwrap_or_default(),
            node_name: spec.hostname.clone(),
            node,
            started: e.time.unix_timestamp(),
        });
    }
    out.sort_by_key(|a| std::cmp::Reverse(a.started));
    Ok(Json(out))
}
