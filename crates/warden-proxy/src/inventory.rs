//! The nodes the proxy can route to, from auth, cached briefly; and the
//! locks in force, pushed by auth.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_client::ApiClient;
use warden_types::endpoints;
use warden_types::{Document, NodeSpec};

/// How long a fetched inventory is reused.
const FRESH_FOR: Duration = Duration::from_secs(2);

/// How long the last lock list stands in when auth cannot be reached.
const STALE_FOR: Duration = Duration::from_secs(30);

/// The last locks fetched, and when.
type CachedLocks = Option<(Instant, Vec<Document<warden_types::LockSpec>>)>;

/// How long a pushed lock list stands without a new answer: the push
/// answers at least every 25 s while auth is there.
const PUSHED_FRESH_FOR: Duration = Duration::from_secs(30);

/// Locks in force, pushed by auth (a long poll answered from its watch of
/// the store), else fetched and cached briefly.
#[derive(Clone)]
pub struct Locks {
    auth: ApiClient,
    cache: Arc<Mutex<CachedLocks>>,
    /// The push started, and is answering.
    watching: Arc<std::sync::Once>,
    pushed: Arc<std::sync::atomic::AtomicBool>,
}

impl Locks {
    pub fn new(auth: ApiClient) -> Self {
        Locks {
            auth,
            cache: Arc::new(Mutex::new(None)),
            watching: Arc::new(std::sync::Once::new()),
            pushed: Default::default(),
        }
    }

    /// Follows the lock push for as long as the proxy runs; falls back to
    /// fetching (with [`FRESH_FOR`]) while the push does not answer.
    async fn follow(self) {
        use std::sync::atomic::Ordering;
        let mut after = None;
        loop {
            let query = warden_types::api::WatchQuery {
                after,
                wait: after.map(|_| 25),
            };
            match self.auth.call(&endpoints::LOCKS_WATCH, &query).await {
                Ok(w) => {
                    after = Some(w.revision);
                    *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Instant::now(), w.locks));
                    self.pushed.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    self.pushed.store(false, Ordering::Relaxed);
                    // An auth server from before the push: ask again now
                    // and then (a rolling upgrade).
                    let old = matches!(e, warden_client::ClientError::Api { status: 404, .. });
                    tracing::debug!(error = %e, "lock push unavailable; fetching locks instead");
                    tokio::time::sleep(Duration::from_secs(if old { 300 } else { 1 })).await;
                }
            }
        }
    }

    /// The reason of a lock on this user, one of these roles or requests,
    /// if any. Fails closed: when auth cannot be asked and the last answer
    /// is older than [`STALE_FOR`], the caller is refused.
    pub async fn find(
        &self,
        user: &str,
        roles: &[String],
        requests: &[String],
    ) -> Result<Option<String>, String> {
        self.watching.call_once(|| {
            tokio::spawn(self.clone().follow());
        });
        let fresh_for = match self.pushed.load(std::sync::atomic::Ordering::Relaxed) {
            true => PUSHED_FRESH_FOR,
            false => FRESH_FOR,
        };
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let locks = match &cached {
            Some((at, l)) if at.elapsed() < fresh_for => l.clone(),
            _ => match self.auth.call(&endpoints::LOCKS, &()).await {
                Ok(l) => {
                    *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Instant::now(), l.clone()));
                    l
                }
                Err(e) => match cached {
                    Some((at, l)) if at.elapsed() < STALE_FOR => {
                        tracing::warn!(error = %e, "cannot refresh locks; using the last list");
                        l
                    }
                    _ => {
                        tracing::warn!(error = %e, "cannot read locks; refusing");
                        return Err(format!("lock state unavailable: {e}"));
                    }
                },
            },
        };
        let subject = warden_policy::LockSubject {
            user,
            roles,
            requests,
            ..Default::default()
        };
        // A pushed list may be older than a lock's expiry.
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let locks = warden_policy::locks_in_force(locks, now);
        Ok(warden_policy::lock_for(&locks, &subject).map(warden_policy::lock_message))
    }
}

/// A routable node.
#[derive(Clone, Debug)]
pub struct Route {
    pub id: String,
    pub addrs: Vec<String>,
}

/// The last inventory fetched, and when.
type Cached = Option<(Instant, Vec<Document<NodeSpec>>)>;

#[derive(Clone)]
pub struct Inventory {
    auth: ApiClient,
    cache: Arc<Mutex<Cached>>,
    /// The cluster's name, for `NAME.CLUSTER` targets (asked once).
    cluster: Arc<tokio::sync::OnceCell<String>>,
}

impl Inventory {
    pub fn new(auth: ApiClient) -> Self {
        Inventory {
            auth,
            cache: Arc::new(Mutex::new(None)),
            cluster: Arc::default(),
        }
    }

    async fn cluster(&self) -> Option<&str> {
        self.cluster
            .get_or_try_init(|| async {
                self.auth
                    .call(&endpoints::PING, &())
                    .await
                    .map(|p| p.cluster)
            })
            .await
            .map(String::as_str)
            .map_err(|e| tracing::warn!(error = %e, "cannot learn the cluster name"))
            .ok()
    }

    async fn nodes(&self) -> Vec<Document<NodeSpec>> {
        if let Some((at, nodes)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if at.elapsed() < FRESH_FOR {
                return nodes.clone();
            }
        }
        match self.auth.call(&endpoints::NODES, &()).await {
            Ok(nodes) => {
                *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), nodes.clone()));
                nodes
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the inventory");
                Vec::new()
            }
        }
    }

    /// The node named `host` (name, id, `NAME.CLUSTER` as in the host
    /// certificate, or one of its `host:port` addresses); only registered
    /// nodes are reachable.
    pub async fn resolve(&self, host: &str, port: u32) -> Option<Route> {
        let short = match self.cluster().await {
            Some(cluster) => host
                .strip_suffix(cluster)
                .and_then(|h| h.strip_suffix('.'))
                .unwrap_or(host),
            None => host,
        };
        let nodes = self.nodes().await;
        let by_addr = format!("{host}:{port}");
        let matches: Vec<&Document<NodeSpec>> = nodes
            .iter()
            .filter(|n| {
                [host, short]
                    .iter()
                    .any(|h| n.name() == *h || n.spec.hostname == *h)
                    || n.spec.addrs.contains(&by_addr)
            })
            .collect();
        // A name shared by several nodes is ambiguous: refuse.
        match matches.as_slice() {
            [one] => Some(Route {
                id: one.name().to_string(),
                addrs: one.spec.addrs.clone(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With auth unreachable and no recent answer, nobody passes.
    #[tokio::test]
    async fn lock_lookup_fails_closed() {
        // A port nothing listens on: bind, note it, close it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let auth = ApiClient::new(
            &addr.to_string(),
            None,
            warden_client::tls::Trust::Discover,
            b"warden-auth",
            None,
        )
        .unwrap();
        let locks = Locks::new(auth);
        let r = locks.find("alice", &["access".into()], &[]).await;
        assert!(r.is_err(), "{r:?}");
        // A recent list stands in while auth is briefly away.
        *locks.cache.lock().unwrap() = Some((Instant::now() - FRESH_FOR, Vec::new()));
        assert_eq!(locks.find("alice", &[], &[]).await, Ok(None));
    }
}
