//! The key pair a client gets certified: one Ed25519 key serves as the
//! OpenSSH identity and as the TLS client key.

use crate::{random_bytes, CaError, Result};
use ssh_key::private::{Ed25519Keypair, KeypairData};
use ssh_key::{LineEnding, PrivateKey, PublicKey};
use zeroize::Zeroizing;

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410): the DER header
/// before the 32-byte seed.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A client's private key (a clone is another zeroized copy).
#[derive(Clone)]
pub struct ClientKey {
    seed: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey([redacted])")
    }
}

impl ClientKey {
    pub fn generate() -> Self {
        ClientKey {
            seed: Zeroizing::new(random_bytes::<32>()),
        }
    }

    /// Loads a key written by [`ClientKey::to_openssh`].
    pub fn from_openssh(pem: &str) -> Result<Self> {
        let key = PrivateKey::from_openssh(pem).map_err(|e| CaError::Key(e.to_string()))?;
        match key.key_data() {
            KeypairData::Ed25519(pair) => Ok(ClientKey {
                seed: Zeroizing::new(pair.private.to_bytes()),
            }),
            _ => Err(CaError::Key("expected an Ed25519 key".into())),
        }
    }

    /// The key as an ssh-key value: the same ssh-key version russh
    /// re-exports, so SSH servers take it as it is.
    pub fn ssh_private(&self) -> PrivateKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&self.seed))
    }

    /// OpenSSH private key file contents.
    pub fn to_openssh(&self) -> Result<Zeroizing<String>> {
        self.ssh_private()
            .to_openssh(LineEnding::LF)
            .map_err(|e| CaError::Key(e.to_string()))
    }

    pub fn ssh_public_key(&self) -> PublicKey {
        self.ssh_private().public_key().clone()
    }

    /// PKCS#8 DER, for rustls and rcgen.
    pub fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let mut der = Zeroizing::new(PKCS8_ED25519_PREFIX.to_vec());
        der.extend_from_slice(&*self.seed);
        der
    }

    /// A PEM CSR proving possession of this key.
    pub fn csr_pem(&self, common_name: &str) -> Result<String> {
        let pair = rcgen::KeyPair::try_from(&self.pkcs8_der()[..])
            .map_err(|e| CaError::Key(e.to_string()))?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params
            .serialize_request(&pair)
            .and_then(|csr| csr.pem())
            .map_err(|e| CaError::X509(e.to_string()))
    }

    /// Raw Ed25519 public key.
    pub fn public_raw(&self) -> [u8; 32] {
        Ed25519Keypair::from_seed(&self.seed).public.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssh_round_trip_and_one_key_for_both() {
        let k = ClientKey::generate();
        let again = ClientKey::from_openssh(&k.to_openssh().unwrap()).unwrap();
        assert_eq!(k.public_raw(), again.public_raw());
        let pair = rcgen::KeyPair::try_from(&k.pkcs8_der()[..]).unwrap();
        use rcgen::PublicKeyData;
        assert_eq!(pair.der_bytes(), &k.public_raw()[..]);
        assert!(k.csr_pem("alice").unwrap().contains("CERTIFICATE REQUEST"));
    }
}
