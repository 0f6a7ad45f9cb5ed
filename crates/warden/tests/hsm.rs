//! CA keys in an HSM (a fresh SoftHSM2 token): a new cluster generates
//! its three CA keys inside the token, logins and SSH sessions are signed
//! there, `ca ls` shows where each key lives, and an auth server without
//! the HSM refuses to start instead of failing every login.

mod common;
#[path = "../../warden-ca/tests/support/softhsm.rs"]
mod softhsm;

use common::*;
use softhsm::{softhsm_token, MODULE};

/// Objects (keys) the token holds, counted on disk.
fn token_objects(dir: &std::path::Path) -> usize {
    walk(&dir.join("hsm/tokens"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "object"))
        .count()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn ca_keys_in_an_hsm() {
    let dir = temp_dir("hsm");
    let conf = softhsm_token(&dir.join("hsm"), "warden", "2468");
    // warden inherits it: the module reads it when it loads.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let pin = dir.join("hsm.pin");
    warden_ca::keystore::write_private_file(&pin, b"2468\n").unwrap();
    let hsm = [
        "--hsm-module",
        MODULE,
        "--hsm-token",
        "warden",
        "--hsm-pin-file",
        pin.to_str().unwrap(),
    ];
    let readme = include_str!("../../../README.md");
    assert!(
        readme.contains(
            "warden start --hsm-module /usr/lib/softhsm/libsofthsm2.so --hsm-token warden"
        ) && readme.contains("--hsm-pin-file /etc/warden/hsm.pin"),
        "README.md no longer shows the HSM example"
    );
    let mut c = Cluster::start_with(&dir, &hsm);
    assert!(token_objects(&dir) >= 6, "three key pairs in the token");

    let out = c.admin(&["ca", "ls", "--format", "json"]).expect_ok();
    let keys: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    for ca in ["user", "host", "tls"] {
        let k = keys
            .iter()
            .find(|k| k["ca"] == ca)
            .unwrap_or_else(|| panic!("no {ca} CA in {keys:?}"));
        assert_eq!(k["store"], "pkcs11", "{k}");
        assert_eq!(k["state"], "signing", "{k}");
        assert!(
            k["location"]
                .as_str()
                .unwrap()
                .starts_with("token=warden;id="),
            "{k}"
        );
        assert!(
            k["fingerprint"].as_str().unwrap().starts_with("SHA256:"),
            "{k}"
        );
    }
    let text = c.admin(&["ca", "ls"]).expect_ok().stdout;
    assert!(
        text.contains("pkcs11") && text.contains("signing"),
        "{text}"
    );

    // Certificates signed in the token work end to end.
    let _node = TunnelNode::start(&c, "hsm-1", "env=hsm");
    let secret = c.add_user("alice", "access", "root");
    c.login("alice", "alice", &totp(&secret, 30)).expect_ok();
    c.wait_reachable("alice", "root", "hsm-1");
    let out = c
        .run_as(
            "alice",
            &["ssh", "root@hsm-1", "--", "echo", "signed-in-the-hsm"],
            None,
        )
        .expect_ok();
    assert_eq!(out.stdout.trim(), "signed-in-the-hsm");
    // Stock sshd accepts what the token signed.
    let ca = dir.join("user_ca.pub");
    std::fs::write(
        &ca,
        c.admin(&["ca", "export", "--type", "user"])
            .expect_ok()
            .stdout,
    )
    .unwrap();
    let sshd = PlainSshd::start(&dir, &ca, "");
    let out = sshd.ssh_when_up(&c.keys_dir("alice"), "alice", "root", "echo stock-sshd");
    assert_eq!(out.stdout.trim(), "stock-sshd", "{}", out.all());
    drop(sshd);
    let pin_before = c.pin.clone();

    // Without its HSM the auth server says what is missing and stops.
    c.kill();
    let out = run_program(
        WARDEN,
        &[
            "start".into(),
            "--listen-addr".into(),
            "127.0.0.1:0".into(),
            "--auth-addr".into(),
            "127.0.0.1:0".into(),
            "--node-listen-addr".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            dir.join("data").to_str().unwrap().into(),
        ],
        None,
    );
    assert!(!out.ok, "started without the HSM:\n{}", out.all());
    assert!(
        out.stderr.contains("held in an HSM") && out.stderr.contains("--hsm-module"),
        "{}",
        out.all()
    );
    // With it, the same CA again.
    let c = Cluster::start_with(&dir, &hsm);
    assert_eq!(c.pin, pin_before);
    assert!(token_objects(&dir) >= 6);
}
