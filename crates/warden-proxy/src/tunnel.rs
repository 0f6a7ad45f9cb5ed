//! Reverse tunnels: nodes dial the proxy (TLS, ALPN `warden-tunnel`, mTLS
//! with the node's certificate) and run SSH over it as the client; the
//! proxy, as the SSH server, opens a channel per session back to the node.
//! A node behind NAT therefore needs no inbound port.

use russh::server::{Auth, Handle, Msg, Session};
use russh::{Channel, MethodKind, MethodSet};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Live tunnels by node id.
#[derive(Clone, Default)]
pub struct Tunnels {
    inner: Arc<Mutex<HashMap<String, (u64, Handle)>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl Tunnels {
    fn insert(&self, node: &str, handle: Handle) -> u64 {
        let gen = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), (gen, handle));
        gen
    }

    /// Forgets a tunnel, unless a newer one replaced it.
    fn remove(&self, node: &str, gen: u64) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(node).is_some_and(|(g, _)| *g == gen) {
            map.remove(node);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks every node to open a new tunnel (this process is draining after
    /// handing its port to a successor); their current tunnels, and the
    /// sessions in them, stay until this process exits.
    pub fn move_all(&self) {
        let handles: Vec<Handle> = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|(_, h)| h.clone())
            .collect();
        tracing::info!(
            tunnels = handles.len(),
            "asking nodes to move their tunnels"
        );
        for h in handles {
            tokio::spawn(async move {
                let _ = h
                    .channel_open_forwarded_tcpip(
                        warden_types::TUNNEL_MOVE_ADDRESS,
                        0,
                        "0.0.0.0".to_string(),
                        0,
                    )
                    .await;
            });
        }
    }

    /// Opens a stream to the node's SSH server through its tunnel.
    pub async fn dial(&self, node: &str, originator: std::net::SocketAddr) -> Option<Channel<Msg>> {
        self.open(node, "node", originator).await
    }

    /// Opens a stream to the database service of agent `node`.
    pub async fn dial_db(
        &self,
        node: &str,
        originator: std::net::SocketAddr,
    ) -> Option<Channel<Msg>> {
        self.open(node, warden_types::TUNNEL_DB_ADDRESS, originator)
            .await
    }

    async fn open(
        &self,
        node: &str,
        address: &str,
        originator: std::net::SocketAddr,
    ) -> Option<Channel<Msg>> {
        let handle = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .map(|(_, h)| h.clone())?;
        handle
            .channel_open_forwarded_tcpip(
                address,
                0,
                originator.ip().to_string(),
                originator.port() as u32,
            )
            .await
            .ok()
    }
}

/// The proxy's side of one tunnel. The TLS layer already proved which
/// node this is, so the SSH layer inside needs no further authentication.
struct TunnelServer {
    node: String,
    tunnels: Tunnels,
    gen: Option<u64>,
}

impl russh::server::Handler for TunnelServer {
    type Error = anyhow::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        self.gen = Some(self.tunnels.insert(&self.node, session.handle()));
        warden_types::metrics::METRICS.proxy_tunnels.inc();
        tracing::info!(node = %self.node, "tunnel up");
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        _reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(()) // nodes open nothing on the proxy
    }
}

impl Drop for TunnelServer {
    fn drop(&mut self) {
        if let Some(gen) = self.gen {
            warden_types::metrics::METRICS.proxy_tunnels.dec();
            self.tunnels.remove(&self.node, gen);
            tracing::info!(node = %self.node, "tunnel down");
        }
    }
}

/// SSH settings of the tunnel server (the host key is the proxy's; nodes
/// already verified the proxy in TLS).
pub fn tunnel_ssh_config(key: russh::keys::PrivateKey) -> Arc<russh::server::Config> {
    Arc::new(russh::server::Config {
        methods: MethodSet::from(&[MethodKind::None][..]),
        auth_rejection_time: Duration::from_millis(100),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![key],
        inactivity_timeout: Some(Duration::from_secs(120)),
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        ..Default::default()
    })
}

/// Serves one tunnel until the node goes away.
pub async fn serve_tunnel<S>(
    config: Arc<russh::server::Config>,
    stream: S,
    node: String,
    tunnels: Tunnels,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let handler = TunnelServer {
        node: node.clone(),
        tunnels,
        gen: None,
    };
    match russh::server::run_stream(config, stream, handler).await {
        Ok(running) => {
            let _ = running.await;
        }
        Err(e) => tracing::info!(%node, error = %e, "tunnel handshake failed"),
    }
}
