//! The local admin identity: like a kubeconfig, written into the data dir
//! at start so `warden admin` on the auth host works without a login, and
//! written again whenever a CA rotation step moves the CAs (and daily).

use crate::server::AuthServer;
use std::path::Path;
use time::Duration;
use warden_ca::keystore::write_private_file;
pub use warden_types::api::AdminConfig;
use warden_types::IdentityKind;

/// Sub-directory of the data dir that holds the admin identity.
pub const ADMIN_DIR: &str = "admin";

/// Lifetime of the admin certificate; it is re-issued at every start.
const ADMIN_TTL: Duration = Duration::days(30);

impl AuthServer {
    /// Issues a fresh admin identity and writes it (0600) with the addresses
    /// needed to reach this cluster.
    pub async fn write_admin_identity(
        &self,
        data_dir: &Path,
        auth_addr: &str,
        proxy_addr: Option<&str>,
    ) -> anyhow::Result<()> {
        let id = self
            .issue_service_identity(IdentityKind::Admin, "admin", vec![], vec![], ADMIN_TTL)
            .await?;
        let dir = data_dir.join(ADMIN_DIR);
        crate::server::create_private_dir(&dir)?;
        write_private_file(&dir.join("identity"), id.key.to_openssh()?.as_bytes())?;
        write_private_file(&dir.join("identity.crt"), id.cert_pem.as_bytes())?;
        write_private_file(&dir.join("ca.pem"), id.ca_pems.join("").as_bytes())?;
        let config = AdminConfig {
            cluster: self.cluster().to_string(),
            auth_addr: auth_addr.to_string(),
            proxy_addr: proxy_addr.map(str::to_string),
            ca_pin: self.ca_pin().await?,
        };
        write_private_file(
            &dir.join("config.json"),
            &serde_json::to_vec_pretty(&config)?,
        )?;
        Ok(())
    }

    /// Writes the admin identity now, then keeps it current while the
    /// service runs: after each CA rotation step (within seconds) and
    /// once a day, so it never runs out.
    pub async fn keep_admin_identity(
        &self,
        data_dir: &Path,
        auth_addr: &str,
        proxy_addr: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut generations = self.ca_generations().await?;
        self.write_admin_identity(data_dir, auth_addr, proxy_addr)
            .await?;
        let (s, dir, auth, proxy) = (
            self.clone(),
            data_dir.to_path_buf(),
            auth_addr.to_string(),
            proxy_addr.map(str::to_string),
        );
        tokio::spawn(async move {
            let mut next = REWRITE_EVERY;
            loop {
                tokio::select! {
                    changed = generations.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(next) => {}
                }
                next = match s.write_admin_identity(&dir, &auth, proxy.as_deref()).await {
                    Ok(()) => REWRITE_EVERY,
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "cannot renew the admin identity");
                        std::time::Duration::from_secs(5)
                    }
                };
            }
        });
        Ok(())
    }
}

/// The admin identity is re-issued this often while auth runs.
const REWRITE_EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
