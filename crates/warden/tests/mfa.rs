//! Per-session MFA: a role with `require_mfa: session` refuses SSH
//! sessions made with the login certificate alone; `warden ssh` asks for a
//! fresh one-time code and connects with a one-minute certificate that
//! works on that node only.

mod common;

use common::*;

#[test]
fn per_session_mfa() {
    let dir = temp_dir("mfa");
    let c = Cluster::start(&dir);
    let role = dir.join("ops.yaml");
    std::fs::write(
        &role,
        "kind: role\nversion: v1\nmetadata:\n  name: ops\nspec:\n  options:\n    require_mfa: session\n  allow:\n    logins: [root]\n    node_labels:\n      env: mfa\n",
    )
    .unwrap();
    c.admin(&["roles", "apply", "-f", role.to_str().unwrap()])
        .expect_ok();
    let _node = TunnelNode::start(&c, "mfa-1", "env=mfa");
    let _other = TunnelNode::start(&c, "mfa-2", "env=mfa");
    let secret = c.add_user("dave", "ops", "root");
    c.login("dave", "dave", &totp(&secret, 30)).expect_ok();
    let s2 = c.add_user("erin", "access", "root");
    c.login("erin", "erin", &totp(&s2, 30)).expect_ok();
    c.wait_reachable("erin", "root", "mfa-1");
    c.wait_reachable("erin", "root", "mfa-2");

    // The login certificate alone is refused, with the reason.
    let cfg = c.ssh_config("dave");
    let plain = run_program(
        "ssh",
        &[
            "-F".into(),
            cfg.display().to_string(),
            "-o".into(),
            "BatchMode=yes".into(),
            "root@mfa-1.warden".into(),
            "echo no".into(),
        ],
        None,
    );
    assert!(!plain.ok, "{}", plain.all());
    assert!(plain.stderr.contains("fresh MFA check"), "{}", plain.all());
    // Without a terminal and without --otp, warden ssh says what to pass.
    c.run_as("dave", &["ssh", "root@mfa-1", "--", "true"], None)
        .expect_err("--otp");
    // A wrong code is refused and audited.
    c.run_as(
        "dave",
        &[
            "ssh",
            "--otp",
            &wrong_code(&totp(&secret, 30)),
            "root@mfa-1",
            "--",
            "true",
        ],
        None,
    )
    .expect_err("wrong or already used one-time code");
    // Each code works once: the login used the next 30 s step, so wait
    // for time to reach it before taking the one after.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::thread::sleep(std::time::Duration::from_secs(30 - now % 30 + 1));
    // A fresh code opens the session.
    let code = totp(&secret, 30);
    let out = c
        .run_as(
            "dave",
            &["ssh", "--otp", &code, "root@mfa-1", "--", "echo mfa-ok"],
            None,
        )
        .expect_ok();
    assert!(out.stdout.contains("mfa-ok"), "{}", out.all());
    // The same code does not work twice.
    c.run_as(
        "dave",
        &["ssh", "--otp", &code, "root@mfa-1", "--", "true"],
        None,
    )
    .expect_err("already used");
    // The session certificate is good for its node only.
    let keys = c.keys_dir("dave");
    let id = c
        .run_as("dave", &["ls", "--format", "json"], None)
        .expect_ok()
        .stdout;
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&id).unwrap();
    let id = nodes
        .iter()
        .find(|n| n["metadata"]["labels"]["env"] == "mfa" && n["spec"]["hostname"] == "mfa-1")
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("mfa-1 not listed: {nodes:?}"));
    let mfa_cert = keys.join(format!("dave-mfa-{id}-cert.pub"));
    assert!(mfa_cert.exists());
    let other = run_program(
        "ssh",
        &[
            "-F".into(),
            cfg.display().to_string(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            format!("CertificateFile={}", mfa_cert.display()),
            "root@mfa-2.warden".into(),
            "echo no".into(),
        ],
        None,
    );
    assert!(
        !other.ok && other.stderr.contains("fresh MFA check"),
        "{}",
        other.all()
    );
    // Roles without the option are unaffected.
    c.run_as("erin", &["ssh", "root@mfa-1", "--", "true"], None)
        .expect_ok();
    let ev = c.events();
    assert!(ev
        .iter()
        .any(|e| e["code"] == "WA1010I" && e["user"] == "dave"));
    assert!(ev
        .iter()
        .any(|e| e["code"] == "WA1010W" && e["user"] == "dave"));

    // Challenges are stored ceremonies: one user cannot ask for them
    // without bound (each `warden ssh` without --otp asks for one). All at
    // once, so that a slow machine does not refill the bucket meanwhile.
    let outs: Vec<Out> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..45)
            .map(|_| scope.spawn(|| c.run_as("dave", &["ssh", "root@mfa-1", "--", "true"], None)))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let limited = outs
        .iter()
        .filter(|o| o.stderr.contains("too many MFA challenges"))
        .count();
    for o in &outs {
        assert!(!o.ok, "{}", o.all());
        assert!(
            o.stderr.contains("too many MFA challenges") || o.stderr.contains("--otp"),
            "{}",
            o.all()
        );
    }
    assert!((1..=25).contains(&limited), "{limited} of 45 limited");
}
