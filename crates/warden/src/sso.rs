//! `warden login --auth CONNECTOR`: single sign-on through the cluster's
//! identity provider, in a browser on this machine or (`--headless`) with
//! a code typed into a browser anywhere.

use anyhow::{bail, Context};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use warden_ca::ClientKey;
use warden_client::login as client;
use warden_client::tls::Trust;
use warden_types::api::{LoginResponse, SsoResult, SsoResultRequest};
use warden_types::Secret;

/// How often the waiting client asks whether the login finished.
const POLL: Duration = Duration::from_secs(1);

/// Runs the login; returns the key and the certificates.
pub async fn login(
    proxy: &str,
    trust: Trust,
    connector: &str,
    headless: bool,
    ttl_secs: Option<u64>,
) -> anyhow::Result<(ClientKey, LoginResponse)> {
    let (listener, redirect) = if headless {
        (None, None)
    } else {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot open a local port for the browser to come back to; use --headless")?;
        let url = format!("http://127.0.0.1:{}/callback", l.local_addr()?.port());
        (Some(l), Some(url))
    };
    let (key, start) =
        client::sso_start(proxy, trust.clone(), connector, ttl_secs, redirect).await?;
    let (tx, mut completions) = mpsc::channel::<String>(4);
    if let Some(l) = listener {
        tokio::spawn(loopback(l, tx));
    }
    if let Some(url) = &start.auth_url {
        eprintln!("Opening your browser to log in with {connector}. If it does not open, visit:\n\n  {url}\n");
        open_browser(url);
    } else if let (Some(url), Some(code)) = (&start.device_url, &start.user_code) {
        eprintln!(
            "To log in with {connector}, open this page in any browser:\n\n  {url}\n\nand enter the code:\n\n  {code}\n\nWaiting..."
        );
    }
    // Every value the loopback listener got: a stray local request must
    // not displace the real one.
    let mut completions_seen: Vec<String> = Vec::new();
    let mut turn = 0usize;
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs((start.expires - crate::output::now()).max(1) as u64 + 5);
    loop {
        let completion = (!completions_seen.is_empty())
            .then(|| completions_seen[turn % completions_seen.len()].clone());
        turn += 1;
        let req = SsoResultRequest {
            id: start.id.clone(),
            poll_token: start.poll_token.clone(),
            completion: completion.map(Secret::new),
        };
        match client::sso_result(proxy, trust.clone(), &req).await? {
            SsoResult::Done { login } => return Ok((key, *login)),
            SsoResult::Failed { error } => bail!("{error}"),
            SsoResult::Pending => {}
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the login was not completed in time; run 'warden login --auth {connector}' again"
            );
        }
        tokio::select! {
            Some(c) = completions.recv() => {
                completions_seen.push(c);
                turn = completions_seen.len() - 1;
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// `$BROWSER` (a command; the URL is appended), else `xdg-open`. Failing to
/// start one is fine: the URL is printed.
fn open_browser(url: &str) {
    let cmd = std::env::var("BROWSER").unwrap_or_else(|_| "xdg-open".into());
    let mut parts = cmd.split_whitespace();
    let Some(prog) = parts.next() else { return };
    let _ = std::process::Command::new(prog)
        .args(parts)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// The browser comes back to `http://127.0.0.1:PORT/callback?completion=..`
/// once the proxy finished the login; that value releases the certificates.
async fn loopback(listener: TcpListener, tx: mpsc::Sender<String>) {
    while let Ok((mut conn, _)) = listener.accept().await {
        let mut buf = vec![0u8; 8192];
        let n = match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => continue,
        };
        let head = String::from_utf8_lossy(&buf[..n]);
        let target = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("");
        let completion = target
            .strip_prefix("/callback?")
            .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
            .and_then(|pairs| {
                pairs
                    .into_iter()
                    .find(|(k, _)| k == "completion")
                    .map(|(_, v)| v)
            });
        let (status, text) = if completion.is_some() {
            (
                "200 OK",
                "Login complete. You can close this tab and return to your terminal.",
            )
        } else {
            ("404 Not Found", "Not a Warden login callback.")
        };
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Warden</title></head><body><p>{text}</p></body></html>"
        );
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(resp.as_bytes()).await;
        let _ = conn.shutdown().await;
        if let Some(c) = completion {
            let _ = tx.send(c).await;
        }
    }
}
