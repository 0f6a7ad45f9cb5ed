//! Certificate authorities: key storage behind [`KeyStore`], OpenSSH user
//! and host certificates, X.509 certificates for the API and tunnels, and
//! the client-side key material that gets certified.
//!
//! All CA keys are Ed25519. Signing goes through [`CaSigner`] so a PKCS#11
//! key store can replace the software one without touching callers.

pub mod authority;
pub mod client_key;
pub mod jwt;
pub mod keystore;
pub mod krl;
pub mod otp;
pub mod pkcs11;
pub mod ssh;
pub mod tls;

pub use authority::{
    CaKey, CaType, CertAuthority, CrossCert, Phase, Rotation, RotationError, Wait,
};
pub use client_key::ClientKey;
pub use keystore::{CaSigner, KeyAlg, KeyHandle, KeyStore, SoftwareKeyStore};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CaError {
    #[error("key-encryption key {path}: {reason}")]
    Kek { path: String, reason: String },
    #[error("cannot decrypt CA key: wrong key-encryption key or corrupted data")]
    Decrypt,
    #[error("key store {0:?} is not available in this build")]
    UnknownKeyStore(String),
    #[error("invalid key: {0}")]
    Key(String),
    #[error("ssh certificate: {0}")]
    Ssh(String),
    #[error("x509: {0}")]
    X509(String),
    #[error("HSM: {0}")]
    Hsm(String),
}

pub type Result<T> = std::result::Result<T, CaError>;

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// Cryptographically random bytes from the OS.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the OS random number generator failed");
    out
}
