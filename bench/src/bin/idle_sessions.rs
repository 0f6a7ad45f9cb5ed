//! Resident memory of an SSH server per idle session: opens N connections
//! with a user certificate, each running `sleep` (the user's own process,
//! which is not counted), and reads the server's VmRSS before and after.
//!
//! Usage: idle_sessions HOST:PORT LOGIN KEY CERT SERVER_PID N [N...]

use russh::client::{self, AuthResult};
use russh::keys::{Certificate, PrivateKey, PublicKeyOrCertificate};
use std::sync::Arc;

struct Trusting;

impl client::Handler for Trusting {
    type Error = russh::Error;
    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        // Measuring memory, not trust: the e2e tests check host certificates.
        Ok(true)
    }
}

fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server pid");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 7,
        "usage: idle_sessions HOST:PORT LOGIN KEY CERT SERVER_PID N [N...]"
    );
    let (addr, login, pid) = (&args[1], &args[2], &args[5]);
    let key = Arc::new(PrivateKey::from_openssh(std::fs::read_to_string(
        &args[3],
    )?)?);
    let cert = Certificate::from_openssh(std::fs::read_to_string(&args[4])?.trim())?;
    let config = Arc::new(client::Config::default());
    let mut held = Vec::new();
    let base = rss_kib(pid);
    for n in args[6..].iter().map(|n| n.parse::<usize>()) {
        let n = n?;
        while held.len() < n {
            let mut session = client::connect(config.clone(), addr.as_str(), Trusting).await?;
            let auth = session
                .authenticate_openssh_cert(login.clone(), key.clone(), cert.clone())
                .await?;
            anyhow::ensure!(matches!(auth, AuthResult::Success), "authentication failed");
            let channel = session.channel_open_session().await?;
            channel.exec(true, "sleep 3600").await?;
            held.push((session, channel));
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let rss = rss_kib(pid);
        println!(
            "idle_sessions.{n} rss_delta_kib={} per_session_kib={:.0}",
            rss.saturating_sub(base),
            rss.saturating_sub(base) as f64 / n as f64
        );
    }
    Ok(())
}
