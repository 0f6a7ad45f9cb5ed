//! A standalone proxy's identity: joined once with a proxy token through
//! an existing proxy, persisted in `<data-dir>/proxy`, and renewed with
//! its own certificate when a CA rotates.

use crate::creds::{BoxFuture, Renew};
use crate::ProxyIdentity;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use warden_ca::keystore::write_private_file;
use warden_ca::ClientKey;
use warden_client::login::public_client;
use warden_client::tls::Trust;
use warden_client::ApiClient;
use warden_types::api::{JoinRequest, NodeCerts, RenewNodeRequest};
use warden_types::endpoints;
use warden_types::{Secret, TokenKind};

/// How a new proxy joins: through `via` (an existing proxy), with a token,
/// verifying the cluster by pin.
pub struct Join {
    pub via: String,
    pub token: String,
    pub ca_pin: String,
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

impl ProxyIdentity {
    /// Loads `<data-dir>/proxy`, or joins and saves it.
    pub async fn load_or_join(
        data_dir: &Path,
        join: Option<Join>,
        public_addrs: Vec<String>,
    ) -> anyhow::Result<Self> {
        let dir = data_dir.join("proxy");
        let (key, certs) = if dir.join("certs.json").exists() {
            let key = ClientKey::from_openssh(&read(&dir.join("key"))?)?;
            let certs: NodeCerts = serde_json::from_str(&read(&dir.join("certs.json"))?)?;
            (key, certs)
        } else {
            let Some(join) = join else {
                bail!("this proxy has not joined a cluster yet: pass --proxy (an existing proxy), --token (from 'warden admin tokens add --type proxy') and --ca-pin");
            };
            let key = ClientKey::generate();
            let req = JoinRequest {
                token: Secret::new(join.token),
                name: "proxy".into(),
                ssh_public_key: key.ssh_public_key().to_openssh()?,
                tls_csr_pem: key.csr_pem("proxy")?,
                addrs: public_addrs.clone(),
                kind: TokenKind::Proxy,
            };
            let certs: NodeCerts = public_client(&join.via, Trust::Pin(join.ca_pin))?
                .call(&endpoints::JOIN, &req)
                .await
                .context("cannot join the cluster")?;
            std::fs::create_dir_all(&dir)?;
            write_private_file(&dir.join("key"), key.to_openssh()?.as_bytes())?;
            write_private_file(&dir.join("certs.json"), &serde_json::to_vec_pretty(&certs)?)?;
            (key, certs)
        };
        Ok(identity(key, certs, public_addrs))
    }
}

fn identity(key: ClientKey, certs: NodeCerts, public_addrs: Vec<String>) -> ProxyIdentity {
    ProxyIdentity {
        id: certs.node_id,
        public_addrs,
        key,
        tls_cert_pem: certs.tls_cert_pem,
        ca_pems: certs.tls_ca_pems,
        ssh_host_cert: certs.ssh_host_cert,
        ca_generation: certs.ca_generation,
    }
}

/// Renews a joined proxy's certificates for its key, and saves them.
pub struct Joined {
    /// `<data-dir>/proxy`.
    pub dir: PathBuf,
}

impl Joined {
    pub fn new(data_dir: &Path) -> Self {
        Joined {
            dir: data_dir.join("proxy"),
        }
    }
}

impl Renew for Joined {
    fn renew<'a>(
        &'a self,
        current: &'a ProxyIdentity,
        auth: &'a ApiClient,
    ) -> BoxFuture<'a, anyhow::Result<ProxyIdentity>> {
        Box::pin(async move {
            let req = RenewNodeRequest {
                ssh_public_key: current.key.ssh_public_key().to_openssh()?,
                tls_csr_pem: current.key.csr_pem("proxy")?,
                addrs: current.public_addrs.clone(),
            };
            let mut certs: NodeCerts = auth.call(&endpoints::PROXY_CERTS, &req).await?;
            certs.node_id = current.id.clone();
            write_private_file(
                &self.dir.join("certs.json"),
                &serde_json::to_vec_pretty(&certs)?,
            )?;
            Ok(identity(
                current.key.clone(),
                certs,
                current.public_addrs.clone(),
            ))
        })
    }
}
