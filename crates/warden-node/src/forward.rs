//! Channels the node opens back to the client: remote port forwards (-R),
//! agent forwarding (-A) and X11 (-X). Each listener lives as long as the
//! connection that asked for it.

use crate::unix::Account;
use russh::server::Handle;
use std::path::PathBuf;
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;

/// Pipes a client channel and a local stream until both sides end.
async fn splice<S>(channel: russh::Channel<russh::server::Msg>, mut stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut chan = channel.into_stream();
    let _ = tokio::io::copy_bidirectional(&mut chan, &mut stream).await;
}

/// `-R`: listens on loopback and opens a forwarded-tcpip channel per
/// connection. Returns the bound port and the accept task.
pub async fn remote_listener(
    handle: Handle,
    address: &str,
    port: u32,
) -> std::io::Result<(u32, JoinHandle<()>)> {
    // Loopback only, like OpenSSH's default GatewayPorts=no.
    let port16 = u16::try_from(port).map_err(|_| std::io::Error::other("port out of range"))?;
    let listener = TcpListener::bind(("127.0.0.1", port16)).await?;
    let bound = listener.local_addr()?.port() as u32;
    let address = address.to_string();
    let task = tokio::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            let handle = handle.clone();
            let address = address.clone();
            tokio::spawn(async move {
                if let Ok(ch) = handle
                    .channel_open_forwarded_tcpip(
                        address,
                        bound,
                        peer.ip().to_string(),
                        peer.port() as u32,
                    )
                    .await
                {
                    splice(ch, tcp).await;
                }
            });
        }
    });
    Ok((bound, task))
}

/// A listener plus what to clean up after it.
pub struct Forwarding {
    pub task: JoinHandle<()>,
    pub cleanup: Option<PathBuf>,
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(dir) = &self.cleanup {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn chown(path: &std::path::Path, account: &Account) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))
}

/// `-A`: a Unix socket, private to the login, whose connections become
/// auth-agent channels to the client. Returns SSH_AUTH_SOCK.
pub fn agent_listener(
    handle: Handle,
    account: &Account,
    switch_user: bool,
) -> std::io::Result<(String, Forwarding)> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = std::env::temp_dir().join(format!("warden-agent-{}", uuid::Uuid::new_v4()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let sock = dir.join("agent.sock");
    let listener = UnixListener::bind(&sock)?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))?;
    if switch_user {
        chown(&dir, account)?;
        chown(&sock, account)?;
    }
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                if let Ok(ch) = handle.channel_open_agent().await {
                    splice(ch, stream).await;
                }
            });
        }
    });
    Ok((
        sock.display().to_string(),
        Forwarding {
            task,
            cleanup: Some(dir),
        },
    ))
}

/// First X11 display number tried, as in OpenSSH's X11DisplayOffset.
const X11_FIRST_DISPLAY: u16 = 10;

/// `-X`: a TCP listener on 127.0.0.1:6000+N whose connections become x11
/// channels to the client. Returns the display number.
pub async fn x11_listener(handle: Handle) -> std::io::Result<(u16, Forwarding)> {
    let mut found = None;
    for display in X11_FIRST_DISPLAY..X11_FIRST_DISPLAY + 1000 {
        if let Ok(l) = TcpListener::bind(("127.0.0.1", 6000 + display)).await {
            found = Some((display, l));
            break;
        }
    }
    let (display, listener) = found.ok_or_else(|| std::io::Error::other("no free X11 display"))?;
    let task = tokio::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                if let Ok(ch) = handle
                    .channel_open_x11(peer.ip().to_string(), peer.port() as u32)
                    .await
                {
                    splice(ch, tcp).await;
                }
            });
        }
    });
    Ok((
        display,
        Forwarding {
            task,
            cleanup: None,
        },
    ))
}

/// An X11 auth protocol name and hex cookie as xauth takes them, or None
/// if they are not plainly that (they go onto a command line).
pub fn x11_auth_ok(proto: &str, cookie: &str) -> bool {
    !proto.is_empty()
        && proto.len() <= 64
        && proto
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !cookie.is_empty()
        && cookie.len() <= 256
        && cookie.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    #[test]
    fn x11_auth_is_strict() {
        assert!(super::x11_auth_ok("MIT-MAGIC-COOKIE-1", "0123abcdef"));
        assert!(!super::x11_auth_ok("MIT; rm -rf /", "00"));
        assert!(!super::x11_auth_ok("MIT-MAGIC-COOKIE-1", "00 && id"));
        assert!(!super::x11_auth_ok("", "00"));
    }
}
