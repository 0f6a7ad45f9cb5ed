//! A real etcd for tests (Debian's `etcd-server`, which `.ci/run`
//! installs): one member, or a cluster of several, on free loopback ports
//! in a temporary directory; stopped and deleted on drop.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

pub struct EtcdCluster {
    dir: PathBuf,
    members: Vec<Member>,
    tls: Option<TlsFiles>,
}

/// PEM files for members that speak TLS and ask clients for certificates.
#[derive(Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl EtcdCluster {
    /// Starts `n` members and waits until every one answers.
    pub fn start(n: usize) -> EtcdCluster {
        Self::start_with(n, None)
    }

    /// Starts `n` members serving clients over TLS only, with client
    /// certificates required (`--client-cert-auth`).
    pub fn start_tls(n: usize, files: TlsFiles) -> EtcdCluster {
        Self::start_with(n, Some(files))
    }

    fn start_with(n: usize, tls: Option<TlsFiles>) -> EtcdCluster {
        let dir = std::env::temp_dir().join(format!("warden-etcd-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let mut c = EtcdCluster { dir, members, tls };
        for i in 0..n {
            c.resume(i);
        }
        for m in &c.members {
            c.wait_port(m.client_port);
        }
        c
    }

    fn wait_port(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "etcd did not start; see {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts member `i` (again).
    pub fn resume(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let m = &self.members[i];
        let log = std::fs::File::create(self.dir.join(format!("{}.log", m.name))).unwrap();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut tls_args: Vec<std::ffi::OsString> = Vec::new();
        if let Some(t) = &self.tls {
            for (flag, path) in [
                ("--cert-file", &t.server_cert),
                ("--key-file", &t.server_key),
                ("--trusted-ca-file", &t.ca),
            ] {
                tls_args.push(flag.into());
                tls_args.push(path.into());
            }
            tls_args.push("--client-cert-auth".into());
        }
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(self.dir.join(&m.name))
            .arg("--listen-client-urls")
            .arg(format!("{scheme}://127.0.0.1:{}", m.client_port))
            .arg("--advertise-client-urls")
            .arg(format!("{scheme}://127.0.0.1:{}", m.client_port))
            .args(&tls_args)
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{}", m.peer_port))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://127.0.0.1:{}", m.peer_port))
            .arg("--initial-cluster")
            .arg(initial.join(","))
            .args(["--initial-cluster-state", "new", "--initial-cluster-token"])
            .arg(self.dir.file_name().unwrap())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd ({e}): apt-get install -y etcd-server"));
        self.members[i].child = Some(child);
    }

    /// Stops member `i` (SIGKILL).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The `--backend` URL naming every member.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect();
        match &self.tls {
            None => format!("etcd://{}", hosts.join(",")),
            Some(t) => format!(
                "etcds://{}?ca={}&cert={}&key={}",
                hosts.join(","),
                t.ca.display(),
                t.client_cert.display(),
                t.client_key.display()
            ),
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl EtcdCluster {
    /// The index of the current leader, asked of any live member through
    /// etcd's JSON gateway.
    pub fn leader(&self) -> Option<usize> {
        use std::io::{Read, Write};
        let mut ids = Vec::new();
        let mut leader = None;
        for m in &self.members {
            if m.child.is_none() {
                ids.push(None);
                continue;
            }
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", m.client_port)) else {
                ids.push(None);
                continue;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let body = "{}";
            let _ = write!(
                s,
                "POST /v3/maintenance/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            let json = out.split("\r\n\r\n").nth(1).unwrap_or("");
            let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
            ids.push(v["header"]["member_id"].as_str().map(str::to_string));
            if let Some(l) = v["leader"].as_str() {
                leader = Some(l.to_string());
            }
        }
        let leader = leader?;
        ids.iter()
            .position(|id| id.as_deref() == Some(leader.as_str()))
    }
}
