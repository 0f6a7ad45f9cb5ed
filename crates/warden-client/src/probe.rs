//! What listens on an address that does not answer as a proxy: users give
//! `--proxy` the auth, node or diagnostics port by mistake, and deserve
//! to hear which one it is.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the first bytes a server sends back to a plain HTTP request say
/// about it; `None` for a Warden proxy (it closes such a connection
/// without a word) or anything unrecognised.
pub fn classify(reply: &[u8]) -> Option<&'static str> {
    if reply.starts_with(b"SSH-2.0-warden_proxy") {
        None
    } else if reply.starts_with(b"SSH-2.0-warden_") {
        Some("a Warden node's SSH port (for ssh, through the proxy)")
    } else if reply.starts_with(b"SSH-") {
        Some("an SSH server")
    } else if reply.first() == Some(&0x15) && reply.get(1) == Some(&0x03) {
        // A TLS alert in answer to plaintext: a TLS-only server. Warden's
        // is the auth API, which takes service and admin certificates.
        Some("a TLS-only port, likely Warden's auth API (port 3025, for services and admins with certificates)")
    } else if reply.starts_with(b"HTTP/1.") {
        Some("a plain HTTP server, likely Warden's diagnostics port (--diag-addr: /metrics, /healthz)")
    } else {
        None
    }
}

/// Connects to `addr` and asks; `None` when it may be a proxy after all.
pub async fn not_a_proxy(addr: &str) -> Option<&'static str> {
    let probe = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        tcp.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await.ok()?;
        let mut buf = [0u8; 32];
        let n = tcp.read(&mut buf).await.ok()?;
        classify(&buf[..n])
    };
    tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_ports_users_confuse() {
        assert!(classify(b"SSH-2.0-warden_0.1.0\r\n")
            .unwrap()
            .contains("node"));
        assert_eq!(classify(b"SSH-2.0-warden_proxy_0.1.0\r\n"), None);
        assert!(classify(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32])
            .unwrap()
            .contains("auth API"));
        assert!(classify(b"HTTP/1.0 200 OK\r\n")
            .unwrap()
            .contains("diagnostics"));
        assert_eq!(classify(b""), None);
    }
}
