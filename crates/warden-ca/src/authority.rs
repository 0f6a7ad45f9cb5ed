//! The stored form of a certificate authority.

use crate::keystore::{KeyHandle, KeyStore};
use crate::{ssh, tls, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaType {
    /// Signs OpenSSH user certificates.
    User,
    /// Signs OpenSSH host certificates.
    Host,
    /// Signs X.509 certificates for the API and tunnels.
    Tls,
}

impl CaType {
    pub const ALL: [CaType; 3] = [CaType::User, CaType::Host, CaType::Tls];

    pub fn as_str(self) -> &'static str {
        match self {
            CaType::User => "user",
            CaType::Host => "host",
            CaType::Tls => "tls",
        }
    }
}

/// One CA key with its public forms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaKey {
    pub handle: KeyHandle,
    /// `ssh-ed25519 AAAA...` for the SSH CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_public_key: Option<String>,
    /// Self-signed CA certificate for the tls CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_pem: Option<String>,
    /// Unix seconds.
    pub created: i64,
}

/// A CA: the keys that sign now and every key that is still trusted. Several
/// keys may be trusted at once, so keys can rotate without an outage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertAuthority {
    pub kind: CaType,
    pub cluster: String,
    /// The first key signs; all are trusted.
    pub active: Vec<CaKey>,
    /// Keys still trusted but no longer signing (public parts only).
    #[serde(default)]
    pub trusted: Vec<CaKey>,
}

impl CertAuthority {
    /// A new CA with one fresh key.
    pub fn generate(kind: CaType, cluster: &str, store: &dyn KeyStore) -> Result<Self> {
        let handle = store.generate()?;
        let signer = store.load(&handle)?;
        let mut key = CaKey {
            handle,
            ssh_public_key: None,
            tls_cert_pem: None,
            created: time::OffsetDateTime::now_utc().unix_timestamp(),
        };
        match kind {
            CaType::User | CaType::Host => {
                key.ssh_public_key = Some(ssh::public_key_line(
                    &*signer,
                    &format!("{cluster} {} CA", kind.as_str()),
                )?)
            }
            CaType::Tls => key.tls_cert_pem = Some(tls::create_ca_cert(&*signer, cluster)?),
        }
        Ok(CertAuthority {
            kind,
            cluster: cluster.to_string(),
            active: vec![key],
            trusted: Vec::new(),
        })
    }

    /// The key that signs new certificates.
    pub fn signing_key(&self) -> Option<&CaKey> {
        self.active.first()
    }

    fn all(&self) -> impl Iterator<Item = &CaKey> {
        self.active.iter().chain(self.trusted.iter())
    }

    /// Every trusted OpenSSH public key line.
    pub fn ssh_public_keys(&self) -> Vec<String> {
        self.all()
            .filter_map(|k| k.ssh_public_key.clone())
            .collect()
    }

    /// Every trusted CA certificate (PEM).
    pub fn tls_cert_pems(&self) -> Vec<String> {
        self.all().filter_map(|k| k.tls_cert_pem.clone()).collect()
    }
}
