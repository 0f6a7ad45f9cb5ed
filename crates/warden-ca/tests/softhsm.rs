//! The PKCS#11 key store against a real token: Debian's SoftHSM2, created
//! fresh here. Keys are generated inside the token and never leave it;
//! what they sign verifies with the public key the handle records.

mod support;

use support::softhsm::{softhsm_token, MODULE};
use warden_ca::pkcs11::{HsmConfig, Pkcs11KeyStore};
use warden_ca::{KeyAlg, KeyStore};
use zeroize::Zeroizing;

#[test]
fn ca_keys_live_and_sign_in_the_token() {
    let dir = std::env::temp_dir().join(format!("warden-softhsm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let conf = softhsm_token(&dir, "warden-test", "4321");
    // The module reads this when it loads (once per process).
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let config = |token: &str, pin: &str| HsmConfig {
        module: MODULE.into(),
        token: token.into(),
        pin: Zeroizing::new(pin.into()),
        key_type: None,
    };
    let e = Pkcs11KeyStore::open(&config("no-such-token", "4321"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("no token labelled") && e.contains("warden-test"),
        "{e}"
    );
    let e = Pkcs11KeyStore::open(&config("warden-test", "9999"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("check the PIN"), "{e}");

    let store = Pkcs11KeyStore::open(&config("warden-test", "4321")).unwrap();
    let handle = store.generate().unwrap();
    assert_eq!(handle.store, "pkcs11");
    assert!(
        handle.data.starts_with("token=warden-test;id="),
        "{}",
        handle.data
    );
    let signer = store.load(&handle).unwrap();
    let public = signer.public_key();
    assert_eq!(data_encoding::HEXLOWER.encode(&public), handle.public_key);
    // SoftHSM2 offers Ed25519, so that is what it gets by default.
    assert_eq!(
        (store.alg(), handle.alg),
        (KeyAlg::Ed25519, KeyAlg::Ed25519)
    );
    let sig = signer.sign(b"hello").unwrap();
    assert!(
        KeyAlg::Ed25519.verify(&public, b"hello", &sig),
        "the token's signature verifies"
    );

    // A token that dropped the login (restarted, timed out) costs one
    // retry, not every signature until a restart.
    store.logout().unwrap();
    let sig = signer.sign(b"again").unwrap();
    assert!(
        KeyAlg::Ed25519.verify(&public, b"again", &sig),
        "signed after logging in again"
    );

    // A CA certificate and an OpenSSH public key line built on it.
    let pem = warden_ca::tls::create_ca_cert(&*signer, "hsm-cluster").unwrap();
    assert!(pem.contains("BEGIN CERTIFICATE"));
    let line = warden_ca::ssh::public_key_line(&*signer, "hsm user CA").unwrap();
    assert!(line.starts_with("ssh-ed25519 "), "{line}");

    // A handle whose key is not in the token, or not this key, is refused.
    let other = warden_ca::KeyHandle {
        data: format!("token=warden-test;id={}", "ab".repeat(16)),
        ..handle.clone()
    };
    let e = store.load(&other).err().unwrap().to_string();
    assert!(e.contains("holds no key"), "{e}");
    let wrong_public = warden_ca::KeyHandle {
        public_key: "00".repeat(32),
        ..handle.clone()
    };
    assert!(store.load(&wrong_public).is_err());

    // ECDSA P-256, as for a token without Ed25519: chosen here by hand
    // (the automatic choice is unit-tested on mechanism lists). Both kinds
    // live in one token; each handle says which it is.
    let p256 = store.with_key_type(Some(KeyAlg::EcdsaP256)).unwrap();
    let ec = p256.generate().unwrap();
    assert_eq!(ec.alg, KeyAlg::EcdsaP256);
    let ec_signer = p256.load(&ec).unwrap();
    assert_eq!(ec_signer.public_key().len(), 65);
    let sig = ec_signer.sign(b"hello").unwrap();
    assert!(KeyAlg::EcdsaP256.verify(&ec_signer.public_key(), b"hello", &sig));
    let line = warden_ca::ssh::public_key_line(&*ec_signer, "hsm user CA").unwrap();
    assert!(line.starts_with("ecdsa-sha2-nistp256 "), "{line}");
    assert!(warden_ca::tls::create_ca_cert(&*ec_signer, "hsm-cluster").is_ok());
    // Either store loads either kind from the token.
    assert!(store.load(&ec).is_ok() && p256.load(&handle).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}
