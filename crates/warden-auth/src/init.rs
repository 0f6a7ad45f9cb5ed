//! The local admin identity: like a kubeconfig, written into the data dir
//! at start so `warden admin` on the auth host works without a login.

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
}
