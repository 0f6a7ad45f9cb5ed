//! The SSH jump host: authenticates the user's certificate and forwards
//! `direct-tcpip` to a node (by name, id, or a registered `host:port`),
//! through its tunnel or by TCP. The user's SSH session to the node runs
//! end to end inside that channel. Nothing else is allowed here.

use crate::inventory::Inventory;
use crate::tunnel::Tunnels;
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::Fingerprint;
use russh::keys::Certificate;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, MethodKind, MethodSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use warden_types::endpoints;
use warden_types::metrics::METRICS;

/// What the jump host needs.
#[derive(Clone)]
pub struct Jump {
    /// The jump host's certificate is in here (renewed when a CA rotates).
    pub(crate) creds: crate::creds::Current,
    /// SHA-256 fingerprints of the trusted user CA keys.
    pub user_cas: Arc<RwLock<Vec<Fingerprint>>>,
    /// And of the host CA keys (for the web terminal's SSH to nodes).
    pub host_cas: Arc<RwLock<Vec<Fingerprint>>>,
    pub inventory: Inventory,
    pub tunnels: Tunnels,
    pub peers: crate::peer::Peers,
    pub locks: crate::inventory::Locks,
    /// Auth, where refused attempts are audited.
    pub auth: warden_client::ApiClient,
}

impl Jump {
    /// Why a lock refuses the holder of `cert` (on its user, or a role or
    /// access request it carries), if one does; unknown locks refuse.
    pub(crate) async fn lock_refusal(&self, cert: &Certificate) -> Option<String> {
        let list = |ext: &str| -> Vec<String> {
            cert.extensions()
                .get(ext)
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or_default()
        };
        let (roles, requests) = (list("roles@warden"), list("requests@warden"));
        match self.locks.find(cert.key_id(), &roles, &requests).await {
            Ok(None) => None,
            Ok(Some(lock)) => Some(format!("access denied: {lock}")),
            Err(why) => {
                tracing::warn!(key_id = %cert.key_id(), %why, "locks unknown");
                Some(
                    "access denied: the proxy cannot check locks right now; try again shortly"
                        .into(),
                )
            }
        }
    }
}

/// SSH settings of the jump host.
pub fn jump_ssh_config(
    key: russh::keys::PrivateKey,
    cert: Certificate,
) -> Arc<russh::server::Config> {
    Arc::new(russh::server::Config {
        server_id: russh::SshId::Standard(
            format!("SSH-2.0-warden_proxy_{}", warden_types::VERSION).into(),
        ),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![key],
        certificates: vec![cert],
        inactivity_timeout: Some(Duration::from_secs(3600)),
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        ..Default::default()
    })
}

struct JumpConn {
    jump: Jump,
    peer: SocketAddr,
    user: Option<String>,
    /// Streams this connection may have open at once; a permit is held
    /// by each stream's task and freed when it ends.
    streams: Arc<tokio::sync::Semaphore>,
    /// This connection's place among its source's unauthenticated ones,
    /// given up once the user authenticates.
    pending: Option<crate::limits::SourceGuard>,
    authenticated: Arc<std::sync::atomic::AtomicBool>,
    /// A signed-in user this proxy refuses (a lock): told why and
    /// disconnected as soon as authentication completes, since a
    /// rejected key gives the client nothing but "Permission denied".
    refused: Option<String>,
}

impl JumpConn {
    /// Records a refused sign-in of a certificate this cluster signed in
    /// the audit log (best effort: the proxy keeps no spool, and at most
    /// [`MAX_AUDIT_IN_FLIGHT`] are sent at once; the refusal stands either
    /// way).
    fn audit_refusal(&self, user: &str, login: &str, message: &str) {
        let Ok(permit) = AUDIT_IN_FLIGHT.clone().try_acquire_owned() else {
            tracing::warn!(%user, "too many refusals to audit at once; this one is only logged");
            return;
        };
        let mut ev = warden_types::audit::AuditEvent::new(
            warden_types::audit::codes::SESSION_REJECTED,
            "",
            user,
            message.to_string(),
        )
        .source(Some(self.peer.ip().to_string()));
        ev.login = Some(login.chars().take(64).collect());
        ev.fields.insert("at".into(), "jump host".into());
        let auth = self.jump.auth.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = auth.call(&endpoints::EVENT, &ev).await {
                tracing::warn!(error = %format!("{e:#}"), "cannot audit a refused sign-in");
            }
        });
    }
}

/// Refusals being sent to the audit log at once, per proxy.
const MAX_AUDIT_IN_FLIGHT: usize = 32;
static AUDIT_IN_FLIGHT: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(MAX_AUDIT_IN_FLIGHT)));

/// Streams (direct-tcpip channels) one client connection may hold at once.
pub const MAX_STREAMS_PER_CONN: usize = 64;

impl russh::server::Handler for JumpConn {
    type Error = anyhow::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        login: &str,
        cert: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let trusted = self
            .jump
            .user_cas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let invalid = if cert.cert_type() != CertType::User {
            Some("not a user certificate".to_string())
        } else {
            cert.validate(trusted.iter()).err().map(|e| {
                format!("not signed by this cluster's user CA, expired or not yet valid ({e})")
            })
        };
        if let Some(why) = invalid {
            // Not audited: anyone can present a self-signed certificate
            // naming any user, so these would let strangers flood the
            // audit log under other people's names.
            tracing::info!(peer = %self.peer, key_id = %cert.key_id(), %why, "jump host refused a certificate");
            return Ok(Auth::reject());
        }
        // Locks on the user (or a role the certificate carries) stop them
        // here too, before any node is dialled.
        if let Some(reason) = self.jump.lock_refusal(cert).await {
            tracing::info!(peer = %self.peer, key_id = %cert.key_id(), %reason, "jump host refused a user");
            self.audit_refusal(cert.key_id(), login, &reason);
            // Accepted only to say why: `auth_succeeded` disconnects at
            // once, and with no user set every request is refused.
            self.refused = Some(reason);
            return Ok(Auth::Accept);
        }
        self.user = Some(cert.key_id().to_string());
        self.pending = None;
        self.authenticated
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(Auth::Accept)
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        if let Some(reason) = self.refused.take() {
            session.disconnect(
                russh::Disconnect::ByApplication,
                &format!("warden: {reason}"),
                "",
            )?;
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        _reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // No shell on the proxy: dropping the reply refuses the channel.
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(user) = self.user.clone() else {
            return Ok(());
        };
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            tracing::info!(%user, peer = %self.peer, "too many streams on one connection");
            reply
                .reject(russh::ChannelOpenFailure::ResourceShortage)
                .await;
            return Ok(());
        };
        let Some(node) = self.jump.inventory.resolve(host, port).await else {
            tracing::info!(%user, %host, port, "no such node");
            reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        let Some(upstream) = dial(&self.jump, &node, self.peer).await else {
            tracing::info!(%user, node = %node.id, "node unreachable: no tunnel here or at a peer, no reachable address");
            reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(async move {
            let _permit = permit;
            METRICS.proxy_jump_sessions.inc();
            let mut a = channel.into_stream();
            let mut b = upstream;
            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
            METRICS.proxy_jump_sessions.dec();
        });
        Ok(())
    }
}

/// A byte stream to a node's SSH server.
pub(crate) type NodeStream = Box<dyn NodeIo>;

/// What a [`NodeStream`] is.
pub(crate) trait NodeIo:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> NodeIo for T {}

/// Reaches `node`'s SSH server for a client at `originator`: through its
/// tunnel here first (the only way to nodes behind NAT), else by TCP to an
/// address it advertises, else through a peer proxy holding its tunnel.
pub(crate) async fn dial(
    jump: &Jump,
    node: &crate::inventory::Route,
    originator: SocketAddr,
) -> Option<NodeStream> {
    if let Some(upstream) = jump.tunnels.dial(&node.id, originator).await {
        return Some(Box::new(upstream.into_stream()));
    }
    for addr in &node.addrs {
        if let Ok(Ok(tcp)) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            let _ = tcp.set_nodelay(true);
            return Some(Box::new(tcp));
        }
    }
    METRICS.proxy_errors_node_unreachable.inc();
    if let Some(upstream) = jump.peers.dial(&node.id).await {
        return Some(Box::new(upstream));
    }
    None
}

/// Serves one SSH connection (bytes already read are replayed by `stream`).
pub async fn serve_ssh<S>(
    jump: Jump,
    stream: S,
    peer: SocketAddr,
    pending: crate::limits::SourceGuard,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let config = jump.creds.get().jump_ssh.clone();
    let authenticated = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let conn = JumpConn {
        jump,
        peer,
        user: None,
        streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS_PER_CONN)),
        pending: Some(pending),
        refused: None,
        authenticated: authenticated.clone(),
    };
    if let Err(e) = crate::limits::run_ssh(config, stream, conn, authenticated).await {
        tracing::debug!(%peer, error = %e, "jump host connection ended");
    }
}
