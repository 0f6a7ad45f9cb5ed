//! Telling protocols apart by their first bytes.

use anyhow::{bail, Context};
use tokio::io::{AsyncRead, AsyncReadExt};
use warden_types::{ALPN_AUTH, ALPN_DB_MYSQL, ALPN_DB_POSTGRES, ALPN_PEER, ALPN_TUNNEL};

/// Largest ClientHello we buffer before deciding.
const MAX_HELLO: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Ssh,
    AuthPassthrough,
    Tunnel,
    Peer,
    /// A database connection, mTLS end to end to the database service
    /// its SNI names.
    Db,
    Web,
}

/// Reads just enough to classify the connection; returns the bytes read,
/// which the chosen handler must replay.
/// A connection closed before its first byte: a TCP health check, or a
/// client probing which proxy answers. Not an error worth counting.
#[derive(Debug)]
pub struct Empty;

impl std::fmt::Display for Empty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed before its first byte")
    }
}

impl std::error::Error for Empty {}

pub async fn sniff<R: AsyncRead + Unpin>(r: &mut R) -> anyhow::Result<(Protocol, Vec<u8>)> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = r.read(&mut chunk).await.context("read")?;
        if n == 0 && head.is_empty() {
            return Err(Empty.into());
        }
        if n == 0 {
            bail!("connection closed before the protocol was known");
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(p) = classify(&head)? {
            return Ok((p, head));
        }
        if head.len() > MAX_HELLO {
            bail!("TLS ClientHello larger than {MAX_HELLO} bytes");
        }
    }
}

/// Classifies a prefix: `Ok(None)` means "need more bytes". Pure, so it is
/// unit-tested (and fuzzable) without sockets.
pub fn classify(head: &[u8]) -> anyhow::Result<Option<Protocol>> {
    if head.len() < 4 {
        return Ok(None);
    }
    if head.starts_with(b"SSH-") {
        return Ok(Some(Protocol::Ssh));
    }
    if head[0] != 0x16 {
        bail!("neither SSH nor TLS");
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd: &[u8] = head;
    while !rd.is_empty() {
        acceptor.read_tls(&mut rd).context("TLS record")?;
    }
    match acceptor.accept() {
        Ok(None) => Ok(None),
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            let alpn: Vec<&[u8]> = hello.alpn().map(|a| a.collect()).unwrap_or_default();
            Ok(Some(if alpn.contains(&ALPN_AUTH) {
                Protocol::AuthPassthrough
            } else if alpn.contains(&ALPN_TUNNEL) {
                Protocol::Tunnel
            } else if alpn.contains(&ALPN_PEER) {
                Protocol::Peer
            } else if alpn.contains(&ALPN_DB_POSTGRES) || alpn.contains(&ALPN_DB_MYSQL) {
                Protocol::Db
            } else {
                Protocol::Web
            }))
        }
        Err((e, _)) => bail!("invalid TLS ClientHello: {e}"),
    }
}

/// The server name (SNI) of the ClientHello at the front of `head`, which
/// [`classify`] has already found complete.
pub fn server_name(head: &[u8]) -> Option<String> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd: &[u8] = head;
    while !rd.is_empty() {
        acceptor.read_tls(&mut rd).ok()?;
    }
    let accepted = acceptor.accept().ok()??;
    accepted.client_hello().server_name().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_connection_closed_before_its_first_byte_is_not_an_error() {
        let e = sniff(&mut &b""[..]).await.unwrap_err();
        assert!(e.is::<Empty>(), "{e}");
        // Closed midway is an error.
        let e = sniff(&mut &b"SS"[..]).await.unwrap_err();
        assert!(!e.is::<Empty>(), "{e}");
    }

    fn client_hello(alpn: &[&[u8]]) -> Vec<u8> {
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        let mut conn =
            rustls::ClientConnection::new(Arc::new(config), "example.com".try_into().unwrap())
                .unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn classifies() {
        assert_eq!(
            classify(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap(),
            Some(Protocol::Ssh)
        );
        assert_eq!(classify(b"SS").unwrap(), None);
        assert!(classify(b"GET / HTTP/1.1\r\n").is_err());
        let auth = client_hello(&[ALPN_AUTH]);
        assert_eq!(classify(&auth).unwrap(), Some(Protocol::AuthPassthrough));
        // A partial hello asks for more.
        assert_eq!(classify(&auth[..auth.len() / 2]).unwrap(), None);
        assert_eq!(
            classify(&client_hello(&[ALPN_TUNNEL])).unwrap(),
            Some(Protocol::Tunnel)
        );
        assert_eq!(
            classify(&client_hello(&[b"http/1.1"])).unwrap(),
            Some(Protocol::Web)
        );
        assert_eq!(classify(&client_hello(&[])).unwrap(), Some(Protocol::Web));
        // A database connection, routed by the service its SNI names.
        let db = client_hello(&[ALPN_DB_POSTGRES]);
        assert_eq!(classify(&db).unwrap(), Some(Protocol::Db));
        assert_eq!(server_name(&db).as_deref(), Some("example.com"));
        assert_eq!(server_name(&db[..db.len() / 2]), None);
        assert_eq!(
            classify(&client_hello(&[ALPN_DB_MYSQL])).unwrap(),
            Some(Protocol::Db)
        );
        // Garbage after the TLS byte is an error, not a panic.
        assert!(classify(&[0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5]).is_err());
    }
}
