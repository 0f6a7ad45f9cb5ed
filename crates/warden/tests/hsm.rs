//! CA keys in an HSM (a fresh SoftHSM2 token): a new cluster generates
//! its four CA keys inside the token, logins and SSH sessions are signed
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
    assert!(token_objects(&dir) >= 8, "four key pairs in the token");

    let out = c.admin(&["ca", "ls", "--format", "json"]).expect_ok();
    let keys: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    for ca in ["user", "host", "tls", "db"] {
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
    drop(c);

    // An existing cluster moves its software keys into an HSM: restarted
    // with it, each CA rotates, and the new keys are made in the token.
    // Here they are ECDSA P-256, as for a token without Ed25519 (forced:
    // SoftHSM2 has both). Everything works the same: the proxy's and
    // node's TLS, user certificates at the node and the jump host, host
    // certificates in known_hosts, and stock sshd.
    let ec_dir = temp_dir("hsm-ec");
    let base = ["--name", "ec-box", "--heartbeat-interval", "1s"];
    let mut c = Cluster::start_with(&ec_dir, &base);
    c.kill();
    let mut ec_args = hsm.to_vec();
    ec_args.extend(["--hsm-key-type", "ecdsa-p256"]);
    ec_args.extend(base);
    let mut c = Cluster::start_with(&ec_dir, &ec_args);
    for ca in ["user", "host", "tls", "db"] {
        for phase in ["init", "switch", "drop"] {
            // A tls step waits until every node and proxy confirms the last.
            let mut done = false;
            for _ in 0..100 {
                if c.admin(&["ca", "rotate", "--type", ca, "--phase", phase])
                    .ok
                {
                    done = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            assert!(done, "{ca} {phase} was never accepted");
            // Nodes renew with their next heartbeat; the admin identity
            // and proxy within 5 s.
            std::thread::sleep(std::time::Duration::from_secs(if ca == "tls" {
                6
            } else {
                2
            }));
        }
    }
    let out = c.admin(&["ca", "ls", "--format", "json"]).expect_ok();
    let keys: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(keys.len(), 4, "{keys:?}");
    for k in &keys {
        assert_eq!(
            (k["store"].as_str(), k["alg"].as_str()),
            (Some("pkcs11"), Some("ecdsa-p256")),
            "{k}"
        );
    }
    let export = c
        .admin(&["ca", "export", "--type", "user"])
        .expect_ok()
        .stdout;
    assert!(export.starts_with("ecdsa-sha2-nistp256 "), "{export}");
    // The rotated tls CA has a new pin.
    let pin = keys.iter().find(|k| k["ca"] == "tls").unwrap()["pin"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(pin, c.pin);
    c.pin = pin;
    let secret = c.add_user("bob", "access", "root");
    c.login("bob", "bob", &totp(&secret, 30)).expect_ok();
    c.wait_reachable("bob", "root", "ec-box");
    let out = c
        .run_as("bob", &["ssh", "root@ec-box", "--", "echo", "p256"], None)
        .expect_ok();
    assert_eq!(out.stdout.trim(), "p256");
    // Straight to the node, its ECDSA-signed host certificate checked
    // against the known_hosts line 'warden login' wrote.
    c.ssh("bob", "bob", "root", &[], "echo direct", None)
        .expect_ok();
    let ca = ec_dir.join("user_ca.pub");
    std::fs::write(&ca, export).unwrap();
    let sshd = PlainSshd::start(&ec_dir, &ca, "");
    let out = sshd.ssh_when_up(&c.keys_dir("bob"), "bob", "root", "echo stock-p256");
    assert_eq!(out.stdout.trim(), "stock-p256", "{}", out.all());
}
