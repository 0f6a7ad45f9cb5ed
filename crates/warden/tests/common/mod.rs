//! Shared harness of the end-to-end tests: real `warden` processes on
//! random 127.0.0.1 ports in temp dirs, driven through the CLI.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
pub const PASSWORD: &str = "correct horse battery staple";
/// `warden start` flags that put every listener on a free port.
pub const FREE_PORTS: [&str; 6] = [
    "--listen-addr",
    "127.0.0.1:0",
    "--auth-addr",
    "127.0.0.1:0",
    "--node-listen-addr",
    "127.0.0.1:0",
];

/// Installs the npm packages of a test's Node.js helper in `dir` unless
/// `probe` (a path under it) is there already: .ci/run installs them, a
/// developer machine gets them on first run.
#[allow(dead_code)]
pub fn npm_packages(dir: &Path, probe: &str) {
    if dir.join(probe).exists() {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .output()
        .expect("npm (Node.js) is needed for this test; .ci/run installs it");
    assert!(
        out.status.success(),
        "npm ci in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs one of the Chromium drivers in tests/web (`script`, with the
/// environment `env`; Node.js and playwright-core, installed on first use)
/// and returns what it saw: the JSON object on its last line of output.
/// Its screenshots go to target/tmp/web-screenshots (`SHOTS`).
#[allow(dead_code)]
pub fn browser_run(script: &str, env: &[(&str, String)]) -> serde_json::Value {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is needed for the web UI tests; .ci/run installs it"
    );
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    npm_packages(&dir, "node_modules/playwright-core");
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(script)
        .current_dir(&dir)
        .env("SHOTS", &shots)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("node runs tests/web/{script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser run ({script}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saw: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no result line from {script} ({e}):\n{stdout}"));
    eprintln!("{saw:#}");
    saw
}

/// Where the browser tests save their screenshots.
#[allow(dead_code)]
pub fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots")
}

pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "warden-e2e-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Output of one CLI run.
pub struct Out {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
    #[track_caller]
    pub fn expect_ok(self) -> Self {
        assert!(self.ok, "command failed:\n{}", self.all());
        self
    }
    #[track_caller]
    pub fn expect_err(self, needle: &str) -> Self {
        assert!(!self.ok, "command should have failed:\n{}", self.all());
        assert!(
            self.stderr.contains(needle),
            "error should mention {needle:?}:\n{}",
            self.all()
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.all());
        self
    }
}

/// A running `warden start`.
pub struct Cluster {
    pub dir: PathBuf,
    child: Child,
    pub proxy: String,
    pub pin: String,
    /// The auth API address.
    pub auth: String,
    /// The all-in-one node's SSH address.
    pub node: String,
}

impl Cluster {
    pub fn start(dir: &Path) -> Cluster {
        Self::start_with(dir, &[])
    }

    /// Starts with extra `warden start` arguments.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Cluster {
        let mut base = vec!["start"];
        for pair in FREE_PORTS.chunks(2) {
            if !extra.contains(&pair[0]) {
                base.extend(pair);
            }
        }
        let mut child = Command::new(WARDEN)
            .args(&base)
            .args(extra)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("XDG_STATE_HOME", dir.join("state"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn warden start");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut proxy, mut pin, mut node, mut auth) = (None, None, None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while node.is_none() {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("warden start did not report its node within 60s");
            if let Some(v) = line.trim().strip_prefix("proxy:") {
                proxy = Some(v.trim().to_string());
            }
            if let Some(v) = line.trim().strip_prefix("auth:") {
                auth = v.split_whitespace().next().map(str::to_string);
            }
            if let Some(v) = line.trim().strip_prefix("CA pin:") {
                pin = Some(v.trim().to_string());
            }
            if let Some((_, addr)) = line.split_once(" serving SSH on ") {
                node = Some(addr.trim().trim_end_matches('.').to_string());
            }
        }
        Cluster {
            dir: dir.to_path_buf(),
            child,
            proxy: proxy.expect("proxy address"),
            pin: pin.expect("CA pin"),
            auth: auth.expect("auth address"),
            node: node.unwrap(),
        }
    }

    /// Runs the CLI as a user whose profile lives in `home`.
    pub fn run_as(&self, home: &str, args: &[&str], stdin: Option<&str>) -> Out {
        self.run_env(home, args, stdin, &[])
    }

    /// Like `run_as`, with extra environment variables.
    pub fn run_env(
        &self,
        home: &str,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> Out {
        let mut cmd = Command::new(WARDEN);
        cmd.envs(env.iter().copied());
        cmd.args(args)
            .env("WARDEN_HOME", self.dir.join(home))
            .env("XDG_STATE_HOME", self.dir.join("state"))
            .env_remove("WARDEN_DATA_DIR")
            .env_remove("WARDEN_PROXY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        finish(cmd.spawn().expect("spawn warden"), stdin)
    }

    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        self.run_as("home", args, stdin)
    }

    /// `warden admin ...` with the local admin identity.
    pub fn admin(&self, args: &[&str]) -> Out {
        let data = self.dir.join("data");
        let mut full = vec!["admin", "--data-dir", data.to_str().unwrap()];
        full.extend_from_slice(args);
        self.run(&full, None)
    }

    /// Adds a user and completes their signup; returns the TOTP secret.
    pub fn add_user(&self, name: &str, roles: &str, logins: &str) -> String {
        self.add_user_with(name, roles, logins, &[])
    }

    /// `add_user` with more `users add` flags (e.g. `--traits k=v`).
    pub fn add_user_with(&self, name: &str, roles: &str, logins: &str, extra: &[&str]) -> String {
        let mut args = vec!["users", "add", name, "--roles", roles, "--logins", logins];
        args.extend_from_slice(extra);
        let out = self.admin(&args).expect_ok();
        let token = signup_token(&out.stdout);
        let secret = totp_secret(name);
        self.run(
            &[
                "signup",
                &token,
                "--proxy",
                &self.proxy,
                "--ca-pin",
                &self.pin,
                "--password-stdin",
                "--totp-secret",
                &secret,
                "--otp",
                &totp(&secret, 0),
            ],
            Some(&format!("{PASSWORD}\n")),
        )
        .expect_ok();
        secret
    }

    pub fn login(&self, home: &str, user: &str, otp: &str) -> Out {
        self.run_as(
            home,
            &[
                "login",
                "--proxy",
                &self.proxy,
                "--user",
                user,
                "--ca-pin",
                &self.pin,
                "--password-stdin",
                "--otp",
                otp,
            ],
            Some(&format!("{PASSWORD}\n")),
        )
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The token from the `warden signup TOKEN ...` line an admin gets.
pub fn signup_token(admin_output: &str) -> String {
    let line = admin_output
        .lines()
        .find(|l| l.trim_start().starts_with("warden signup "))
        .unwrap_or_else(|| panic!("no signup command in:\n{admin_output}"));
    line.split_whitespace().nth(2).unwrap().to_string()
}

/// A per-user base32 secret (32 chars = 20 bytes).
pub fn totp_secret(user: &str) -> String {
    let mut s = String::new();
    for c in user.bytes().cycle().take(32) {
        s.push((b'A' + c % 26) as char);
    }
    s
}

/// The code `oathtool` computes for `secret`, `offset` seconds from now.
pub fn totp(secret: &str, offset: i64) -> String {
    let out = Command::new("oathtool")
        .args([
            "--totp",
            "-b",
            "-N",
            &format!("now + {offset} seconds"),
            secret,
        ])
        .output()
        .expect("oathtool (Debian package oathtool) must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn wrong_code(right: &str) -> String {
    right
        .chars()
        .map(|c| char::from(b'0' + (c as u8 - b'0' + 1) % 10))
        .collect()
}

impl Cluster {
    /// The key directory of `user`'s profile in `home`.
    /// `warden login` as `user` (home of the same name) through `proxy`,
    /// trusting the cluster by `pin` on first contact.
    pub fn login_through(&self, user: &str, otp: &str, proxy: &str, pin: &str) -> Out {
        self.run_as(
            user,
            &[
                "login",
                "--proxy",
                proxy,
                "--user",
                user,
                "--ca-pin",
                pin,
                "--password-stdin",
                "--otp",
                otp,
            ],
            Some(&format!("{PASSWORD}\n")),
        )
    }

    pub fn keys_dir(&self, home: &str) -> PathBuf {
        let name: String = self
            .proxy
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(home).join("keys").join(name)
    }

    /// Stock OpenSSH options for `user` logged in under `home`: their key
    /// and certificate, and only the cluster's host CA as known host.
    pub fn openssh(&self, home: &str, user: &str) -> Vec<String> {
        let k = self.keys_dir(home);
        let (_, port) = self.node.rsplit_once(':').unwrap();
        vec![
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            format!(
                "CertificateFile={}",
                k.join(format!("{user}-cert.pub")).display()
            ),
            "-i".into(),
            k.join(user).display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", k.join("known_hosts").display()),
            "-o".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "ConnectTimeout=10".into(),
            "-p".into(),
            port.to_string(),
        ]
    }

    pub fn node_host(&self) -> String {
        self.node.rsplit_once(':').unwrap().0.to_string()
    }

    /// Runs stock `ssh` as `user` to `login@node` with options `opts`
    /// and `command`.
    pub fn ssh(
        &self,
        home: &str,
        user: &str,
        login: &str,
        opts: &[&str],
        command: &str,
        stdin: Option<&str>,
    ) -> Out {
        let mut args = self.openssh(home, user);
        args.extend(opts.iter().map(|s| s.to_string()));
        args.push(format!("{login}@{}", self.node_host()));
        if !command.is_empty() {
            args.push(command.to_string());
        }
        run_program("ssh", &args, stdin)
    }

    /// Starts `warden ssh DEST -- COMMAND` as `user` in the background,
    /// its output discarded; kill it to end the session from the client.
    pub fn spawn_ssh(&self, user: &str, dest: &str, command: &str) -> std::process::Child {
        Command::new(WARDEN)
            .args(["ssh", dest, "--", command])
            .env("WARDEN_HOME", self.dir.join(user))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Starts another proxy (`--roles proxy`) that joins through this
    /// cluster's and uses `auth_server` (one address or a list); returns
    /// it with the address it serves on.
    pub fn start_proxy(&self, name: &str, auth_server: &str) -> (Child, String) {
        let out = self
            .admin(&["tokens", "add", "--type", "proxy", "--format", "json"])
            .expect_ok();
        let tok: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let mut child = Command::new(WARDEN)
            .args(["start", "--roles", "proxy", "--auth-server", auth_server])
            .args(["--proxy", &self.proxy, "--ca-pin", &self.pin])
            .args(["--token", tok["token"].as_str().unwrap()])
            .args(["--listen-addr", "127.0.0.1:0", "--data-dir"])
            .arg(self.dir.join(name))
            .stdout(Stdio::piped())
            // Kept for a failing test's post-mortem.
            .stderr(
                std::fs::File::create(self.dir.join(format!("{name}.log")))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split(" serving on ")
            .nth(1)
            .unwrap_or_else(|| panic!("proxy {name} did not start: {line}"))
            .trim()
            .trim_end_matches('.')
            .to_string();
        (child, addr)
    }

    /// Audit events of the cluster, newest first.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let out = self
            .admin(&["audit", "search", "--format", "json", "--limit", "10000"])
            .expect_ok();
        serde_json::from_str(&out.stdout).unwrap()
    }
}

/// Runs any program with a timeout-free stdin.
pub fn run_program(program: &str, args: &[String], stdin: Option<&str>) -> Out {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    finish(child, stdin)
}

/// Feeds `stdin` to a child spawned with piped stdio, and collects it.
pub fn finish(mut child: Child, stdin: Option<&str>) -> Out {
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    Out {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A node started on its own with a join token: no listening port, reached
/// through its reverse tunnel to the proxy.
pub struct TunnelNode {
    child: Child,
    pub name: String,
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

impl TunnelNode {
    pub fn start(c: &Cluster, name: &str, labels: &str) -> TunnelNode {
        Self::start_with(c, name, labels, &[])
    }

    pub fn start_with(c: &Cluster, name: &str, labels: &str, extra: &[&str]) -> TunnelNode {
        Self::start_via(c, &c.proxy, name, labels, extra)
    }

    /// A tunnel node that joins, and reaches auth, through `proxy`.
    pub fn start_via(
        c: &Cluster,
        proxy: &str,
        name: &str,
        labels: &str,
        extra: &[&str],
    ) -> TunnelNode {
        let out = c
            .admin(&["tokens", "add", "--type", "node", "--format", "json"])
            .expect_ok();
        let tok: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let data = c.dir.join(format!("node-{name}"));
        let mut child = Command::new(WARDEN)
            .args([
                "start", "--roles", "node", "--proxy", proxy, "--ca-pin", &c.pin,
            ])
            .args([
                "--token",
                tok["token"].as_str().unwrap(),
                "--name",
                name,
                "--labels",
                labels,
            ])
            .args(extra)
            .arg("--data-dir")
            .arg(&data)
            .stdout(Stdio::piped())
            // Kept next to the data for a failing test's post-mortem.
            .stderr(
                std::fs::File::create(c.dir.join(format!("node-{name}.log")))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.contains("no listening port"),
            "node did not start: {line}"
        );
        TunnelNode {
            child,
            name: name.to_string(),
        }
    }
}

impl TunnelNode {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for TunnelNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cluster {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `warden config` for `home`, written to a file for `ssh -F`.
    pub fn ssh_config(&self, home: &str) -> PathBuf {
        let out = self.run_as(home, &["config"], None).expect_ok();
        let path = self.dir.join(format!("{home}.ssh_config"));
        std::fs::write(&path, out.stdout).unwrap();
        path
    }

    /// Waits until the node named `name` is reachable for `home`'s user:
    /// up to a minute, as a node whose tunnel failed for a while retries
    /// only every 15-45 s (its backoff).
    pub fn wait_reachable(&self, home: &str, login: &str, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self
                .run_as(
                    home,
                    &["ssh", &format!("{login}@{name}"), "--", "true"],
                    None,
                )
                .ok
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("node {name} never became reachable");
    }
}

/// Peak resident memory of a process so far, KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A recording of `mib` MiB of incompressible output (so as many bytes
/// on disk) for session `id`.
pub fn large_recording(id: &str, mib: usize) -> Vec<u8> {
    let mut e = warden_recording::Encoder::new(&warden_recording::Header {
        version: 2,
        width: 80,
        height: 24,
        timestamp: 1_700_000_000,
        title: None,
        warden: warden_recording::SessionInfo {
            session_id: id.into(),
            user: "alice".into(),
            login: "root".into(),
            node_name: "big".into(),
            command: "cat /dev/urandom".into(),
            ..Default::default()
        },
    });
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut out = Vec::with_capacity(mib << 20);
    let mut piece = vec![0u8; 1 << 20];
    for i in 0..mib {
        for b in piece.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        e.output(i as f64 / 10.0, &piece);
        out.extend(e.ready().unwrap_or_default());
    }
    out.extend(e.flush().unwrap_or_default());
    out
}

impl Cluster {
    /// Spools a recording of `mib` MiB for session `id` at a new tunnel
    /// node (as a crash leaves one: sent when the node starts), waits for
    /// `stored()`, and checks that neither auth's nor the node's memory
    /// grew by the recording's size (streamed, they hold a part of it at
    /// most, whatever its size; whole, they held at least all of it).
    /// Returns the recording.
    pub fn stream_large_recording(
        &self,
        id: &str,
        mib: usize,
        stored: impl Fn() -> bool,
    ) -> Vec<u8> {
        let data = large_recording(id, mib);
        assert!(data.len() > mib << 20);
        let spool = self.dir.join("node-big/node/recordings");
        std::fs::create_dir_all(&spool).unwrap();
        let spooled = spool.join(format!("{id}.wrec"));
        std::fs::write(&spooled, &data).unwrap();
        let before = peak_rss_kib(self.pid());
        let node = TunnelNode::start(self, "big", "env=big");
        let t0 = Instant::now();
        while !stored() {
            assert!(
                t0.elapsed() < Duration::from_secs(180),
                "the recording was not stored"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let after = peak_rss_kib(self.pid());
        let node_peak = peak_rss_kib(node.pid()) >> 10;
        eprintln!(
            "auth peak RSS {} MiB before, {} MiB after a {mib} MiB upload; node peak {node_peak} MiB",
            before >> 10,
            after >> 10,
        );
        let grew = after.saturating_sub(before) >> 10;
        assert!(
            grew < (mib / 2) as u64,
            "auth's peak memory grew by {grew} MiB for a {mib} MiB recording"
        );
        // The node sends it from disk, not from memory.
        assert!(
            node_peak < (mib / 2) as u64,
            "the node's peak memory was {node_peak} MiB while sending a {mib} MiB recording"
        );
        while spooled.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(200),
                "the node kept its spool"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        data
    }
}

/// Debian's stock sshd on a free loopback port, trusting `user_ca` (an
/// OpenSSH public key file) for user certificates, with `extra` lines of
/// sshd_config; stopped on drop.
pub struct PlainSshd {
    child: Child,
    pub port: u16,
}

impl PlainSshd {
    pub fn start(dir: &Path, user_ca: &Path, extra: &str) -> PlainSshd {
        let host_key = dir.join("sshd_host");
        assert!(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key)
            .status()
            .unwrap()
            .success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nTrustedUserCAKeys {}\n{extra}AuthorizedKeysFile none\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nLogLevel ERROR\n",
                host_key.display(),
                dir.join("sshd.pid").display(),
                user_ca.display(),
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd (Debian package openssh-server) must be installed");
        PlainSshd { child, port }
    }

    /// Stock `ssh` as `login` with `user`'s key and certificate in `keys`,
    /// running `command`.
    pub fn ssh(&self, keys: &Path, user: &str, login: &str, command: &str) -> Out {
        run_program(
            "ssh",
            &[
                "-o".into(),
                "BatchMode=yes".into(),
                "-o".into(),
                format!(
                    "CertificateFile={}",
                    keys.join(format!("{user}-cert.pub")).display()
                ),
                "-i".into(),
                keys.join(user).display().to_string(),
                "-o".into(),
                "IdentitiesOnly=yes".into(),
                "-o".into(),
                "UserKnownHostsFile=/dev/null".into(),
                "-o".into(),
                "StrictHostKeyChecking=no".into(),
                "-o".into(),
                "LogLevel=ERROR".into(),
                "-p".into(),
                self.port.to_string(),
                format!("{login}@127.0.0.1"),
                command.into(),
            ],
            None,
        )
    }

    /// Like [`PlainSshd::ssh`], retried for up to 5 s while sshd starts.
    pub fn ssh_when_up(&self, keys: &Path, user: &str, login: &str, command: &str) -> Out {
        let mut out = self.ssh(keys, user, login, command);
        for _ in 0..50 {
            if out.ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            out = self.ssh(keys, user, login, command);
        }
        out
    }
}

impl Drop for PlainSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP GET of `path` on 127.0.0.1:`port` (diagnostics
/// endpoints); the whole response, status line included.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The fingerprint (`SHA256:...`) of the CA that signed an OpenSSH
/// certificate.
pub fn signed_by(cert: &Path) -> String {
    let out = run_program(
        "ssh-keygen",
        &["-L".into(), "-f".into(), cert.display().to_string()],
        None,
    )
    .expect_ok();
    let line = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("Signing CA:"))
        .unwrap()
        .to_string();
    line.split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap()
        .to_string()
}
