//! Login decisions from the policy auth pushes: the node holds the users,
//! roles, approved requests and locks in force, follows their changes with
//! a long poll, and decides a login with `warden-policy`'s evaluator, the
//! same one auth runs. Without a round trip a login costs no auth
//! capacity and keeps working through a short auth outage; once the copy
//! has not been refreshed for longer than the bound, the node asks auth
//! per login again and refuses logins while auth cannot answer (fails
//! closed). Each change also re-decides live connections, so a role
//! removal or a deleted user ends their sessions as a lock does.

use crate::identity::NodeIdentity;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use warden_policy::{AccessSnapshot, NodeLogin};
use warden_types::api::{AccessCheckResponse, NodePolicy};

/// How long one long poll waits for a change before asking again.
const PUSH_WAIT: Duration = Duration::from_secs(25);

/// A copy of the policy, and when it was last known current.
struct Held {
    snapshot: Arc<AccessSnapshot>,
    epoch: String,
    version: [i64; 4],
    fresh_at: Instant,
    /// Auth's clock minus ours (seconds) at the last answer: expiry is
    /// judged by auth's clock.
    clock_offset: i64,
}

/// What the cache can say about a login.
#[derive(Debug)]
pub enum Cached {
    /// Decided from a copy within the staleness bound.
    Decided(AccessCheckResponse),
    /// The copy is older than the bound by this much (or there is none):
    /// ask auth.
    Stale(Option<Duration>),
}

/// Refusal of a login when the copy is past its bound and auth cannot be
/// asked.
#[derive(Debug)]
pub struct Stale(pub Duration);

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this node's copy of the access policy is {} old and the auth service could not decide this login either, so it refuses logins until auth answers; try again shortly or use another node",
            humantime::format_duration(Duration::from_secs(self.0.as_secs()))
        )
    }
}

impl std::error::Error for Stale {}

/// The node's copy of the policy.
pub struct PolicyCache {
    held: RwLock<Option<Held>>,
    max_stale: Duration,
    /// The node's labels as it reports them in heartbeats.
    pub labels: Arc<Mutex<BTreeMap<String, String>>>,
}

impl PolicyCache {
    pub fn new(max_stale: Duration, labels: BTreeMap<String, String>) -> Self {
        PolicyCache {
            held: RwLock::new(None),
            max_stale,
            labels: Arc::new(Mutex::new(labels)),
        }
    }

    /// What the node holds, as the long poll's query.
    fn held(&self) -> (Option<String>, Option<String>) {
        match self.read().as_ref() {
            Some(h) => (
                Some(h.epoch.clone()),
                Some(warden_types::api::format_policy_version(&h.version)),
            ),
            None => (None, None),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<Held>> {
        self.held.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a pushed policy and returns the copy now held, or `None` when
    /// the answer was not taken: an older copy from the same auth server
    /// (never installed over a newer one), or an `unchanged` that does not
    /// match what is held.
    fn store(&self, p: NodePolicy) -> Option<Arc<AccessSnapshot>> {
        let offset = p.now - now();
        let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = held.as_mut().filter(|h| h.epoch == p.epoch) {
            let newer = warden_types::api::policy_version_at_least(&p.version, &h.version);
            if p.unchanged && h.version == p.version {
                h.fresh_at = Instant::now();
                h.clock_offset = offset;
                return Some(h.snapshot.clone());
            }
            if p.unchanged || !newer {
                tracing::debug!(held = ?h.version, got = ?p.version, "ignoring a policy that is not newer");
                return None;
            }
        } else if p.unchanged {
            return None;
        }
        let snapshot = Arc::new(AccessSnapshot {
            users: p
                .users
                .into_iter()
                .map(|u| (u.name().to_string(), u))
                .collect(),
            roles: p
                .roles
                .into_iter()
                .map(|r| (r.name().to_string(), r))
                .collect(),
            requests: p.requests,
            locks: p.locks,
        });
        *held = Some(Held {
            snapshot: snapshot.clone(),
            epoch: p.epoch,
            version: p.version,
            fresh_at: Instant::now(),
            clock_offset: offset,
        });
        Some(snapshot)
    }

    /// The locks in force in the copy held (none without a copy).
    pub fn locks(&self) -> Vec<warden_types::Document<warden_types::LockSpec>> {
        let now = self.auth_now();
        match self.read().as_ref() {
            Some(h) => warden_policy::locks_in_force(h.snapshot.locks.clone(), now),
            None => Vec::new(),
        }
    }

    /// Auth's clock now, as last measured (our own before any answer).
    fn auth_now(&self) -> i64 {
        now() + self.read().as_ref().map_or(0, |h| h.clock_offset)
    }

    /// Decides a login from the copy if it is within the bound.
    pub fn decide(
        &self,
        node: (&str, &str),
        user: &str,
        user_id: Option<&str>,
        login: &str,
        mfa_node: Option<&str>,
    ) -> Cached {
        let held = self.read();
        let Some(h) = held.as_ref() else {
            return Cached::Stale(None);
        };
        let age = h.fresh_at.elapsed();
        if age > self.max_stale {
            return Cached::Stale(Some(age));
        }
        let labels = self
            .labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let q = NodeLogin {
            node_id: node.0,
            node_name: node.1,
            labels: &labels,
            user,
            user_id,
            login,
            mfa_node,
        };
        Cached::Decided(warden_policy::decide_node_login(
            &*h.snapshot,
            &q,
            now() + h.clock_offset,
        ))
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Follows the pushed policy for as long as the node runs, and ends live
/// connections it no longer allows, on every answer (also `unchanged`
/// ones, at least every 25 s: a request or lock may have run out).
pub async fn follow(identity: Arc<NodeIdentity>, name: String) {
    let mut failures: u32 = 0;
    loop {
        let (epoch, version) = identity.policy.held();
        let pushed = match identity.watch_policy(epoch, version, PUSH_WAIT).await {
            Ok(Some(p)) => {
                failures = 0;
                p
            }
            Ok(None) => {
                // An auth server from before the push: every login asks
                // auth, as it always did. Ask again after an upgrade.
                tracing::info!("auth does not push the node policy; asking it per login");
                tokio::time::sleep(Duration::from_secs(300)).await;
                continue;
            }
            Err(e) => {
                failures += 1;
                // A few misses are a failover; more, and logins will soon
                // go to auth one by one, or be refused.
                if failures == 5 || failures % 60 == 0 {
                    tracing::warn!(error = %format!("{e:#}"), failures, "cannot follow the node policy");
                } else {
                    tracing::debug!(error = %format!("{e:#}"), "cannot follow the node policy");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(snapshot) = identity.policy.store(pushed) else {
            continue;
        };
        warden_types::metrics::METRICS
            .node_policy_current_at
            .set(now().max(0) as u64);
        revoke(&identity, &name, &snapshot).await;
    }
}

/// Ends the connections the new policy no longer allows (user deleted,
/// role taken away, lock). A per-session MFA check passed at the start
/// still holds.
async fn revoke(identity: &NodeIdentity, name: &str, snapshot: &AccessSnapshot) {
    let node_id = identity.node_id().to_string();
    let labels = identity
        .policy
        .labels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let now = identity.policy.auth_now();
    let gone = identity.registry.take_where(|l| {
        let q = NodeLogin {
            node_id: &node_id,
            node_name: name,
            labels: &labels,
            user: &l.username,
            user_id: l.user_id.as_deref(),
            login: &l.login,
            mfa_node: Some(&node_id),
        };
        let d = warden_policy::decide_node_login(snapshot, &q, now);
        (!d.allowed).then(|| {
            if d.reason.starts_with("locked") {
                d.reason
            } else {
                format!("access revoked: {}", d.reason)
            }
        })
    });
    for (live, why) in gone {
        crate::locks::terminate(identity, live, why).await;
    }
    identity.db.end_where(|l, db| {
        let q = warden_policy::DbLogin {
            service: (&node_id, name),
            database: &l.database,
            labels: &db.labels,
            user: &l.user,
            user_id: l.user_id.as_deref(),
            db_user: &l.db_user,
            db_name: &l.db_name,
        };
        let d = warden_policy::decide_db_login(snapshot, &q, now);
        (!d.allowed).then(|| match d.reason.starts_with("locked") {
            true => d.reason,
            false => format!("access revoked: {}", d.reason),
        })
    });
}
