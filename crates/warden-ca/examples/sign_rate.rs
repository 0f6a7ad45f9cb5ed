//! OpenSSH user certificates signed per second by a CA key in the
//! software store and by Ed25519 and ECDSA P-256 keys in a PKCS#11 token,
//! in the same run (`bench/hsm.sh` sets the token up).
//!
//! `sign_rate N` with WARDEN_HSM_MODULE, WARDEN_HSM_TOKEN and
//! WARDEN_HSM_PIN naming the token; prints one line per store.

use std::time::Instant;
use warden_ca::pkcs11::{HsmConfig, Pkcs11KeyStore};
use warden_ca::ssh::{sign_user_cert, UserCert};
use warden_ca::{CaSigner, ClientKey, KeyAlg, KeyStore, SoftwareKeyStore};

fn rate(name: &str, ca: &dyn CaSigner, n: u32) -> f64 {
    let client = ClientKey::generate();
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    let cert = |serial| UserCert {
        public_key: client.ssh_public_key(),
        username: "alice".into(),
        logins: vec!["alice".into(), "root".into()],
        valid_after: now - 60,
        valid_before: now + 3600,
        serial,
        permit_pty: true,
        permit_port_forwarding: true,
        permit_agent_forwarding: false,
        permit_x11_forwarding: false,
        roles: vec!["access".into()],
        traits: Default::default(),
        requests: vec![],
        cluster: "bench".into(),
        mfa_node: None,
        user_id: "u-1".into(),
    };
    let start = Instant::now();
    for i in 0..n {
        sign_user_cert(ca, &cert(u64::from(i))).expect("signs");
    }
    let per_s = f64::from(n) / start.elapsed().as_secs_f64();
    println!(
        "{name}: {n} certificates in {:?}: {per_s:.0}/s",
        start.elapsed()
    );
    per_s
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("set {k}"));
    let kek = std::env::temp_dir().join(format!("warden-sign-rate-{}", std::process::id()));
    let software = SoftwareKeyStore::open_or_create(&kek).unwrap();
    let soft = software.load(&software.generate().unwrap()).unwrap();
    let _ = std::fs::remove_file(&kek);
    let token = Pkcs11KeyStore::open(&HsmConfig {
        module: var("WARDEN_HSM_MODULE").into(),
        token: var("WARDEN_HSM_TOKEN"),
        pin: zeroize::Zeroizing::new(var("WARDEN_HSM_PIN")),
        key_type: None,
    })
    .unwrap();
    let hsm = |alg| {
        let store = token.with_key_type(Some(alg)).unwrap();
        store.load(&store.generate().unwrap()).unwrap()
    };
    let ed = hsm(KeyAlg::Ed25519);
    let ec = hsm(KeyAlg::EcdsaP256);
    let s = rate("software", &*soft, n);
    let h = rate("pkcs11 ed25519", &*ed, n);
    let e = rate("pkcs11 ecdsa-p256", &*ec, n);
    println!("ratio pkcs11 ed25519/software: {:.2}x", h / s);
    println!("ratio pkcs11 ecdsa-p256/software: {:.2}x", e / s);
}
