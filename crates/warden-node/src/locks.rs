//! Live sessions, and ending them when a lock comes to cover them: auth
//! pushes lock changes (a long poll answered as soon as its watch stream
//! sees one), so a lock ends sessions within the store's propagation time
//! plus one round trip. Against an auth server without the push, the node
//! re-reads locks every 2 s.

use crate::identity::NodeIdentity;
use crate::session::Leader;
use russh::server::Handle;
use russh::ChannelId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warden_types::audit::{codes, AuditEvent};
use warden_types::{Document, LockSpec};

/// How often the node re-reads locks from an auth server without the push.
const POLL: Duration = Duration::from_secs(2);
/// How long one long poll waits for a change before asking again.
const PUSH_WAIT: Duration = Duration::from_secs(25);

/// One authenticated connection with sessions.
pub struct Live {
    pub username: String,
    /// The user id the certificate carries.
    pub user_id: Option<String>,
    pub login: String,
    pub roles: Vec<String>,
    pub handle: Handle,
    pub sessions: Vec<(ChannelId, Leader)>,
}

/// Live connections on this node.
#[derive(Clone, Default)]
pub struct Registry {
    conns: Arc<Mutex<HashMap<u64, Live>>>,
    next: Arc<AtomicU64>,
}

impl Registry {
    pub fn register(&self, live: Live) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, live);
        id
    }

    pub fn add_session(&self, id: u64, channel: ChannelId, leader: Leader) {
        if let Some(l) = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&id)
        {
            l.sessions.push((channel, leader));
        }
    }

    pub fn remove(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Takes out every connection `why` gives a reason to end.
    pub fn take_where(&self, why: impl Fn(&Live) -> Option<String>) -> Vec<(Live, String)> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let hit: Vec<(u64, String)> = conns
            .iter()
            .filter_map(|(id, l)| why(l).map(|w| (*id, w)))
            .collect();
        hit.into_iter()
            .filter_map(|(id, why)| conns.remove(&id).map(|l| (l, why)))
            .collect()
    }

    /// Takes out every connection a lock covers.
    fn take_locked(&self, locks: &[Document<LockSpec>], node: (&str, &str)) -> Vec<(Live, String)> {
        self.take_where(|l| {
            locks
                .iter()
                .find(|k| {
                    k.spec
                        .target
                        .matches(&l.username, &l.roles, Some(node), Some(&l.login))
                })
                .map(warden_policy::lock_message)
        })
    }
}

/// Ends a connection's sessions and the connection, telling the user why,
/// and audits it.
pub async fn terminate(identity: &NodeIdentity, live: Live, why: String) {
    let msg = format!("\r\nwarden: session terminated: {why}\r\n");
    for (channel, leader) in &live.sessions {
        let _ = live
            .handle
            .extended_data(*channel, 1, msg.clone().into_bytes())
            .await;
        leader.signal(libc::SIGKILL);
    }
    let _ = live
        .handle
        .disconnect(russh::Disconnect::ByApplication, why.clone(), String::new())
        .await;
    let mut ev = AuditEvent::new(
        codes::SESSION_TERMINATED,
        identity.cluster(),
        &live.username,
        why,
    );
    ev.login = Some(live.login.clone());
    identity.emit(ev).await;
}

/// Ends covered sessions for as long as the node runs.
pub async fn enforce(identity: Arc<NodeIdentity>, name: String) {
    let mut revision: Option<i64> = None;
    let mut push = true;
    let mut polls: u64 = 0;
    loop {
        let locks = if push {
            match identity.watch_locks(revision, PUSH_WAIT).await {
                Ok(Some(w)) => {
                    revision = Some(w.revision);
                    w.locks
                }
                Ok(None) => {
                    tracing::info!("auth does not push locks; reading them every 2 s");
                    push = false;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %format!("{e:#}"), "cannot watch locks");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        } else {
            tokio::time::sleep(POLL).await;
            // After a rolling upgrade the auth servers push: ask again now
            // and then.
            polls += 1;
            if polls % 150 == 0 {
                push = true;
            }
            match identity.locks().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %format!("{e:#}"), "cannot read locks");
                    continue;
                }
            }
        };
        if locks.is_empty() {
            continue;
        }
        let node_id = identity.node_id().to_string();
        for (live, why) in identity.registry.take_locked(&locks, (&node_id, &name)) {
            terminate(&identity, live, why).await;
        }
        // Database connections: a lock on the user, a role, the service,
        // the database by name, or the database user (as a login).
        identity
            .db
            .end_where(|l, _| crate::db::lock_reason(&locks, (&node_id, &name), l));
    }
}
