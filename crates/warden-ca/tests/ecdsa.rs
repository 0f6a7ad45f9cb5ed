//! A CA key that is ECDSA P-256 (what an HSM without Ed25519 gets) signs
//! OpenSSH and X.509 certificates that verify the standard way. The key
//! here is a software P-256 key with the HSM signer's output format
//! (`r || s` over SHA-256), so the adapters are what is tested; the HSM
//! path itself runs in `softhsm.rs` and `warden/tests/hsm.rs`.

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use std::time::{SystemTime, UNIX_EPOCH};
use warden_ca::ssh::{public_key_line, sign_user_cert, UserCert};
use warden_ca::tls::{create_ca_cert, issue_from_csr, pem_to_der, CertRequest, Usage};
use warden_ca::{CaSigner, ClientKey, KeyAlg};

struct P256(EcdsaKeyPair);

impl CaSigner for P256 {
    fn alg(&self) -> KeyAlg {
        KeyAlg::EcdsaP256
    }
    fn public_key(&self) -> Vec<u8> {
        self.0.public_key().as_ref().to_vec()
    }
    fn sign(&self, msg: &[u8]) -> warden_ca::Result<Vec<u8>> {
        Ok(self
            .0
            .sign(&SystemRandom::new(), msg)
            .unwrap()
            .as_ref()
            .to_vec())
    }
}

fn p256() -> P256 {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    P256(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap())
}

#[test]
fn an_ecdsa_ca_signs_what_openssh_and_tls_accept() {
    // Many keys: r and s with a high bit set (DER pads them) or leading
    // zero bytes (SSH and DER strip them) come up among them.
    for _ in 0..20 {
        let ca = p256();
        let sig = ca.sign(b"msg").unwrap();
        assert!(KeyAlg::EcdsaP256.verify(&ca.public_key(), b"msg", &sig));
        assert!(!KeyAlg::EcdsaP256.verify(&ca.public_key(), b"other", &sig));
        assert!(!KeyAlg::Ed25519.verify(&ca.public_key(), b"msg", &sig));

        // OpenSSH: the CA line, and a user certificate that validates
        // against its fingerprint (as nodes and the jump host check).
        let line = public_key_line(&ca, "ecdsa CA").unwrap();
        assert!(line.starts_with("ecdsa-sha2-nistp256 "), "{line}");
        let ca_fp = ssh_key::PublicKey::from_openssh(&line)
            .unwrap()
            .fingerprint(Default::default());
        assert_eq!(
            warden_ca::ssh::fingerprint(KeyAlg::EcdsaP256, &ca.public_key()).unwrap(),
            ca_fp.to_string()
        );
        let client = ClientKey::generate();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let cert = sign_user_cert(
            &ca,
            &UserCert {
                public_key: client.ssh_public_key(),
                username: "alice".into(),
                logins: vec!["alice".into()],
                valid_after: now - 60,
                valid_before: now + 3600,
                serial: 1,
                permit_pty: true,
                permit_port_forwarding: false,
                permit_agent_forwarding: false,
                permit_x11_forwarding: false,
                roles: vec!["access".into()],
                traits: Default::default(),
                requests: vec![],
                cluster: "c1".into(),
                mfa_node: None,
                user_id: "u-1".into(),
            },
        )
        .unwrap();
        cert.validate([&ca_fp]).unwrap();

        // X.509: the CA certificate and a client certificate under it, as
        // rustls verifies them.
        let ca_pem = create_ca_cert(&ca, "c1").unwrap();
        let t = time::OffsetDateTime::now_utc();
        let pem = issue_from_csr(
            &ca,
            &ca_pem,
            &client.csr_pem("alice").unwrap(),
            &CertRequest {
                common_name: "alice".into(),
                dns_names: vec![],
                ips: vec![],
                identity: None,
                not_before: t - time::Duration::minutes(1),
                not_after: t + time::Duration::hours(1),
                usage: Usage::Client,
            },
        )
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pem_to_der(&ca_pem).unwrap().remove(0)).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            rustls::crypto::ring::default_provider().into(),
        )
        .build()
        .unwrap();
        verifier
            .verify_client_cert(
                &pem_to_der(&pem).unwrap()[0],
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .unwrap();
    }
}
