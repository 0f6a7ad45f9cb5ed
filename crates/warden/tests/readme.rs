//! The README's quickstart, run as written: its commands, on a fresh HOME
//! and data dir, with the default ports, through bash and stock OpenSSH.
//! Every command run here is first looked up in README.md, so the two
//! cannot drift apart; where the README shows a prompt, the test adds the
//! automation flags the README documents (`--password-stdin`, `--otp`,
//! `--totp-secret`).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const README: &str = include_str!("../../../README.md");

/// Fails unless the README shows `line`.
fn shown(line: &str) {
    assert!(
        README.contains(line),
        "README.md no longer shows {line:?}: update it or this test"
    );
}

struct Shell {
    home: PathBuf,
    cwd: PathBuf,
    data: PathBuf,
}

impl Shell {
    /// Runs `script` with bash, as a user would type it.
    fn run(&self, script: &str, stdin: Option<&str>) -> Out {
        let bin = Path::new(WARDEN).parent().unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new("bash")
            .args(["-c", script])
            .current_dir(&self.cwd)
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", path)
            .env("USER", "root")
            .env("WARDEN_DATA_DIR", &self.data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        finish(child, stdin)
    }

    /// Runs a README line as written.
    fn readme(&self, line: &str) -> Out {
        shown(line);
        self.run(line, None)
    }
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[test]
fn readme_quickstart_as_written() {
    if ![3080, 3025, 3022].into_iter().all(port_free) {
        panic!("the quickstart uses ports 3080, 3025 and 3022; free them to run this test");
    }
    let dir = temp_dir("readme");
    let home = dir.join("home");
    let cwd = dir.join("work");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::create_dir_all(cwd.join("examples")).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::copy(
        repo.join("examples/roles.yaml"),
        cwd.join("examples/roles.yaml"),
    )
    .unwrap();
    let sh = Shell {
        home,
        cwd,
        data: dir.join("data"),
    };

    // 1. Start a cluster.
    shown("```sh\nwarden start\n```");
    let bin = Path::new(WARDEN).parent().unwrap();
    let mut cluster = Command::new("bash")
        .args(["-c", "exec warden start"])
        .current_dir(&sh.cwd)
        .env("HOME", &sh.home)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("WARDEN_DATA_DIR", &sh.data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = cluster.stdout.take().unwrap();
    let _cluster = Stop(cluster);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    while !printed
        .iter()
        .any(|l: &String| l.contains("serving SSH on"))
    {
        printed.push(
            rx.recv_timeout(Duration::from_secs(60))
                .expect("warden start did not come up"),
        );
    }
    let printed = printed.join("\n");
    for label in [
        "data dir:",
        "auth:       127.0.0.1:3025 (mTLS)",
        "proxy:      127.0.0.1:3080",
        "CA pin:     sha256:",
    ] {
        shown(label);
        assert!(printed.contains(label), "{label:?} not in:\n{printed}");
    }
    let pin = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("CA pin:"))
        .unwrap()
        .trim()
        .to_string();

    // 2. Add a user: the printed command has the token and the pin.
    let out = sh
        .readme("warden admin users add alice --roles access --logins alice,root")
        .expect_ok();
    let token = signup_token(&out.stdout);
    assert!(
        out.stdout
            .contains(&format!("--proxy 127.0.0.1:3080 --ca-pin {pin}")),
        "{}",
        out.stdout
    );

    // 3. Signup, the token in a file.
    std::fs::write(sh.cwd.join("token.txt"), format!("{token}\n")).unwrap();
    shown("warden signup --token-file token.txt --proxy 127.0.0.1:3080 --ca-pin sha256:...");
    shown("--password-stdin");
    shown("--totp-secret BASE32");
    let secret = totp_secret("alice");
    sh.run(
        &format!(
            "warden signup --token-file token.txt --proxy 127.0.0.1:3080 --ca-pin {pin} --password-stdin --totp-secret {secret} --otp {}",
            totp(&secret, 0)
        ),
        Some(&format!("{PASSWORD}\n")),
    )
    .expect_ok();

    // 4. Login and status.
    shown("warden login --proxy 127.0.0.1:3080 --user alice\nwarden status");
    sh.run(
        &format!(
            "warden login --proxy 127.0.0.1:3080 --user alice --password-stdin --otp {}",
            totp(&secret, 30)
        ),
        Some(&format!("{PASSWORD}\n")),
    )
    .expect_ok();
    let status = sh.readme("warden status").expect_ok().stdout;
    for line in [
        "  Proxy:        127.0.0.1:3080",
        "  Cluster:      warden",
        "  User:         alice",
        "  Roles:        access",
        "  Logins:       alice, root",
        "  Extensions:   permit-agent-forwarding, permit-port-forwarding, permit-pty",
    ] {
        shown(line);
        assert!(status.contains(line), "{line:?} not in:\n{status}");
    }
    for label in ["  Valid until:  ", "  Certificate:  "] {
        shown(label);
        assert!(status.contains(label), "{label:?} not in:\n{status}");
    }
    let out = sh
        .readme("ssh-keygen -L -f ~/.warden/keys/127.0.0.1_3080/alice-cert.pub")
        .expect_ok();
    assert!(out.stdout.contains("Key ID: \"alice\""), "{}", out.stdout);

    // 5. Roles as code.
    let out = sh
        .readme("warden admin roles apply -f examples/roles.yaml --dry-run")
        .expect_ok();
    assert!(out.stdout.contains("Dry run:"), "{}", out.stdout);
    let out = sh
        .readme("warden admin roles apply -f examples/roles.yaml")
        .expect_ok();
    assert!(out.stdout.contains("Applied:"), "{}", out.stdout);
    let out = sh
        .readme("warden admin roles apply -f examples/roles.yaml")
        .expect_ok();
    assert!(
        out.stdout.contains("Applied: 0 change(s)"),
        "idempotent: {}",
        out.stdout
    );
    assert!(sh
        .readme("warden admin roles ls")
        .expect_ok()
        .stdout
        .contains("user-manager"));
    sh.readme("warden admin users update alice --roles access,user-manager")
        .expect_ok();
    let out = sh.readme("warden admin users ls --format json").expect_ok();
    assert!(out.stdout.contains("user-manager"), "{}", out.stdout);

    // 6. Reach the node, as root.
    let out = sh.readme("warden ls").expect_ok();
    assert!(out.stdout.contains("online"), "{}", out.stdout);
    let out = sh
        .readme("warden ssh root@$(hostname) -- uname -a")
        .expect_ok();
    assert!(out.stdout.contains("Linux"), "{}", out.all());
    shown("warden ssh root@$(hostname)                 # an interactive shell (PTY)");
    let out = sh
        .run(
            "warden ssh root@$(hostname)",
            Some("echo shell-$((6*7))\nexit\n"),
        )
        .expect_ok();
    assert!(out.stdout.contains("shell-42"), "{}", out.all());
    std::fs::write(sh.cwd.join("notes.txt"), "quickstart notes\n").unwrap();
    sh.readme("warden scp ./notes.txt root@$(hostname):/tmp/")
        .expect_ok();
    shown("warden sftp root@$(hostname)");
    let out = sh
        .run(
            "warden sftp root@$(hostname)",
            Some("ls -l /tmp/notes.txt\n"),
        )
        .expect_ok();
    assert!(out.stdout.contains("notes.txt"), "{}", out.all());
    let _ = std::fs::remove_file("/tmp/notes.txt");

    // Plain ssh with the profile's files.
    let plain = "K=~/.warden/keys/127.0.0.1_3080\nssh -o CertificateFile=$K/alice-cert.pub -i $K/alice -o UserKnownHostsFile=$K/known_hosts \\\n    -p 3022 root@127.0.0.1";
    shown(plain);
    let out = sh.run(&format!("{plain} echo plain-ssh"), None).expect_ok();
    assert_eq!(out.stdout.trim(), "plain-ssh", "{}", out.all());

    // More nodes join with a token: db-1, behind the proxy only.
    shown("warden admin tokens add --type node --ttl 1h");
    let out = sh
        .run(
            "warden admin tokens add --type node --ttl 1h --format json",
            None,
        )
        .expect_ok();
    let tok: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let node_token = dir.join("warden-node.token");
    std::fs::write(&node_token, format!("{}\n", tok["token"].as_str().unwrap())).unwrap();
    shown("warden start --roles node --proxy 127.0.0.1:3080 --token-file /var/lib/warden-node.token --ca-pin sha256:... \\\n    --labels env=prod,team=db --label-cmd arch='uname -m'@1m --name db-1 --data-dir /var/lib/warden-node");
    let node = Command::new("bash")
        .args([
            "-c",
            &format!(
                "exec warden start --roles node --proxy 127.0.0.1:3080 --token-file {} --ca-pin {pin} \\\n    --labels env=prod,team=db --label-cmd arch='uname -m'@1m --name db-1 --data-dir {}",
                node_token.display(),
                dir.join("warden-node").display()
            ),
        ])
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()))
        .env("HOME", &sh.home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _node = Stop(node);
    let mut joined = false;
    for _ in 0..100 {
        if sh.run("warden ls env=prod", None).stdout.contains("db-1") {
            joined = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(joined, "db-1 never appeared in 'warden ls env=prod'");
    shown("warden ls env=prod");
    shown(
        "warden ssh root@db-1                                # through the proxy and db-1's tunnel",
    );
    let mut reached = None;
    for _ in 0..50 {
        let out = sh.run("warden ssh root@db-1 -- echo via-tunnel", None);
        if out.ok {
            reached = Some(out);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        reached.expect("db-1 unreachable").stdout.trim(),
        "via-tunnel"
    );

    // Stock OpenSSH after 'warden config', as the README shows it. (ssh
    // reads the config of the passwd entry's home, not $HOME: -F points it
    // at this test's fresh one.)
    sh.readme("warden config >> ~/.ssh/config").expect_ok();
    shown("ssh root@db-1.warden                                # also scp, sftp, rsync -e ssh");
    let out = sh
        .run(
            "ssh -F ~/.ssh/config root@db-1.warden echo config-block",
            None,
        )
        .expect_ok();
    assert_eq!(out.stdout.trim(), "config-block", "{}", out.all());
    shown("ssh -J alice@127.0.0.1:3080 root@db-1.warden");
    let out = sh
        .run(
            "ssh -F ~/.ssh/config -J alice@127.0.0.1:3080 root@db-1.warden echo jumped",
            None,
        )
        .expect_ok();
    assert_eq!(out.stdout.trim(), "jumped", "{}", out.all());

    // 7. The audit log, and logging out.
    let out = sh
        .run(
            "warden admin audit search --type session.start --user alice --since 7d",
            None,
        )
        .expect_ok();
    shown("warden admin audit search --type session.start --user alice --since 7d");
    assert!(out.stdout.contains("session.start"), "{}", out.stdout);
    let out = sh.readme("warden admin audit verify").expect_ok();
    assert!(
        out.stdout.contains("OK") || out.stdout.contains("intact"),
        "{}",
        out.all()
    );
    sh.readme("warden logout").expect_ok();
    sh.run("warden status", None).expect_err("not logged in");
}
