//! User certificate issuing: Warden's CA in process vs `ssh-keygen -s`
//! (OpenSSH's own CA) signing the same kind of certificate.

use std::process::Command;
use std::time::Duration;
use warden_bench::{rate, temp_dir};
use warden_ca::ssh::{sign_user_cert, UserCert};
use warden_ca::{ClientKey, KeyStore, SoftwareKeyStore};

fn main() {
    let dir = temp_dir("ca");
    let ks = SoftwareKeyStore::open_or_create(&dir.join("kek")).expect("kek");
    let ca = ks.load(&ks.generate().expect("key")).expect("load");
    let client = ClientKey::generate();
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    let params = UserCert {
        public_key: client.ssh_public_key(),
        username: "alice".into(),
        logins: vec!["alice".into(), "root".into()],
        valid_after: now - 60,
        valid_before: now + 3600,
        serial: 1,
        permit_pty: true,
        permit_port_forwarding: true,
        permit_agent_forwarding: true,
        permit_x11_forwarding: false,
        roles: vec!["access".into()],
        traits: Default::default(),
        requests: vec![],
        cluster: "bench".into(),
        mfa_node: None,
        user_id: String::new(),
    };
    let warden = rate(Duration::from_secs(2), 100, || {
        sign_user_cert(&*ca, &params).expect("sign");
    });

    // Baseline: OpenSSH's CA, one ssh-keygen process per certificate, as a
    // script around plain OpenSSH would do it.
    let ca_key = dir.join("ca");
    let user_key = dir.join("user");
    for (path, comment) in [(&ca_key, "ca"), (&user_key, "user")] {
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path)
            .status()
            .expect("ssh-keygen (openssh-client) is required")
            .success();
        assert!(ok);
    }
    let openssh = rate(Duration::from_secs(2), 20, || {
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(&ca_key)
            .args([
                "-I",
                "alice",
                "-n",
                "alice,root",
                "-V",
                "-1m:+1h",
                "-z",
                "1",
            ])
            .arg(format!("{}.pub", user_key.display()))
            .status()
            .expect("ssh-keygen")
            .success();
        assert!(ok);
    });
    println!("ca_sign.warden_in_process {warden:.0} certs/s");
    println!("ca_sign.openssh_ssh_keygen {openssh:.0} certs/s");
    println!("ca_sign.ratio {:.1} x", warden / openssh);
    let _ = std::fs::remove_dir_all(dir);
}
