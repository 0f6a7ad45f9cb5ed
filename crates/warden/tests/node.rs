//! End-to-end tests of the node agent with Debian's stock `ssh`, `scp` and
//! `sftp` (openssh-client, openssh-sftp-server).

mod common;

use common::*;
use std::io::{Read, Write};
use std::time::Duration;

/// A cluster with users, each logged in under their own home.
fn cluster_with(users: &[(&str, &str, &str)]) -> (Cluster, std::path::PathBuf) {
    let dir = temp_dir("node");
    let c = Cluster::start_with(
        &dir,
        &[
            "--name",
            "db-1",
            "--labels",
            "env=dev,team=db",
            "--label-cmd",
            "kernel='uname -s'@1s",
        ],
    );
    for (user, roles, logins) in users {
        let secret = c.add_user(user, roles, logins);
        c.login(user, user, &totp(&secret, 30)).expect_ok();
    }
    (c, dir)
}

/// Whether the audit log has (or gets within 20 s) an event of type `ty`
/// with `code` for which `pred` holds. Nodes send their events as they
/// come, so one may still be on its way when the test looks.
fn has_event(c: &Cluster, ty: &str, code: &str, pred: impl Fn(&serde_json::Value) -> bool) -> bool {
    let t0 = std::time::Instant::now();
    loop {
        if c.events()
            .iter()
            .any(|e| e["type"] == ty && e["code"] == code && pred(e))
        {
            return true;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `true` on db-1 as alice with stock `ssh -J` through the proxy's jump
/// host, configured by `warden config` (`cfg`).
fn jump(c: &Cluster, cfg: &std::path::Path) -> Out {
    run_program(
        "ssh",
        &[
            "-F".into(),
            cfg.display().to_string(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-J".into(),
            format!("alice@{}", c.proxy),
            "root@db-1.warden".into(),
            "true".into(),
        ],
        None,
    )
}

/// A live session of alice's on the node: a command that would run for a
/// minute, started (its first line printed) before this returns.
fn live_session(c: &Cluster) -> std::process::Child {
    let mut args = c.openssh("alice", "alice");
    args.extend([
        format!("root@{}", c.node_host()),
        "echo started; sleep 60; echo finished".into(),
    ]);
    let live = std::process::Command::new("ssh")
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    live
}

/// Waits (at most 5 s) for a live session to be ended by `what`, and
/// checks it was cut short; returns what the user saw on stderr.
fn ended_by(mut live: std::process::Child, what: &str) -> String {
    use std::io::Read;
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = live.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "live session not ended within 5 s of the {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("{what} to session end: {:?}", t0.elapsed());
    assert!(!status.success());
    let mut stdout = String::new();
    let mut stderr = String::new();
    live.stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    live.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stdout.contains("started") && !stdout.contains("finished"),
        "{stdout}"
    );
    stderr
}

#[test]
fn stock_openssh_exec_shell_copy_and_forward() {
    let (c, dir) = cluster_with(&[("alice", "access,auditor", "root")]);

    // Key exchange: the post-quantum hybrid when the stock client offers
    // one the node has (ML-KEM, OpenSSH 9.9+), else curve25519 (OpenSSH
    // 9.2-9.8 offer sntrup761 only, which russh lacks).
    let client_kex = run_program("ssh", &["-Q".into(), "kex".into()], None)
        .expect_ok()
        .stdout;
    let out = c
        .ssh("alice", "alice", "root", &["-v"], "true", None)
        .expect_ok();
    let negotiated = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("debug1: kex: algorithm: "))
        .unwrap_or_default()
        .to_string();
    let want = if client_kex.lines().any(|k| k == "mlkem768x25519-sha256") {
        "mlkem768x25519-sha256"
    } else {
        "curve25519-sha256"
    };
    eprintln!("stock ssh negotiated {negotiated} with the node");
    assert_eq!(negotiated, want, "{}", out.stderr);

    // exec: output and exit codes travel back.
    let out = c.ssh(
        "alice",
        "alice",
        "root",
        &[],
        "echo hello from $(whoami); exit 7",
        None,
    );
    assert_eq!(out.code, Some(7), "{}", out.all());
    assert_eq!(out.stdout.trim(), "hello from root");
    // stdin reaches the command, and its end closes stdin.
    let out = c.ssh("alice", "alice", "root", &[], "wc -c", Some("twelve bytes"));
    assert_eq!(out.stdout.trim(), "12", "{}", out.all());
    // A PTY when asked for one.
    let out = c.ssh(
        "alice",
        "alice",
        "root",
        &["-tt"],
        "tty; echo TERM=$TERM",
        None,
    );
    assert!(out.stdout.contains("/dev/pts/"), "{}", out.all());
    assert!(out.ok, "{}", out.all());

    // scp both ways (SFTP protocol, and the legacy one with -O).
    let up = dir.join("up.bin");
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&up, &data).unwrap();
    let remote = dir.join("remote.bin");
    let down = dir.join("down.bin");
    let (_, port) = c.node.rsplit_once(':').unwrap();
    let scp = |args: Vec<String>| {
        let mut full = c.openssh("alice", "alice");
        // scp spells the port -P.
        let p = full.iter().position(|a| a == "-p").unwrap();
        full[p] = "-P".into();
        full.extend(args);
        run_program("scp", &full, None)
    };
    let host = c.node_host();
    scp(vec![
        up.display().to_string(),
        format!("root@{host}:{}", remote.display()),
    ])
    .expect_ok();
    scp(vec![
        format!("root@{host}:{}", remote.display()),
        down.display().to_string(),
    ])
    .expect_ok();
    assert_eq!(std::fs::read(&down).unwrap(), data, "scp round trip");
    let legacy = dir.join("legacy.bin");
    scp(vec![
        "-O".into(),
        up.display().to_string(),
        format!("root@{host}:{}", legacy.display()),
    ])
    .expect_ok();
    assert_eq!(std::fs::read(&legacy).unwrap(), data, "legacy scp");

    // sftp put, ls, get.
    let batch = dir.join("batch");
    let sftp_remote = dir.join("sftp-remote.bin");
    let sftp_down = dir.join("sftp-down.bin");
    std::fs::write(
        &batch,
        format!(
            "put {} {}\nls -l {}\nget {} {}\n",
            up.display(),
            sftp_remote.display(),
            sftp_remote.display(),
            sftp_remote.display(),
            sftp_down.display()
        ),
    )
    .unwrap();
    let mut args = c.openssh("alice", "alice");
    let p = args.iter().position(|a| a == "-p").unwrap();
    args[p] = "-P".into();
    args.extend([
        "-b".to_string(),
        batch.display().to_string(),
        format!("root@{host}"),
    ]);
    let out = run_program("sftp", &args, None).expect_ok();
    assert!(
        out.stdout.contains("2000000"),
        "ls -l shows the size:\n{}",
        out.all()
    );
    assert_eq!(std::fs::read(&sftp_down).unwrap(), data, "sftp round trip");

    // -L carries real bytes to a TCP service next to the node, and the
    // forward is noted in the recording of the connection's session.
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in echo.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    let local_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut fwd_args = c.openssh("alice", "alice");
    fwd_args.extend([
        "-o".to_string(),
        "ExitOnForwardFailure=yes".into(),
        "-L".into(),
        format!("{local_port}:127.0.0.1:{echo_port}"),
        format!("root@{host}"),
        "echo forwarding-session; sleep 30".into(),
    ]);
    let mut fwd = std::process::Command::new("ssh")
        .args(&fwd_args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(fwd.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "forwarding-session");
    let mut echoed = Vec::new();
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", local_port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"through the tunnel").unwrap();
            let mut buf = [0u8; 64];
            if let Ok(n) = s.read(&mut buf) {
                echoed = buf[..n].to_vec();
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = fwd.kill();
    let _ = fwd.wait();
    assert_eq!(echoed, b"through the tunnel");
    let _ = port;
    let forward = format!("# port forward to 127.0.0.1:{echo_port}");
    let mut played = String::new();
    for _ in 0..100 {
        let out = c
            .run_as("alice", &["recordings", "ls", "--format", "json"], None)
            .expect_ok();
        let list: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
        if let Some(r) = list.iter().find(|r| {
            r["command"]
                .as_str()
                .is_some_and(|c| c.contains("forwarding-session"))
        }) {
            let id = r["session_id"].as_str().unwrap();
            played = c
                .run_as("alice", &["play", id, "--format", "text"], None)
                .expect_ok()
                .stdout;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(played.contains(&forward), "{played}");

    // The warden client finds the node by name and runs stock ssh.
    let out = c
        .run_as("alice", &["ls", "--format", "json"], None)
        .expect_ok();
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(nodes.len(), 1);
    let name = nodes[0]["spec"]["hostname"].as_str().unwrap().to_string();
    let out = c
        .run_as(
            "alice",
            &[
                "ssh",
                &format!("root@{name}"),
                "--",
                "echo",
                "via",
                "warden",
            ],
            None,
        )
        .expect_ok();
    assert_eq!(out.stdout.trim(), "via warden");
    let out = c.run_as("alice", &["ls"], None).expect_ok();
    assert!(out.stdout.contains("online"), "{}", out.stdout);
    assert_eq!(name, "db-1");
    assert_eq!(nodes[0]["metadata"]["labels"]["env"], "dev");
    assert_eq!(nodes[0]["metadata"]["labels"]["team"], "db");
    // A dynamic label from a command.
    let mut kernel = serde_json::Value::Null;
    for _ in 0..50 {
        let out = c.admin(&["nodes", "ls", "--format", "json"]).expect_ok();
        let nodes: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
        kernel = nodes[0]["metadata"]["labels"]["kernel"].clone();
        if kernel == "Linux" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(kernel, "Linux", "label-cmd value");
    // Label selectors.
    let out = c.run_as("alice", &["ls", "env=prod"], None).expect_ok();
    assert!(!out.stdout.contains("db-1"), "{}", out.stdout);

    // Every session is audited.
    assert!(has_event(&c, "exec", "WA6003I", |e| e["user"] == "alice"
        && e["login"] == "root"));
    assert!(has_event(&c, "session.end", "WA6001I", |e| e["fields"]
        ["exit_code"]
        == 7));
    assert!(has_event(&c, "subsystem", "WA6004I", |e| e["fields"]
        ["subsystem"]
        == "sftp"));
    assert!(has_event(&c, "port_forward", "WA6005I", |_| true));
    assert!(c
        .events()
        .iter()
        .all(|e| e["type"] != "session.start" || e["node"].is_string()));
}

#[test]
fn node_refuses_clearly_and_audits() {
    let dir = temp_dir("refuse");
    let c = Cluster::start(&dir);
    let roles = dir.join("roles.yaml");
    std::fs::write(
        &roles,
        "kind: role\nversion: v1\nmetadata:\n  name: prod-only\nspec:\n  allow:\n    logins: [root]\n    node_labels:\n      env: prod\n---\nkind: role\nversion: v1\nmetadata:\n  name: no-root\nspec:\n  deny:\n    logins: [root]\n---\nkind: role\nversion: v1\nmetadata:\n  name: no-nodes\nspec:\n  deny:\n    node_labels:\n      '*': '*'\n---\nkind: role\nversion: v1\nmetadata:\n  name: no-forward\nspec:\n  options:\n    permit_pty: true\n    permit_port_forwarding: false\n  allow:\n    logins: [root]\n    node_labels:\n      '*': '*'\n",
    )
    .unwrap();
    c.admin(&["roles", "apply", "-f", roles.to_str().unwrap()])
        .expect_ok();
    for (user, roles) in [
        ("alice", "access"),
        ("bob", "prod-only"),
        ("carol", "access,no-root"),
        ("dave", "no-forward"),
        ("erin", "access,no-nodes"),
    ] {
        let secret = c.add_user(user, roles, "root");
        c.login(user, user, &totp(&secret, 30)).expect_ok();
    }
    // Baseline: alice gets in.
    c.ssh("alice", "alice", "root", &[], "true", None)
        .expect_ok();

    // A login that is not in the certificate.
    let out = c.ssh("alice", "alice", "daemon", &[], "true", None);
    assert!(
        !out.ok && out.stderr.contains("not in your certificate"),
        "{}",
        out.all()
    );
    // A role whose labels do not match this node.
    let out = c.ssh("bob", "bob", "root", &[], "true", None);
    assert!(!out.ok && out.stderr.contains("denied"), "{}", out.all());
    // A deny rule beats the allow of another role: a denied login never
    // makes it into the certificate...
    let out = c.ssh("carol", "carol", "root", &[], "true", None);
    assert!(
        !out.ok && out.stderr.contains("not in your certificate"),
        "{}",
        out.all()
    );
    // ...and a node deny rule is enforced at the node, with the role named.
    let out = c.ssh("erin", "erin", "root", &[], "true", None);
    assert!(
        !out.ok && out.stderr.contains("denied by role no-nodes"),
        "{}",
        out.all()
    );
    // Port forwarding without the permission.
    let out = c.ssh(
        "dave",
        "dave",
        "root",
        &["-o", "ExitOnForwardFailure=yes", "-W", "127.0.0.1:9"],
        "",
        None,
    );
    assert!(!out.ok, "{}", out.all());
    assert!(
        out.stderr.contains("prohibited") || out.stderr.contains("open failed"),
        "{}",
        out.all()
    );

    // Live roles: removing alice's role ends her access without a new login.
    c.admin(&["users", "update", "alice", "--roles", "auditor"])
        .expect_ok();
    let mut refused = false;
    for _ in 0..50 {
        let out = c.ssh("alice", "alice", "root", &[], "true", None);
        if !out.ok && out.stderr.contains("denied") {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(refused, "a removed role must stop new sessions at once");

    // A certificate from another cluster never gets in, even with a valid
    // login: the node trusts only its own user CA.
    let other_dir = temp_dir("other");
    let other = Cluster::start(&other_dir);
    let secret = other.add_user("mallory", "access", "root");
    other
        .login("mallory", "mallory", &totp(&secret, 30))
        .expect_ok();
    let mut args = c.openssh("alice", "alice");
    let theirs = other.keys_dir("mallory");
    for a in args.iter_mut() {
        if a.starts_with("CertificateFile=") {
            *a = format!(
                "CertificateFile={}",
                theirs.join("mallory-cert.pub").display()
            );
        }
    }
    let i = args.iter().position(|a| a == "-i").unwrap();
    args[i + 1] = theirs.join("mallory").display().to_string();
    args.extend(["root@".to_string() + &c.node_host(), "true".into()]);
    let out = run_program("ssh", &args, None);
    assert!(
        !out.ok && out.stderr.contains("Permission denied"),
        "{}",
        out.all()
    );

    // Each refusal is in the audit log with its reason.
    let rejected = |needle: &str| {
        has_event(&c, "session.rejected", "WA6002W", |e| {
            e["message"].as_str().unwrap_or("").contains(needle)
        })
    };
    assert!(rejected("not in your certificate"));
    assert!(rejected("denied by role no-nodes"));
    assert!(rejected("not signed by this cluster's user CA"));
    assert!(has_event(&c, "port_forward", "WA6005W", |e| e["user"] == "dave"));
}

#[test]
fn remote_forward_agent_and_x11() {
    let dir = temp_dir("fwd");
    let c = Cluster::start(&dir);
    let roles = dir.join("x11.yaml");
    std::fs::write(
        &roles,
        "kind: role\nversion: v1\nmetadata:\n  name: x11\nspec:\n  options:\n    permit_x11_forwarding: true\n",
    )
    .unwrap();
    c.admin(&["roles", "apply", "-f", roles.to_str().unwrap()])
        .expect_ok();
    let secret = c.add_user("alice", "access,x11", "root");
    c.login("alice", "alice", &totp(&secret, 30)).expect_ok();

    // -R: a port on the node reaches a service on the client's side.
    let svc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let svc_port = svc.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = svc.accept() {
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).unwrap_or(0);
            let _ = s.write_all(&[b"R:".as_slice(), &buf[..n]].concat());
        }
    });
    let remote_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = c.ssh(
        "alice",
        "alice",
        "root",
        &["-o", "ExitOnForwardFailure=yes", "-R", &format!("{remote_port}:127.0.0.1:{svc_port}")],
        &format!(
            "python3 -c \"import socket; s=socket.create_connection(('127.0.0.1',{remote_port})); s.sendall(b'back'); print(s.recv(64).decode())\""
        ),
        None,
    );
    assert_eq!(out.stdout.trim(), "R:back", "{}", out.all());

    // -A: the user's agent answers on the node.
    let agent_dir = dir.join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let sock = agent_dir.join("sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..50 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let key = c.keys_dir("alice").join("alice");
    let added = std::process::Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let mut args = c.openssh("alice", "alice");
    args.extend([
        "-A".to_string(),
        format!("root@{}", c.node_host()),
        "ssh-add -l".into(),
    ]);
    let out = std::process::Command::new("ssh")
        .args(&args)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ED25519"),
        "agent not forwarded:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // -X: a real X client on the node draws on an Xvfb next to the client.
    let display = 40 + std::process::id() % 50;
    let mut xvfb = std::process::Command::new("Xvfb")
        .args([format!(":{display}"), "-nolisten".into(), "tcp".into()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("Xvfb (Debian package xvfb) must be installed");
    let x_socket = format!("/tmp/.X11-unix/X{display}");
    for _ in 0..100 {
        if std::path::Path::new(&x_socket).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut args = c.openssh("alice", "alice");
    args.extend([
        "-X".to_string(),
        format!("root@{}", c.node_host()),
        "echo DISPLAY=$DISPLAY; xdpyinfo | grep -E 'name of display|vendor string'".into(),
    ]);
    let out = std::process::Command::new("ssh")
        .args(&args)
        .env("DISPLAY", format!(":{display}"))
        .output()
        .unwrap();
    let _ = xvfb.kill();
    let _ = xvfb.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("DISPLAY=localhost:1"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("The X.Org Foundation"),
        "X client did not reach the X server:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without the role's permission, no X11 (and the certificate says so).
    let bob = c.add_user("bob", "access", "root");
    c.login("bob", "bob", &totp(&bob, 30)).expect_ok();
    let out = c.ssh(
        "bob",
        "bob",
        "root",
        &["-X"],
        "echo DISPLAY=[$DISPLAY]",
        None,
    );
    assert!(out.stdout.contains("DISPLAY=[]"), "{}", out.all());
}

#[test]
fn expired_certificate_is_refused() {
    let dir = temp_dir("expiry");
    let c = Cluster::start(&dir);
    let secret = c.add_user("alice", "access", "root");
    c.run_as(
        "alice",
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
            &totp(&secret, 30),
            "--ttl",
            "1m",
        ],
        Some(&format!("{PASSWORD}\n")),
    )
    .expect_ok();
    c.ssh("alice", "alice", "root", &[], "true", None)
        .expect_ok();
    // An API connection kept alive across the expiry (TLS checks the
    // certificate at the handshake only).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = warden_client::profile::ProfileStore::new(dir.join("alice"));
    let profile = store.current().unwrap().expect("alice's profile");
    let api = warden_client::login::auth_client(&store, &profile).unwrap();
    let mut conn = rt.block_on(async {
        let tls = api.connect().await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        sender
    });
    let whoami = |conn: &mut hyper::client::conn::http1::SendRequest<
        http_body_util::Empty<hyper::body::Bytes>,
    >| {
        rt.block_on(async {
            use http_body_util::BodyExt;
            conn.ready().await.expect("the connection is still open");
            let req = hyper::Request::get("/v1/whoami")
                .header("host", "auth")
                .body(http_body_util::Empty::new())
                .unwrap();
            let resp = conn.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).to_string())
        })
    };
    assert_eq!(whoami(&mut conn).0, 200);
    // The shortest certificate lives a minute; wait it out, using the
    // connection often enough that auth keeps it open (30 s idle limit).
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(20));
        assert_eq!(whoami(&mut conn).0, 200);
    }
    std::thread::sleep(Duration::from_secs(22));
    let (status, body) = whoami(&mut conn);
    assert_eq!(
        status, 401,
        "an expired certificate keeps no rights: {body}"
    );
    assert!(
        body.contains("certificate expired") && body.contains("warden login"),
        "{body}"
    );
    let out = c.ssh("alice", "alice", "root", &[], "true", None);
    assert!(
        !out.ok && out.stderr.contains("Permission denied"),
        "{}",
        out.all()
    );
    c.run_as("alice", &["status"], None)
        .expect_err("certificate expired");
    c.run_as("alice", &["ssh", "root@x", "--", "true"], None)
        .expect_err("run 'warden login'");
    assert!(has_event(&c, "session.rejected", "WA6002W", |e| e
        ["message"]
        .as_str()
        .unwrap_or("")
        .contains("expired")));
}

/// A node run by an ordinary user serves that user's login only.
#[test]
fn unprivileged_node_serves_only_its_own_login() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        eprintln!("skipped: needs root to create a test account (CI runs as root)");
        return;
    }
    let user = "wardentest";
    if std::process::Command::new("id")
        .arg(user)
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        let ok = std::process::Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", user])
            .status()
            .unwrap()
            .success();
        assert!(ok, "useradd failed");
    }
    let dir = temp_dir("solo");
    let c = Cluster::start(&dir);
    // The node is reached at 127.0.0.1: its token allows that address.
    let out = c
        .admin(&[
            "tokens",
            "add",
            "--type",
            "node",
            "--addr",
            "127.0.0.1",
            "--format",
            "json",
        ])
        .expect_ok();
    let tok: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let node_dir = dir.join("solo-node");
    std::fs::create_dir_all(&node_dir).unwrap();
    let chown = std::process::Command::new("chown")
        .args(["-R", user])
        .arg(&node_dir)
        .status()
        .unwrap();
    assert!(chown.success());
    let mut node = std::process::Command::new("runuser")
        .args([
            "-u", user, "--", WARDEN, "start", "--roles", "node", "--proxy", &c.proxy,
        ])
        .args([
            "--token",
            tok["token"].as_str().unwrap(),
            "--ca-pin",
            &c.pin,
        ])
        .args([
            "--name",
            "solo",
            "--listen-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&node_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = node.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let addr = line
        .split(" serving SSH on ")
        .nth(1)
        .unwrap_or_else(|| panic!("node did not start: {line}"))
        .trim()
        .trim_end_matches('.')
        .to_string();
    let secret = c.add_user("alice", "access", &format!("{user},root"));
    c.login("alice", "alice", &totp(&secret, 30)).expect_ok();
    let mut args = c.openssh("alice", "alice");
    let p = args.iter().position(|a| a == "-p").unwrap();
    args[p + 1] = addr.rsplit_once(':').unwrap().1.to_string();
    let run = |login: &str| {
        let mut a = args.clone();
        a.extend([format!("{login}@127.0.0.1"), "whoami".to_string()]);
        run_program("ssh", &a, None)
    };
    let out = run(user);
    let _ = &out;
    let refused = run("root");
    // SIGTERM, which runuser passes on to the node (a SIGKILL would end
    // runuser alone and leave the node running).
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(node.id() as i32, libc::SIGTERM) };
    let _ = node.wait();
    assert_eq!(out.stdout.trim(), user, "{}", out.all());
    assert!(
        !refused.ok && refused.stderr.contains("only serves the login"),
        "{}",
        refused.all()
    );
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// An interactive shell in a real terminal (tmux): the PTY takes the
/// terminal's size, follows resizes, and Ctrl-C interrupts the foreground
/// command without ending the shell.
#[test]
fn interactive_shell_resize_and_ctrl_c() {
    let (c, dir) = cluster_with(&[("alice", "access", "root")]);
    let tmux_sock = dir.join("tmux.sock");
    let tmux = |args: &[&str]| {
        let out = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&tmux_sock)
            .args(args)
            .output()
            .expect("tmux (Debian package tmux) must be installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut args = c.openssh("alice", "alice");
    args.extend(["-tt".to_string(), format!("root@{}", c.node_host())]);
    let command = std::iter::once("ssh".to_string())
        .chain(args.iter().map(|a| format!("'{a}'")))
        .collect::<Vec<_>>()
        .join(" ");
    tmux(&["new-session", "-d", "-x", "100", "-y", "30", &command]);
    let wait_for = |needle: &str| {
        for _ in 0..100 {
            let screen = tmux(&["capture-pane", "-p"]);
            if screen.contains(needle) {
                return screen;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{needle:?} never appeared:\n{}",
            tmux(&["capture-pane", "-p"])
        );
    };
    std::thread::sleep(Duration::from_millis(500));
    tmux(&["send-keys", "echo SIZE=$(stty size)", "Enter"]);
    wait_for("SIZE=30 100");
    tmux(&["resize-window", "-x", "120", "-y", "40"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux(&["send-keys", "echo SIZE=$(stty size)", "Enter"]);
    wait_for("SIZE=40 120");
    tmux(&["send-keys", "sleep 100; echo NOT-INTERRUPTED", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux(&["send-keys", "C-c", ""]);
    tmux(&["send-keys", "echo AFTER-$((40+2))", "Enter"]);
    let screen = wait_for("AFTER-42");
    // The command line shows the text; its output would be a line alone.
    assert!(
        !screen.lines().any(|l| l.trim() == "NOT-INTERRUPTED"),
        "{screen}"
    );
    tmux(&["send-keys", "exit", "Enter"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux(&["kill-server"]);
}

/// A lock refuses new sessions at once and ends live ones within seconds,
/// with the reason; removing it restores access.
#[test]
fn locks_end_live_sessions_and_refuse_new_ones() {
    let (c, dir) = cluster_with(&[("alice", "access", "root")]);
    c.ssh("alice", "alice", "root", &[], "true", None)
        .expect_ok();
    let cfg = c.ssh_config("alice");
    let live = live_session(&c);
    let out = c
        .admin(&[
            "lock",
            "--user",
            "alice",
            "--reason",
            "INC-1 compromised laptop",
        ])
        .expect_ok();
    assert!(out.stdout.contains("Locked user=alice"), "{}", out.stdout);
    let stderr = ended_by(live, "lock");
    assert!(stderr.contains("INC-1"), "the user is told why: {stderr}");
    // New sessions are refused with the reason.
    let out = c.ssh("alice", "alice", "root", &[], "true", None);
    assert!(!out.ok && out.stderr.contains("INC-1"), "{}", out.all());
    // Through the proxy's jump host too (stock ssh -J, as after 'warden
    // config'): it tells the user why instead of OpenSSH's bare
    // "Permission denied", and audits the attempt.
    let out = jump(&c, &cfg);
    assert!(
        !out.ok
            && out
                .stderr
                .contains("warden: access denied: locked (user=alice): INC-1 compromised laptop"),
        "{}",
        out.all()
    );
    assert!(!out.stderr.contains("Permission denied"), "{}", out.all());
    assert!(has_event(&c, "session.rejected", "WA6002W", |e| e["user"]
        == "alice"
        && e["fields"]["at"] == "jump host"
        && e["message"].as_str().unwrap_or("").contains("INC-1")));
    // A certificate of some other CA naming alice is refused there too,
    // but not audited: anyone could make one, for any name.
    let fake_ca = dir.join("fake_ca");
    let key = c.keys_dir("alice").join("alice");
    let fake_pub = dir.join("alice_fake.pub");
    std::fs::copy(format!("{}.pub", key.display()), &fake_pub).unwrap();
    for args in [
        vec![
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            fake_ca.to_str().unwrap(),
        ],
        vec![
            "-q",
            "-s",
            fake_ca.to_str().unwrap(),
            "-I",
            "alice",
            "-n",
            "root",
            "-V",
            "+1h",
            fake_pub.to_str().unwrap(),
        ],
    ] {
        assert!(std::process::Command::new("ssh-keygen")
            .args(&args)
            .status()
            .unwrap()
            .success());
    }
    let jump_events = || {
        c.events()
            .iter()
            .filter(|e| e["fields"]["at"] == "jump host")
            .count()
    };
    let before = jump_events();
    let out = run_program(
        "ssh",
        &[
            "-F".into(),
            "/dev/null".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "-i".into(),
            key.display().to_string(),
            "-o".into(),
            format!(
                "CertificateFile={}",
                dir.join("alice_fake-cert.pub").display()
            ),
            "-p".into(),
            c.proxy.rsplit_once(':').unwrap().1.to_string(),
            "alice@127.0.0.1".into(),
            "true".into(),
        ],
        None,
    );
    assert!(
        !out.ok && out.stderr.contains("Permission denied"),
        "{}",
        out.all()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(jump_events(), before, "a foreign certificate was audited");
    // And new logins too.
    let out = c.admin(&["locks", "ls", "--format", "json"]).expect_ok();
    let locks: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(locks.len(), 1);
    let id = locks[0]["metadata"]["name"].as_str().unwrap().to_string();
    // Removing the lock restores access.
    c.admin(&["locks", "rm", &id]).expect_ok();
    let mut ok = false;
    for _ in 0..50 {
        if c.ssh("alice", "alice", "root", &[], "true", None).ok {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "access not restored after removing the lock");
    assert!(has_event(&c, "session.terminated", "WA6008W", |e| e
        ["user"]
        == "alice"));
    assert!(has_event(&c, "lock.create", "WA7000I", |_| true));
    assert!(has_event(&c, "lock.delete", "WA7001I", |_| true));
}

/// A connection that only forwards ports (`ssh -N -L`) is live too: a
/// lock ends it like a session.
#[test]
fn a_lock_ends_a_forward_only_connection() {
    let (c, _dir) = cluster_with(&[("alice", "access", "root")]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut args = c.openssh("alice", "alice");
    args.extend([
        "-N".to_string(),
        "-o".to_string(),
        "ExitOnForwardFailure=yes".to_string(),
        "-L".to_string(),
        format!("127.0.0.1:{port}:127.0.0.1:9"),
        format!("root@{}", c.node_host()),
    ]);
    let mut fwd = std::process::Command::new("ssh")
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The forward is up once its local port takes a connection, which
    // opens a forwarding channel on the node.
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "forward never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(fwd.try_wait().unwrap().is_none(), "ssh -N ended early");
    c.admin(&["lock", "--user", "alice", "--reason", "INC-11"])
        .expect_ok();
    let t0 = std::time::Instant::now();
    loop {
        if fwd.try_wait().unwrap().is_some() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(5) {
            let _ = fwd.kill();
            panic!("a forward-only connection outlived its user's lock by 5 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The jump host hears of a lock by push: a connection right after the
/// lock is refused there, with the reason, rather than let through to the
/// node on a lock list fetched before it.
#[test]
fn the_jump_host_refuses_a_new_lock_at_once() {
    let (c, _dir) = cluster_with(&[("alice", "access", "root")]);
    let cfg = c.ssh_config("alice");
    // The jump host has just read the locks.
    jump(&c, &cfg).expect_ok();
    let t0 = std::time::Instant::now();
    c.admin(&["lock", "--user", "alice", "--reason", "INC-9"])
        .expect_ok();
    let out = jump(&c, &cfg);
    eprintln!("lock to a refused jump: {:?}", t0.elapsed());
    assert!(
        !out.ok
            && out
                .stderr
                .contains("warden: access denied: locked (user=alice): INC-9"),
        "{}",
        out.all()
    );
}

/// Taking away the role that allowed a login ends the live session within
/// seconds, as a lock does: the node follows the roles and users auth
/// pushes and re-decides its live connections on every change.
#[test]
fn a_removed_role_ends_live_sessions() {
    let (c, _dir) = cluster_with(&[("alice", "access", "root")]);
    c.ssh("alice", "alice", "root", &[], "true", None)
        .expect_ok();
    let live = live_session(&c);
    c.admin(&["users", "update", "alice", "--roles", "auditor"])
        .expect_ok();
    let stderr = ended_by(live, "role removal");
    assert!(
        stderr.contains("access revoked"),
        "the user is told why: {stderr}"
    );
    assert!(has_event(&c, "session.terminated", "WA6008W", |e| e
        ["user"]
        == "alice"
        && e["message"]
            .as_str()
            .unwrap_or("")
            .contains("access revoked")));
}

/// Plain OpenSSH servers trust the cluster's user CA and stop locked users
/// through `warden admin krl` as their RevokedKeys.
#[test]
fn krl_makes_plain_sshd_refuse_locked_users() {
    let (c, dir) = cluster_with(&[("alice", "access", "root")]);
    let ca = dir.join("user_ca.pub");
    let out = c.admin(&["ca", "export", "--type", "user"]).expect_ok();
    std::fs::write(&ca, out.stdout).unwrap();
    let krl = dir.join("revoked.krl");
    c.admin(&["krl", "-o", krl.to_str().unwrap()]).expect_ok();
    let sshd = PlainSshd::start(&dir, &ca, &format!("RevokedKeys {}\n", krl.display()));
    let k = c.keys_dir("alice");
    let ssh_cmd = |command: &str| sshd.ssh(&k, "alice", "root", command);
    let ssh = || ssh_cmd("echo plain sshd");
    let first = sshd.ssh_when_up(&k, "alice", "root", "echo plain sshd");
    assert_eq!(first.stdout.trim(), "plain sshd", "{}", first.all());

    // A command's environment matches sshd's for the same login: the
    // variables sshd sets (SSH_CONNECTION and SSH_CLIENT make bash read
    // ~/.bashrc for remote commands), with the same values where they do
    // not depend on the connection.
    let parse = |out: &str| -> std::collections::BTreeMap<String, String> {
        out.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let under_sshd = parse(&ssh_cmd("env").expect_ok().stdout);
    let under_warden = parse(
        &c.ssh("alice", "alice", "root", &[], "env", None)
            .expect_ok()
            .stdout,
    );
    for (k, v) in &under_sshd {
        let ours = under_warden.get(k);
        assert!(ours.is_some(), "{k} missing under warden: {under_warden:?}");
        if ["USER", "LOGNAME", "HOME", "SHELL", "PATH", "MAIL"].contains(&k.as_str()) {
            assert_eq!(ours, Some(v), "{k}");
        }
    }
    let conn: Vec<&str> = under_warden["SSH_CONNECTION"].split(' ').collect();
    assert_eq!(conn.len(), 4, "{conn:?}");
    assert_eq!(conn[0], "127.0.0.1");
    let client: Vec<&str> = under_warden["SSH_CLIENT"].split(' ').collect();
    assert_eq!(client, [conn[0], conn[1], conn[3]]);
    assert!(!under_warden.contains_key("SSH_TTY"));
    let with_tty = c
        .ssh("alice", "alice", "root", &["-tt"], "echo $SSH_TTY", None)
        .expect_ok();
    assert!(
        with_tty.stdout.trim().starts_with("/dev/pts/"),
        "{}",
        with_tty.all()
    );

    c.admin(&["lock", "--user", "alice", "--reason", "INC-2"])
        .expect_ok();
    let out = c.admin(&["krl", "-o", krl.to_str().unwrap()]).expect_ok();
    assert!(out.stderr.contains("alice"), "{}", out.stderr);
    let check = std::process::Command::new("ssh-keygen")
        .args(["-Q", "-f"])
        .arg(&krl)
        .arg(k.join("alice-cert.pub"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("REVOKED"),
        "{check:?}"
    );
    let refused = ssh();
    drop(sshd);
    assert!(
        !refused.ok && refused.stderr.contains("Permission denied"),
        "{}",
        refused.all()
    );
}

/// Just-in-time access: a request for a role, reviewed by someone else,
/// grants it for the request's lifetime only; the certificate says so.
#[test]
fn access_requests_grant_roles_just_in_time() {
    let dir = temp_dir("requests");
    let c = Cluster::start(&dir);
    let roles = dir.join("roles.yaml");
    std::fs::write(
        &roles,
        "kind: role\nversion: v1\nmetadata:\n  name: requester\nspec:\n  allow:\n    request:\n      roles: [dba]\n---\nkind: role\nversion: v1\nmetadata:\n  name: dba\nspec:\n  options:\n    permit_pty: true\n  allow:\n    logins: [root]\n    node_labels:\n      '*': '*'\n---\nkind: role\nversion: v1\nmetadata:\n  name: reviewer\nspec:\n  allow:\n    review_requests:\n      roles: [dba]\n---\nkind: role\nversion: v1\nmetadata:\n  name: careful-requester\nspec:\n  allow:\n    request:\n      roles: [dba]\n      approvals: 2\n",
    )
    .unwrap();
    c.admin(&["roles", "apply", "-f", roles.to_str().unwrap()])
        .expect_ok();
    for (user, role) in [
        ("bob", "requester"),
        ("alice", "reviewer"),
        ("carol", "careful-requester"),
        ("dave", "reviewer"),
    ] {
        let secret = c.add_user(user, role, "");
        c.login(user, user, &totp(&secret, 30)).expect_ok();
    }
    c.ssh("bob", "bob", "root", &[], "true", None)
        .expect_err("not in your certificate");

    // Only requestable roles; never one's own review.
    c.run_as(
        "bob",
        &[
            "request",
            "create",
            "--roles",
            "editor",
            "--reason",
            "x",
            "--no-wait",
        ],
        None,
    )
    .expect_err("do not let you request");
    let out = c
        .run_as(
            "bob",
            &[
                "request",
                "create",
                "--roles",
                "dba",
                "--reason",
                "INC-9 disk full",
                "--no-wait",
                "--ttl",
                "30m",
            ],
            None,
        )
        .expect_ok();
    let id = out.stdout.trim().to_string();
    c.run_as(
        "bob",
        &["request", "review", &id, "--approve", "--reason", "me"],
        None,
    )
    .expect_err("cannot review your own request");
    let list = c
        .run_as("alice", &["request", "ls", "--format", "json"], None)
        .expect_ok();
    assert!(
        list.stdout.contains(&id),
        "the reviewer sees it: {}",
        list.stdout
    );
    c.run_as(
        "alice",
        &[
            "request",
            "review",
            &id,
            "--approve",
            "--reason",
            "go ahead",
        ],
        None,
    )
    .expect_ok();

    // The approved role applies after a renewal, without a password.
    let out = c.run_as("bob", &["renew"], None).expect_ok();
    assert!(out.stdout.contains("dba"), "{}", out.stdout);
    let status = c
        .run_as("bob", &["status", "--format", "json"], None)
        .expect_ok();
    let s: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert!(
        s["roles"].as_array().unwrap().iter().any(|r| r == "dba"),
        "{s}"
    );
    let left = s["valid_until"].as_i64().unwrap() - time_now();
    assert!(
        left <= 30 * 60 + 5,
        "the certificate outlives the request: {left}s"
    );
    let cert = s["ssh_cert"].as_str().unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .args(["-L", "-f", cert])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("requests@warden"), "{text}");
    let out = c
        .ssh("bob", "bob", "root", &[], "echo elevated", None)
        .expect_ok();
    assert_eq!(out.stdout.trim(), "elevated");
    // Revoking the request (a lock on it) ends what it granted, at once.
    c.admin(&["lock", "--request", &id, "--reason", "INC-9 closed"])
        .expect_ok();
    let mut revoked = false;
    for _ in 0..50 {
        if !c.ssh("bob", "bob", "root", &[], "true", None).ok {
            revoked = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(revoked, "a locked request must stop granting access");
    // A certificate carrying the locked request is refused by the API too
    // (renewal included), until the lock goes or the user logs in again.
    c.run_as("bob", &["request", "ls"], None)
        .expect_err("INC-9 closed");
    c.run_as("bob", &["renew"], None).expect_err("INC-9 closed");
    let out = c.admin(&["locks", "ls", "--format", "json"]).expect_ok();
    let locks: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    for l in &locks {
        c.admin(&["locks", "rm", l["metadata"]["name"].as_str().unwrap()])
            .expect_ok();
    }

    // The waiting flavour: decided while the requester waits; a denial
    // says so.
    let waiting = std::process::Command::new(WARDEN)
        .args(["request", "create", "--roles", "dba", "--reason", "INC-10"])
        .env("WARDEN_HOME", c.dir.join("bob"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pending = None;
    for _ in 0..50 {
        let list = c
            .run_as("alice", &["request", "ls", "--format", "json"], None)
            .expect_ok();
        let reqs: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
        pending = reqs
            .iter()
            .find(|r| r["spec"]["state"] == "pending")
            .map(|r| r["metadata"]["name"].as_str().unwrap().to_string());
        if pending.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let pending = pending.expect("the waiting request appears");
    c.run_as(
        "alice",
        &[
            "request", "review", &pending, "--deny", "--reason", "not now",
        ],
        None,
    )
    .expect_ok();
    let out = waiting.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("denied"),
        "{out:?}"
    );
    // Two approvals from distinct reviewers when the role says so.
    let out = c
        .run_as(
            "carol",
            &[
                "request",
                "create",
                "--roles",
                "dba",
                "--reason",
                "INC-11",
                "--no-wait",
            ],
            None,
        )
        .expect_ok();
    let cid = out.stdout.trim().to_string();
    c.run_as(
        "alice",
        &["request", "review", &cid, "--approve", "--reason", "one"],
        None,
    )
    .expect_ok();
    c.run_as(
        "alice",
        &["request", "review", &cid, "--approve", "--reason", "again"],
        None,
    )
    .expect_err("already reviewed");
    let show = c
        .run_as(
            "carol",
            &["request", "show", &cid, "--format", "json"],
            None,
        )
        .expect_ok();
    assert!(
        show.stdout.contains("\"pending\""),
        "one approval of two: {}",
        show.stdout
    );
    c.run_as(
        "dave",
        &["request", "review", &cid, "--approve", "--reason", "two"],
        None,
    )
    .expect_ok();
    let show = c
        .run_as(
            "carol",
            &["request", "show", &cid, "--format", "json"],
            None,
        )
        .expect_ok();
    assert!(show.stdout.contains("\"approved\""), "{}", show.stdout);
    assert!(has_event(&c, "access_request.review", "WA8001I", |e| e
        ["user"]
        == "alice"));
    assert!(has_event(&c, "cert.renew", "WA8002I", |e| e["user"] == "bob"));
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A webhook receiver: answers the first POST with 500 (so the sender must
/// retry), then 200; checks each X-Warden-Signature with `secret` and
/// appends `ok|bad <event type> <body>` lines to `log`.
fn webhook_receiver(secret: &str, log: &std::path::Path) -> (std::process::Child, u16) {
    let script = r#"
import hashlib, hmac, http.server, sys
secret, log = sys.argv[1].encode(), sys.argv[2]
calls = [0]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        calls[0] += 1
        if calls[0] == 1:
            self.send_response(500); self.end_headers(); return
        parts = dict(p.split("=", 1) for p in self.headers["x-warden-signature"].split(","))
        want = hmac.new(secret, parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
        ok = "ok" if hmac.compare_digest(want, parts["v1"]) else "bad"
        with open(log, "a") as f:
            f.write(ok + " " + self.headers["x-warden-event"] + " " + body.decode() + "\n")
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, secret, log.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    (child, line.trim().parse().expect("receiver port"))
}

/// Resource requests grant one node and login only; an approval rule
/// approves matching requests at once (audited with the rule); a webhook
/// hears about requests, signed; access ends when the request does.
#[test]
fn resource_requests_approval_rules_and_webhooks() {
    let dir = temp_dir("resreq");
    let c = Cluster::start_with(&dir, &["--name", "db-1", "--labels", "team=dba"]);
    let _web = TunnelNode::start(&c, "web-1", "team=web");
    let secret = "0123456789abcdef-hook-secret";
    let log = dir.join("hook.log");
    let (mut receiver, port) = webhook_receiver(secret, &log);
    std::fs::write(dir.join("hook.secret"), format!("{secret}\n")).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "kind: role\nversion: v1\nmetadata:\n  name: searcher\nspec:\n  allow:\n    request:\n      search_as_roles: [ops-all]\n---\nkind: role\nversion: v1\nmetadata:\n  name: ops-all\nspec:\n  allow:\n    logins: [root]\n    node_labels:\n      '*': '*'\n---\nkind: role\nversion: v1\nmetadata:\n  name: ops-reviewer\nspec:\n  allow:\n    review_requests:\n      roles: [ops-all]\n---\nkind: approval_rule\nversion: v1\nmetadata:\n  name: dba-incidents\nspec:\n  requester:\n    roles: [searcher]\n  node_labels:\n    team: dba\n  reason: '^INC-[0-9]+'\n  max_duration: 10m\n---\nkind: webhook\nversion: v1\nmetadata:\n  name: chat\nspec:\n  url: http://127.0.0.1:{port}/hook\n  events: ['access_request.*']\n  secret_file: {}\n",
            dir.join("hook.secret").display()
        ),
    )
    .unwrap();
    let out = c
        .admin(&["apply", "-f", config.to_str().unwrap()])
        .expect_ok();
    assert!(
        out.stdout.contains("+ create approval_rule dba-incidents"),
        "{}",
        out.stdout
    );
    let shown = c.admin(&["get", "webhook", "chat"]).expect_ok();
    assert!(
        !shown.stdout.contains(secret) && shown.stdout.contains("127.0.0.1"),
        "webhook secrets never come back: {}",
        shown.stdout
    );
    c.admin(&["get", "approval_rule", "nope"])
        .expect_err("no approval_rule \"nope\"");
    for (user, role, logins) in [
        ("bob", "searcher", ""),
        ("alice", "ops-reviewer", ""),
        ("ops", "access", "root"),
    ] {
        let s = c.add_user(user, role, logins);
        c.login(user, user, &totp(&s, 30)).expect_ok();
    }
    c.wait_reachable("ops", "root", "web-1");
    c.run_as("bob", &["ssh", "root@db-1", "--", "true"], None)
        .expect_err("");

    // Matches the rule (node team=dba, reason INC-): approved at once,
    // for db-1 and root only.
    let out = c
        .run_as(
            "bob",
            &[
                "request",
                "create",
                "--resource",
                "db-1",
                "--login",
                "root",
                "--reason",
                "INC-77 replica lag",
                "--ttl",
                "1m",
            ],
            None,
        )
        .expect_ok();
    let approved_at = std::time::Instant::now();
    assert!(
        out.stdout.contains("approved (approval_rule/dba-incidents"),
        "{}",
        out.all()
    );
    let out = c
        .run_as("bob", &["ssh", "root@db-1", "--", "echo granted"], None)
        .expect_ok();
    assert_eq!(out.stdout.trim(), "granted");
    c.run_as("bob", &["ssh", "root@web-1", "--", "true"], None)
        .expect_err("");
    c.run_as("bob", &["ssh", "bob@db-1", "--", "true"], None)
        .expect_err("");
    let ls = c
        .run_as("bob", &["ls", "--format", "json"], None)
        .expect_ok();
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&ls.stdout).unwrap();
    assert_eq!(
        nodes.len(),
        1,
        "only the requested node is listed: {}",
        ls.stdout
    );

    // Not matching the rule (team=web): waits for a person; the reviewer
    // must be allowed to review the roles it searched as.
    let out = c
        .run_as(
            "bob",
            &[
                "request",
                "create",
                "--resource",
                "web-1",
                "--login",
                "root",
                "--reason",
                "INC-78",
                "--no-wait",
            ],
            None,
        )
        .expect_ok();
    let id = out.stdout.trim().to_string();
    let show = c
        .run_as("bob", &["request", "show", &id, "--format", "json"], None)
        .expect_ok();
    assert!(show.stdout.contains("\"pending\""), "{}", show.stdout);
    c.run_as(
        "alice",
        &["request", "review", &id, "--approve", "--reason", "ok"],
        None,
    )
    .expect_ok();
    c.run_as("bob", &["renew"], None).expect_ok();
    c.run_as("bob", &["ssh", "root@web-1", "--", "true"], None)
        .expect_ok();
    c.run_as(
        "bob",
        &[
            "request",
            "create",
            "--resource",
            "db-1",
            "--login",
            "bob",
            "--reason",
            "INC-79",
            "--no-wait",
        ],
        None,
    )
    .expect_err("allows login \"bob\"");

    // Audited with the rule; the webhook got every request event, signed,
    // after a retry.
    assert!(has_event(
        &c,
        "access_request.auto_approve",
        "WA8003I",
        |e| e["fields"]["rule"] == "dba-incidents" && e["user"] == "bob"
    ));
    let mut lines = String::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&log).unwrap_or_default();
        if lines.lines().count() >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    receiver.kill().ok();
    let got: Vec<&str> = lines.lines().collect();
    assert!(
        got.iter().all(|l| l.starts_with("ok ")),
        "bad signatures: {lines}"
    );
    for ty in [
        "access_request.create",
        "access_request.auto_approve",
        "access_request.review",
    ] {
        assert!(
            got.iter().any(|l| l.contains(&format!(" {ty} "))),
            "{ty}: {lines}"
        );
    }
    assert!(
        lines.contains("\"request\":{"),
        "payload carries the request: {lines}"
    );

    // The first request's minute runs out: its access is gone.
    std::thread::sleep(Duration::from_secs(62).saturating_sub(approved_at.elapsed()));
    c.run_as("bob", &["ssh", "root@db-1", "--", "true"], None)
        .expect_err("");
}

/// Pids of processes whose command line is exactly `sleep SECONDS`.
fn sleeping(seconds: &str) -> Vec<i32> {
    let want = format!("sleep\0{seconds}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
        })
        .collect()
}

/// A client that goes away leaves nothing of its session running, in a
/// terminal session (background and foreground jobs) and in a command,
/// except what was detached on purpose (nohup, setsid).
#[test]
fn disconnect_leaves_no_process_behind() {
    use std::io::Write;
    let (c, _dir) = cluster_with(&[("alice", "access", "root")]);
    let wait_until = |what: &str, cond: &dyn Fn() -> bool| {
        let t0 = std::time::Instant::now();
        while !cond() {
            assert!(t0.elapsed() < Duration::from_secs(15), "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let detach =
        "nohup sleep {n}2 >/dev/null 2>&1 & setsid sleep {n}3 </dev/null >/dev/null 2>&1 &";
    for (n, pty) in [("610", true), ("620", false)] {
        let detached = detach.replace("{n}", n);
        let mut args = c.openssh("alice", "alice");
        let mut client = if pty {
            args.extend(["-tt".into(), format!("root@{}", c.node_host())]);
            let mut child = std::process::Command::new("ssh")
                .args(&args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let stdin = child.stdin.as_mut().unwrap();
            write!(stdin, "sleep {n}1 &\n{detached}\nsleep {n}4\n").unwrap();
            stdin.flush().unwrap();
            child
        } else {
            args.extend([
                format!("root@{}", c.node_host()),
                format!("sleep {n}1 & {detached} sleep {n}4"),
            ]);
            std::process::Command::new("ssh")
                .args(&args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        let all = [1, 2, 3, 4].map(|i| format!("{n}{i}"));
        wait_until(&format!("session {n} did not start its jobs"), &|| {
            all.iter().all(|s| !sleeping(s).is_empty())
        });
        // The client vanishes (no clean close): the node hangs up.
        client.kill().unwrap();
        let _ = client.wait();
        wait_until(&format!("session {n} left processes behind"), &|| {
            sleeping(&all[0]).is_empty() && sleeping(&all[3]).is_empty()
        });
        std::thread::sleep(Duration::from_millis(500));
        for kept in [&all[1], &all[2]] {
            let pids = sleeping(kept);
            assert_eq!(pids.len(), 1, "detached 'sleep {kept}' must survive");
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pids[0], libc::SIGKILL) };
        }
    }
}

/// `warden request drop`: the requester stops using an approved request;
/// its access ends at once and the certificate is renewed without it.
/// Request ids may be shortened, as in `request ls`.
#[test]
fn dropping_an_approved_request_ends_its_access() {
    let dir = temp_dir("dropreq");
    let c = Cluster::start(&dir);
    let roles = dir.join("roles.yaml");
    std::fs::write(
        &roles,
        "kind: role\nversion: v1\nmetadata: {name: requester}\nspec:\n  allow:\n    request: {roles: [dba]}\n---\nkind: role\nversion: v1\nmetadata: {name: dba}\nspec:\n  allow:\n    logins: [root]\n    node_labels: {'*': '*'}\n---\nkind: role\nversion: v1\nmetadata: {name: reviewer}\nspec:\n  allow:\n    review_requests: {roles: [dba]}\n",
    )
    .unwrap();
    c.admin(&["roles", "apply", "-f", roles.to_str().unwrap()])
        .expect_ok();
    for (user, role) in [("bob", "requester"), ("alice", "reviewer")] {
        let secret = c.add_user(user, role, "");
        c.login(user, user, &totp(&secret, 30)).expect_ok();
    }
    let id = c
        .run_as(
            "bob",
            &[
                "request",
                "create",
                "--roles",
                "dba",
                "--reason",
                "INC-3",
                "--no-wait",
            ],
            None,
        )
        .expect_ok()
        .stdout
        .trim()
        .to_string();
    let short = &id[..8];
    c.run_as(
        "alice",
        &["request", "review", short, "--approve", "--reason", "ok"],
        None,
    )
    .expect_ok();
    let shown = c
        .run_as("bob", &["request", "show", short], None)
        .expect_ok();
    assert!(
        shown.stdout.contains("approved by alice"),
        "{}",
        shown.stdout
    );
    c.run_as("bob", &["renew"], None).expect_ok();
    c.ssh("bob", "bob", "root", &[], "true", None).expect_ok();

    let cert = c.keys_dir("bob").join("bob-cert.pub");
    let elevated = std::fs::read(&cert).unwrap();
    let out = c
        .run_as("bob", &["request", "drop", short], None)
        .expect_ok();
    assert!(
        out.stdout.contains(&format!("Request {id} dropped")),
        "{}",
        out.stdout
    );
    let status: serde_json::Value = serde_json::from_str(
        &c.run_as("bob", &["status", "--format", "json"], None)
            .expect_ok()
            .stdout,
    )
    .unwrap();
    assert!(
        !status["roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "dba"),
        "{status}"
    );
    c.ssh("bob", "bob", "root", &[], "true", None)
        .expect_err("not in your certificate");
    // Nodes decide with the live request: even the certificate from before
    // the drop no longer gets in.
    std::fs::write(&cert, elevated).unwrap();
    c.ssh("bob", "bob", "root", &[], "true", None)
        .expect_err("access to this node as root denied");
    c.run_as("bob", &["request", "drop", short], None)
        .expect_err("grants nothing now");
    c.run_as("bob", &["request", "show", "ffff"], None)
        .expect_err("no request \"ffff\"");
    assert!(has_event(&c, "access_request.drop", "WA8004I", |e| e
        ["user"]
        == "bob"));
}

/// The user CA's keys the all-in-one node trusts, from its certificates.
fn node_trusts(c: &Cluster) -> usize {
    let certs: serde_json::Value = serde_json::from_slice(
        &std::fs::read(c.dir.join("data/node/certs.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    certs["ssh_user_ca_keys"].as_array().map_or(0, Vec::len)
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{what} within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("{what}: {:?}", t0.elapsed());
}

/// The user CA's signing key fingerprint and the number of its keys.
fn user_ca(c: &Cluster) -> (String, usize, String) {
    ca_state(c, "user")
}

/// A CA's signing key fingerprint, the number of its keys, its phase.
fn ca_state(c: &Cluster, kind: &str) -> (String, usize, String) {
    let out = c.admin(&["ca", "ls", "--format", "json"]).expect_ok();
    let keys: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    let user: Vec<&serde_json::Value> = keys.iter().filter(|k| k["ca"] == kind).collect();
    let signing = user
        .iter()
        .find(|k| k["state"] == "signing")
        .map(|k| k["fingerprint"].as_str().unwrap().to_string())
        .unwrap();
    let rotation = user[0]["rotation"].as_str().unwrap_or("").to_string();
    (signing, user.len(), rotation)
}

/// Rotating the user CA drops no one: a live session runs through every
/// phase, the pre-rotation certificate works until the old key is dropped
/// and is refused after, certificates from the new key work from the
/// switch on, and the audit log has each phase. A rollback restores the
/// old key; an automatic rotation runs to its end by itself.
#[test]
fn the_user_ca_rotates_without_dropping_anyone() {
    assert!(
        include_str!("../../../README.md")
            .contains("warden admin ca rotate --type user --grace 8h"),
        "README.md no longer shows the rotation example"
    );
    let dir = temp_dir("rotate");
    let c = Cluster::start_with(&dir, &["--heartbeat-interval", "1s", "--name", "rot"]);
    let alice = c.add_user("alice", "access", "root");
    let bob = c.add_user("bob", "access", "root");
    c.login("alice", "alice", &totp(&alice, 30)).expect_ok();
    let keys = c.keys_dir("alice");
    let old_cert = keys.join("alice-old-cert.pub");
    std::fs::copy(keys.join("alice-cert.pub"), &old_cert).unwrap();
    let with_old = || {
        let mut args: Vec<String> = c
            .openssh("alice", "alice")
            .into_iter()
            .map(|a| match a.starts_with("CertificateFile=") {
                true => format!("CertificateFile={}", old_cert.display()),
                false => a,
            })
            .collect();
        args.extend([format!("root@{}", c.node_host()), "echo old-cert".into()]);
        run_program("ssh", &args, None)
    };
    with_old().expect_ok();
    let (old_key, n, _) = user_ca(&c);
    assert_eq!(n, 1);
    let mut live = live_session(&c);

    // init: the new key is trusted (the node renews on its next
    // heartbeat); the old one still signs.
    c.admin(&["ca", "rotate", "--type", "user", "--phase", "init"])
        .expect_ok();
    c.admin(&["ca", "rotate", "--type", "user", "--phase", "drop"])
        .expect_err("needs phase switched");
    let (signing, n, rotation) = user_ca(&c);
    assert_eq!(
        (signing.as_str(), n, rotation.as_str()),
        (old_key.as_str(), 2, "init")
    );
    wait_for("the node trusts the new key", 15, || node_trusts(&c) == 2);

    // switch: new certificates come from the new key; old ones still work.
    c.admin(&["ca", "rotate", "--type", "user", "--phase", "switch"])
        .expect_ok();
    let (new_key, n, rotation) = user_ca(&c);
    assert!(new_key != old_key && n == 2 && rotation == "switched");
    c.login("bob", "bob", &totp(&bob, 30)).expect_ok();
    assert_eq!(signed_by(&c.keys_dir("bob").join("bob-cert.pub")), new_key);
    assert_eq!(signed_by(&old_cert), old_key);
    c.ssh("bob", "bob", "root", &[], "echo new-cert", None)
        .expect_ok();
    with_old().expect_ok();
    // Through the proxy's jump host too (it re-reads the user CA).
    wait_for("the proxy trusts the new key", 15, || {
        c.run_as("bob", &["ssh", "root@rot", "--", "true"], None).ok
    });

    // drop: what the old key signed is refused, once the node has renewed.
    c.admin(&["ca", "rotate", "--type", "user", "--phase", "drop"])
        .expect_ok();
    assert_eq!(user_ca(&c), (new_key.clone(), 1, String::new()));
    wait_for("the node forgets the old key", 15, || node_trusts(&c) == 1);
    with_old().expect_err("Permission denied");
    c.ssh("bob", "bob", "root", &[], "echo new-cert", None)
        .expect_ok();
    assert!(
        live.try_wait().unwrap().is_none(),
        "the live session survived the rotation"
    );
    let _ = live.kill();
    let _ = live.wait();

    // A rollback puts the old key back before anything is dropped.
    c.admin(&["ca", "rotate", "--type", "user", "--phase", "init"])
        .expect_ok();
    c.admin(&["ca", "rotate", "--type", "user", "--phase", "switch"])
        .expect_ok();
    c.admin(&["ca", "rotate", "--type", "user", "--phase", "rollback"])
        .expect_ok();
    assert_eq!(user_ca(&c), (new_key.clone(), 1, String::new()));

    // Automatic: switch once the node trusts the new key, drop after
    // the grace period.
    c.admin(&["ca", "rotate", "--type", "user", "--grace", "2s"])
        .expect_ok();
    wait_for("the automatic rotation ends", 30, || {
        let (signing, n, _) = user_ca(&c);
        signing != new_key && n == 1
    });
    // Bob's certificate came from the key just dropped: refused once the
    // node has renewed (its next heartbeat).
    wait_for("the node refuses the dropped key", 15, || {
        !c.ssh("bob", "bob", "root", &[], "true", None).ok
    });

    let phases: Vec<(String, String)> = c
        .events()
        .iter()
        .filter(|e| e["type"] == "ca.rotate")
        .map(|e| {
            (
                e["fields"]["phase"].as_str().unwrap().to_string(),
                e["user"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (phase, by) in [
        ("init", "admin"),
        ("switch", "admin"),
        ("drop", "admin"),
        ("rollback", "admin"),
        ("switch", "warden"),
        ("drop", "warden"),
    ] {
        assert!(
            phases.iter().any(|(p, u)| p == phase && u == by),
            "no {phase} by {by} in {phases:?}"
        );
    }
}

/// The node's saved certificates.
fn node_certs(c: &Cluster) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(c.dir.join("data/node/certs.json")).unwrap_or_default())
        .unwrap_or_default()
}

/// The fingerprint of the host CA that signed the node's host certificate.
fn node_host_signer(c: &Cluster) -> String {
    let file = c.dir.join("node-host-cert.pub");
    std::fs::write(&file, node_certs(c)["ssh_host_cert"].as_str().unwrap()).unwrap();
    signed_by(&file)
}

/// The fingerprint of the host CA that signed the certificate an SSH
/// server at `addr` presents (a proxy's jump host), as `ssh -v` reports it.
fn presented_host_signer(addr: &str) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out = run_program(
        "ssh",
        &[
            "-v",
            "-p",
            port,
            "-o",
            "BatchMode=yes",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=10",
            &format!("nobody@{host}"),
            "true",
        ]
        .map(String::from),
        None,
    );
    // "Server host certificate: ... CA ssh-ed25519 SHA256:... valid ..."
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("Server host certificate:"))
        .unwrap_or_else(|| panic!("no host certificate from {addr}: {}", out.all()));
    let after_ca = line.split(" CA ").nth(1).unwrap_or_default();
    after_ca
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("no CA in {line}"))
        .to_string()
}

/// Copies a user's whole Warden home (profile, keys, trusted CAs) as it is
/// now, to run as that snapshot later.
fn snapshot(c: &Cluster, home: &str, copy: &str) {
    let to = c.dir.join(copy);
    let _ = std::fs::remove_dir_all(&to);
    run_program(
        "cp",
        &[
            "-a".into(),
            c.dir.join(home).display().to_string(),
            to.display().to_string(),
        ],
        None,
    )
    .expect_ok();
}

/// Rotating the host and tls CAs drops no one: live sessions (direct and
/// through the proxy) run through every phase; the node and both proxies
/// (the all-in-one and a joined one) renew their certificates by
/// themselves; users who logged in after the init keep working across the
/// switch, and what the old keys signed or trusted stops working at the
/// drop. Automatic rotations of both run to their end by themselves.
#[test]
fn host_and_tls_cas_rotate_without_dropping_anyone() {
    let dir = temp_dir("rotate-ht");
    let c = Cluster::start_with(&dir, &["--heartbeat-interval", "1s", "--name", "rot"]);
    let (mut proxy_b, b) = c.start_proxy("proxy-b", &c.auth);
    let alice = c.add_user("alice", "access", "root");
    let bob = c.add_user("bob", "access", "root");
    // One login each: a one-time code works once.
    let carol = c.add_user("carol", "access", "root");
    let dave = c.add_user("dave", "access", "root");
    let erin = c.add_user("erin", "access", "root");
    let frank = c.add_user("frank", "access", "root");
    let gina = c.add_user("gina", "access", "root");
    c.login("alice", "alice", &totp(&alice, 30)).expect_ok();
    c.wait_reachable("alice", "root", "rot");
    let mut live = live_session(&c);
    let mut live_proxied = c.spawn_ssh("alice", "root@rot", "sleep 120");
    let proxy = c.proxy.clone();
    let (old_host, n, _) = ca_state(&c, "host");
    assert_eq!((n, node_host_signer(&c)), (1, old_host.clone()));
    assert_eq!(presented_host_signer(&proxy), old_host);
    snapshot(&c, "alice", "alice-pre-host");

    // host init: every known_hosts written from now on has both keys.
    c.admin(&["ca", "rotate", "--type", "host", "--phase", "init"])
        .expect_ok();
    assert_eq!(ca_state(&c, "host").1, 2);
    let export = c.admin(&["ca", "export", "--type", "host"]).expect_ok();
    assert_eq!(
        export.stdout.matches("@cert-authority").count(),
        2,
        "{}",
        export.stdout
    );
    c.login("bob", "bob", &totp(&bob, 30)).expect_ok();
    c.ssh("alice-pre-host", "alice", "root", &[], "true", None)
        .expect_ok();

    // host switch: the node and both proxies get host certificates from
    // the new key; a known_hosts with the old key only no longer matches.
    c.admin(&["ca", "rotate", "--type", "host", "--phase", "switch"])
        .expect_ok();
    let (new_host, _, _) = ca_state(&c, "host");
    assert_ne!(new_host, old_host);
    wait_for(
        "the node's host certificate is from the new key",
        15,
        || node_host_signer(&c) == new_host,
    );
    wait_for(
        "both proxies' jump host certificates are from the new key",
        20,
        || presented_host_signer(&proxy) == new_host && presented_host_signer(&b) == new_host,
    );
    c.ssh("bob", "bob", "root", &[], "echo host-switched", None)
        .expect_ok();
    c.run_as("bob", &["ssh", "root@rot", "--", "true"], None)
        .expect_ok();
    c.ssh("alice-pre-host", "alice", "root", &[], "true", None)
        .expect_err("Host key verification failed");

    // host drop: one key again; new logins work.
    c.admin(&["ca", "rotate", "--type", "host", "--phase", "drop"])
        .expect_ok();
    assert_eq!(ca_state(&c, "host"), (new_host.clone(), 1, String::new()));
    c.login("gina", "gina", &totp(&gina, 30)).expect_ok();
    c.ssh("gina", "gina", "root", &[], "true", None).expect_ok();

    // tls init: services trust the new key at once; clients at login.
    let (old_tls, _, _) = ca_state(&c, "tls");
    snapshot(&c, "bob", "bob-pre-tls");
    c.admin(&["ca", "rotate", "--type", "tls", "--phase", "init"])
        .expect_ok();
    wait_for("the node trusts the new tls key", 15, || {
        node_certs(&c)["tls_ca_pems"].as_array().map_or(0, Vec::len) == 2
    });
    // Until the switch, proxies present the old CA only.
    let out = c.admin(&["ca", "ls", "--format", "json"]).expect_ok();
    let keys: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    let next = keys
        .iter()
        .find(|k| k["ca"] == "tls" && k["state"] == "pending")
        .unwrap();
    let new_pin = next["pin"].as_str().unwrap().to_string();
    assert!(!proxy_verifies(&c, &c.proxy, &new_pin));
    c.login("carol", "carol", &totp(&carol, 30)).expect_ok();
    snapshot(&c, "carol", "carol-mid-tls");
    c.run_as("bob-pre-tls", &["ls"], None).expect_ok();

    // tls switch: servers present certificates from the new key; a client
    // that never logged in since the init no longer trusts them. By hand
    // too, it waits for every node and proxy to trust the new key.
    wait_for("the tls switch is accepted", 20, || {
        c.admin(&["ca", "rotate", "--type", "tls", "--phase", "switch"])
            .ok
    });
    let (new_tls, _, _) = ca_state(&c, "tls");
    assert_ne!(new_tls, old_tls);
    wait_for("auth presents a certificate from the new key", 15, || {
        !c.run_as("bob-pre-tls", &["ls"], None).ok
    });
    let refused = c.run_as("bob-pre-tls", &["ls"], None);
    assert!(
        refused.stderr.contains("does not trust") && refused.stderr.contains("--ca-pin"),
        "{}",
        refused.all()
    );
    assert_eq!(pin_of(&c, &new_tls), new_pin);
    wait_for("both proxies present the new CA", 15, || {
        proxy_verifies(&c, &c.proxy, &new_pin) && proxy_verifies(&c, &b, &new_pin)
    });
    c.run_as("carol-mid-tls", &["ls"], None).expect_ok();
    // A first login now needs the new pin: the old one is refused.
    c.login_through("dave", &totp(&dave, 30), &c.proxy, &c.pin)
        .expect_err("CA pin mismatch");
    c.login_through("dave", &totp(&dave, 30), &c.proxy, &new_pin)
        .expect_ok();
    c.run_as("dave", &["ls"], None).expect_ok();
    c.run_as("dave", &["ssh", "root@rot", "--", "true"], None)
        .expect_ok();

    // tls drop: a client certificate from the old key is refused; the node
    // and the proxies, renewed at the switch, keep working. A connection
    // made with the old key before the drop does not outlive it either.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = warden_client::ProfileStore::new(c.dir.join("carol-mid-tls"));
    let profile = store.current().unwrap().expect("carol's profile");
    let kept = warden_client::login::auth_client(&store, &profile).unwrap();
    let whoami = || rt.block_on(kept.call(&warden_types::endpoints::WHOAMI, &()));
    whoami().expect("the old key's certificate works until the drop");
    wait_for("the tls drop is accepted", 20, || {
        c.admin(&["ca", "rotate", "--type", "tls", "--phase", "drop"])
            .ok
    });
    assert_eq!(ca_state(&c, "tls"), (new_tls.clone(), 1, String::new()));
    wait_for("a certificate from the dropped key is refused", 15, || {
        !c.run_as("carol-mid-tls", &["ls"], None).ok
    });
    // The kept-alive connection (idle less than the client's 15 s) was
    // closed at the drop: the next call must handshake again, and fails.
    assert!(
        whoami().is_err(),
        "a connection outlived the key it was made with"
    );
    wait_for("the node renewed after the drop", 15, || {
        node_certs(&c)["tls_ca_pems"].as_array().map_or(0, Vec::len) == 1
    });
    let refused = c.run_as("carol-mid-tls", &["ls"], None);
    assert!(
        refused.stderr.contains("run 'warden login'"),
        "{}",
        refused.all()
    );
    c.run_as("dave", &["ls"], None).expect_ok();
    c.run_as("dave", &["ssh", "root@rot", "--", "echo", "after"], None)
        .expect_ok();
    // The joined proxy saved what it renewed: restarted, it still reaches
    // auth (its certificate is from the new key) and the node.
    let _ = proxy_b.kill();
    let _ = proxy_b.wait();
    let (mut proxy_b, b) = c.start_proxy("proxy-b", &c.auth);
    c.login_through("erin", &totp(&erin, 30), &b, &new_pin)
        .expect_ok();
    c.wait_reachable("erin", "root", "rot");

    for (what, child) in [
        ("direct", &mut live),
        ("through the proxy", &mut live_proxied),
    ] {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the live session {what} survived both rotations"
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    // Automatic rotations of both, at once, run to their end.
    for kind in ["host", "tls"] {
        c.admin(&["ca", "rotate", "--type", kind, "--grace", "2s"])
            .expect_ok();
    }
    wait_for("both automatic rotations end", 90, || {
        let (h, hn, _) = ca_state(&c, "host");
        let (t, tn, _) = ca_state(&c, "tls");
        h != new_host && hn == 1 && t != new_tls && tn == 1
    });
    let (final_tls, _, _) = ca_state(&c, "tls");
    let pin = pin_of(&c, &final_tls);
    c.login_through("frank", &totp(&frank, 30), &c.proxy, &pin)
        .expect_ok();
    c.wait_reachable("frank", "root", "rot");
    c.ssh("frank", "frank", "root", &[], "true", None)
        .expect_ok();

    let phases: Vec<(String, String, String)> = c
        .events()
        .iter()
        .filter(|e| e["type"] == "ca.rotate")
        .map(|e| {
            (
                e["fields"]["ca"].as_str().unwrap().to_string(),
                e["fields"]["phase"].as_str().unwrap().to_string(),
                e["user"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for ca in ["host", "tls"] {
        for (phase, by) in [
            ("init", "admin"),
            ("switch", "admin"),
            ("drop", "admin"),
            ("switch", "warden"),
            ("drop", "warden"),
        ] {
            assert!(
                phases
                    .iter()
                    .any(|(c, p, u)| c == ca && p == phase && u == by),
                "no {ca} {phase} by {by} in {phases:?}"
            );
        }
    }
    let _ = proxy_b.kill();
    let _ = proxy_b.wait();
}

/// Whether `proxy` verifies against `pin` (a login that stops before
/// asking for a password, so no one-time code is spent).
fn proxy_verifies(c: &Cluster, proxy: &str, pin: &str) -> bool {
    let out = c.run_as(
        "probe",
        &[
            "login", "--proxy", proxy, "--user", "nobody", "--ca-pin", pin,
        ],
        None,
    );
    assert!(!out.ok, "a login without a password cannot succeed");
    !out.stderr.contains("pin mismatch")
}

/// The CA pin of the tls key with `fingerprint` (as `warden admin ca ls`
/// shows it).
fn pin_of(c: &Cluster, fingerprint: &str) -> String {
    let out = c.admin(&["ca", "ls", "--format", "json"]).expect_ok();
    let keys: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    keys.iter()
        .find(|k| k["ca"] == "tls" && k["fingerprint"] == fingerprint)
        .and_then(|k| k["pin"].as_str())
        .unwrap_or_else(|| panic!("no pin for {fingerprint} in {keys:?}"))
        .to_string()
}

/// `warden admin access check` explains a login decision as the node
/// makes it: for a real user (locks included) and for a hypothetical one
/// (deny wins), naming each role's verdict; a session the policy refuses
/// carries the same explanation in its audit event.
#[test]
fn access_check_explains_decisions() {
    assert!(
        include_str!("../../../README.md")
            .contains("warden admin access check --user alice --node db-1 --login root"),
        "README.md no longer shows the access check example"
    );
    let dir = temp_dir("explain");
    let c = Cluster::start_with(&dir, &["--name", "box", "--labels", "env=prod"]);
    let roles = dir.join("roles.yaml");
    std::fs::write(
        &roles,
        "kind: role\nversion: v1\nmetadata:\n  name: no-root\nspec:\n  deny:\n    logins: [root]\n---\nkind: role\nversion: v1\nmetadata:\n  name: staging-deploy\nspec:\n  allow:\n    logins: [deploy]\n    node_labels:\n      env: [staging]\n",
    )
    .unwrap();
    c.admin(&["roles", "apply", "-f", roles.to_str().unwrap()])
        .expect_ok();
    let alice = c.add_user("alice", "access", "root");
    c.add_user("bob", "access", "root");
    let check = |args: &[&str]| {
        let mut full = vec!["access", "check", "--node", "box"];
        full.extend_from_slice(args);
        c.admin(&full)
    };

    let out = check(&["--user", "alice", "--login", "root"]).expect_ok();
    assert!(
        out.stdout
            .contains("allowed: alice may log in as root on box")
            && out.stdout.contains("allowed by role access"),
        "{}",
        out.all()
    );
    let out = check(&["--user", "alice", "--login", "postgres"]);
    assert!(!out.ok, "a denial exits 1");
    assert!(
        out.stdout
            .contains("denied: alice may not log in as postgres")
            && out
                .stdout
                .contains("role access: login \"postgres\" not in allowed logins")
            && out.stdout.contains("no role allows this access"),
        "{}",
        out.all()
    );
    // Hypothetical users: a deny wins; labels decide.
    let out = check(&[
        "--roles",
        "access,no-root",
        "--traits",
        "logins=root",
        "--login",
        "root",
    ]);
    assert!(
        !out.ok && out.stdout.contains("denied by role no-root"),
        "{}",
        out.all()
    );
    let out = check(&["--roles", "staging-deploy", "--login", "deploy"]);
    assert!(
        !out.ok && out.stdout.contains("role staging-deploy:"),
        "{}",
        out.all()
    );
    check(&["--roles", "nope", "--login", "root"]).expect_err("no role \"nope\"");
    c.admin(&[
        "access", "check", "--node", "nowhere", "--user", "alice", "--login", "root",
    ])
    .expect_err("no node \"nowhere\"");
    // Locks count, as at a login.
    c.admin(&["lock", "--user", "alice", "--reason", "explain drill"])
        .expect_ok();
    let out = check(&["--user", "alice", "--login", "root"]);
    assert!(
        !out.ok && out.stdout.contains("explain drill"),
        "{}",
        out.all()
    );
    let locks: Vec<serde_json::Value> = serde_json::from_str(
        &c.admin(&["locks", "ls", "--format", "json"])
            .expect_ok()
            .stdout,
    )
    .unwrap();
    for l in locks {
        c.admin(&["locks", "rm", l["metadata"]["name"].as_str().unwrap()])
            .expect_ok();
    }
    // It shows roles' insides: only for those who may read roles and users.
    c.login("bob", "bob", &totp(&totp_secret("bob"), 30))
        .expect_ok();
    c.run_as(
        "bob",
        &[
            "admin", "--as-me", "access", "check", "--user", "alice", "--node", "box", "--login",
            "root",
        ],
        None,
    )
    .expect_err("bob may not read users");

    // A session the policy refuses is audited with the same explanation.
    c.login("alice", "alice", &totp(&alice, 30)).expect_ok();
    c.admin(&["users", "update", "alice", "--roles", "access,no-root"])
        .expect_ok();
    wait_for("the node refuses alice as root", 15, || {
        !c.ssh("alice", "alice", "root", &[], "true", None).ok
    });
    let rejected = c
        .events()
        .into_iter()
        .find(|e| e["type"] == "session.rejected" && e["user"] == "alice")
        .expect("a session.rejected event");
    let explanation = rejected["fields"]["explanation"].to_string();
    assert!(explanation.contains("no-root"), "{rejected}");
}
