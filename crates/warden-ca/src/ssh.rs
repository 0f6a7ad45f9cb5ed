//! OpenSSH certificates.

use crate::keystore::{CaSigner, KeyAlg};
use crate::{random_bytes, CaError, Result};
use ssh_key::certificate::{Builder, CertType, Certificate};
use ssh_key::encoding::Encode;
use ssh_key::public::{EcdsaPublicKey, Ed25519PublicKey, KeyData};
use ssh_key::{Algorithm, EcdsaCurve, Mpint, PublicKey, Signature};
use std::collections::BTreeMap;

/// Principal used when a user may log in nowhere: OpenSSH treats a
/// certificate without principals as valid for *every* login, so an empty
/// list must never be signed. This one cannot be a Unix login (leading '-').
pub const NO_LOGIN_PRINCIPAL: &str = "-warden-no-login";

/// Adapts a [`CaSigner`] to ssh-key's signing traits.
struct SshSigner<'a> {
    ca: &'a dyn CaSigner,
    public: KeyData,
}

impl<'a> SshSigner<'a> {
    fn new(ca: &'a dyn CaSigner) -> Result<Self> {
        Ok(SshSigner {
            public: key_data(ca.alg(), &ca.public_key())?,
            ca,
        })
    }
}

impl signature::Signer<Signature> for SshSigner<'_> {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Signature, signature::Error> {
        let sig = self.ca.sign(msg).map_err(signature::Error::from_source)?;
        match self.ca.alg() {
            KeyAlg::Ed25519 => Signature::new(Algorithm::Ed25519, sig),
            KeyAlg::EcdsaP256 => {
                // RFC 5656: the blob is r and s as mpints.
                let (r, s) = sig.split_at(sig.len() / 2);
                let mut blob = Vec::with_capacity(74);
                for half in [r, s] {
                    Mpint::from_positive_bytes(half)
                        .encode(&mut blob)
                        .map_err(signature::Error::from_source)?;
                }
                Signature::new(
                    Algorithm::Ecdsa {
                        curve: EcdsaCurve::NistP256,
                    },
                    blob,
                )
            }
        }
        .map_err(|_| signature::Error::new())
    }
}

impl ssh_key::SigningKey for SshSigner<'_> {
    fn public_key(&self) -> KeyData {
        self.public.clone()
    }
}

/// A CA public key as ssh-key has it.
pub fn key_data(alg: KeyAlg, public: &[u8]) -> Result<KeyData> {
    let bad = |e: String| CaError::Key(format!("bad {} CA public key: {e}", alg.as_str()));
    Ok(match alg {
        KeyAlg::Ed25519 => KeyData::Ed25519(Ed25519PublicKey(
            public.try_into().map_err(|_| bad("not 32 bytes".into()))?,
        )),
        KeyAlg::EcdsaP256 => {
            KeyData::Ecdsa(EcdsaPublicKey::from_sec1_bytes(public).map_err(|e| bad(e.to_string()))?)
        }
    })
}

/// `ssh-ed25519 AAAA... comment` (or `ecdsa-sha2-nistp256 ...`) for a CA key.
pub fn public_key_line(ca: &dyn CaSigner, comment: &str) -> Result<String> {
    let key = PublicKey::new(key_data(ca.alg(), &ca.public_key())?, comment);
    key.to_openssh().map_err(|e| CaError::Ssh(e.to_string()))
}

/// The SHA256 fingerprint of a CA key, as OpenSSH shows it.
pub fn fingerprint(alg: KeyAlg, public: &[u8]) -> Result<String> {
    Ok(key_data(alg, public)?
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string())
}

/// Extension naming the node a per-session MFA certificate is good for.
pub const MFA_EXTENSION: &str = "mfa-session@warden";
/// The user's uid: certificates of a deleted user stay refused when a
/// new user of the same name is created.
pub const UID_EXTENSION: &str = "uid@warden";

/// What goes into a user certificate (ARCHITECTURE.md §2).
#[derive(Clone, Debug)]
pub struct UserCert {
    pub public_key: PublicKey,
    /// Key id: the username.
    pub username: String,
    pub logins: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
    pub serial: u64,
    pub permit_pty: bool,
    pub permit_port_forwarding: bool,
    pub permit_agent_forwarding: bool,
    pub permit_x11_forwarding: bool,
    pub roles: Vec<String>,
    pub traits: BTreeMap<String, Vec<String>>,
    pub requests: Vec<String>,
    pub cluster: String,
    /// A per-session MFA certificate: the one node it is good for.
    pub mfa_node: Option<String>,
    /// The user's uid (`uid@warden`; omitted when empty).
    pub user_id: String,
}

fn ssh_err(e: ssh_key::Error) -> CaError {
    CaError::Ssh(e.to_string())
}

/// Signs a user certificate with the user CA.
pub fn sign_user_cert(ca: &dyn CaSigner, c: &UserCert) -> Result<Certificate> {
    let mut b = Builder::new(
        random_bytes::<32>().to_vec(),
        c.public_key.key_data().clone(),
        c.valid_after,
        c.valid_before,
    )
    .map_err(ssh_err)?;
    b.serial(c.serial).map_err(ssh_err)?;
    b.cert_type(CertType::User).map_err(ssh_err)?;
    b.key_id(c.username.clone()).map_err(ssh_err)?;
    if c.logins.is_empty() {
        b.valid_principal(NO_LOGIN_PRINCIPAL).map_err(ssh_err)?;
    }
    for l in &c.logins {
        b.valid_principal(l.clone()).map_err(ssh_err)?;
    }
    // Extensions must be sorted by name in the encoding; ssh-key keeps a
    // BTreeMap, so insertion order does not matter.
    let flags = [
        ("permit-X11-forwarding", c.permit_x11_forwarding),
        ("permit-agent-forwarding", c.permit_agent_forwarding),
        ("permit-port-forwarding", c.permit_port_forwarding),
        ("permit-pty", c.permit_pty),
    ];
    for (name, on) in flags {
        if on {
            b.extension(name, "").map_err(ssh_err)?;
        }
    }
    b.extension("roles@warden", json(&c.roles))
        .map_err(ssh_err)?;
    b.extension("traits@warden", json(&c.traits))
        .map_err(ssh_err)?;
    b.extension("requests@warden", json(&c.requests))
        .map_err(ssh_err)?;
    b.extension("cluster@warden", c.cluster.clone())
        .map_err(ssh_err)?;
    if let Some(node) = &c.mfa_node {
        b.extension(MFA_EXTENSION, node.clone()).map_err(ssh_err)?;
    }
    if !c.user_id.is_empty() {
        b.extension(UID_EXTENSION, c.user_id.clone())
            .map_err(ssh_err)?;
    }
    b.comment(c.username.clone()).map_err(ssh_err)?;
    b.sign(&SshSigner::new(ca)?).map_err(ssh_err)
}

/// What goes into a host certificate.
#[derive(Clone, Debug)]
pub struct HostCert {
    pub public_key: PublicKey,
    /// Key id: the node id.
    pub host_id: String,
    /// Node id, node name, addresses.
    pub principals: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
    pub cluster: String,
}

/// Signs a host certificate with the host CA.
pub fn sign_host_cert(ca: &dyn CaSigner, c: &HostCert) -> Result<Certificate> {
    if c.principals.is_empty() {
        return Err(CaError::Ssh("a host certificate needs principals".into()));
    }
    let mut b = Builder::new(
        random_bytes::<32>().to_vec(),
        c.public_key.key_data().clone(),
        c.valid_after,
        c.valid_before,
    )
    .map_err(ssh_err)?;
    b.cert_type(CertType::Host).map_err(ssh_err)?;
    b.key_id(c.host_id.clone()).map_err(ssh_err)?;
    for p in &c.principals {
        b.valid_principal(p.clone()).map_err(ssh_err)?;
    }
    b.extension("cluster@warden", c.cluster.clone())
        .map_err(ssh_err)?;
    b.sign(&SshSigner::new(ca)?).map_err(ssh_err)
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::{KeyStore, SoftwareKeyStore};
    use crate::ClientKey;

    #[test]
    fn user_cert_is_valid_and_carries_identity() {
        let dir = std::env::temp_dir().join(format!(
            "warden-ssh-{}",
            crate::sha256_hex(&random_bytes::<8>())
        ));
        let ks = SoftwareKeyStore::open_or_create(&dir.join("kek")).unwrap();
        let ca = ks.load(&ks.generate().unwrap()).unwrap();
        let client = ClientKey::generate();
        let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
        let cert = sign_user_cert(
            &*ca,
            &UserCert {
                public_key: client.ssh_public_key(),
                username: "alice".into(),
                logins: vec!["alice".into(), "root".into()],
                valid_after: now - 60,
                valid_before: now + 3600,
                serial: 7,
                permit_pty: true,
                permit_port_forwarding: true,
                permit_agent_forwarding: false,
                permit_x11_forwarding: false,
                roles: vec!["access".into()],
                traits: [("logins".to_string(), vec!["alice".to_string()])].into(),
                requests: vec![],
                cluster: "c1".into(),
                mfa_node: None,
                user_id: "u-1".into(),
            },
        )
        .unwrap();
        let ca_fp = PublicKey::from_openssh(&public_key_line(&*ca, "ca").unwrap())
            .unwrap()
            .fingerprint(Default::default());
        cert.validate([&ca_fp]).unwrap();
        assert_eq!(cert.key_id(), "alice");
        assert_eq!(cert.valid_principals(), ["alice", "root"]);
        assert_eq!(cert.cert_type(), CertType::User);
        assert_eq!(cert.serial(), 7);
        let ext = cert.extensions();
        assert!(ext.contains_key("permit-pty") && ext.contains_key("permit-port-forwarding"));
        assert!(!ext.contains_key("permit-agent-forwarding"));
        assert_eq!(ext["roles@warden"], r#"["access"]"#);
        // Another CA's fingerprint does not validate it.
        let other = ks.load(&ks.generate().unwrap()).unwrap();
        let other_fp = PublicKey::from_openssh(&public_key_line(&*other, "x").unwrap())
            .unwrap()
            .fingerprint(Default::default());
        assert!(cert.validate([&other_fp]).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
