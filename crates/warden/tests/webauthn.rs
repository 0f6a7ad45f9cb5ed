//! Security keys (FIDO2/WebAuthn) as a second factor, through the real
//! registration and authentication ceremonies: the CLI drives a software
//! authenticator (webauthn-authenticator-rs's soft token, selected with
//! WARDEN_SOFT_TOKEN) and the auth service verifies with webauthn-rs.

mod common;

use common::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Sleeps into the next 30 s TOTP step: the login used the code of the
/// step after the current one, and each code works once.
fn wait_for_next_step() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::thread::sleep(Duration::from_secs(30 - now % 30 + 1));
}

#[test]
fn security_keys() {
    let dir = temp_dir("webauthn");
    let c = Cluster::start(&dir);
    let role = dir.join("ops.yaml");
    std::fs::write(
        &role,
        "kind: role\nversion: v1\nmetadata:\n  name: ops\nspec:\n  options:\n    require_mfa: session\n  allow:\n    logins: [root]\n    node_labels:\n      env: wa\n",
    )
    .unwrap();
    c.admin(&["roles", "apply", "-f", role.to_str().unwrap()])
        .expect_ok();
    let secret = c.add_user("kim", "ops", "root");
    c.login("kim", "kim", &totp(&secret, 30)).expect_ok();
    let _node = TunnelNode::start(&c, "wa-1", "env=wa");
    let key = dir.join("kim.token");
    let key_env = [("WARDEN_SOFT_TOKEN", key.to_str().unwrap())];

    // Before enrolment: the TOTP app only, and adding a key needs a fresh
    // check with it (no terminal here: the CLI says what to pass).
    let ls = c.run_as("kim", &["mfa", "ls"], None).expect_ok();
    assert!(
        ls.stdout.contains("totp") && !ls.stdout.contains("webauthn"),
        "{}",
        ls.all()
    );
    c.run_env("kim", &["mfa", "add", "--name", "yubikey"], None, &key_env)
        .expect_err("--otp");
    // A wrong code does not enrol anything.
    c.run_env(
        "kim",
        &[
            "mfa",
            "add",
            "--name",
            "yubikey",
            "--otp",
            &wrong_code(&totp(&secret, 30)),
        ],
        None,
        &key_env,
    )
    .expect_err("one-time code");
    let ls = c.run_as("kim", &["mfa", "ls"], None).expect_ok();
    assert!(!ls.stdout.contains("yubikey"), "{}", ls.all());

    // Enrolment: registration ceremony, proven with a fresh TOTP code.
    wait_for_next_step();
    let out = c
        .run_env(
            "kim",
            &[
                "mfa",
                "add",
                "--type",
                "webauthn",
                "--name",
                "yubikey",
                "--otp",
                &totp(&secret, 30),
            ],
            None,
            &key_env,
        )
        .expect_ok();
    assert!(
        out.stdout.contains("Security key yubikey enrolled"),
        "{}",
        out.all()
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "soft token file mode");
    let ls = c
        .run_as("kim", &["mfa", "ls", "--format", "json"], None)
        .expect_ok();
    let devices: Vec<serde_json::Value> = serde_json::from_str(&ls.stdout).unwrap();
    assert!(
        devices
            .iter()
            .any(|d| d["name"] == "yubikey" && d["type"] == "webauthn"),
        "{devices:?}"
    );
    // The enrolled key is the proof for further changes (an assertion
    // with purpose "manage"); a second device with the same name is refused.
    c.run_env("kim", &["mfa", "add", "--name", "yubikey"], None, &key_env)
        .expect_err("already have a device named yubikey");

    // Login with password + security key (authentication ceremony).
    let clone = dir.join("kim-clone.token");
    std::fs::copy(&key, &clone).unwrap();
    let login_args = [
        "login",
        "--proxy",
        &c.proxy,
        "--user",
        "kim",
        "--ca-pin",
        &c.pin,
        "--password-stdin",
    ];
    let pw = format!("{PASSWORD}\n");
    let out = c
        .run_env("kim", &login_args, Some(&pw), &key_env)
        .expect_ok();
    assert!(out.stdout.contains("Logged in"), "{}", out.all());
    // A key that is not enrolled cannot answer (the challenge names only
    // enrolled credentials).
    let stranger = dir.join("stranger.token");
    c.run_env(
        "kim",
        &login_args,
        Some(&pw),
        &[("WARDEN_SOFT_TOKEN", stranger.to_str().unwrap())],
    )
    .expect_err("security key");
    // The wrong password never reaches the key: the first step answers
    // as for a user without keys (it must not confirm the password), so
    // the CLI asks for a code, and the failure is audited.
    c.run_env("kim", &login_args, Some("not the password\n"), &key_env)
        .expect_err("--otp");
    // A copy of the key taken before the last use answers with an old
    // signature counter: refused as a possibly cloned key (the user sees
    // the usual login failure; the audit event says why).
    c.run_env(
        "kim",
        &login_args,
        Some(&pw),
        &[("WARDEN_SOFT_TOKEN", clone.to_str().unwrap())],
    )
    .expect_err("login failed");

    // Per-session MFA with the key.
    let s2 = c.add_user("lee", "access", "root");
    c.login("lee", "lee", &totp(&s2, 30)).expect_ok();
    c.wait_reachable("lee", "root", "wa-1");
    let out = c
        .run_env(
            "kim",
            &["ssh", "root@wa-1", "--", "echo key-session-ok"],
            None,
            &key_env,
        )
        .expect_ok();
    assert!(out.stdout.contains("key-session-ok"), "{}", out.all());
    // scp and sftp make the same check (the login certificate alone does
    // not open a session on this node).
    let local = dir.join("to-copy.txt");
    std::fs::write(&local, "copied-with-a-key\n").unwrap();
    let remote = dir.join("copied.txt");
    let dest = format!("root@wa-1:{}", remote.display());
    c.run_env(
        "kim",
        &["scp", local.to_str().unwrap(), &dest],
        None,
        &key_env,
    )
    .expect_ok();
    assert_eq!(
        std::fs::read_to_string(&remote).unwrap(),
        "copied-with-a-key\n"
    );
    let batch = dir.join("sftp.batch");
    std::fs::write(&batch, format!("ls {}\n", dir.display())).unwrap();
    let out = c
        .run_env(
            "kim",
            &["sftp", "-b", batch.to_str().unwrap(), "root@wa-1"],
            None,
            &key_env,
        )
        .expect_ok();
    assert!(out.stdout.contains("copied.txt"), "{}", out.all());

    // Removal (proven with the key); afterwards login asks for a code again.
    let out = c
        .run_env("kim", &["mfa", "rm", "yubikey"], None, &key_env)
        .expect_ok();
    assert!(out.stdout.contains("removed"), "{}", out.all());
    c.run_env("kim", &login_args, Some(&pw), &key_env)
        .expect_err("--otp");
    c.run_as("kim", &["mfa", "rm", "totp", "--otp", "000000"], None)
        .expect_err("cannot be removed");

    let ev = c.events();
    let has = |code: &str, pred: &dyn Fn(&serde_json::Value) -> bool| {
        ev.iter()
            .any(|e| e["code"] == code && e["user"] == "kim" && pred(e))
    };
    assert!(
        has("WA1011I", &|e| e["fields"]["device"] == "yubikey"),
        "mfa.add"
    );
    assert!(has("WA1011W", &|_| true), "failed mfa.add");
    assert!(
        has("WA1012I", &|e| e["fields"]["device"] == "yubikey"),
        "mfa.remove"
    );
    assert!(
        has("WA1000I", &|e| e["fields"]["method"] == "password+webauthn"),
        "login"
    );
    assert!(
        has("WA1000W", &|e| e["message"]
            .as_str()
            .unwrap_or("")
            .contains("security key check failed")),
        "cloned key login failure"
    );
    assert!(
        has("WA1010I", &|e| e["fields"]["method"] == "webauthn"),
        "mfa.session"
    );
}
