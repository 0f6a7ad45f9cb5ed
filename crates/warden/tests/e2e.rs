//! End-to-end tests: real `warden` processes on random 127.0.0.1 ports in
//! temp dirs, driven through the CLI like a user would. Needs Debian's
//! `ssh-keygen` (openssh-client) and `oathtool` (an independent TOTP
//! implementation).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[test]
fn quickstart_login_and_certificate() {
    let dir = temp_dir("quickstart");
    let c = Cluster::start(&dir);
    assert!(
        c.pin.starts_with("sha256:") && c.pin.len() == 71,
        "{}",
        c.pin
    );

    // The admin gets the exact command to hand to the user.
    let out = c
        .admin(&[
            "users",
            "add",
            "alice",
            "--roles",
            "access",
            "--logins",
            "alice,root",
        ])
        .expect_ok();
    assert!(
        out.stdout
            .contains(&format!("--proxy {} --ca-pin {}", c.proxy, c.pin)),
        "{}",
        out.stdout
    );
    let token = signup_token(&out.stdout);
    let secret = totp_secret("alice");
    let signup = |password: &str, otp: &str| {
        c.run(
            &[
                "signup",
                &token,
                "--proxy",
                &c.proxy,
                "--ca-pin",
                &c.pin,
                "--password-stdin",
                "--totp-secret",
                &secret,
                "--otp",
                otp,
            ],
            Some(&format!("{password}\n")),
        )
    };
    signup(PASSWORD, &wrong_code(&totp(&secret, 0))).expect_err("one-time code does not match");
    signup("short", &totp(&secret, 0)).expect_err("password must be 12 to 1024 characters");
    signup("password1234", &totp(&secret, 0)).expect_err("password is too easy to guess");
    let out = signup(PASSWORD, &totp(&secret, 0)).expect_ok();
    assert!(out.stderr.contains("otpauth://totp/"), "shows the URI");
    // The secret came with the command: no QR code to scan.
    assert!(
        !out.stderr.contains(['\u{2580}', '\u{2584}', '\u{2588}']),
        "{}",
        out.stderr
    );
    signup(PASSWORD, &totp(&secret, 0)).expect_err("invalid signup token");

    // Bad logins: clear errors, non-zero exits.
    let right = totp(&secret, 30);
    c.run(
        &[
            "login",
            "--proxy",
            &c.proxy,
            "--user",
            "alice",
            "--ca-pin",
            &c.pin,
            "--password-stdin",
            "--otp",
            &right,
        ],
        Some("not the password\n"),
    )
    .expect_err("wrong user name, password, one-time code or security key");
    c.login("home", "alice", &wrong_code(&right))
        .expect_err("wrong user name, password, one-time code or security key");
    c.login("home", "nobody", &right).expect_err("login failed");
    let zero_pin = format!("sha256:{}", "0".repeat(64));
    c.run_as(
        "other",
        &[
            "login",
            "--proxy",
            &c.proxy,
            "--user",
            "alice",
            "--ca-pin",
            &zero_pin,
            "--password-stdin",
            "--otp",
            &right,
        ],
        Some(&format!("{PASSWORD}\n")),
    )
    .expect_err("CA pin mismatch");
    c.run_as(
        "other",
        &[
            "login",
            "--proxy",
            &c.proxy,
            "--user",
            "alice",
            "--password-stdin",
            "--otp",
            &right,
        ],
        Some(&format!("{PASSWORD}\n")),
    )
    .expect_err("--ca-pin");
    c.run_as(
        "other",
        &[
            "login",
            "--proxy",
            "127.0.0.1:1",
            "--user",
            "alice",
            "--ca-pin",
            &c.pin,
            "--password-stdin",
            "--otp",
            &right,
        ],
        Some(&format!("{PASSWORD}\n")),
    )
    .expect_err("cannot reach 127.0.0.1:1");

    // The real login.
    let out = c.login("home", "alice", &right).expect_ok();
    assert!(
        out.stdout.contains("Logged in to warden as alice"),
        "{}",
        out.stdout
    );
    let status = c.run(&["status", "--format", "json"], None).expect_ok();
    let s: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(s["user"], "alice");
    assert_eq!(s["roles"], serde_json::json!(["access"]));
    assert_eq!(s["logins"], serde_json::json!(["alice", "root"]));
    assert_eq!(s["expired"], false);

    // A real OpenSSH certificate, as ssh-keygen reads it.
    let cert = s["ssh_cert"].as_str().unwrap();
    let key = s["private_key"].as_str().unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "private key must be 0600");
    let out = Command::new("ssh-keygen")
        .args(["-L", "-f", cert])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "ssh-ed25519-cert-v01@openssh.com user certificate",
        "Key ID: \"alice\"",
        "permit-pty",
        "permit-port-forwarding",
        "roles@warden",
        "traits@warden",
        "cluster@warden",
        "requests@warden",
    ] {
        assert!(text.contains(want), "ssh-keygen -L lacks {want:?}:\n{text}");
    }
    let principals: Vec<&str> = text
        .split("Principals:")
        .nth(1)
        .unwrap()
        .split("Critical Options:")
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(principals, ["alice", "root"]);
    assert!(
        !text.contains("permit-X11-forwarding"),
        "access role does not grant X11"
    );
    // The certificate certifies the private key the client holds.
    let fingerprint = |args: &[&str]| {
        let out = Command::new("ssh-keygen").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let derived = std::path::PathBuf::from(format!("{key}.derived.pub"));
    std::fs::write(&derived, fingerprint(&["-y", "-f", key])).unwrap();
    let key_fp = fingerprint(&["-l", "-f", derived.to_str().unwrap()]);
    let key_fp = key_fp.split_whitespace().nth(1).unwrap();
    assert!(
        text.contains(&format!("Public key: ED25519-CERT {key_fp}")),
        "certificate is for another key:\n{text}"
    );

    // Human status output.
    let out = c.run(&["status"], None).expect_ok();
    assert!(
        out.stdout.contains("Roles:        access"),
        "{}",
        out.stdout
    );

    // alice is not an editor: admin calls as herself are denied, through
    // the proxy's passthrough to auth (mTLS end to end).
    c.run(&["admin", "--as-me", "users", "ls"], None)
        .expect_err("alice may not list users");
    // Granting a role applies at once, without a new login.
    c.admin(&["users", "update", "alice", "--roles", "access,editor"])
        .expect_ok();
    let mut ok = false;
    for _ in 0..50 {
        let out = c.run(
            &["admin", "--as-me", "users", "ls", "--format", "json"],
            None,
        );
        if out.ok {
            let users: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            assert_eq!(users[0]["metadata"]["name"], "alice");
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "role change did not apply to the live session");

    c.run(&["logout"], None).expect_ok();
    c.run(&["status"], None).expect_err("not logged in");
    assert!(!Path::new(key).exists(), "logout deletes the key");
}

#[test]
fn roles_apply_tokens_lockout_and_audit() {
    let dir = temp_dir("admin");
    let c = Cluster::start(&dir);
    let roles = dir.join("roles.yaml");
    let write = |dba_ttl: &str| {
        std::fs::write(
            &roles,
            format!(
                "kind: role\nversion: v1\nmetadata:\n  name: dba\n  description: databases\nspec:\n  options:\n    max_session_ttl: {dba_ttl}\n  allow:\n    logins: [postgres, '{{{{internal.logins}}}}']\n    node_labels:\n      env: '^prod-[0-9]+$'\n      team: [db, data]\n  deny:\n    logins: [root]\n---\nkind: role\nversion: v1\nmetadata:\n  name: readonly\nspec:\n  allow:\n    rules:\n      - resources: [user, role]\n        verbs: [list, read]\n"
            ),
        )
        .unwrap();
    };
    write("1h");
    let f = roles.to_str().unwrap();
    let out = c
        .admin(&["roles", "apply", "-f", f, "--dry-run"])
        .expect_ok();
    assert!(out.stdout.contains("+ create role dba"), "{}", out.stdout);
    assert!(
        out.stdout.contains("Dry run: 2 change(s)"),
        "{}",
        out.stdout
    );
    assert!(!c.admin(&["roles", "ls"]).expect_ok().stdout.contains("dba"));
    let out = c.admin(&["roles", "apply", "-f", f]).expect_ok();
    assert!(
        out.stdout.contains("Applied: 2 change(s)"),
        "{}",
        out.stdout
    );
    // Idempotent.
    let out = c.admin(&["roles", "apply", "-f", f]).expect_ok();
    assert!(
        out.stdout.contains("= role dba unchanged"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Applied: 0 change(s)"),
        "{}",
        out.stdout
    );
    write("2h");
    let out = c.admin(&["roles", "apply", "-f", f]).expect_ok();
    assert!(out.stdout.contains("~ update role dba"), "{}", out.stdout);
    assert!(
        out.stdout.contains("+     max_session_ttl: 2h"),
        "{}",
        out.stdout
    );
    let json = c
        .admin(&["roles", "get", "dba", "--format", "json"])
        .expect_ok();
    let role: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        role["spec"]["allow"]["node_labels"]["team"],
        serde_json::json!(["db", "data"])
    );
    // Malformed YAML: line and column.
    std::fs::write(
        &roles,
        "kind: role\nversion: v1\nmetadata:\n  name: x\nspec:\n  allow:\n    login: [root]\n",
    )
    .unwrap();
    c.admin(&["roles", "apply", "-f", f])
        .expect_err("line 7 column 5");
    std::fs::write(
        &roles,
        "kind: role\nversion: v1\nmetadata:\n  name: x\n spec: [\n",
    )
    .unwrap();
    c.admin(&["roles", "apply", "-f", f]).expect_err("line");
    // A role in use cannot be deleted; an unused one can.
    c.admin(&["users", "add", "erin", "--roles", "dba"])
        .expect_ok();
    c.admin(&["roles", "rm", "dba"])
        .expect_err("assigned to erin");
    c.admin(&["roles", "rm", "readonly"]).expect_ok();
    c.admin(&["users", "add", "frank", "--roles", "nope"])
        .expect_err("role \"nope\" does not exist");

    // Tokens.
    let out = c
        .admin(&[
            "tokens", "add", "--type", "node", "--ttl", "10m", "--format", "json",
        ])
        .expect_ok();
    let tok: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(tok["ca_pin"], c.pin);
    let ls = c.admin(&["tokens", "ls", "--format", "json"]).expect_ok();
    assert!(ls.stdout.contains(tok["id"].as_str().unwrap()));
    assert!(
        !ls.stdout.contains(tok["token"].as_str().unwrap()),
        "secrets are never listed"
    );

    // An expired signup token says so.
    let out = c
        .admin(&[
            "users",
            "add",
            "carol",
            "--roles",
            "access",
            "--token-ttl",
            "1s",
        ])
        .expect_ok();
    let token = signup_token(&out.stdout);
    std::thread::sleep(Duration::from_millis(2100));
    let secret = totp_secret("carol");
    c.run(
        &[
            "signup",
            &token,
            "--proxy",
            &c.proxy,
            "--ca-pin",
            &c.pin,
            "--password-stdin",
            "--totp-secret",
            &secret,
            "--otp",
            &totp(&secret, 0),
        ],
        Some(&format!("{PASSWORD}\n")),
    )
    .expect_err("signup token expired");
    // The admin issues a new one.
    let out = c.admin(&["users", "reset", "carol"]).expect_ok();
    let token = signup_token(&out.stdout);
    c.run(
        &[
            "signup",
            &token,
            "--proxy",
            &c.proxy,
            "--ca-pin",
            &c.pin,
            "--password-stdin",
            "--totp-secret",
            &secret,
            "--otp",
            &totp(&secret, 0),
        ],
        Some(&format!("{PASSWORD}\n")),
    )
    .expect_ok();

    // Lockout after five failures, even with the right password afterwards.
    let secret = c.add_user("dave", "access", "dave");
    for _ in 0..5 {
        c.run(
            &[
                "login",
                "--proxy",
                &c.proxy,
                "--user",
                "dave",
                "--ca-pin",
                &c.pin,
                "--password-stdin",
                "--otp",
                "000000",
            ],
            Some("wrong password\n"),
        )
        .expect_err("login failed");
    }
    // Locked: the right password and code are refused too, with the same
    // message as any failure (no hint to an attacker).
    c.login("home", "dave", &totp(&secret, 30))
        .expect_err("login failed");
    c.admin(&["users", "unlock", "dave"]).expect_ok();
    c.login("home", "dave", &totp(&secret, 30)).expect_ok();
    // A one-time code is accepted once.
    c.login("home", "dave", &totp(&secret, 30))
        .expect_err("login failed");

    // Audit events for all of it.
    let out = c
        .admin(&["audit", "search", "--format", "json", "--limit", "1000"])
        .expect_ok();
    let events: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    let has = |ty: &str, code: &str, user: &str| {
        events
            .iter()
            .any(|e| e["type"] == ty && e["code"] == code && e["user"] == user)
    };
    assert!(has("user.login", "WA1000I", "dave"));
    assert!(has("user.login", "WA1000W", "dave"));
    assert!(has("user.lockout", "WA1005W", "dave"));
    assert!(has("user.create", "WA1002I", "admin"));
    assert!(has("role.create", "WA2000I", "admin"));
    assert!(has("role.update", "WA2001I", "admin"));
    assert!(has("role.delete", "WA2002I", "admin"));
    assert!(has("token.create", "WA3000I", "admin"));
    assert!(has("user.signup", "WA1001I", "dave"));
    // Events are chained (search sorts by time; the chain is by index).
    let mut chain = events.clone();
    chain.sort_by_key(|e| std::cmp::Reverse(e["index"].as_u64()));
    for pair in chain.windows(2) {
        assert_eq!(
            pair[0]["prev_hash"], pair[1]["hash"],
            "each links to the one before"
        );
    }
    let only = c
        .admin(&[
            "audit",
            "search",
            "--type",
            "user.lockout",
            "--format",
            "json",
        ])
        .expect_ok();
    let only: Vec<serde_json::Value> = serde_json::from_str(&only.stdout).unwrap();
    assert_eq!(only.len(), 1);
}

#[test]
fn sigkill_keeps_every_acknowledged_write() {
    let dir = temp_dir("crash");
    let mut c = Cluster::start(&dir);
    let node_ids = |c: &Cluster| -> Vec<String> {
        let out = c.admin(&["nodes", "ls", "--format", "json"]).expect_ok();
        let nodes: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
        nodes
            .iter()
            .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let mut before = Vec::new();
    for _ in 0..50 {
        before = node_ids(&c);
        if !before.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(before.len(), 1, "the all-in-one node is in the inventory");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let data = dir.join("data");
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let stop = stop.clone();
            let acked = acked.clone();
            let data = data.clone();
            let home = dir.join("home");
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let name = format!("u{w}-{i}");
                    let out = Command::new(WARDEN)
                        .args([
                            "admin",
                            "--data-dir",
                            data.to_str().unwrap(),
                            "users",
                            "add",
                            &name,
                            "--roles",
                            "access",
                        ])
                        .env("WARDEN_HOME", &home)
                        .output()
                        .unwrap();
                    if out.status.success() {
                        acked.lock().unwrap().push(name);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    // Let writes flow, then kill the server mid-stream.
    let t0 = Instant::now();
    while acked.lock().unwrap().len() < 20 && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    c.kill();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 20,
        "only {} writes before the kill",
        acked.len()
    );

    // The store opens cleanly and holds every acknowledged user.
    let c = Cluster::start(&dir);
    let out = c.admin(&["users", "ls", "--format", "json"]).expect_ok();
    let users: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    let names: Vec<&str> = users
        .iter()
        .map(|u| u["metadata"]["name"].as_str().unwrap())
        .collect();
    for a in &acked {
        assert!(
            names.contains(&a.as_str()),
            "acknowledged user {a} lost in the crash"
        );
    }
    // The node came back with the same identity (no second join).
    assert_eq!(node_ids(&c), before, "a restart keeps the node id");
    // And the audit chain survived intact.
    let out = c
        .admin(&[
            "audit",
            "search",
            "--type",
            "user.create",
            "--format",
            "json",
            "--limit",
            "10000",
        ])
        .expect_ok();
    let events: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert!(events.len() >= acked.len());
}

#[test]
fn certificates_from_another_cluster_are_refused() {
    let a_dir = temp_dir("ca-a");
    let b_dir = temp_dir("ca-b");
    let a = Cluster::start(&a_dir);
    let b = Cluster::start(&b_dir);
    assert_ne!(a.pin, b.pin, "every cluster has its own CA");
    // B's admin identity, aimed at A's auth API, trusting A's server cert.
    let forged = a_dir.join("forged");
    let admin_a = a_dir.join("data/admin");
    let admin_b = b_dir.join("data/admin");
    std::fs::create_dir_all(forged.join("admin")).unwrap();
    for f in ["config.json", "ca.pem"] {
        std::fs::copy(admin_a.join(f), forged.join("admin").join(f)).unwrap();
    }
    for f in ["identity", "identity.crt"] {
        std::fs::copy(admin_b.join(f), forged.join("admin").join(f)).unwrap();
    }
    let out = a.run(
        &[
            "admin",
            "--data-dir",
            forged.to_str().unwrap(),
            "users",
            "ls",
        ],
        None,
    );
    assert!(
        !out.ok,
        "a foreign certificate must be refused:\n{}",
        out.all()
    );
    // A's own admin works.
    a.admin(&["users", "ls"]).expect_ok();
    // And the client refuses a proxy whose CA is not the pinned one.
    a.run(
        &[
            "login",
            "--proxy",
            &b.proxy,
            "--user",
            "x",
            "--ca-pin",
            &a.pin,
            "--password-stdin",
            "--otp",
            "123456",
        ],
        Some("x\n"),
    )
    .expect_err("CA pin mismatch");
}

/// ARCHITECTURE.md §3: roles added after login apply without a new login;
/// the client refreshes its certificate (same key, same end) on use.
#[test]
fn roles_added_after_login_apply_without_a_new_login() {
    let dir = temp_dir("refresh");
    let c = Cluster::start(&dir);
    let secret = c.add_user("alice", "access", "alice");
    c.login("home", "alice", &totp(&secret, 30)).expect_ok();
    let roles = |c: &Cluster| {
        let out = c.run(&["status", "--format", "json"], None).expect_ok();
        let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        (s["roles"].clone(), s["valid_until"].as_i64().unwrap())
    };
    let (before, until) = roles(&c);
    assert_eq!(before, serde_json::json!(["access"]));
    c.admin(&["users", "update", "alice", "--roles", "access,auditor"])
        .expect_ok();
    std::thread::sleep(Duration::from_secs(31));
    c.run(&["ls"], None).expect_ok();
    let (after, until_after) = roles(&c);
    assert_eq!(after, serde_json::json!(["access", "auditor"]));
    assert!(
        until_after <= until,
        "a refresh never extends the certificate"
    );
}

/// Fifty `warden ls` at once, each finding the certificate due for its
/// background refresh: renewals take turns (a lock in the profile) and
/// every file is replaced atomically, so none fails and the profile stays
/// whole.
#[test]
fn parallel_commands_renew_without_corrupting_the_profile() {
    let dir = temp_dir("parallel");
    let c = Cluster::start(&dir);
    let secret = c.add_user("alice", "access", "root");
    c.login("home", "alice", &totp(&secret, 30)).expect_ok();
    // Older than the 30 s after which commands refresh roles.
    std::thread::sleep(std::time::Duration::from_secs(32));
    let children: Vec<_> = (0..50)
        .map(|_| {
            std::process::Command::new(WARDEN)
                .args(["ls", "--format", "json"])
                .env("WARDEN_HOME", c.dir.join("home"))
                .env_remove("WARDEN_PROXY")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let failed: Vec<String> = children
        .into_iter()
        .map(|ch| ch.wait_with_output().unwrap())
        .filter(|o| !o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 50 failed: {:?}",
        failed.len(),
        failed.first()
    );
    c.run_as("home", &["status"], None).expect_ok();
    c.run_as("home", &["ls"], None).expect_ok();
}

/// One `warden start` per data dir, refused before it touches anything; a
/// start whose ports are taken creates no state; `warden admin` finds the
/// running cluster's data dir without flags, and the printed hint names
/// the flag where one is needed.
#[test]
fn one_warden_per_data_dir_and_admin_finds_it() {
    let dir = temp_dir("datadir");
    let c = Cluster::start(&dir);
    let data = dir.join("data");
    let pid = std::fs::read_to_string(data.join("warden.pid")).unwrap();
    assert_eq!(pid.trim(), c.pid().to_string());

    // `warden admin` with no --data-dir and no WARDEN_DATA_DIR.
    c.run(&["admin", "users", "ls"], None).expect_ok();
    c.run(&["admin", "users", "add", "bob", "--roles", "access"], None)
        .expect_ok();
    let out = c.admin(&["users", "ls"]).expect_ok();
    assert!(out.stdout.contains("bob"), "{}", out.all());

    // A second start on the same data dir, on free ports: refused.
    let free = FREE_PORTS;
    let mut args = vec![
        "start".to_string(),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    args.extend(free.iter().map(|s| s.to_string()));
    let second = run_program(WARDEN, &args, None);
    assert!(!second.ok, "{}", second.all());
    assert!(
        second.stderr.contains(&format!(
            "another warden (pid {}) is already running on the data dir",
            c.pid()
        )),
        "{}",
        second.all()
    );
    assert_eq!(
        std::fs::read_to_string(data.join("warden.pid"))
            .unwrap()
            .trim(),
        c.pid().to_string()
    );
    c.admin(&["users", "ls"]).expect_ok();

    // A new data dir whose proxy port is taken: nothing is created.
    let fresh = dir.join("fresh");
    let taken = c.proxy.clone();
    let out = run_program(
        WARDEN,
        &[
            "start",
            "--data-dir",
            fresh.to_str().unwrap(),
            "--listen-addr",
            &taken,
            "--auth-addr",
            "127.0.0.1:0",
            "--node-listen-addr",
            "127.0.0.1:0",
        ]
        .map(String::from),
        None,
    );
    assert!(
        !out.ok && out.stderr.contains("cannot listen on"),
        "{}",
        out.all()
    );
    assert!(
        !fresh.exists(),
        "a failed start created {}",
        fresh.display()
    );

    // The printed next step names the data dir when it is not the default.
    let mut child = std::process::Command::new(WARDEN)
        .args(["start", "--data-dir", fresh.to_str().unwrap()])
        .args(free)
        .env("XDG_STATE_HOME", dir.join("state2"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let hint = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .find(|l| l.contains("warden admin"))
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        hint.contains(&format!(
            "warden admin --data-dir {} users add",
            fresh.display()
        )),
        "{hint}"
    );
}

/// `--proxy` given the auth, node or diagnostics port says which port it
/// is and which to use.
#[test]
fn proxy_flag_on_the_wrong_port_says_which_it_is() {
    let dir = temp_dir("wrongport");
    let diag = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let c = Cluster::start_with(&dir, &["--diag-addr", &diag]);
    for (addr, what) in [
        (c.auth.clone(), "auth API"),
        (c.node.clone(), "node's SSH port"),
        (diag.clone(), "diagnostics port"),
    ] {
        let out = c.run(
            &[
                "login", "--proxy", &addr, "--user", "alice", "--ca-pin", &c.pin,
            ],
            None,
        );
        assert!(!out.ok, "{}", out.all());
        assert!(
            out.stderr.contains(what) && out.stderr.contains("not a Warden proxy"),
            "{addr}: {}",
            out.all()
        );
    }
}

/// `audit search`: `--node` takes a name, an unknown `--type` lists the
/// valid ones, and a result cut by `--limit` says how many more match.
#[test]
fn audit_search_by_node_name_types_and_paging() {
    let dir = temp_dir("auditsearch");
    let c = Cluster::start_with(&dir, &["--name", "box"]);
    let secret = c.add_user("alice", "access", "root");
    c.login("alice", "alice", &totp(&secret, 30)).expect_ok();
    c.ssh("alice", "alice", "root", &[], "true", None)
        .expect_ok();
    let search = |args: &[&str]| {
        let mut full = vec!["audit", "search"];
        full.extend_from_slice(args);
        c.admin(&full)
    };
    let mut by_name = Vec::new();
    for _ in 0..100 {
        let out =
            search(&["--node", "box", "--type", "session.end", "--format", "json"]).expect_ok();
        by_name = serde_json::from_str::<Vec<serde_json::Value>>(&out.stdout).unwrap();
        if !by_name.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!by_name.is_empty(), "no session.end event for node box");
    let id = by_name[0]["node"].as_str().unwrap().to_string();
    let out = search(&["--node", &id, "--type", "session.end", "--format", "json"]).expect_ok();
    let by_id: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(by_id.len(), by_name.len());
    let out = search(&["--node", "nonesuch"]).expect_err("no node named");
    assert!(
        out.stderr.contains("no node named or with id"),
        "{}",
        out.all()
    );

    let out = search(&["--type", "login"]).expect_err("unknown event type");
    assert!(
        out.stderr.contains("user.login") && out.stderr.contains("session.start"),
        "{}",
        out.all()
    );

    let out = search(&["--limit", "2"]).expect_ok();
    assert!(
        out.stderr.contains("Showing the newest 2 of "),
        "{}",
        out.all()
    );
    let out = search(&["--limit", "10000"]).expect_ok();
    assert!(!out.stderr.contains("Showing the newest"), "{}", out.all());
}

/// `--log-format json`: one JSON object per log line, for log shippers.
#[test]
fn json_logs_for_log_shippers() {
    use std::io::BufRead;
    let dir = temp_dir("jsonlogs");
    let mut child = std::process::Command::new(WARDEN)
        .args(["--log-format", "json", "start"])
        .args(FREE_PORTS)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("XDG_STATE_HOME", dir.join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines: Vec<String> = std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .take(3)
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        assert!(!line.contains('\u{1b}'), "{line}");
    }
}

/// Shell completions and man pages come from the same definitions as
/// `--help`.
#[test]
fn completions_and_man_pages() {
    let dir = temp_dir("man");
    let run = |args: &[&str]| {
        run_program(
            WARDEN,
            &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            None,
        )
        .expect_ok()
    };
    let bash = run(&["completion", "bash"]).stdout;
    let script = dir.join("warden.bash");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&script, &bash).unwrap();
    let out = run_program(
        "bash",
        &[
            "-c".into(),
            format!("source {} && complete -p warden", script.display()),
        ],
        None,
    )
    .expect_ok();
    assert!(out.stdout.contains("_warden"), "{}", out.all());
    assert!(bash.contains("signup") && bash.contains("--ca-pin"));
    assert!(run(&["completion", "zsh"])
        .stdout
        .starts_with("#compdef warden"));
    assert!(run(&["completion", "fish"])
        .stdout
        .contains("complete -c warden"));

    let pages = dir.join("man1");
    run(&["man", "--out-dir", pages.to_str().unwrap()]);
    for (page, text) in [
        ("warden.1", "identity\\-aware proxy"),
        ("warden-ssh.1", "LOGIN@NODE"),
        ("warden-admin-users-add.1", "users add"),
    ] {
        let body =
            std::fs::read_to_string(pages.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(body.starts_with(".ie") || body.contains(".TH"), "{page}");
        assert!(body.contains(text), "{page} lacks {text:?}");
    }
}

/// `warden start --config FILE`: every flag is a key, flags override the
/// file, `--print-config` shows what a start would run with.
#[test]
fn start_from_a_config_file() {
    let dir = temp_dir("configfile");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("warden.yaml");
    std::fs::write(
        &config,
        "# a node's settings\nname: from-file\nlabels: [env=file, team=db]\nheartbeat_interval: 5s\nno-proxy-discovery: true\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let c = Cluster::start_with(&dir, &["--config", cfg, "--name", "from-flag"]);
    let secret = c.add_user("alice", "access", "root");
    c.login("alice", "alice", &totp(&secret, 30)).expect_ok();
    let out = c
        .run_as("alice", &["ls", "--format", "json"], None)
        .expect_ok();
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(nodes.len(), 1, "{}", out.stdout);
    assert_eq!(nodes[0]["spec"]["hostname"], "from-flag");
    assert_eq!(nodes[0]["metadata"]["labels"]["env"], "file");
    assert_eq!(nodes[0]["spec"]["heartbeat_every"], 5);

    let print = |args: &[&str]| {
        let mut full = vec!["start".to_string(), "--config".into(), cfg.into()];
        full.extend(args.iter().map(|s| s.to_string()));
        run_program(WARDEN, &full, None)
    };
    let out = print(&["--print-config", "--labels", "env=flag"]).expect_ok();
    let effective: serde_json::Value = serde_norway::from_str(&out.stdout).unwrap();
    assert_eq!(effective["name"], "from-file");
    assert_eq!(effective["labels"], serde_json::json!(["env=flag"]));
    assert_eq!(effective["heartbeat-interval"], "5s");
    assert_eq!(effective["listen-addr"], serde_json::Value::Null);
    assert_eq!(effective["auth-addr"], "127.0.0.1:3025");
    assert_eq!(effective["no-proxy-discovery"], true);

    std::fs::write(&config, "listen_adr: 1.2.3.4:5\n").unwrap();
    let out = print(&["--print-config"]);
    assert!(
        !out.ok && out.stderr.contains("unknown key \"listen-adr\""),
        "{}",
        out.all()
    );
    assert!(out.stderr.contains("listen-addr"), "{}", out.all());
}

/// Under systemd (`Type=notify`, `NotifyAccess=all`): READY with the main
/// pid once serving, and after a graceful restart the successor names
/// itself the main process.
#[test]
fn systemd_readiness_and_main_pid_after_restart() {
    let dir = temp_dir("sdnotify");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut child = std::process::Command::new(WARDEN)
        .arg("start")
        .args(FREE_PORTS)
        .args(["--drain-timeout", "1s"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("NOTIFY_SOCKET", &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("no READY from warden start");
    let first = String::from_utf8_lossy(&buf[..n]).to_string();
    assert_eq!(first, format!("READY=1\nMAINPID={}\n", child.id()));
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let n = socket.recv(&mut buf).expect("no READY from the successor");
    let second = String::from_utf8_lossy(&buf[..n]).to_string();
    let successor: u32 = second
        .strip_prefix("READY=1\nMAINPID=")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{second:?}"));
    assert_ne!(successor, child.id());
    let _ = child.wait();
    let _ = std::process::Command::new("kill")
        .args(["-9", &successor.to_string()])
        .status();
}

/// tctl habits: `admin get KIND [NAME]` for every kind, YAML that
/// `create -f` takes back (get | edit | create -f), one plan format with
/// --dry-run, and `rm KIND NAME` (ids may be shortened).
#[test]
fn admin_get_edit_create_and_rm_for_every_kind() {
    let dir = temp_dir("tctl");
    let c = Cluster::start_with(&dir, &["--name", "box"]);
    c.add_user("alice", "access", "alice,root");
    let file = dir.join("doc.yaml");
    let f = file.to_str().unwrap();

    // A user: get, edit, dry run, apply, apply again.
    let yaml = c.admin(&["get", "user", "alice"]).expect_ok().stdout;
    assert!(
        yaml.contains("kind: user") && yaml.contains("- access"),
        "{yaml}"
    );
    let edited: Vec<String> = yaml
        .lines()
        .flat_map(|l| match l.trim() == "- access" {
            true => vec![l.to_string(), l.replace("access", "auditor")],
            false => vec![l.to_string()],
        })
        .collect();
    std::fs::write(&file, edited.join("\n")).unwrap();
    let out = c.admin(&["create", "-f", f, "--dry-run"]).expect_ok();
    assert!(out.stdout.contains("~ update user alice"), "{}", out.stdout);
    assert!(out.stdout.contains("- auditor"), "{}", out.stdout);
    assert!(
        out.stdout.contains("Dry run: 1 change(s) planned"),
        "{}",
        out.stdout
    );
    assert!(!c
        .admin(&["get", "user", "alice"])
        .expect_ok()
        .stdout
        .contains("auditor"));
    let out = c.admin(&["create", "-f", f]).expect_ok();
    assert!(
        out.stdout.contains("Applied: 1 change(s)"),
        "{}",
        out.stdout
    );
    assert!(c
        .admin(&["get", "user", "alice"])
        .expect_ok()
        .stdout
        .contains("auditor"));
    let out = c.admin(&["apply", "-f", f]).expect_ok();
    assert!(
        out.stdout.contains("= user alice unchanged"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Applied: 0 change(s)"),
        "{}",
        out.stdout
    );

    // A role round-trips unchanged; roles apply prints the same plan.
    let role = c.admin(&["get", "role", "access"]).expect_ok().stdout;
    std::fs::write(&file, &role).unwrap();
    let out = c
        .admin(&["roles", "apply", "-f", f, "--dry-run"])
        .expect_ok();
    assert!(
        out.stdout.contains("= role access unchanged"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Dry run: 0 change(s)"),
        "{}",
        out.stdout
    );

    // A new user from YAML gets a signup command.
    std::fs::write(
        &file,
        "kind: user\nversion: v1\nmetadata: {name: bob}\nspec:\n  roles: [access]\n  traits: {logins: [bob]}\n",
    )
    .unwrap();
    let out = c.admin(&["create", "-f", f]).expect_ok();
    assert!(
        out.stdout.contains("+ create user bob") && out.stdout.contains("warden signup "),
        "{}",
        out.stdout
    );

    // A lock from YAML; get it, remove it by a prefix of its id.
    std::fs::write(
        &file,
        "kind: lock\nversion: v1\nmetadata: {name: bob-lock}\nspec:\n  target: {user: bob}\n  reason: INC-7\n",
    )
    .unwrap();
    c.admin(&["create", "-f", f]).expect_ok();
    // The same lock again is no new lock (auth names locks itself).
    let out = c.admin(&["create", "-f", f]).expect_ok();
    assert!(
        out.stdout.contains("= lock bob-lock unchanged"),
        "{}",
        out.stdout
    );
    let locks: Vec<serde_json::Value> = serde_json::from_str(
        &c.admin(&["get", "lock", "--format", "json"])
            .expect_ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0]["spec"]["reason"], "INC-7");
    let id = locks[0]["metadata"]["name"].as_str().unwrap();
    c.admin(&["rm", "lock", &id[..8]]).expect_ok();
    assert!(c
        .admin(&["get", "lock"])
        .expect_ok()
        .stdout
        .trim()
        .is_empty());

    // Tokens and nodes: get and rm (never created from YAML).
    c.admin(&["tokens", "add", "--type", "node"]).expect_ok();
    let tokens = c.admin(&["get", "token"]).expect_ok().stdout;
    assert!(
        tokens.contains("kind: token") && tokens.contains("kind: node"),
        "{tokens}"
    );
    std::fs::write(&file, &tokens).unwrap();
    c.admin(&["create", "-f", f])
        .expect_err("tokens are not written as documents");
    let node = c.admin(&["get", "node", "box"]).expect_ok().stdout;
    assert!(node.contains("hostname: box"), "{node}");
    let out = c.admin(&["rm", "node", "box"]).expect_ok();
    assert!(
        out.stdout.contains("removed from the inventory"),
        "{}",
        out.stdout
    );

    c.admin(&["get", "gadget"])
        .expect_err("use one of user, role, token, lock, node");
    c.admin(&["rm", "user", "nobody"])
        .expect_err("no user \"nobody\"");

    // The cluster's settings: get, edit, create -f; they hold at once.
    let yaml = c.admin(&["get", "cluster_config"]).expect_ok().stdout;
    assert!(yaml.contains("login_rate_per_minute: 30"), "{yaml}");
    let with = |from: &str, to: &str| {
        std::fs::write(&file, yaml.replace(from, to)).unwrap();
    };
    with("login_rate_per_minute: 30", "login_rate_per_minute: 2");
    let out = c.admin(&["create", "-f", f]).expect_ok();
    assert!(
        out.stdout
            .contains("~ update cluster_config cluster-config"),
        "{}",
        out.stdout
    );
    let attempt = || {
        c.run_as(
            "mallory",
            &[
                "login",
                "--proxy",
                &c.proxy,
                "--ca-pin",
                &c.pin,
                "--user",
                "nobody",
                "--password-stdin",
                "--otp",
                "000000",
            ],
            Some("not the password\n"),
        )
    };
    let _ = attempt();
    let _ = attempt();
    attempt().expect_err("too many login attempts");
    // Out of bounds, a rename or a deletion: refused, saying why.
    with("login_rate_per_minute: 30", "login_rate_per_minute: 0");
    c.admin(&["create", "-f", f])
        .expect_err("login_rate_per_minute: between 1 and 100000");
    let name = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("cluster_name: "))
        .unwrap()
        .to_string();
    with(
        &format!("cluster_name: {name}"),
        "cluster_name: another-name",
    );
    c.admin(&["create", "-f", f])
        .expect_err("cluster_name cannot change");
    c.admin(&["rm", "cluster_config", "cluster-config"])
        .expect_err("cannot be deleted");
}
