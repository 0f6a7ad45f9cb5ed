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

/// Asks the login challenge for users with and without keys and prints,
/// as JSON, the credential ids named and each request's shape (its keys).
const CHALLENGES: &str = r#"
import json, ssl, sys, urllib.request
url, ca = sys.argv[1:3]
ctx = ssl.create_default_context(cafile=ca)
def ask(user, password):
    body = json.dumps({"user": user, "password": password}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, context=ctx, timeout=15))
def ids(r):
    return sorted(c["id"] for c in r["webauthn"]["request"]["publicKey"]["allowCredentials"])
def shape(r):
    pk = r["webauthn"]["request"]["publicKey"]
    return [sorted(r.keys()), sorted(r["webauthn"]["request"].keys()), sorted(pk.keys()),
            [sorted(c.keys()) for c in pk["allowCredentials"]], r["totp"]]
pw = "correct horse battery staple"
kim, kim2 = ask("kim", pw), ask("kim", "wrong password")
lee, nobody = ask("lee", pw), ask("nobody-here", pw)
print(json.dumps({
    "kim_right": ids(kim), "kim_wrong": ids(kim2),
    "lee_1": ids(lee), "lee_2": ids(ask("lee", "x")),
    "nobody_1": ids(nobody), "nobody_2": ids(ask("nobody-here", "y")),
    "shape_kim": shape(kim), "shape_lee": shape(lee), "shape_nobody": shape(nobody),
}))
"#;

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
    // The first step never judges the password: with a wrong one the key
    // answers, and the login fails as a whole (password and key are
    // judged together, and the failure counts).
    c.run_env("kim", &login_args, Some("not the password\n"), &key_env)
        .expect_err("login failed");
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

    // Removal (proven with the key); afterwards the key no longer answers
    // (the login step offers a decoy credential it does not hold).
    let out = c
        .run_env("kim", &["mfa", "rm", "yubikey"], None, &key_env)
        .expect_ok();
    assert!(out.stdout.contains("removed"), "{}", out.all());
    c.run_env("kim", &login_args, Some(&pw), &key_env)
        .expect_err("security key");
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

/// The login challenge is no password oracle: its answer is the same
/// whatever the password, and users without keys (or without an account)
/// get stable decoys shaped like real requests.
#[test]
fn login_challenge_reveals_nothing() {
    let dir = temp_dir("webauthn-oracle");
    let c = Cluster::start(&dir);
    let secret = c.add_user("kim", "access", "root");
    c.add_user("lee", "access", "root");
    c.login("kim", "kim", &totp(&secret, 30)).expect_ok();
    let key = dir.join("kim.token");
    wait_for_next_step();
    c.run_env(
        "kim",
        &[
            "mfa",
            "add",
            "--type",
            "webauthn",
            "--name",
            "k1",
            "--otp",
            &totp(&secret, 30),
        ],
        None,
        &[("WARDEN_SOFT_TOKEN", key.to_str().unwrap())],
    )
    .expect_ok();
    // The challenge step is no password oracle: the same credentials
    // whatever the password, and users without keys (or without an
    // account) get stable decoys of the same shape.
    let cafile = c.keys_dir("kim").join("cas.pem");
    let shapes = run_program(
        "python3",
        &[
            "-c".into(),
            CHALLENGES.into(),
            format!("https://{}/v1/login/challenge", c.proxy),
            cafile.display().to_string(),
        ],
        None,
    )
    .expect_ok();
    let v: serde_json::Value = serde_json::from_str(shapes.stdout.trim()).unwrap();
    assert_eq!(v["kim_right"], v["kim_wrong"], "{v}");
    assert_eq!(v["lee_1"], v["lee_2"], "decoys are stable: {v}");
    assert_eq!(v["nobody_1"], v["nobody_2"], "decoys are stable: {v}");
    assert_ne!(v["lee_1"], v["nobody_1"], "{v}");
    assert_eq!(
        v["shape_kim"], v["shape_lee"],
        "decoys look like real requests: {v}"
    );
    assert_eq!(v["shape_kim"], v["shape_nobody"], "{v}");
}
