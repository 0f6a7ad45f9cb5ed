//! The web UI in a real browser: Debian's Chromium, headless, driven by
//! tests/web/drive.js (playwright-core, from npm) against an all-in-one
//! cluster. Logging in with password and TOTP, the servers a user may
//! reach with search, a terminal on one (recorded, audited, ended by a
//! lock) and its recording in the player, the audit log, and the web
//! session's defences: the
//! cookie's flags, the Content-Security-Policy, a change without the
//! anti-forgery token, a login posted from another site, logout, and a
//! user whom auth does not let read the audit log. Screenshots of each
//! page land in target/tmp/web-screenshots.

mod common;

use common::*;

/// The Unix login the browser terminals use.
const WEB_LOGIN: &str = "wardenweb";

/// Makes the Unix user `name` (a home, bash) unless it exists.
fn unix_user(name: &str) {
    let exists = || {
        std::process::Command::new("id")
            .arg(name)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !exists() {
        let _ = std::process::Command::new("useradd")
            .args(["-m", "-s", "/bin/bash", name])
            .output();
    }
    assert!(
        exists(),
        "cannot create the Unix user {name} (useradd, as root)"
    );
}
use std::process::Command;

#[test]
fn the_web_ui_in_chromium() {
    let dir = temp_dir("web");
    let c = Cluster::start_with(
        &dir,
        &["--name", "web-box", "--labels", "env=demo,team=web"],
    );
    // Terminals log in as a plain Unix user: root's shell profile on a
    // build machine can take a minute to start (pyenv's rehash lock).
    unix_user(WEB_LOGIN);
    let alice = c.add_user("alice", "access,auditor", WEB_LOGIN);
    let roles = dir.join("roles.yaml");
    std::fs::write(
        &roles,
        "kind: role\nversion: v1\nmetadata:\n  name: requester\nspec:\n  allow:\n    request:\n      roles: [dba]\n---\nkind: role\nversion: v1\nmetadata:\n  name: dba\nspec:\n  allow:\n    logins: [root]\n    node_labels:\n      '*': '*'\n---\nkind: role\nversion: v1\nmetadata:\n  name: reviewer\nspec:\n  allow:\n    review_requests:\n      roles: [dba]\n---\nkind: role\nversion: v1\nmetadata:\n  name: no-terminal\nspec:\n  options:\n    permit_pty: false\n",
    )
    .unwrap();
    c.admin(&["roles", "apply", "-f", roles.to_str().unwrap()])
        .expect_ok();
    let bob = c.add_user("bob", "access,no-terminal", WEB_LOGIN);
    let carol = c.add_user("carol", "access,requester", "root");
    let dave = c.add_user("dave", "access,reviewer", "root");
    let frank = c.add_user("frank", "access,editor,auditor", "root");
    // Erin holds a live session on the node; a file marks when it ends.
    let erin = c.add_user("erin", "access", "root");
    let gina = c.add_user("gina", "access", WEB_LOGIN);
    c.login("erin", "erin", &totp(&erin, 30)).expect_ok();
    c.wait_reachable("erin", "root", "web-box");
    let out = c
        .run_as(
            "erin",
            &["ssh", "root@web-box", "--", "echo", "web-recorded"],
            None,
        )
        .expect_ok();
    assert_eq!(out.stdout.trim(), "web-recorded");
    let end_file = dir.join("erin-ended");
    let mut erin_ssh = c.spawn_ssh("erin", "root@web-box", "sleep 120");
    let marker = end_file.clone();
    let waiter = std::thread::spawn(move || {
        let status = erin_ssh.wait();
        std::fs::write(&marker, "").unwrap();
        status
    });
    // Its start is audited once the session runs.
    let started = std::time::Instant::now();
    while !c
        .events()
        .iter()
        .any(|e| e["type"] == "session.start" && e["user"] == "erin")
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "erin's session never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let shots = screenshots();

    let saw = browser_run(
        "drive.js",
        &[
            ("WARDEN_URL", format!("https://{}/", c.proxy)),
            ("ALICE", format!("alice:{PASSWORD}:{alice}")),
            ("BOB", format!("bob:{PASSWORD}:{bob}")),
            ("NODE", "web-box".to_string()),
            ("CAROL", format!("carol:{PASSWORD}:{carol}")),
            ("DAVE", format!("dave:{PASSWORD}:{dave}")),
            ("FRANK", format!("frank:{PASSWORD}:{frank}")),
            ("GINA", format!("gina:{PASSWORD}:{gina}")),
            ("END_FILE", end_file.display().to_string()),
        ],
    );

    // The page's defences.
    let csp = saw["csp"].as_str().unwrap();
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(saw["frame_options"], "DENY");
    assert_eq!(
        saw["cookie"],
        serde_json::json!({"httpOnly": true, "secure": true, "sameSite": "Strict"})
    );
    assert_eq!(saw["logout_without_token"], 403, "{saw}");
    assert_eq!(saw["cross_site_login"], 403, "{saw}");
    assert_eq!(
        saw["session_still"], 200,
        "the refused calls changed nothing"
    );
    assert_eq!(saw["session_after_logout"], 401);
    assert!(
        saw["tab_terminal"]
            .as_str()
            .unwrap()
            .starts_with("Connected"),
        "{saw}"
    );
    assert_eq!(
        saw["tab_after_logout"], "The session ended.",
        "logout ends the session's terminal in another tab: {saw}"
    );
    assert_eq!(saw["nodes_after_logout"], 401);

    // What alice saw.
    assert!(
        saw["bad_login"].as_str().unwrap().contains("login failed"),
        "{}",
        saw["bad_login"]
    );
    let servers = saw["servers"].as_array().unwrap();
    let row = servers
        .iter()
        .find(|r| r[0] == "web-box")
        .unwrap_or_else(|| panic!("web-box not listed: {servers:?}"));
    assert_eq!(
        row[1], "env=demoteam=web",
        "labels, each in its own element: {row}"
    );
    assert_eq!(row[2], "online", "{row}");
    assert_eq!(saw["by_label"], serde_json::json!(["web-box"]));
    assert!(saw["whoami"].as_str().unwrap().starts_with("alice"));
    assert_eq!(saw["no_match"], "0 servers");
    assert_eq!(saw["by_name"], serde_json::json!(["web-box"]));

    // Alice's terminal: a real PTY session on the node, through the proxy.
    assert!(
        saw["terminal_status"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Connected to web-box as {WEB_LOGIN}")),
        "{saw}"
    );
    assert!(
        saw["red"].as_str().unwrap().contains("xterm-fg-1"),
        "the red text is drawn red: {saw}"
    );
    assert_ne!(
        saw["size_before"], saw["size_after"],
        "the PTY follows the window"
    );
    assert_eq!(
        saw["terminal_end"], "The session ended (exit status 3).",
        "{saw}"
    );
    assert!(
        saw["link_asks"]
            .as_str()
            .unwrap()
            .starts_with("Open a terminal on web-box as nobody-here?"),
        "{saw}"
    );
    let denied = saw["denied_login"].as_str().unwrap();
    assert!(
        denied.contains("login \"nobody-here\" is not in your certificate"),
        "a login the roles lack is refused, saying why: {denied}"
    );
    assert_eq!(saw["ws_cross_site"], 403, "{saw}");
    assert_eq!(saw["ws_no_cookie"], 401, "{saw}");
    assert_eq!(saw["ws_same_site"], 101, "{saw}");
    assert!(
        saw["ws_wrong_token"]
            .as_str()
            .unwrap()
            .contains("anti-forgery token"),
        "{saw}"
    );
    // The node recorded and audited it as alice, with the browser's address.
    let events = c.events();
    let start = events
        .iter()
        .find(|e| e["type"] == "session.start" && e["user"] == "alice" && e["login"] == WEB_LOGIN)
        .unwrap_or_else(|| panic!("alice's web terminal was not audited"));
    assert_eq!(start["success"], true, "{start}");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "session.rejected" && e["user"] == "alice"),
        "the refused login was audited too"
    );
    let audit = saw["audit"].as_array().unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r[1] == "user.login" && r[2] == "alice" && r[4] == "ok"),
        "alice's web login is in the audit log: {audit:?}"
    );
    assert_eq!(saw["event_json"]["type"], "user.login", "{saw}");
    let by_node = saw["audit_by_node"].as_array().unwrap();
    assert!(
        by_node
            .iter()
            .any(|r| r[0] == "session.start" && r[1] == "alice"),
        "{by_node:?}"
    );
    assert!(
        by_node.iter().all(|r| r[0] != "user.login"),
        "only the node's events: {by_node:?}"
    );
    assert!(
        saw["audit_count"].as_str().unwrap().ends_with("events"),
        "{saw}"
    );
    assert!(saw["event_json"]["hash"]
        .as_str()
        .is_some_and(|h| !h.is_empty()));
    assert_eq!(saw["export_types"], serde_json::json!(["user.login"]));
    assert!(saw["export_count"].as_u64().unwrap() >= 2, "{saw}");
    // The failed attempt too: the web login is audited like any other.
    let failures = c
        .events()
        .into_iter()
        .filter(|e| e["type"] == "user.login" && e["user"] == "alice" && e["success"] == false)
        .count();
    assert!(failures >= 1, "the wrong code was audited");

    // Bob: auth refuses him the audit log, and the page shows nothing of it
    // (not even what alice saw before him).
    assert_eq!(saw["bob_audit_status"], 403, "{saw}");
    assert_eq!(saw["bob_recordings_status"], 403, "no recordings for him");
    assert_eq!(saw["bob_player_status"], 403, "nor a recording's events");
    assert!(!saw["bob_audit_error"].as_str().unwrap().is_empty());
    // A role that forbids a PTY: the terminal says so instead of a dead
    // screen.
    assert!(
        saw["bob_terminal"].as_str().unwrap().contains("permit_pty"),
        "{saw}"
    );
    assert_eq!(saw["bob_audit_rows"], 0);
    // Carol's request, approved by Dave through its link; auth recorded it.
    let id = saw["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{saw}"));
    assert_eq!(saw["request_error"], "", "{saw}");
    let carol_row = &saw["carol_sees"];
    assert_eq!(
        (&carol_row[1], &carol_row[2], &carol_row[3], &carol_row[4]),
        (
            &serde_json::json!("carol"),
            &serde_json::json!("dba"),
            &serde_json::json!("INC-7 disk full"),
            &serde_json::json!("pending")
        ),
        "{carol_row}"
    );
    assert_eq!(saw["dave_rows"], 1, "the link shows just that request");
    assert_eq!(saw["dave_sees"][4], "approved", "{saw}");
    assert!(
        saw["dave_sees"][5]
            .as_str()
            .unwrap()
            .contains("dave: approved (ok for INC-7)"),
        "{saw}"
    );
    let reviews: Vec<_> = c
        .events()
        .into_iter()
        .filter(|e| e["type"] == "access_request.review" && e["user"] == "dave")
        .collect();
    assert!(
        reviews.iter().any(|e| e.to_string().contains(id)),
        "auth audited dave's review of {id}: {reviews:?}"
    );
    // Erin's session was listed, and ending it ended her ssh.
    let sessions = saw["sessions"].as_array().unwrap();
    assert!(
        sessions
            .iter()
            .any(|r| r[0] == "erin" && r[1] == "root" && r[2] == "web-box"),
        "{sessions:?}"
    );
    assert_eq!(saw["sessions_error"], "", "{saw}");
    assert!(
        saw["ended_after_ms"].is_u64(),
        "the session did not end: {saw}"
    );
    let status = waiter.join().unwrap().unwrap();
    assert!(!status.success(), "ended by the lock, not by itself");
    let locks = c.admin(&["locks", "ls"]).expect_ok().stdout;
    assert!(locks.contains("erin") && locks.contains("frank"), "{locks}");
    // Gina's web terminal ended when Frank ended it (a lock), telling her.
    assert!(
        saw["gina_terminal"]
            .as_str()
            .unwrap()
            .starts_with("Connected"),
        "{saw}"
    );
    assert!(
        saw["gina_screen"]
            .as_str()
            .unwrap()
            .contains("session terminated"),
        "{saw}"
    );
    assert!(
        saw["gina_ended_after_ms"].as_u64().unwrap() < 15_000,
        "{saw}"
    );
    // Erin's recorded command, and its transcript.
    assert_eq!(saw["recording_listed"], true, "{saw}");
    assert_eq!(saw["recordings_error"], "", "{saw}");
    assert!(
        saw["transcript"].as_str().unwrap().contains("web-recorded"),
        "{saw}"
    );
    // The player: erin's command as a marker; alice's terminal played to
    // the end (it showed her output on the way), then sought to the start
    // (blank) and to the end again.
    assert!(
        saw["erin_markers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m.as_str().unwrap().contains("exec: echo web-recorded")),
        "{saw}"
    );
    assert_eq!(saw["alice_recording_listed"], true, "{saw}");
    assert!(
        !saw["player_at_start"].as_str().unwrap().contains("web-42"),
        "{saw}"
    );
    let end = saw["player_at_end"].as_str().unwrap();
    assert!(
        end.contains("web-42")
            && end.contains(saw["size_after"].as_str().unwrap())
            && end.contains("exit 3"),
        "the last screen, after `stty size` and `exit 3`: {saw}"
    );
    for shot in [
        "terminal",
        "terminal-ended",
        "player",
        "recordings",
        "sessions",
        "login-failed",
        "servers",
        "audit",
        "audit-denied",
        "request-created",
        "request-approved",
    ] {
        assert!(shots.join(format!("{shot}.png")).exists(), "{shot}.png");
    }
}

/// `--web-cert`/`--web-key`: browsers (which cannot check Ed25519) get the
/// operator's certificate; Warden's clients still get the cluster-signed
/// one their pin names. A key others may read is refused at start.
#[test]
fn browsers_get_the_operators_certificate() {
    let dir = temp_dir("web-cert");
    let (cert, key) =
        warden_ca::tls::self_signed_p256("operator test cert", &["warden.example".into()]).unwrap();
    let (cert_file, key_file) = (dir.join("web.crt"), dir.join("web.key"));
    std::fs::write(&cert_file, cert).unwrap();
    let key_pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        data_encoding::BASE64.encode(&key)
    );
    std::fs::write(&key_file, &key_pem).unwrap();
    let args = [
        "--web-cert",
        cert_file.to_str().unwrap(),
        "--web-key",
        key_file.to_str().unwrap(),
    ];
    // World-readable key: refused, saying how to fix it.
    let out = run_program(
        WARDEN,
        &["start", "--data-dir", dir.join("d0").to_str().unwrap()]
            .iter()
            .chain(args.iter())
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        None,
    );
    assert!(
        !out.ok && out.stderr.contains("--web-key") && out.stderr.contains("chmod 600"),
        "{}",
        out.all()
    );
    warden_ca::keystore::write_private_file(&key_file, key_pem.as_bytes()).unwrap();
    let c = Cluster::start_with(&dir, &args);
    // Which certificate a client that offers only these signature
    // algorithms gets (openssl s_client prints its subject).
    let subject = |sigalgs: &str| {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &c.proxy, "-sigalgs", sigalgs])
            .args(["-servername", "warden.example", "-alpn", "http/1.1"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl (Debian package openssl) runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no certificate shown:\n{text}"))
                .to_string()
        };
        format!("{} {}", line("subject="), line("issuer="))
    };
    let browser = subject("ECDSA+SHA256:RSA-PSS+SHA256");
    assert!(browser.contains("operator test cert"), "{browser}");
    let warden = subject("ed25519:ECDSA+SHA256");
    assert!(
        warden.contains("tls CA"),
        "the cluster-signed one: {warden}"
    );
    // And the CLI, pinned, works as ever.
    let secret = c.add_user("carol", "access", "root");
    c.login("carol", "carol", &totp(&secret, 30)).expect_ok();
}

/// A security key in the browser: added on the Security keys page with
/// Chromium's virtual authenticator, then used to log in without a code,
/// and to answer the per-session check a role asks for before a terminal.
/// The page's host must lie under the cluster name (the WebAuthn relying
/// party), so Chromium resolves `proxy.warden.test` to the proxy.
#[test]
fn security_keys_in_chromium() {
    let dir = temp_dir("web-keys");
    let c = Cluster::start_with(
        &dir,
        &["--cluster-name", "warden.test", "--name", "key-box"],
    );
    let role = dir.join("mfa-ops.yaml");
    std::fs::write(
        &role,
        "kind: role\nversion: v1\nmetadata:\n  name: mfa-ops\nspec:\n  options:\n    require_mfa: session\n    permit_pty: true\n  allow:\n    logins: [wardenweb]\n    node_labels:\n      '*': '*'\n",
    )
    .unwrap();
    c.admin(&["roles", "apply", "-f", role.to_str().unwrap()])
        .expect_ok();
    unix_user(WEB_LOGIN);
    let hana = c.add_user("hana", "mfa-ops", WEB_LOGIN);
    let port = c.proxy.rsplit(':').next().unwrap();
    let shots = screenshots();
    let saw = browser_run(
        "keys.js",
        &[
            ("WARDEN_URL", format!("https://proxy.warden.test:{port}/")),
            ("HOST_RULES", "MAP proxy.warden.test 127.0.0.1".to_string()),
            ("USER", format!("hana:{PASSWORD}:{hana}")),
            ("NODE", "key-box".to_string()),
        ],
    );
    assert!(
        saw["no_key"].as_str().unwrap().contains("one-time code"),
        "{saw}"
    );
    assert_eq!(saw["enrol_error"], "", "{saw}");
    assert!(
        saw["enrolled"].as_str().unwrap().contains("desk-key"),
        "{saw}"
    );
    assert!(
        saw["devices"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(["desk-key", "security key"])),
        "{saw}"
    );
    assert_eq!(saw["credentials"], 1, "the key lives in the authenticator");
    assert!(saw["whoami"].as_str().unwrap().starts_with("hana"), "{saw}");
    assert!(
        saw["mfa_why"].as_str().unwrap().contains("mfa-ops"),
        "{saw}"
    );
    assert_eq!(
        saw["mfa_terminal"],
        format!("Connected to key-box as {WEB_LOGIN}."),
        "{saw}"
    );
    assert!(
        saw["sign_count"].as_u64().unwrap() >= 1,
        "the key signed: {saw}"
    );
    assert!(
        saw["wrong_password"]
            .as_str()
            .unwrap()
            .contains("login failed"),
        "{saw}"
    );
    // Auth audited the enrolment and the login by key.
    let events = c.events();
    assert!(
        events.iter().any(|e| e["type"] == "user.login"
            && e["user"] == "hana"
            && e["success"] == true
            && e["fields"]["method"]
                .as_str()
                .is_some_and(|m| m.contains("webauthn"))),
        "{events:?}"
    );
    assert!(shots.join("security-keys.png").exists());
    assert!(shots.join("terminal-mfa.png").exists());
}
