//! The auth API's mTLS listener: every connection must present a client
//! certificate issued by the cluster's tls CA; its identity extension tells
//! the handlers who is calling.

use crate::api::{router, Caller};
use crate::server::AuthServer;
use anyhow::Context;
use axum::Extension;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use warden_ca::tls::{identity_from_der, pem_to_der};

/// Time a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once: each node holds one for its lock long poll
/// and, briefly, a kept-alive one for its other calls.
const MAX_CONNECTIONS: usize = 50_000;

/// Builds the TLS config of the auth API: server cert `warden-auth`,
/// client certs required and verified against the tls CA.
pub async fn tls_config(server: &AuthServer) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let id = server.server_identity().await?;
    let verifier = warden_ca::tls::client_cert_verifier(&id.ca_pems)?;
    // The issuer's CA certificate first, then the others and the cross
    // certificates: a client that trusts another auth server's key finds
    // its path (`warden_ca::CertAuthority::cross`).
    let mut chain = pem_to_der(&id.cert_pem)?;
    for pem in &id.ca_pems {
        chain.extend(pem_to_der(pem)?);
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.pkcs8_der().to_vec()));
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("auth TLS config")?;
    config.alpn_protocols = vec![warden_types::ALPN_AUTH.to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The listener's TLS acceptor, rebuilt whenever a CA rotation step moves
/// the CA generation (the new trust applies to the next handshake and the
/// server certificate comes from the signing key) and when its certificate
/// is half way through its life. The receiver counts rotation steps: open
/// connections end (gracefully) at each, so none outlives the trust it was
/// verified under.
async fn current_acceptor(
    server: &AuthServer,
) -> anyhow::Result<(
    Arc<std::sync::RwLock<TlsAcceptor>>,
    tokio::sync::watch::Receiver<u64>,
    tokio::task::JoinHandle<()>,
)> {
    let mut generations = server.ca_generations().await?;
    let (steps_tx, steps) = tokio::sync::watch::channel(0u64);
    let current = Arc::new(std::sync::RwLock::new(TlsAcceptor::from(
        tls_config(server).await?,
    )));
    let (server, shared) = (server.clone(), current.clone());
    // Its certificate is renewed at half-life too.
    let half_life = || {
        tokio::time::Instant::now()
            + Duration::from_secs(crate::nodes::SERVICE_CERT_TTL.whole_seconds() as u64 / 2)
    };
    let task = tokio::spawn(async move {
        let mut renew_at = half_life();
        // A step whose new configuration could not be built yet.
        let mut stepped = false;
        loop {
            tokio::select! {
                changed = generations.changed() => match changed {
                    Ok(()) => stepped = true,
                    Err(_) => return,
                },
                _ = tokio::time::sleep_until(renew_at) => {}
            }
            match tls_config(&server).await {
                Ok(config) => {
                    *shared.write().unwrap_or_else(|p| p.into_inner()) = TlsAcceptor::from(config);
                    tracing::info!(
                        generation = %*generations.borrow(),
                        "the auth API's server certificate was renewed"
                    );
                    if std::mem::take(&mut stepped) {
                        steps_tx.send_modify(|n| *n += 1);
                    }
                    renew_at = half_life();
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot renew the auth API's TLS");
                    renew_at = tokio::time::Instant::now() + Duration::from_secs(5);
                }
            }
        }
    });
    Ok((current, steps, task))
}

/// Serves the auth API on `listener` until `shutdown` completes.
pub async fn serve_mtls(
    server: AuthServer,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (acceptor, steps, follow) = current_acceptor(&server).await?;
    // Stops following the CAs when this listener stops.
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _follow = Abort(follow);
    let app = router(server.clone());
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
        // Responses go out as several TLS records: without this, Nagle and
        // the peer's delayed ACK hold each call up by ~40 ms.
        let _ = tcp.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%addr, "connection limit reached; closing");
            continue;
        };
        let acceptor = acceptor.read().unwrap_or_else(|p| p.into_inner()).clone();
        let app = app.clone();
        let cluster = server.cluster().to_string();
        let mut steps = steps.clone();
        steps.borrow_and_update();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = handle(tcp, addr, acceptor, app, &cluster, steps).await {
                tracing::debug!(%addr, error = %e, "auth connection ended");
            }
        });
    }
}

async fn handle(
    tcp: TcpStream,
    addr: std::net::SocketAddr,
    acceptor: TlsAcceptor,
    app: axum::Router,
    cluster: &str,
    mut steps: tokio::sync::watch::Receiver<u64>,
) -> anyhow::Result<()> {
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .context("TLS handshake timed out")??;
    let der = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no client certificate")?
        .clone();
    let identity = identity_from_der(&der)?.context("client certificate has no Warden identity")?;
    anyhow::ensure!(
        identity.cluster == cluster,
        "certificate is for cluster {}",
        identity.cluster
    );
    // The raw public key: a user's one key signs both TLS and SSH, so calls
    // can be bound to it.
    let public_key = warden_ca::tls::public_key_raw(&der).unwrap_or_default();
    let not_after = warden_ca::tls::not_after(&der)?;
    let caller = Caller {
        identity,
        addr,
        public_key,
        not_after,
    };
    let svc = TowerToHyperService::new(app.layer(Extension(caller)));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r?,
        Ok(()) = steps.changed() => {
            // A rotation step: the certificate this connection was verified
            // with may no longer be trusted. The call in flight finishes;
            // the client reconnects under the trust in force now.
            conn.as_mut().graceful_shutdown();
            conn.await?;
        }
    }
    Ok(())
}
