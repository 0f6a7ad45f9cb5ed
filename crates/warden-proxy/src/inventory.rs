//! The nodes the proxy can route to, from auth, cached briefly.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_client::ApiClient;
use warden_types::{Document, NodeSpec};

/// How long a fetched inventory is reused.
const FRESH_FOR: Duration = Duration::from_secs(2);

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
}

impl Inventory {
    pub fn new(auth: ApiClient) -> Self {
        Inventory {
            auth,
            cache: Arc::new(Mutex::new(None)),
        }
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
        match self.auth.get::<Vec<Document<NodeSpec>>>("/v1/nodes").await {
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

    /// The node named `host` (name, id, or one of its `host:port`
    /// addresses); only registered nodes are reachable.
    pub async fn resolve(&self, host: &str, port: u32) -> Option<Route> {
        let nodes = self.nodes().await;
        let by_addr = format!("{host}:{port}");
        let matches: Vec<&Document<NodeSpec>> = nodes
            .iter()
            .filter(|n| {
                n.name() == host || n.spec.hostname == host || n.spec.addrs.contains(&by_addr)
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
