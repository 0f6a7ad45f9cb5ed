//! Proxy peering: a proxy without a tunnel to a node asks the other
//! proxies (mTLS with proxy identities, ALPN `warden-peer`) to dial it
//! through theirs. One line of request, one line of answer, then bytes.

use crate::tunnel::Tunnels;
use anyhow::{bail, Context};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use warden_client::ApiClient;
use warden_types::api::ProxyInfo;
use warden_types::endpoints;

/// Longest request line accepted from a peer.
const MAX_LINE: usize = 256;

/// Serves a peer's request on an authenticated stream.
pub async fn serve_peer<S>(
    stream: S,
    tunnels: Tunnels,
    peer: std::net::SocketAddr,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut limited = (&mut reader).take(MAX_LINE as u64);
    tokio::time::timeout(
        Duration::from_secs(10),
        limited.read_until(b'\n', &mut line),
    )
    .await
    .context("peer sent no request")??;
    let text = String::from_utf8_lossy(&line);
    let Some(node) = text.trim_end().strip_prefix("DIAL ") else {
        bail!("bad peer request");
    };
    let Some(channel) = tunnels.dial(node, peer).await else {
        reader
            .get_mut()
            .write_all(b"NO no tunnel to that node here\n")
            .await?;
        return Ok(());
    };
    reader.get_mut().write_all(b"OK\n").await?;
    // Bytes the peer may already have sent after its request line stay in
    // the BufReader, which keeps reading from the stream.
    let mut chan = channel.into_stream();
    let _ = tokio::io::copy_bidirectional(&mut reader, &mut chan).await;
    Ok(())
}

/// The last proxy list fetched, and when.
type Cached = Option<(Instant, Vec<ProxyInfo>)>;

/// The other proxies, from auth, cached briefly.
#[derive(Clone)]
pub struct Peers {
    self_id: String,
    auth: ApiClient,
    /// The client certificate for peers is in here.
    creds: crate::creds::Current,
    cache: Arc<Mutex<Cached>>,
}

impl Peers {
    pub(crate) fn new(self_id: String, auth: ApiClient, creds: crate::creds::Current) -> Self {
        Peers {
            self_id,
            auth,
            creds,
            cache: Arc::new(Mutex::new(None)),
        }
    }

    async fn others(&self) -> Vec<ProxyInfo> {
        if let Some((at, list)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if at.elapsed() < Duration::from_secs(2) {
                return list.clone();
            }
        }
        let list: Vec<ProxyInfo> = match self.auth.call(&endpoints::PROXIES, &()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list peer proxies");
                Vec::new()
            }
        };
        let others: Vec<ProxyInfo> = list.into_iter().filter(|p| p.id != self.self_id).collect();
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), others.clone()));
        others
    }

    /// A stream to `node`'s SSH server through a peer's tunnel, if any
    /// peer has one.
    pub async fn dial(
        &self,
        node: &str,
    ) -> Option<BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>> {
        for peer in self.others().await {
            for addr in &peer.addrs {
                match self.try_dial(addr, node).await {
                    Ok(stream) => return Some(stream),
                    Err(e) => {
                        tracing::debug!(%addr, error = %format!("{e:#}"), "peer cannot reach the node")
                    }
                }
            }
        }
        None
    }

    async fn try_dial(
        &self,
        addr: &str,
        node: &str,
    ) -> anyhow::Result<BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>> {
        let host = warden_client::http::host_of(addr).to_string();
        let name = rustls::pki_types::ServerName::try_from(host)?;
        let tcp =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await??;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(self.creds.get().peer_client.clone())
            .connect(name, tcp)
            .await?;
        let mut stream = BufReader::new(tls);
        stream
            .get_mut()
            .write_all(format!("DIAL {node}\n").as_bytes())
            .await?;
        let mut line = Vec::new();
        let mut limited = (&mut stream).take(MAX_LINE as u64);
        tokio::time::timeout(
            Duration::from_secs(10),
            limited.read_until(b'\n', &mut line),
        )
        .await??;
        if line.starts_with(b"OK") {
            Ok(stream)
        } else {
            bail!("{}", String::from_utf8_lossy(&line).trim())
        }
    }
}
