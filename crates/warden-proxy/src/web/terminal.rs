//! The terminal in the browser: a WebSocket from the page, and an SSH
//! session from the proxy to the node with the web session's own key and
//! certificate. The node sees an ordinary certificate login from the
//! user, so it applies RBAC, locks, recording and audit exactly as for
//! `warden ssh`; the proxy only carries bytes and checks the node's host
//! certificate against the cluster's host CA.
//!
//! On the socket, binary frames are terminal bytes (keys in, output out)
//! and text frames are JSON: the page's first frame
//! `{"csrf": TOKEN, "cols": C, "rows": R}`, then `{"resize": [C, R]}`;
//! the proxy's `{"connected": NODE}`, `{"error": WHY}` and
//! `{"exit": STATUS}`.

use super::{refuse, Authed, Session, Web};
use crate::jump::Jump;
use crate::public::{cross_site, ClientAddr};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::{Algorithm, EcdsaCurve, Fingerprint, HashAlg};
use russh::{ChannelMsg, Disconnect};
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use warden_types::api::{MfaProof, MfaSessionRequest, MfaSessionResponse};
use warden_types::endpoints;
use warden_types::metrics::METRICS;

/// How long the page has to send its first frame.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the node has to accept the SSH session.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest frame the page may send (keys and pastes).
const MAX_FRAME: usize = 256 << 10;
/// Terminal sizes outside this are refused as nonsense.
const MAX_DIMENSION: u32 = 1000;

#[derive(Deserialize)]
pub(super) struct TerminalQuery {
    node: String,
    login: String,
}

/// The page's first frame.
#[derive(Deserialize)]
struct Hello {
    csrf: String,
    cols: u32,
    rows: u32,
    /// A fresh second factor, when the user's roles ask for one per
    /// session: auth then issues a one-minute certificate for this node.
    #[serde(default)]
    mfa: Option<MfaProof>,
}

/// A later control frame.
#[derive(Deserialize)]
struct Control {
    resize: Option<(u32, u32)>,
}

/// Upgrades to a WebSocket for a logged-in browser of this site; the
/// anti-forgery token comes in the first frame (a browser cannot add
/// headers to a WebSocket handshake).
#[allow(clippy::too_many_arguments)] // axum extractors, one per argument
pub(super) async fn terminal(
    Authed(s): Authed,
    State(w): State<Web>,
    Extension(addr): Extension<ClientAddr>,
    Extension(pending): Extension<crate::limits::Pending>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<TerminalQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(why) = cross_site(&headers, &uri) {
        return refuse(StatusCode::FORBIDDEN, "cross_site", why).into_response();
    }
    // A logged-in user's terminal may last hours: it no longer counts
    // among its source's unauthenticated connections.
    pending.release();
    let jump = w.jump.clone();
    ws.max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| async move {
            METRICS.proxy_jump_sessions.inc();
            run(socket, s, jump, q, addr).await;
            METRICS.proxy_jump_sessions.dec();
        })
}

/// Tells the page why, and closes.
async fn fail(socket: &mut WebSocket, why: impl Into<String>) {
    let why = serde_json::json!({ "error": why.into() }).to_string();
    let _ = send(socket, Message::Text(why.into())).await;
    let _ = send(socket, Message::Close(None)).await;
}

fn sane(cols: u32, rows: u32) -> bool {
    (1..=MAX_DIMENSION).contains(&cols) && (1..=MAX_DIMENSION).contains(&rows)
}

async fn run(
    mut socket: WebSocket,
    s: Arc<Session>,
    jump: Jump,
    q: TerminalQuery,
    addr: ClientAddr,
) {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<Hello>(&t).ok(),
        _ => None,
    };
    let Some(hello) = hello else {
        return fail(&mut socket, "the page did not introduce itself; reload it").await;
    };
    if !s.token_ok(hello.csrf.as_bytes()) {
        return fail(
            &mut socket,
            "this request lacks the page's anti-forgery token; reload the page",
        )
        .await;
    }
    if !sane(hello.cols, hello.rows) {
        return fail(&mut socket, "the terminal size is out of range").await;
    }
    if s.expires <= super::now() {
        return fail(&mut socket, "your web session has ended; log in again").await;
    }
    let Some(route) = jump.inventory.resolve(&q.node, 22).await else {
        return fail(
            &mut socket,
            format!(
                "no single node is named {:?}; pick one from the list",
                q.node
            ),
        )
        .await;
    };
    // Locks stop the user here too, as at the jump host, before any node
    // is dialled (the node checks them again).
    if let Some(why) = jump.lock_refusal(&s.ssh_cert).await {
        return fail(&mut socket, why).await;
    }
    let Some(stream) = crate::jump::dial(&jump, &route, addr.0).await else {
        return fail(
            &mut socket,
            format!(
                "node {} is unreachable: no tunnel and no reachable address",
                q.node
            ),
        )
        .await;
    };
    let cert = match hello.mfa {
        None => s.ssh_cert.clone(),
        Some(proof) => match session_cert(&s, &route.id, proof).await {
            Ok(c) => c,
            Err(why) => return fail(&mut socket, why).await,
        },
    };
    let host_cas = jump
        .host_cas
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let ssh = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        connect(&s, cert, host_cas, &route.id, &q.login, stream),
    )
    .await
    {
        Ok(Ok(ssh)) => ssh,
        Ok(Err(why)) => return fail(&mut socket, why).await,
        Err(_) => return fail(&mut socket, "the node did not answer in time").await,
    };
    let channel = match open_shell(&ssh, hello.cols, hello.rows).await {
        Ok(c) => c,
        Err(why) => return fail(&mut socket, why).await,
    };
    tracing::info!(user = %s.user, node = %q.node, login = %q.login, "web terminal opened");
    let ended = pump(&mut socket, &s, channel, &q.node).await;
    let last = match ended {
        Ended::Exit(status) => serde_json::json!({ "exit": status }),
        Ended::Refused(why) => serde_json::json!({ "error": why }),
        Ended::Gone => serde_json::json!({ "exit": null }),
    };
    let _ = send(&mut socket, Message::Text(last.to_string().into())).await;
    let _ = send(&mut socket, Message::Close(None)).await;
    let _ = ssh
        .disconnect(Disconnect::ByApplication, "web terminal closed", "")
        .await;
    tracing::info!(user = %s.user, node = %q.node, "web terminal closed");
}

/// How a terminal ended.
enum Ended {
    /// The shell ended (its exit status, if the node sent one).
    Exit(Option<u32>),
    /// The node refused the PTY or the shell; why.
    Refused(&'static str),
    /// The browser left, fell silent, or its web session ended.
    Gone,
}

/// Keys and resizes from the page, on their way to the node.
enum ToNode {
    Keys(axum::body::Bytes),
    Resize(u32, u32),
}

/// Keys waiting for the node (a paste arrives in many frames).
const TO_NODE_QUEUE: usize = 64;
/// How often the page is pinged, and how long it may stay silent.
const PING_EVERY: Duration = Duration::from_secs(30);
const SILENT_FOR: Duration = Duration::from_secs(75);

/// Carries bytes both ways until one side ends. Writes to the node run in
/// a task of their own, so the node's output keeps being read while a
/// paste waits for the node's window (else both would wait for ever); the
/// page is read only while that queue has room. The page is pinged, and
/// the terminal ends with the web session (logout, expiry).
async fn pump(
    socket: &mut WebSocket,
    s: &Session,
    channel: russh::Channel<russh::client::Msg>,
    node: &str,
) -> Ended {
    let (mut from_node, to_node) = channel.split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ToNode>(TO_NODE_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let sent = match m {
                ToNode::Keys(keys) => to_node.data_bytes(keys).await,
                ToNode::Resize(cols, rows) => to_node.window_change(cols, rows, 0, 0).await,
            };
            if sent.is_err() {
                break;
            }
        }
    });
    let _writer = AbortOnDrop(writer);
    let mut session_ended = s.ended.subscribe();
    if *session_ended.borrow() {
        return Ended::Gone;
    }
    let expires =
        tokio::time::Instant::now() + Duration::from_secs((s.expires - super::now()).max(0) as u64);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut heard = tokio::time::Instant::now();
    let mut status = None;
    // The node answers the PTY request first, then the shell's; the page
    // hears "connected" once both are granted.
    let mut answers = 0;
    loop {
        tokio::select! {
            msg = from_node.wait() => match msg {
                Some(ChannelMsg::Success) => {
                    answers += 1;
                    if answers == 2 {
                        let hello = serde_json::json!({ "connected": node }).to_string();
                        if !send(socket, Message::Text(hello.into())).await {
                            return Ended::Gone;
                        }
                    }
                }
                Some(ChannelMsg::Failure) => {
                    return Ended::Refused(if answers == 0 {
                        "the node refused a terminal: none of your roles permits one (role option permit_pty)"
                    } else {
                        "the node refused a shell"
                    });
                }
                Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                    if !send(socket, Message::Binary(data)).await {
                        return Ended::Gone;
                    }
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                Some(ChannelMsg::Close) | None => return Ended::Exit(status),
                Some(_) => {}
            },
            msg = socket.recv(), if tx.capacity() > 0 => {
                heard = tokio::time::Instant::now();
                let next = match msg {
                    Some(Ok(Message::Binary(keys))) => Some(ToNode::Keys(keys)),
                    Some(Ok(Message::Text(t))) => match serde_json::from_str(&t) {
                        Ok(Control { resize: Some((cols, rows)) }) if sane(cols, rows) => {
                            Some(ToNode::Resize(cols, rows))
                        }
                        _ => None,
                    },
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ended::Gone,
                    Some(Ok(_)) => None,
                };
                if let Some(m) = next {
                    if tx.try_send(m).is_err() {
                        return Ended::Gone; // the writer stopped: the node is gone
                    }
                }
            },
            // Room again in the queue: read the page once more.
            permit = tx.reserve(), if tx.capacity() == 0 => {
                // The page was waiting on the node, not silent.
                heard = tokio::time::Instant::now();
                drop(permit);
            },
            _ = ping.tick() => {
                // A page whose keys wait for the node is not silent.
                if tx.capacity() == 0 {
                    heard = tokio::time::Instant::now();
                }
                if heard.elapsed() > SILENT_FOR
                    || !send(socket, Message::Ping(Default::default())).await
                {
                    return Ended::Gone;
                }
            },
            changed = session_ended.changed() => {
                if changed.is_err() || *session_ended.borrow() {
                    return Ended::Gone;
                }
            },
            _ = tokio::time::sleep_until(expires) => return Ended::Gone,
        }
    }
}

/// How long a frame may wait for the page to take it.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends a frame to the page; false if it is gone, or has not read for
/// [`SEND_TIMEOUT`] (a stalled page must not hold the loop, and with it
/// logout, expiry and the node's session, for ever).
async fn send(socket: &mut WebSocket, m: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(m)).await,
        Ok(Ok(()))
    )
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Checks the node's host certificate: issued by a host CA key the user's
/// login trusts, for this node, and valid now.
struct NodeCheck {
    host_cas: Vec<Fingerprint>,
    node_id: String,
}

impl russh::client::Handler for NodeCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::Certificate(cert) = key else {
            tracing::warn!(node = %self.node_id, "node offered a bare host key; refused");
            return Ok(false);
        };
        let ok = cert.cert_type() == CertType::Host
            && cert.validate(self.host_cas.iter()).is_ok()
            && cert.valid_principals().contains(&self.node_id);
        if !ok {
            tracing::warn!(node = %self.node_id, key_id = %cert.key_id(), "node's host certificate is not this cluster's for this node; refused");
        }
        Ok(ok)
    }
}

/// Host certificate algorithms asked of the node, most preferred first.
const HOST_CERT_ALGORITHMS: &[Algorithm] = &[
    Algorithm::Ed25519,
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP256,
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha512),
    },
];

/// The one-minute certificate for `node_id` that a second factor buys,
/// for the session's own key.
async fn session_cert(
    s: &Session,
    node_id: &str,
    proof: MfaProof,
) -> Result<russh::keys::Certificate, String> {
    let public = s
        .ssh_key
        .public_key()
        .to_openssh()
        .map_err(|e| format!("internal: {e}"))?;
    let resp: MfaSessionResponse = s
        .api
        .call(
            &endpoints::MFA_SESSION,
            &MfaSessionRequest {
                node: node_id.to_string(),
                ssh_public_key: public,
                proof,
            },
        )
        .await
        .map_err(|e| match e {
            warden_client::ClientError::Api { message, .. } => message,
            e => format!("the auth service cannot be reached: {e}"),
        })?;
    russh::keys::Certificate::from_openssh(resp.ssh_cert.trim())
        .map_err(|e| format!("auth issued an unreadable certificate: {e}"))
}

async fn connect(
    s: &Session,
    cert: russh::keys::Certificate,
    host_cas: Vec<Fingerprint>,
    node_id: &str,
    login: &str,
    stream: crate::jump::NodeStream,
) -> Result<russh::client::Handle<NodeCheck>, String> {
    let config = Arc::new(russh::client::Config {
        client_id: russh::SshId::Standard(
            format!("SSH-2.0-warden_web_{}", warden_types::VERSION).into(),
        ),
        preferred: russh::Preferred {
            host_key_certificates: Cow::Borrowed(HOST_CERT_ALGORITHMS),
            ..Default::default()
        },
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        ..Default::default()
    });
    let check = NodeCheck {
        host_cas,
        node_id: node_id.to_string(),
    };
    let mut ssh = russh::client::connect_stream(config, stream, check)
        .await
        .map_err(|e| match e {
            russh::Error::UnknownKey => {
                "the node's host certificate is not from this cluster; refused".to_string()
            }
            e => format!("cannot speak SSH with the node: {e}"),
        })?;
    let auth = ssh
        .authenticate_openssh_cert(login, s.ssh_key.clone(), cert)
        .await
        .map_err(|e| format!("the node ended the login: {e}"))?;
    if !auth.success() {
        return Err(format!(
            "access denied: your roles do not allow login {login:?} on this node"
        ));
    }
    Ok(ssh)
}

async fn open_shell(
    ssh: &russh::client::Handle<NodeCheck>,
    cols: u32,
    rows: u32,
) -> Result<russh::Channel<russh::client::Msg>, String> {
    let channel = ssh
        .channel_open_session()
        .await
        .map_err(|e| format!("the node refused a session: {e}"))?;
    // The browser's terminal is UTF-8 and has colours: say so, as an
    // OpenSSH client passes its LANG (the node admits these two only).
    for (name, value) in [("LANG", "C.UTF-8"), ("COLORTERM", "truecolor")] {
        channel
            .set_env(false, name, value)
            .await
            .map_err(|e| format!("the node refused the session: {e}"))?;
    }
    channel
        .request_pty(true, "xterm-256color", cols, rows, 0, 0, &[])
        .await
        .map_err(|e| format!("the node refused a terminal: {e}"))?;
    channel
        .request_shell(true)
        .await
        .map_err(|e| format!("the node refused a shell: {e}"))?;
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::client::Handler;
    use russh::keys::PublicKeyOrCertificate;
    use warden_ca::ssh::{public_key_line, sign_host_cert, HostCert};
    use warden_ca::{ClientKey, KeyStore, SoftwareKeyStore};

    /// A host CA in a fresh software store (removed after), and its
    /// fingerprint.
    fn host_ca() -> (Arc<dyn warden_ca::CaSigner>, Fingerprint) {
        let dir = std::env::temp_dir().join(format!(
            "warden-web-terminal-{}",
            warden_ca::sha256_hex(&warden_ca::random_bytes::<8>())
        ));
        let ks = SoftwareKeyStore::open_or_create(&dir.join("kek")).unwrap();
        let ca = ks.load(&ks.generate().unwrap()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let fp = russh::keys::PublicKey::from_openssh(&public_key_line(&*ca, "ca").unwrap())
            .unwrap()
            .fingerprint(HashAlg::Sha256);
        (ca, fp)
    }

    /// A host certificate for `principal`, valid from `from` to `until`
    /// seconds from now.
    fn host_cert_at(
        ca: &dyn warden_ca::CaSigner,
        principal: &str,
        from: i64,
        until: i64,
    ) -> russh::keys::Certificate {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        sign_host_cert(
            ca,
            &HostCert {
                public_key: ClientKey::generate().ssh_public_key(),
                host_id: principal.into(),
                principals: vec![principal.into(), "box".into()],
                valid_after: (now + from) as u64,
                valid_before: (now + until) as u64,
                cluster: "c1".into(),
            },
        )
        .unwrap()
    }

    fn host_cert(ca: &dyn warden_ca::CaSigner, principal: &str) -> russh::keys::Certificate {
        host_cert_at(ca, principal, -60, 3600)
    }

    async fn accepts(cas: &[Fingerprint], node: &str, key: PublicKeyOrCertificate) -> bool {
        NodeCheck {
            host_cas: cas.to_vec(),
            node_id: node.into(),
        }
        .check_server_key(&key)
        .await
        .unwrap()
    }

    /// The proxy speaks SSH to the node for the browser: only this
    /// cluster's host certificate for that very node will do.
    #[tokio::test]
    async fn only_the_nodes_own_host_certificate_is_accepted() {
        let (ca, fp) = host_ca();
        let (other, other_fp) = host_ca();
        let cert = || PublicKeyOrCertificate::Certificate(host_cert(&*ca, "node-1"));
        assert!(accepts(&[fp], "node-1", cert()).await);
        assert!(
            !accepts(&[fp], "node-2", cert()).await,
            "another node's certificate"
        );
        assert!(
            !accepts(&[other_fp], "node-1", cert()).await,
            "a CA the login did not name"
        );
        let foreign = PublicKeyOrCertificate::Certificate(host_cert(&*other, "node-1"));
        assert!(!accepts(&[fp], "node-1", foreign).await);
        let bare = PublicKeyOrCertificate::PublicKey {
            key: ClientKey::generate().ssh_public_key(),
            hash_alg: None,
        };
        assert!(!accepts(&[fp], "node-1", bare).await, "a bare host key");
        let expired =
            PublicKeyOrCertificate::Certificate(host_cert_at(&*ca, "node-1", -7200, -3600));
        assert!(!accepts(&[fp], "node-1", expired).await, "an expired one");
        let early = PublicKeyOrCertificate::Certificate(host_cert_at(&*ca, "node-1", 3600, 7200));
        assert!(!accepts(&[fp], "node-1", early).await, "one not yet valid");
    }
}
