//! The proxy: the cluster's one public port.
//!
//! Each connection on :3080 is sniffed (ARCHITECTURE.md §5):
//! - TLS with ALPN `warden-auth` is passed through, still encrypted, to the
//!   auth service (mTLS end to end between client and auth);
//! - other TLS is terminated here and served the public login API;
//! - SSH goes to the jump host, which forwards `direct-tcpip` to nodes;
//! - TLS with ALPN `warden-tunnel` is a node's reverse tunnel (mTLS).

mod creds;
mod identity;
mod inventory;
mod jump;
pub mod limits;
mod peer;
mod prefixed;
mod public;
mod sniff;
mod tunnel;
mod web;

pub use creds::{BoxFuture, Renew, WebCert};
pub use identity::{Join, Joined};
pub use tunnel::Tunnels;

use anyhow::Context;
use prefixed::Prefixed;
use sniff::{sniff, Protocol};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use warden_client::ApiClient;
use warden_types::endpoints;
use warden_types::metrics::METRICS;

/// Time a client has to send its first bytes (SSH banner or ClientHello).
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's headers (also the longest idle
/// wait for the next request on a kept-alive connection).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to finish a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once (node tunnels included); past this, new ones
/// are closed at accept. The process file-descriptor limit may bind first.
pub const MAX_CONNECTIONS: usize = 30_000;

/// The proxy's keys and certificates, issued by auth.
pub struct ProxyIdentity {
    /// Stable id (the username in its certificate).
    pub id: String,
    /// Where users and peers reach it, `host:port`.
    pub public_addrs: Vec<String>,
    /// One Ed25519 key for TLS and the SSH host key.
    pub key: warden_ca::ClientKey,
    pub tls_cert_pem: String,
    pub ca_pems: Vec<String>,
    /// OpenSSH host certificate of the jump host.
    pub ssh_host_cert: String,
    /// The CA generation these certificates were issued under.
    pub ca_generation: String,
}

/// What the proxy needs to run.
pub struct Proxy {
    /// Address of the auth API, for passthrough.
    pub auth_addr: String,
    /// The auth servers, failed over on connect.
    auth_endpoints: warden_client::http::Endpoints,
    /// The certificates in use (renewed when a CA rotates).
    creds: creds::Current,
    /// The CA generation they are from.
    generation: Arc<std::sync::RwLock<String>>,
    jump: jump::Jump,
    /// mTLS client of the auth API with the proxy's own identity.
    pub auth: ApiClient,
    /// Where users reach this proxy (picks SSO redirect URLs).
    pub public_addrs: Vec<String>,
}

/// Reports this proxy to the cluster, so nodes tunnel to it and peers can
/// ask it for nodes; at once after a renewal, so a CA rotation sees it.
async fn heartbeat(
    auth: ApiClient,
    addrs: Vec<String>,
    generation: Arc<std::sync::RwLock<String>>,
    renewed: Arc<tokio::sync::Notify>,
) {
    loop {
        let hb = warden_types::api::ProxyHeartbeat {
            id: String::new(), // auth takes the id from our certificate
            addrs: addrs.clone(),
            version: warden_types::VERSION.to_string(),
            ca_generation: generation.read().unwrap_or_else(|p| p.into_inner()).clone(),
        };
        if let Err(e) = auth.call(&endpoints::PROXY_HEARTBEAT, &hb).await {
            tracing::warn!(error = %e, "proxy heartbeat failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = renewed.notified() => {}
        }
    }
}

/// A server TLS handshake, timed and bounded.
async fn handshake<S>(
    acceptor: TlsAcceptor,
    stream: S,
) -> anyhow::Result<tokio_rustls::server::TlsStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let began = std::time::Instant::now();
    let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
    match result {
        Ok(Ok(tls)) => {
            METRICS.proxy_handshake_seconds.observe(began.elapsed());
            Ok(tls)
        }
        Ok(Err(e)) => {
            METRICS.proxy_errors_handshake.inc();
            Err(anyhow::Error::new(e).context("TLS handshake"))
        }
        Err(_) => {
            METRICS.proxy_errors_handshake.inc();
            anyhow::bail!("TLS handshake timed out")
        }
    }
}

impl Proxy {
    /// Builds the proxy from its identity and its client of auth; `renew`
    /// issues it fresh certificates when a CA rotates.
    pub fn new(
        auth_addr: String,
        id: ProxyIdentity,
        auth: ApiClient,
        renew: Arc<dyn Renew>,
        web: WebCert,
    ) -> anyhow::Result<Self> {
        let current = creds::Current::new(creds::Creds::build(&id, &web)?);
        let user_cas = Arc::new(std::sync::RwLock::new(Vec::new()));
        let host_cas = Arc::new(std::sync::RwLock::new(Vec::new()));
        let generation = Arc::new(std::sync::RwLock::new(id.ca_generation.clone()));
        let renewed = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(heartbeat(
            auth.clone(),
            id.public_addrs.clone(),
            generation.clone(),
            renewed.clone(),
        ));
        let public_addrs = id.public_addrs.clone();
        let self_id = id.id.clone();
        tokio::spawn(creds::follow(creds::Following {
            identity: id,
            web,
            current: current.clone(),
            auth: auth.clone(),
            renew,
            user_cas: user_cas.clone(),
            host_cas: host_cas.clone(),
            generation: generation.clone(),
            renewed,
        }));
        Ok(Proxy {
            public_addrs,
            auth_endpoints: warden_client::http::Endpoints::parse(&auth_addr),
            auth_addr,
            jump: jump::Jump {
                creds: current.clone(),
                user_cas,
                host_cas,
                inventory: inventory::Inventory::new(auth.clone()),
                tunnels: Tunnels::default(),
                peers: peer::Peers::new(self_id, auth.clone(), current.clone()),
                locks: inventory::Locks::new(auth.clone()),
                auth: auth.clone(),
            },
            creds: current,
            generation,
            auth,
        })
    }

    /// Live reverse tunnels.
    pub fn tunnels(&self) -> Tunnels {
        self.jump.tunnels.clone()
    }

    /// Serves `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let this = Arc::new(self);
        let app = public::public_router(
            this.auth.clone().with_header(
                warden_types::api::PROXY_ADDRS_HEADER,
                &this.public_addrs.join(","),
            ),
            this.generation.clone(),
            this.jump.clone(),
        );
        let slots = Arc::new(tokio::sync::Semaphore::new(limits::connection_cap(
            MAX_CONNECTIONS,
        )));
        let per_source = limits::PerSource::default();
        tokio::pin!(shutdown);
        loop {
            let (tcp, addr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => {
                    // Whoever accepts on this port from now on (a
                    // successor, after a graceful restart) gets the tunnels.
                    this.jump.tunnels.move_all();
                    return Ok(());
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                METRICS.proxy_errors_limit.inc();
                tracing::warn!(%addr, "connection limit reached; closing");
                continue;
            };
            let Some(pending) =
                per_source.try_acquire(addr.ip(), limits::MAX_UNAUTHENTICATED_PER_SOURCE)
            else {
                METRICS.proxy_errors_limit.inc();
                tracing::debug!(%addr, "too many unauthenticated connections from this source; closing");
                continue;
            };
            let this = this.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = this.handle(tcp, addr, app, pending).await {
                    tracing::debug!(%addr, error = %e, "proxy connection ended");
                }
            });
        }
    }

    async fn handle(
        &self,
        mut tcp: TcpStream,
        addr: std::net::SocketAddr,
        app: axum::Router,
        pending: limits::SourceGuard,
    ) -> anyhow::Result<()> {
        let _ = tcp.set_nodelay(true);
        let sniffed = tokio::time::timeout(SNIFF_TIMEOUT, sniff(&mut tcp))
            .await
            .context("client sent nothing")
            .and_then(|r| r);
        let (protocol, head) = match sniffed {
            Ok(x) => x,
            Err(e) if e.is::<sniff::Empty>() => return Ok(()),
            Err(e) => {
                METRICS.proxy_errors_sniff.inc();
                return Err(e);
            }
        };
        // Tunnels are infrastructure, not sessions: a draining proxy does
        // not wait for them. Nor for API calls passed through to auth: they
        // are short or are long polls (nodes waiting for lock changes),
        // and their clients retry.
        let waited_for = !matches!(protocol, Protocol::Tunnel | Protocol::AuthPassthrough);
        let _active = waited_for.then(warden_types::metrics::ActiveGuard::new);
        match protocol {
            Protocol::AuthPassthrough => {
                METRICS.proxy_connections_auth.inc();
                let mut upstream = self.auth_endpoints.connect().await?;
                let _ = upstream.set_nodelay(true);
                use tokio::io::AsyncWriteExt;
                upstream.write_all(&head).await?;
                tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await?;
                Ok(())
            }
            Protocol::Web => {
                METRICS.proxy_connections_tls.inc();
                let tls = handshake(
                    TlsAcceptor::from(self.creds.get().tls.clone()),
                    Prefixed::new(head, tcp),
                )
                .await?;
                let app = app
                    .layer(axum::middleware::from_fn(public::deadline))
                    .layer(axum::Extension(public::ClientAddr(addr)))
                    .layer(axum::Extension(limits::Pending::new(pending)));
                hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tls),
                        hyper_util::service::TowerToHyperService::new(app),
                    )
                    .with_upgrades()
                    .await?;
                Ok(())
            }
            Protocol::Db => {
                // TLS is end to end between the user and the database
                // service, which authenticates the user; the proxy routes
                // by the service id the SNI names, to its tunnel.
                METRICS.proxy_connections_db.inc();
                let service = sniff::server_name(&head)
                    .context("a database connection must name its service (SNI)")?;
                let channel = self
                    .jump
                    .tunnels
                    .dial_db(&service, addr)
                    .await
                    .with_context(|| format!("no tunnel from database service {service}"))?;
                let mut upstream = channel.into_stream();
                use tokio::io::AsyncWriteExt;
                upstream.write_all(&head).await?;
                tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await?;
                Ok(())
            }
            Protocol::Ssh => {
                METRICS.proxy_connections_ssh.inc();
                jump::serve_ssh(self.jump.clone(), Prefixed::new(head, tcp), addr, pending).await;
                Ok(())
            }
            Protocol::Peer => {
                let tls = handshake(
                    TlsAcceptor::from(self.creds.get().peer_tls.clone()),
                    Prefixed::new(head, tcp),
                )
                .await?;
                let der = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .context("no proxy certificate")?
                    .clone();
                let identity = warden_ca::tls::identity_from_der(&der)?
                    .context("certificate has no Warden identity")?;
                anyhow::ensure!(
                    identity.kind == warden_types::IdentityKind::Proxy,
                    "only proxies peer"
                );
                drop(pending);
                peer::serve_peer(tls, self.jump.tunnels.clone(), addr).await
            }
            Protocol::Tunnel => {
                METRICS.proxy_connections_tunnel.inc();
                let tls = handshake(
                    TlsAcceptor::from(self.creds.get().tunnel_tls.clone()),
                    Prefixed::new(head, tcp),
                )
                .await?;
                let der = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .context("no node certificate")?
                    .clone();
                let identity = warden_ca::tls::identity_from_der(&der)?
                    .context("certificate has no Warden identity")?;
                anyhow::ensure!(
                    identity.kind == warden_types::IdentityKind::Node,
                    "only nodes open tunnels"
                );
                drop(pending);
                tunnel::serve_tunnel(
                    self.creds.get().tunnel_ssh.clone(),
                    tls,
                    identity.username,
                    self.jump.tunnels.clone(),
                )
                .await;
                Ok(())
            }
        }
    }
}
