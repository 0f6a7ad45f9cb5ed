//! The proxy's certificates in use, and keeping them current: the proxy
//! re-reads the CAs every few seconds; when a rotation step moved them on,
//! or its certificates are half way through their life, it renews its
//! identity (a jump host certificate from the signing host
//! key, TLS certificates from the signing tls key, the new trust for
//! nodes' and peers' certificates) and swaps it in. New connections get
//! the new certificates; open ones are left alone.

use crate::ProxyIdentity;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use warden_client::tls::{ClientCert, ClusterVerifier, Trust};
use warden_client::ApiClient;
use warden_types::endpoints;

/// How often the proxy re-reads the CAs.
const FOLLOW_EVERY: Duration = Duration::from_secs(5);

/// A boxed future, for [`Renew`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Issues the proxy fresh certificates under the CAs as they are now.
pub trait Renew: Send + Sync + 'static {
    /// `current` is the identity in use; `auth` calls auth with it.
    fn renew<'a>(
        &'a self,
        current: &'a ProxyIdentity,
        auth: &'a ApiClient,
    ) -> BoxFuture<'a, anyhow::Result<ProxyIdentity>>;
}

/// Everything built from the proxy's identity that a connection uses.
pub(crate) struct Creds {
    pub tls: Arc<rustls::ServerConfig>,
    pub tunnel_tls: Arc<rustls::ServerConfig>,
    pub peer_tls: Arc<rustls::ServerConfig>,
    pub tunnel_ssh: Arc<russh::server::Config>,
    pub jump_ssh: Arc<russh::server::Config>,
    /// Client config for dialling peer proxies.
    pub peer_client: Arc<rustls::ClientConfig>,
}

/// The certificate browsers get on the public port: they take neither
/// Ed25519 certificates nor the cluster's CA. The operator's (`--web-cert`,
/// `--web-key`: a publicly trusted one), else a P-256 one made up at start
/// (self-signed: the browser warns).
#[derive(Clone, Debug)]
pub struct WebCert(Arc<rustls::sign::CertifiedKey>);

impl WebCert {
    /// A PEM certificate chain and its PEM private key.
    pub fn load(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        use rustls_pki_types::pem::PemObject;
        let chain = rustls_pki_types::CertificateDer::pem_file_iter(cert)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .with_context(|| {
                format!("--web-cert {}: not a PEM certificate chain", cert.display())
            })?;
        anyhow::ensure!(
            !chain.is_empty(),
            "--web-cert {}: no certificate in it",
            cert.display()
        );
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("--web-key {}: not a PEM private key", key.display()))?;
        Self::from_parts(chain, key)
    }

    /// A self-signed P-256 certificate for `names`.
    pub fn self_signed(names: &[String]) -> anyhow::Result<Self> {
        let (pem, key) = warden_ca::tls::self_signed_p256("Warden web UI (self-signed)", names)?;
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.into());
        Self::from_parts(warden_ca::tls::pem_to_der(&pem)?, key)
    }

    fn from_parts(
        chain: Vec<rustls_pki_types::CertificateDer<'static>>,
        key: rustls_pki_types::PrivateKeyDer<'static>,
    ) -> anyhow::Result<Self> {
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| anyhow::anyhow!("the web certificate's key: {e}"))?;
        Ok(WebCert(Arc::new(rustls::sign::CertifiedKey::new(
            chain, signer,
        ))))
    }
}

/// Picks the public port's certificate by what the client can check:
/// Warden's clients (rustls) verify Ed25519 and get the cluster-signed
/// one their pin names; browsers do not, and get the web certificate.
#[derive(Debug)]
struct ByClient {
    cluster: Arc<rustls::sign::CertifiedKey>,
    web: WebCert,
}

impl rustls::server::ResolvesServerCert for ByClient {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(
            match hello
                .signature_schemes()
                .contains(&rustls::SignatureScheme::ED25519)
            {
                true => self.cluster.clone(),
                false => self.web.0.clone(),
            },
        )
    }
}

impl Creds {
    pub fn build(id: &ProxyIdentity, web: &WebCert) -> anyhow::Result<Self> {
        let ssh_key = id.key.ssh_private();
        let ssh_cert = russh::keys::Certificate::from_openssh(id.ssh_host_cert.trim())?;
        Ok(Creds {
            tls: public_tls_config(id, web)?,
            tunnel_tls: tls_config(id, warden_types::ALPN_TUNNEL)?,
            peer_tls: tls_config(id, warden_types::ALPN_PEER)?,
            tunnel_ssh: crate::tunnel::tunnel_ssh_config(ssh_key.clone()),
            jump_ssh: crate::jump::jump_ssh_config(ssh_key, ssh_cert),
            peer_client: warden_client::tls::client_config(
                ClusterVerifier::new(Trust::Roots(id.ca_pems.clone())),
                warden_types::ALPN_PEER,
                Some(&client_cert(id)),
            )?,
        })
    }
}

fn client_cert(id: &ProxyIdentity) -> ClientCert {
    ClientCert {
        cert_pem: id.tls_cert_pem.clone(),
        key_pkcs8: id.key.pkcs8_der().to_vec(),
    }
}

/// The credentials in use, shared by every part of the proxy.
#[derive(Clone)]
pub(crate) struct Current(Arc<RwLock<Arc<Creds>>>);

impl Current {
    pub fn new(creds: Creds) -> Self {
        Current(Arc::new(RwLock::new(Arc::new(creds))))
    }

    pub fn get(&self) -> Arc<Creds> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, creds: Creds) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(creds);
    }
}

/// The proxy's certificate chain and key. The issuing key's CA
/// certificate comes first (auth issues both from one reading of the CA),
/// then the other keys' and the cross certificates between them: a client
/// that pinned another auth server's key finds its path.
fn cluster_cert(id: &ProxyIdentity) -> anyhow::Result<rustls::sign::CertifiedKey> {
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    if id.ca_pems.is_empty() {
        anyhow::bail!("the proxy's identity names no tls CA");
    }
    let mut chain = warden_ca::tls::pem_to_der(&id.tls_cert_pem)?;
    for pem in &id.ca_pems {
        chain.extend(warden_ca::tls::pem_to_der(pem)?);
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.pkcs8_der().to_vec()));
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow::anyhow!("the proxy's key: {e}"))?;
    Ok(rustls::sign::CertifiedKey::new(chain, signer))
}

/// A server TLS config for nodes' tunnels and peers: the proxy's
/// certificate, and client certificates from any trusted tls CA key
/// required.
fn tls_config(id: &ProxyIdentity, alpn: &[u8]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let cert = Arc::new(cluster_cert(id)?);
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(warden_ca::tls::client_cert_verifier(&id.ca_pems)?)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(cert)));
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// The public port's TLS: the cluster-signed certificate, or the web one
/// for browsers (`ByClient`).
fn public_tls_config(
    id: &ProxyIdentity,
    web: &WebCert,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ByClient {
            cluster: Arc::new(cluster_cert(id)?),
            web: web.clone(),
        }));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What [`follow`] keeps current.
pub(crate) struct Following {
    pub identity: ProxyIdentity,
    pub web: WebCert,
    pub current: Current,
    pub auth: ApiClient,
    pub renew: Arc<dyn Renew>,
    /// Fingerprints of the trusted user CA keys (the jump host's).
    pub user_cas: Arc<RwLock<Vec<russh::keys::ssh_key::Fingerprint>>>,
    /// Fingerprints of the trusted host CA keys (the web terminal checks
    /// nodes with them).
    pub host_cas: Arc<RwLock<Vec<russh::keys::ssh_key::Fingerprint>>>,
    /// The generation the proxy holds, reported by its heartbeat.
    pub generation: Arc<RwLock<String>>,
    /// Wakes the heartbeat to report a renewal at once.
    pub renewed: Arc<Notify>,
}

/// Keeps the trusted user CA keys and the proxy's certificates current.
pub(crate) async fn follow(mut f: Following) {
    loop {
        match f.auth.call(&endpoints::PING, &()).await {
            Ok(ping) => {
                let fps = |keys: &[String]| {
                    keys.iter()
                        .filter_map(|k| russh::keys::PublicKey::from_openssh(k).ok())
                        .map(|k| k.fingerprint(russh::keys::HashAlg::Sha256))
                        .collect()
                };
                *f.user_cas.write().unwrap_or_else(|p| p.into_inner()) =
                    fps(&ping.ssh_user_ca_keys);
                *f.host_cas.write().unwrap_or_else(|p| p.into_inner()) =
                    fps(&ping.ssh_host_ca_keys);
                let held = f.identity.ca_generation.clone();
                let moved = !ping.ca_generation.is_empty() && ping.ca_generation != held;
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                // The jump host's certificate comes with it, as long-lived.
                let due = warden_ca::tls::renewal_due(&f.identity.tls_cert_pem, now);
                if moved || due {
                    match renew(&mut f).await {
                        Ok(()) => tracing::info!(
                            generation = %f.identity.ca_generation,
                            "proxy certificates renewed"
                        ),
                        Err(e) => tracing::warn!(
                            error = %format!("{e:#}"),
                            "cannot renew the proxy's certificates"
                        ),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the CAs"),
        }
        // A rotation's new user key is trusted here within seconds (auth
        // waits for nodes and proxies before it signs with it).
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

async fn renew(f: &mut Following) -> anyhow::Result<()> {
    let fresh = f.renew.renew(&f.identity, &f.auth).await?;
    let creds = Creds::build(&fresh, &f.web)?;
    f.auth.set_identity(
        Trust::Roots(fresh.ca_pems.clone()),
        Some(&client_cert(&fresh)),
    )?;
    f.current.set(creds);
    *f.generation.write().unwrap_or_else(|p| p.into_inner()) = fresh.ca_generation.clone();
    f.identity = fresh;
    f.renewed.notify_one();
    Ok(())
}
