//! The node's reverse tunnel: an outbound TLS connection to the proxy
//! (ALPN `warden-tunnel`, the node's certificate), with SSH inside where
//! the node is the client; each channel the proxy opens is a user's SSH
//! connection, served by the node's SSH server. Reconnects with jittered
//! backoff, so a node behind NAT needs no inbound port.

use crate::identity::NodeIdentity;
use russh::client::{self, Msg, Session};
use russh::Channel;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use warden_client::tls::{ClientCert, ClusterVerifier, Trust};

const MAX_BACKOFF: Duration = Duration::from_secs(30);

struct TunnelClient {
    identity: Arc<NodeIdentity>,
    /// Woken when the proxy asks this node to move its tunnel.
    moved: Arc<tokio::sync::Notify>,
}

impl client::Handler for TunnelClient {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // The proxy was verified in the TLS handshake underneath.
        Ok(true)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if connected_address == warden_types::TUNNEL_MOVE_ADDRESS {
            tracing::info!("the proxy is draining: moving the tunnel");
            self.moved.notify_one();
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let db = connected_address == warden_types::TUNNEL_DB_ADDRESS;
        if (self.identity.db.only && !db) || (db && self.identity.db.databases.is_empty()) {
            // A database-only agent takes no SSH logins; an agent without
            // databases takes no database connections.
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        reply.accept().await;
        let addr = |host: &str, port: u32| {
            format!("{host}:{port}")
                .parse::<SocketAddr>()
                .unwrap_or_else(|_| crate::sshd::unspecified())
        };
        let peer = addr(originator_address, originator_port);
        let local = addr(connected_address, connected_port);
        let identity = self.identity.clone();
        tokio::spawn(async move {
            if db {
                crate::db::serve(identity, channel.into_stream(), peer).await;
            } else {
                crate::sshd::serve_stream(identity, channel.into_stream(), peer, local).await;
            }
        });
        Ok(())
    }
}

/// Keeps a tunnel to `proxy`, and with `discover` to every other proxy the
/// cluster reports, for as long as the node runs.
pub async fn keep_tunnels(identity: Arc<NodeIdentity>, proxy: String, discover: bool) {
    let mut running = std::collections::HashSet::new();
    running.insert(proxy.clone());
    tokio::spawn(keep_tunnel(identity.clone(), proxy));
    if !discover {
        return;
    }
    let mut first = true;
    loop {
        tokio::time::sleep(if first {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(30)
        })
        .await;
        first = false;
        match identity.proxies().await {
            Ok(list) => {
                for addr in list.into_iter().filter_map(|p| p.addrs.into_iter().next()) {
                    if running.insert(addr.clone()) {
                        tracing::info!(proxy = %addr, "discovered a proxy");
                        tokio::spawn(keep_tunnel(identity.clone(), addr));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot list proxies"),
        }
    }
}

/// Keeps a tunnel to `proxy` up for as long as the node runs.
pub async fn keep_tunnel(identity: Arc<NodeIdentity>, proxy: String) {
    let mut failures: u32 = 0;
    loop {
        let began = std::time::Instant::now();
        match connect(&identity, &proxy).await {
            Ok((handle, moved)) => {
                tracing::info!(%proxy, "tunnel connected");
                let closed = async {
                    while !handle.is_closed() {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                };
                tokio::select! {
                    _ = closed => tracing::warn!(%proxy, "tunnel lost; reconnecting"),
                    _ = moved.notified() => {
                        // A restarting proxy: a new tunnel (to the process
                        // that now accepts) at once, while sessions on the
                        // old one go on until the old process closes it.
                        tokio::spawn(async move {
                            while !handle.is_closed() {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        });
                        failures = 0;
                        continue;
                    }
                }
            }
            Err(e) => tracing::warn!(%proxy, error = %format!("{e:#}"), "tunnel failed"),
        }
        if began.elapsed() > Duration::from_secs(60) {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        let base =
            Duration::from_millis(250 * 2u64.saturating_pow(failures.min(8))).min(MAX_BACKOFF);
        // Jitter (50-150%) so a fleet does not reconnect in lockstep.
        let jitter = 0.5 + (u16::from_le_bytes(warden_ca::random_bytes::<2>()) as f64 / 65535.0);
        tokio::time::sleep(base.mul_f64(jitter)).await;
    }
}

async fn connect(
    identity: &Arc<NodeIdentity>,
    proxy: &str,
) -> anyhow::Result<(client::Handle<TunnelClient>, Arc<tokio::sync::Notify>)> {
    let certs = identity.certs();
    let cert = ClientCert {
        cert_pem: certs.tls_cert_pem.clone(),
        key_pkcs8: identity.tls_key_pkcs8(),
    };
    let config = warden_client::tls::client_config(
        ClusterVerifier::new(Trust::Roots(certs.tls_ca_pems.clone())),
        warden_types::ALPN_TUNNEL,
        Some(&cert),
    )?;
    let host = warden_client::http::host_of(proxy).to_string();
    let name = rustls::pki_types::ServerName::try_from(host)?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(proxy),
    )
    .await??;
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let ssh_config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        ..Default::default()
    });
    let moved = Arc::new(tokio::sync::Notify::new());
    let mut handle = client::connect_stream(
        ssh_config,
        tls,
        TunnelClient {
            identity: identity.clone(),
            moved: moved.clone(),
        },
    )
    .await?;
    let auth = handle.authenticate_none(identity.node_id()).await?;
    anyhow::ensure!(auth.success(), "the proxy refused the tunnel");
    Ok((handle, moved))
}
