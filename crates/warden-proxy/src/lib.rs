//! The proxy: the cluster's one public port.
//!
//! Each connection on :3080 is sniffed (ARCHITECTURE.md §5):
//! - TLS with ALPN `warden-auth` is passed through, still encrypted, to the
//!   auth service (mTLS end to end between client and auth);
//! - other TLS is terminated here and served the public login API;
//! - SSH and `warden-tunnel` arrive with the proxy issue and are refused
//!   with a log line for now.

mod prefixed;
mod public;
mod sniff;

pub use public::public_router;

use anyhow::Context;
use prefixed::Prefixed;
use sniff::{sniff, Protocol};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use warden_client::ApiClient;

/// Time a client has to send its first bytes (SSH banner or ClientHello).
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to finish a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; past this, new ones are closed at accept.
pub const MAX_CONNECTIONS: usize = 10_000;

/// What the proxy needs to run.
pub struct Proxy {
    /// Address of the auth API, for passthrough.
    pub auth_addr: String,
    /// The proxy's public TLS config (cert issued by the cluster's tls CA).
    pub tls: Arc<rustls::ServerConfig>,
    /// mTLS client of the auth API with the proxy's own identity.
    pub auth: ApiClient,
}

impl Proxy {
    /// Serves `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let this = Arc::new(self);
        let app = public_router(this.auth.clone());
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
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
                _ = &mut shutdown => return Ok(()),
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(%addr, "connection limit reached; closing");
                continue;
            };
            let this = this.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = this.handle(tcp, addr, app).await {
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
    ) -> anyhow::Result<()> {
        let _ = tcp.set_nodelay(true);
        let (protocol, head) = tokio::time::timeout(SNIFF_TIMEOUT, sniff(&mut tcp))
            .await
            .context("client sent nothing")??;
        match protocol {
            Protocol::AuthPassthrough => {
                let mut upstream = TcpStream::connect(&self.auth_addr)
                    .await
                    .with_context(|| format!("auth at {} unreachable", self.auth_addr))?;
                let _ = upstream.set_nodelay(true);
                use tokio::io::AsyncWriteExt;
                upstream.write_all(&head).await?;
                tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await?;
                Ok(())
            }
            Protocol::Web => {
                let tls = tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    TlsAcceptor::from(self.tls.clone()).accept(Prefixed::new(head, tcp)),
                )
                .await
                .context("TLS handshake timed out")?
                .context("TLS handshake")?;
                let app = app.layer(axum::Extension(public::ClientAddr(addr)));
                hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tls),
                        hyper_util::service::TowerToHyperService::new(app),
                    )
                    .await?;
                Ok(())
            }
            Protocol::Ssh => {
                anyhow::bail!("SSH on the proxy port is not served yet (proxy issue)")
            }
            Protocol::Tunnel => {
                anyhow::bail!("reverse tunnels are not served yet (proxy issue)")
            }
        }
    }
}
