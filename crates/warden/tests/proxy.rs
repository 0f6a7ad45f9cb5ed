//! End-to-end tests of the proxy: a node with no listening port reached
//! through its reverse tunnel, with Debian's stock `ssh -J`, `ssh` via
//! `warden config`, `scp`, `sftp` and `rsync`.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn stock_clients_reach_a_node_behind_nat_through_the_proxy() {
    let dir = temp_dir("proxy");
    let diag_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let diag = format!("127.0.0.1:{diag_port}");
    let c = Cluster::start_with(&dir, &["--diag-addr", &diag]);
    let _node = TunnelNode::start(&c, "natnode", "env=nat");
    let secret = c.add_user("alice", "access", "root");
    c.login("alice", "alice", &totp(&secret, 30)).expect_ok();
    c.wait_reachable("alice", "root", "natnode");

    // The inventory has it, with no address: it listens nowhere.
    let out = c
        .run_as("alice", &["ls", "env=nat", "--format", "json"], None)
        .expect_ok();
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["spec"]["addrs"], serde_json::json!([]));

    // warden ssh, with exit codes.
    let out = c.run_as(
        "alice",
        &["ssh", "root@natnode", "--", "echo", "tunnel;", "exit", "5"],
        None,
    );
    assert_eq!(out.code, Some(5), "{}", out.all());
    assert_eq!(out.stdout.trim(), "tunnel");
    // OpenSSH's own messages name the node as the user did, not its id.
    let out = c
        .run_as(
            "alice",
            &[
                "ssh",
                "-o",
                "LogLevel=verbose",
                "root@natnode",
                "--",
                "true",
            ],
            None,
        )
        .expect_ok();
    let id = nodes[0]["metadata"]["name"].as_str().unwrap();
    assert!(
        out.stderr.contains("Authenticated to natnode"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(id), "{}", out.stderr);

    // Plain ssh with the block 'warden config' prints.
    let cfg = c.ssh_config("alice");
    let cfg_s = cfg.display().to_string();
    let out = run_program(
        "ssh",
        &[
            "-F".into(),
            cfg_s.clone(),
            "-o".into(),
            "BatchMode=yes".into(),
            "root@natnode.warden".into(),
            "echo config $(whoami)".into(),
        ],
        None,
    )
    .expect_ok();
    assert_eq!(out.stdout.trim(), "config root");

    // Stock ssh -J with the proxy as jump host, as the README shows it:
    // nothing but the config block 'warden config' printed.
    let out = run_program(
        "ssh",
        &[
            "-F".into(),
            cfg_s.clone(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-J".into(),
            format!("alice@{}", c.proxy),
            "root@natnode.warden".into(),
            "echo jumped".into(),
        ],
        None,
    )
    .expect_ok();
    assert_eq!(out.stdout.trim(), "jumped");
    // The proxy's block applies to the proxy's port only, not to every
    // other ssh to the same address.
    let (proxy_host, proxy_port) = c.proxy.rsplit_once(':').unwrap();
    let effective = |port: &str| {
        run_program(
            "ssh",
            &[
                "-G".into(),
                "-F".into(),
                cfg_s.clone(),
                "-p".into(),
                port.into(),
                format!("alice@{proxy_host}"),
            ],
            None,
        )
        .expect_ok()
        .stdout
    };
    let keys = c.keys_dir("alice").display().to_string();
    assert!(effective(proxy_port).contains(&keys));
    assert!(!effective("2222").contains(&keys), "{}", effective("2222"));

    // scp both ways, sftp and rsync, all through the proxy.
    let up = dir.join("up.bin");
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&up, &data).unwrap();
    let remote = dir.join("remote.bin");
    let back = dir.join("back.bin");
    let f = |s: &str| s.to_string();
    run_program(
        "scp",
        &[
            f("-F"),
            cfg_s.clone(),
            up.display().to_string(),
            format!("root@natnode.warden:{}", remote.display()),
        ],
        None,
    )
    .expect_ok();
    run_program(
        "scp",
        &[
            f("-F"),
            cfg_s.clone(),
            format!("root@natnode.warden:{}", remote.display()),
            back.display().to_string(),
        ],
        None,
    )
    .expect_ok();
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let out = run_program(
        "sftp",
        &[
            f("-F"),
            cfg_s.clone(),
            f("-b"),
            f("-"),
            f("root@natnode.warden"),
        ],
        Some(&format!("ls -l {}\n", remote.display())),
    )
    .expect_ok();
    assert!(out.stdout.contains("1000000"), "{}", out.all());
    let synced = dir.join("synced.bin");
    run_program(
        "rsync",
        &[
            f("-e"),
            format!("ssh -F {cfg_s}"),
            up.display().to_string(),
            format!("root@natnode.warden:{}", synced.display()),
        ],
        None,
    )
    .expect_ok();
    assert_eq!(std::fs::read(&synced).unwrap(), data);

    // Metrics and health on the diagnostics address.
    let get = |path: &str| http_get(diag_port, path);
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    assert!(get("/readyz").starts_with("HTTP/1.1 200"));
    let metrics = get("/metrics");
    // The all-in-one node and natnode.
    assert!(metrics.contains("warden_proxy_tunnels 2"), "{metrics}");
    assert!(
        metrics.contains("warden_proxy_tls_handshake_seconds_count"),
        "{metrics}"
    );
    let ssh_conns = metrics
        .lines()
        .find(|l| l.starts_with("warden_proxy_connections_total{protocol=\"ssh\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(ssh_conns >= 5, "{metrics}");

    // No shell on the proxy itself.
    let out = run_program(
        "ssh",
        &[
            f("-F"),
            cfg_s,
            f("-o"),
            f("BatchMode=yes"),
            f("-p"),
            c.proxy.rsplit_once(':').unwrap().1.to_string(),
            f("alice@127.0.0.1"),
            f("true"),
        ],
        None,
    );
    assert!(!out.ok, "the proxy must not run commands: {}", out.all());
}

#[test]
fn node_reconnects_after_losing_the_proxy() {
    let dir = temp_dir("reconnect");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut c = Cluster::start_with(&dir, &["--listen-addr", &listen]);
    let _node = TunnelNode::start(&c, "roamer", "env=nat");
    let secret = c.add_user("alice", "access", "root");
    c.login("alice", "alice", &totp(&secret, 30)).expect_ok();
    c.wait_reachable("alice", "root", "roamer");

    // The proxy (with auth) goes away: the tunnel drops.
    c.kill();
    std::thread::sleep(Duration::from_secs(1));
    let c = Cluster::start_with(&dir, &["--listen-addr", &listen]);
    // The node redials with backoff and is reachable again within seconds.
    let t0 = std::time::Instant::now();
    c.wait_reachable("alice", "root", "roamer");
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "reconnect took {:?}",
        t0.elapsed()
    );
}

/// ARCHITECTURE.md §12: a 1 GiB upload into a session whose remote side
/// does not read for 30 s must not grow the proxy's or the node's memory:
/// every hop passes on backpressure instead of buffering.
#[test]
fn stalled_upload_keeps_memory_bounded() {
    let dir = temp_dir("backpressure");
    let c = Cluster::start(&dir);
    let node = TunnelNode::start(&c, "slow", "env=nat");
    let secret = c.add_user("alice", "access", "root");
    c.login("alice", "alice", &totp(&secret, 30)).expect_ok();
    c.wait_reachable("alice", "root", "slow");
    let (proxy_before, node_before) = (rss_kib(c.pid()), rss_kib(node.pid()));
    let mut upload = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 1073741824 /dev/zero | {WARDEN} ssh root@slow -- 'sleep 30; cat > /dev/null'"
        ))
        .env("WARDEN_HOME", c.dir.join("alice"))
        .spawn()
        .unwrap();
    let (mut proxy_peak, mut node_peak) = (0, 0);
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(28) {
        proxy_peak = proxy_peak.max(rss_kib(c.pid()));
        node_peak = node_peak.max(rss_kib(node.pid()));
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = upload.wait().unwrap();
    assert!(
        status.success(),
        "the upload must complete once the reader starts"
    );
    let limit = 16 * 1024;
    assert!(
        proxy_peak.saturating_sub(proxy_before) < limit,
        "proxy grew {} KiB while the reader stalled",
        proxy_peak - proxy_before
    );
    assert!(
        node_peak.saturating_sub(node_before) < limit,
        "node grew {} KiB while the reader stalled",
        node_peak - node_before
    );
    eprintln!(
        "stalled 1 GiB upload: proxy +{} KiB, node +{} KiB",
        proxy_peak.saturating_sub(proxy_before),
        node_peak.saturating_sub(node_before)
    );
}

/// Two proxies; the node keeps a tunnel to the first only; a user of the
/// second reaches it anyway, the second proxy asking its peer.
#[test]
fn second_proxy_reaches_a_node_through_its_peer() {
    let dir = temp_dir("peering");
    let c = Cluster::start(&dir);
    let (mut proxy_b, b) = c.start_proxy("proxy-b", &c.auth);
    let _node = TunnelNode::start_with(&c, "edge", "env=edge", &["--no-proxy-discovery"]);
    let secret = c.add_user("alice", "access", "root");
    // Alice uses proxy B only.
    c.run_as(
        "alice",
        &[
            "login",
            "--proxy",
            &b,
            "--user",
            "alice",
            "--ca-pin",
            &c.pin,
            "--password-stdin",
            "--otp",
            &totp(&secret, 30),
        ],
        Some(&format!("{PASSWORD}\n")),
    )
    .expect_ok();
    c.wait_reachable("alice", "root", "edge");
    let out = c
        .run_as(
            "alice",
            &["ssh", "root@edge", "--", "echo", "via", "peer"],
            None,
        )
        .expect_ok();
    assert_eq!(out.stdout.trim(), "via peer");
    // The node has no port and no tunnel to B: A's tunnel was the only way.
    let _ = proxy_b.kill();
    let _ = proxy_b.wait();
}

/// SIGHUP: a new process takes over the listening sockets while the old
/// one keeps serving a live session (running `cat`) until it ends.
#[test]
fn graceful_restart_keeps_live_sessions() {
    use std::io::{BufRead, Write};
    let dir = temp_dir("restart");
    let c = Cluster::start_with(&dir, &["--name", "box"]);
    let secret = c.add_user("alice", "access", "root");
    c.login("alice", "alice", &totp(&secret, 30)).expect_ok();
    c.wait_reachable("alice", "root", "box");
    let _nat = TunnelNode::start(&c, "natbox", "env=nat");
    c.wait_reachable("alice", "root", "natbox");
    let pid_file = dir.join("data/warden.pid");
    let old: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(old, c.pid());

    let mut cat = std::process::Command::new(WARDEN)
        .args(["ssh", "root@box", "--", "cat"])
        .env("WARDEN_HOME", c.dir.join("alice"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = cat.stdin.take().unwrap();
    let mut output = std::io::BufReader::new(cat.stdout.take().unwrap());
    let mut echo = |text: &str| {
        writeln!(input, "{text}").unwrap();
        input.flush().unwrap();
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        line.trim().to_string()
    };
    assert_eq!(echo("before"), "before");

    // Restart: the successor writes its pid once it serves.
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &old.to_string()])
        .status()
        .unwrap()
        .success());
    let mut new = old;
    for _ in 0..100 {
        new = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap_or(old);
        if new != old {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(new, old, "no successor took over");
    let ready_at = std::time::Instant::now();
    // A node behind NAT moves its tunnel to the successor at once: new
    // sessions reach it while the old process drains.
    let reached = loop {
        let out = c.run_as("alice", &["ssh", "root@natbox", "--", "echo moved"], None);
        if out.ok && out.stdout.trim() == "moved" {
            break ready_at.elapsed();
        }
        assert!(
            ready_at.elapsed() < Duration::from_secs(10),
            "tunnel node unreachable during the drain: {}",
            out.all()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("tunnel node reached {reached:?} after the handover");
    assert!(
        reached <= Duration::from_secs(2),
        "reached after {reached:?}"
    );
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &self.0.to_string()])
                .status();
        }
    }
    let _successor = KillOnDrop(new);

    // The live session keeps streaming through the old process...
    for i in 0..20 {
        assert_eq!(echo(&format!("after-{i}")), format!("after-{i}"));
    }
    // ...new sessions go to the new one...
    c.wait_reachable("alice", "root", "box");
    let alive = |pid: u32| {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    };
    assert!(alive(old), "the old process must wait for its live session");
    // ...and the old process leaves once its session ends.
    drop(input);
    let _ = cat.wait();
    let mut gone = false;
    for _ in 0..100 {
        if !alive(old) {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gone, "the old process did not exit after draining");

    // The data dir's lock went to the successor with the sockets: another
    // start on it is still refused, naming the process that serves it.
    let data = dir.join("data").display().to_string();
    let second = run_program(
        WARDEN,
        &["start", "--data-dir", &data]
            .into_iter()
            .chain(FREE_PORTS)
            .map(String::from)
            .collect::<Vec<_>>(),
        None,
    );
    assert!(
        !second.ok
            && second
                .stderr
                .contains(&format!("another warden (pid {new}) is already running")),
        "{}",
        second.all()
    );
}

/// A node stopped with SIGTERM leaves the inventory at once; one that
/// vanishes is shown offline after three missed heartbeats, and `warden
/// ssh` to it says so. Tunnel nodes show as such in `warden ls`.
#[test]
fn stopped_nodes_leave_and_vanished_ones_go_offline() {
    let dir = temp_dir("offline");
    let c = Cluster::start(&dir);
    let secret = c.add_user("alice", "access", "root");
    c.login("alice", "alice", &totp(&secret, 30)).expect_ok();
    let fast = ["--heartbeat-interval", "1s"];
    let out = run_program(
        WARDEN,
        &[
            "start",
            "--roles",
            "node",
            "--proxy",
            &c.proxy,
            "--heartbeat-interval",
            "0s",
        ]
        .map(String::from),
        None,
    );
    assert!(
        !out.ok && out.stderr.contains("between 1s and 300s"),
        "{}",
        out.all()
    );
    let stopped = TunnelNode::start_with(&c, "stopped", "env=a", &fast);
    let vanished = TunnelNode::start_with(&c, "vanished", "env=b", &fast);
    c.wait_reachable("alice", "root", "stopped");
    c.wait_reachable("alice", "root", "vanished");
    let ls = || c.run_as("alice", &["ls"], None).expect_ok().stdout;
    let row = |name: &str| {
        ls().lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(str::to_string)
    };
    assert!(row("stopped").unwrap().contains("(tunnel)"), "{}", ls());

    // SIGTERM: gone from the inventory by the time the process has exited.
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &stopped.pid().to_string()])
        .status()
        .unwrap()
        .success());
    let t0 = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{}", stopped.pid())).exists()
        && !std::fs::read_to_string(format!("/proc/{}/stat", stopped.pid()))
            .unwrap_or_default()
            .contains(") Z ")
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "node did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(row("stopped"), None, "{}", ls());

    // SIGKILL: offline within three missed heartbeats (3 s here).
    let killed_at = std::time::Instant::now();
    drop(vanished);
    let mut offline_after = None;
    while killed_at.elapsed() < Duration::from_secs(10) {
        if row("vanished").is_some_and(|r| r.contains("offline")) {
            offline_after = Some(killed_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let offline_after = offline_after.unwrap_or_else(|| panic!("still online: {}", ls()));
    assert!(offline_after <= Duration::from_secs(5), "{offline_after:?}");
    let out = c.run_as("alice", &["ssh", "root@vanished", "--", "true"], None);
    assert!(
        !out.ok && out.stderr.contains("node vanished is offline since"),
        "{}",
        out.all()
    );
}

/// tsh habits: `-l`, a default login, `-o`, and label targets that run a
/// command on every matching node with prefixed output and the worst exit
/// code.
#[test]
fn ssh_to_labels_and_default_logins() {
    let dir = temp_dir("labels");
    let c = Cluster::start(&dir);
    let _a = TunnelNode::start(&c, "many-a", "fleet=yes");
    let _b = TunnelNode::start(&c, "many-b", "fleet=yes");
    let _other = TunnelNode::start(&c, "other", "fleet=no");
    let secret = c.add_user("alice", "access", "root");
    c.login("alice", "alice", &totp(&secret, 30)).expect_ok();
    for n in ["many-a", "many-b", "other"] {
        c.wait_reachable("alice", "root", n);
    }
    // The only login is the default; -l and -o as with ssh.
    let out = c
        .run_as("alice", &["ssh", "many-a", "--", "whoami"], None)
        .expect_ok();
    assert_eq!(out.stdout.trim(), "root");
    let out = c
        .run_as(
            "alice",
            &[
                "ssh",
                "-l",
                "root",
                "-o",
                "ServerAliveInterval=5",
                "many-a",
                "--",
                "echo",
                "l-flag",
            ],
            None,
        )
        .expect_ok();
    assert_eq!(out.stdout.trim(), "l-flag");

    let out = c
        .run_as(
            "alice",
            &["ssh", "root@fleet=yes", "--", "echo", "hello"],
            None,
        )
        .expect_ok();
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort();
    assert_eq!(lines, ["[many-a] hello", "[many-b] hello"], "{}", out.all());
    let out = c.run_as(
        "alice",
        &["ssh", "root@fleet=yes", "--", "echo oops >&2; exit 4"],
        None,
    );
    assert_eq!(out.code, Some(4), "{}", out.all());
    assert!(
        out.stderr.contains("[many-a] oops") && out.stderr.contains("[many-b] oops"),
        "{}",
        out.all()
    );
    c.run_as("alice", &["ssh", "root@fleet=maybe", "--", "true"], None)
        .expect_err("no online node you may access has the labels fleet=maybe");
}

/// A proxy joining with auth's own name (or a wildcard) among its public
/// addresses is refused: its certificate would let it pose as auth to
/// nodes. What it was admitted with is all its renewals get.
#[test]
fn a_proxy_cannot_join_as_auth() {
    let dir = temp_dir("proxy-as-auth");
    let c = Cluster::start(&dir);
    for bad in ["warden-auth:3080", "*.example.com:3080"] {
        let out = c
            .admin(&["tokens", "add", "--type", "proxy", "--format", "json"])
            .expect_ok();
        let tok: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let mut child = std::process::Command::new(WARDEN)
            .args(["start", "--roles", "proxy", "--auth-server", &c.auth])
            .args(["--proxy", &c.proxy, "--ca-pin", &c.pin])
            .args(["--token", tok["token"].as_str().unwrap()])
            .args(["--listen-addr", "127.0.0.1:0", "--public-addr", bad])
            .arg("--data-dir")
            .arg(dir.join("bad-proxy"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed() > std::time::Duration::from_secs(30) {
                let _ = child.kill();
                panic!("a proxy claiming {bad} was admitted");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(
            !status.success() && err.contains("a proxy cannot be known as"),
            "{err}"
        );
    }
}
