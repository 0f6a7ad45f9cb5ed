//! The node's SSH server. Only user certificates signed by the cluster's
//! user CA get in; the login must be a principal of the certificate, and
//! auth must allow it now, with the user's live roles and this node's labels.

use crate::identity::NodeIdentity;
use crate::session::{self, PtyRequest, Spec};
use crate::unix::{self, Account};
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::{Certificate, HashAlg, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use warden_types::audit::{codes, AuditEvent};
use warden_types::metrics::METRICS;

/// Sessions served at once (each costs a task and a little memory).
const MAX_CONNECTIONS: usize = 10_000;

/// Connections served at once, direct or through a reverse tunnel.
static CONNECTION_SLOTS: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)));

/// Time a client has to authenticate after connecting (the handshake
/// included), as OpenSSH's LoginGraceTime.
const LOGIN_GRACE: Duration = Duration::from_secs(20);

fn server_config(identity: &NodeIdentity) -> anyhow::Result<Arc<russh::server::Config>> {
    let certs = identity.certs();
    let key = identity.host_key();
    let cert = Certificate::from_openssh(certs.ssh_host_cert.trim())?;
    Ok(Arc::new(russh::server::Config {
        server_id: russh::SshId::Standard(
            format!("SSH-2.0-warden_{}", warden_types::VERSION).into(),
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
    }))
}

/// Accepts SSH connections until `shutdown`.
pub async fn serve(
    identity: Arc<NodeIdentity>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    if unix::current_uid() != 0 {
        tracing::warn!(
            "not running as root: single-user mode, only this process's own login is served"
        );
    }
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let _ = tcp.set_nodelay(true);
        let identity = identity.clone();
        let local = tcp.local_addr().unwrap_or_else(|_| unspecified());
        tokio::spawn(serve_stream(identity, tcp, peer, local));
    }
}

/// `0.0.0.0:0`, for an end of a connection that is not known.
pub fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// Serves one SSH connection on any byte stream: a TCP connection, or a
/// channel of a reverse tunnel through the proxy. `peer` is the client and
/// `local` the address it connected to.
pub async fn serve_stream<S>(
    identity: Arc<NodeIdentity>,
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // One cap for direct and tunnelled connections alike.
    let Ok(_slot) = CONNECTION_SLOTS.clone().try_acquire_owned() else {
        tracing::warn!(%peer, "connection limit reached; closing");
        return;
    };
    // Built per connection so renewed certificates apply at once.
    let config = match server_config(&identity) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot load host key or certificate");
            return;
        }
    };
    METRICS.node_connections.inc();
    let _active = warden_types::metrics::ActiveGuard::new();
    let trusted = trusted_user_cas(&identity);
    let authenticated = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let conn = Conn {
        identity,
        peer,
        local,
        trusted,
        user: None,
        channels: HashMap::new(),
        remote_forwards: HashMap::new(),
        streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS_PER_CONN)),
        closed: Default::default(),
        attempted: None,
        refusal_audited: false,
        live: None,
        authenticated: authenticated.clone(),
        x11_slots: Arc::new(tokio::sync::Semaphore::new(MAX_X11_PER_CONN)),
        agent_slots: Arc::new(tokio::sync::Semaphore::new(MAX_AGENTS_PER_CONN)),
    };
    let deadline = tokio::time::Instant::now() + LOGIN_GRACE;
    let running =
        match tokio::time::timeout_at(deadline, russh::server::run_stream(config, stream, conn))
            .await
        {
            Ok(Ok(running)) => running,
            Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "ssh handshake failed"),
            Err(_) => return tracing::debug!(%peer, "no SSH handshake within the login grace time"),
        };
    let handle = running.handle();
    tokio::pin!(running);
    let done = tokio::select! {
        r = &mut running => Some(r),
        _ = tokio::time::sleep_until(deadline) => None,
    };
    let result = match done {
        Some(r) => r,
        None if authenticated.load(std::sync::atomic::Ordering::SeqCst) => running.await,
        None => {
            tracing::debug!(%peer, "not authenticated within the login grace time");
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    format!("not authenticated within {}s", LOGIN_GRACE.as_secs()),
                    String::new(),
                )
                .await;
            return;
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "ssh connection ended");
    }
}

fn trusted_user_cas(identity: &NodeIdentity) -> Vec<russh::keys::ssh_key::Fingerprint> {
    identity
        .certs()
        .ssh_user_ca_keys
        .iter()
        .filter_map(|k| PublicKey::from_openssh(k).ok())
        .map(|k| k.fingerprint(HashAlg::Sha256))
        .collect()
}

/// An authenticated user on this connection.
struct Authed {
    username: String,
    /// The user id the certificate carries.
    user_id: Option<String>,
    login: String,
    account: Option<Account>,
    /// Why this user may do nothing here (shown to them on every request).
    denied: Option<String>,
    /// Each role's verdict behind a denial by the policy (audited with it).
    explanation: Vec<String>,
    permit_pty: bool,
    permit_port_forwarding: bool,
    permit_agent_forwarding: bool,
    permit_x11_forwarding: bool,
    roles: Vec<String>,
    record: warden_types::RecordMode,
}

#[derive(Default)]
struct ChanState {
    channel: Option<Channel<Msg>>,
    pty: Option<PtyRequest>,
    env: Vec<(String, String)>,
    master: Option<RawFd>,
    leader: Option<session::Leader>,
    /// (display, protocol, cookie) for `xauth` before the session starts.
    x11: Option<(u16, u32, String, String)>,
    recorder: Option<crate::recording::Recorder>,
    /// Dropped when the channel closes or the connection ends: the
    /// session's processes are then hung up.
    hangup: Option<tokio::sync::oneshot::Sender<()>>,
    /// This channel's X11 display and agent socket: freed (listener
    /// stopped, files removed) when the channel closes.
    x11_forward: Option<Held>,
    agent_forward: Option<Held>,
}

/// A forwarding and its place under the connection's cap, freed together.
type Held = (
    crate::forward::Forwarding,
    tokio::sync::OwnedSemaphorePermit,
);

/// Per-connection caps, as OpenSSH's MaxSessions: session channels,
/// direct-tcpip streams, remote forwards, X11 displays and agent sockets.
const MAX_SESSIONS_PER_CONN: usize = 64;
const MAX_STREAMS_PER_CONN: usize = 64;
const MAX_REMOTE_FORWARDS_PER_CONN: usize = 64;
const MAX_X11_PER_CONN: usize = 8;
const MAX_AGENTS_PER_CONN: usize = 8;

struct Conn {
    identity: Arc<NodeIdentity>,
    peer: SocketAddr,
    local: SocketAddr,
    trusted: Vec<russh::keys::ssh_key::Fingerprint>,
    user: Option<Authed>,
    channels: HashMap<ChannelId, ChanState>,
    /// Remote forwards by (address, port), agent sockets, X11 displays;
    /// dropped (and cleaned up) with the connection.
    remote_forwards: HashMap<(String, u32), crate::forward::Forwarding>,
    /// direct-tcpip streams open now: each stream's task holds a permit.
    streams: Arc<tokio::sync::Semaphore>,
    /// Channels whose sessions ended (the node closed them): their state
    /// is dropped at the next request, so caps count live channels only.
    closed: Arc<std::sync::Mutex<Vec<ChannelId>>>,
    /// Set once the client authenticated (ends the login grace timer).
    authenticated: Arc<std::sync::atomic::AtomicBool>,
    /// Places for X11 displays and agent sockets on this connection; held
    /// by each until its channel or session ends.
    x11_slots: Arc<tokio::sync::Semaphore>,
    agent_slots: Arc<tokio::sync::Semaphore>,
    /// The login a client tried, and whether its refusal is already audited.
    attempted: Option<String>,
    /// This connection in the node's registry of live sessions.
    live: Option<u64>,
    refusal_audited: bool,
}

/// Puts the connection in the node's registry of live connections (once),
/// so locks and revocations can end it.
fn register(
    identity: &NodeIdentity,
    live: &mut Option<u64>,
    user: &Authed,
    handle: russh::server::Handle,
) -> u64 {
    *live.get_or_insert_with(|| {
        identity.registry.register(crate::locks::Live {
            username: user.username.clone(),
            user_id: user.user_id.clone(),
            login: user.login.clone(),
            roles: user.roles.clone(),
            handle,
            sessions: Vec::new(),
        })
    })
}

impl Conn {
    /// Re-decides the connection from the pushed policy before a new
    /// session or forward: a role taken away, a deleted user or a lock since
    /// it authenticated refuses it (live ones are ended by the policy
    /// follower). A stale copy changes nothing here: the login was decided.
    fn recheck(&mut self) {
        let node_id = self.identity.node_id().to_string();
        let Some(user) = self.user.as_mut().filter(|u| u.denied.is_none()) else {
            return;
        };
        let decided = self.identity.policy.decide(
            (&node_id, self.identity.name()),
            &user.username,
            user.user_id.as_deref(),
            &user.login,
            Some(&node_id),
        );
        if let crate::policy::Cached::Decided(d) = decided {
            if !d.allowed {
                user.denied = Some(format!("access revoked: {}", d.reason));
            }
        }
    }
}

impl Drop for Conn {
    /// A client that never authenticated: the SSH library refuses expired,
    /// not-yet-valid and badly signed certificates (and plain keys) before
    /// our handler sees them, so the refusal is audited here.
    fn drop(&mut self) {
        if let Some(id) = self.live {
            self.identity.registry.remove(id);
        }
        let (Some(login), None, false) = (&self.attempted, &self.user, self.refusal_audited) else {
            return;
        };
        let mut ev = AuditEvent::new(
            codes::SESSION_REJECTED,
            self.identity.cluster(),
            "",
            format!(
                "authentication as {login} failed: no acceptable certificate (expired, not yet valid, badly signed, or a plain key)"
            ),
        )
        .source(Some(self.peer.ip().to_string()));
        ev.login = Some(login.clone());
        if tokio::runtime::Handle::try_current().is_ok() {
            self.emit(ev);
        }
    }
}

impl Conn {
    fn event(&self, kind: (&str, &str), message: impl Into<String>) -> AuditEvent {
        let mut ev = AuditEvent::new(
            kind,
            self.identity.cluster(),
            self.user
                .as_ref()
                .map(|u| u.username.as_str())
                .unwrap_or(""),
            message,
        )
        .source(Some(self.peer.ip().to_string()));
        ev.login = self.user.as_ref().map(|u| u.login.clone());
        ev
    }

    fn emit(&self, ev: AuditEvent) {
        let identity = self.identity.clone();
        tokio::spawn(async move { identity.emit(ev).await });
    }

    /// Decides what an authenticated certificate may do here.
    async fn authorize(&self, login: &str, cert: &Certificate) -> Authed {
        let username = cert.key_id().to_string();
        let exts = cert.extensions();
        let mut authed = Authed {
            username: username.clone(),
            user_id: exts.get(warden_ca::ssh::UID_EXTENSION).cloned(),
            login: login.to_string(),
            account: None,
            denied: None,
            explanation: Vec::new(),
            permit_pty: exts.contains_key("permit-pty"),
            permit_port_forwarding: exts.contains_key("permit-port-forwarding"),
            permit_agent_forwarding: exts.contains_key("permit-agent-forwarding"),
            permit_x11_forwarding: exts.contains_key("permit-X11-forwarding"),
            roles: Vec::new(),
            record: Default::default(),
        };
        if !cert.valid_principals().iter().any(|p| p == login) {
            let logins: Vec<&str> = cert
                .valid_principals()
                .iter()
                .map(String::as_str)
                .filter(|p| !p.starts_with('-'))
                .collect();
            authed.denied =
                Some(format!(
                "login {login:?} is not in your certificate (your logins: {}); ask an admin for it",
                if logins.is_empty() { "none".to_string() } else { logins.join(", ") }
            ));
            return authed;
        }
        let mfa_node = exts.get(warden_ca::ssh::MFA_EXTENSION).map(String::as_str);
        let user_id = exts.get(warden_ca::ssh::UID_EXTENSION).map(String::as_str);
        match self
            .identity
            .decide_login(&username, login, mfa_node, user_id)
            .await
        {
            Ok(d) if d.allowed => {
                if !d.would_deny.is_empty() {
                    // A narrowing watched before it is enforced.
                    let mut ev = AuditEvent::new(
                        codes::ACCESS_WOULD_DENY,
                        self.identity.cluster(),
                        &username,
                        format!(
                            "{username} logged in as {login}, which a role in audit mode would deny"
                        ),
                    )
                    .source(Some(self.peer.ip().to_string()))
                    .with("explanation", d.would_deny.clone());
                    ev.login = Some(login.to_string());
                    self.emit(ev);
                }
                authed.permit_port_forwarding &= d.permit_port_forwarding;
                authed.permit_agent_forwarding &= d.permit_agent_forwarding;
                authed.permit_x11_forwarding &= d.permit_x11_forwarding;
                authed.roles = d.roles;
                authed.record = d.record_session;
            }
            Ok(d) => {
                authed.denied = Some(format!(
                    "access to this node as {login} denied: {}",
                    d.reason
                ));
                authed.explanation = d.explanation;
                return authed;
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "access check failed");
                authed.denied = Some(match e.downcast_ref::<crate::policy::Stale>() {
                    Some(stale) => stale.to_string(),
                    None => "cannot reach the auth service to check your access; try again shortly"
                        .into(),
                });
                return authed;
            }
        }
        let Some(account) = unix::lookup(login) else {
            authed.denied = Some(format!("login {login:?} does not exist on this node"));
            return authed;
        };
        let me = unix::current_uid();
        if me != 0 && account.uid != me {
            authed.denied = Some(format!(
                "this node runs unprivileged and only serves the login {:?}",
                unix::lookup_uid_name(me).unwrap_or_default()
            ));
            return authed;
        }
        authed.account = Some(account);
        authed
    }

    /// Notes a connection-wide event (a port forward) in the recordings of
    /// the connection's sessions, where an auditor replaying them sees it.
    fn mark_sessions(&self, text: &str) {
        for r in self.channels.values().filter_map(|s| s.recorder.as_ref()) {
            r.marker(text);
        }
    }

    /// Tells the client why it is refused, on stderr, and ends the channel.
    fn refuse(&self, channel: Channel<Msg>, reason: String) {
        tokio::spawn(async move {
            let _ = channel
                .extended_data_bytes(1, format!("warden: {reason}\r\n").into_bytes())
                .await;
            let _ = channel.exit_status(1).await;
            let _ = channel.eof().await;
            let _ = channel.close().await;
        });
    }

    /// Drops the state of channels whose sessions ended.
    fn prune_closed(&mut self) {
        let closed = std::mem::take(&mut *self.closed.lock().unwrap_or_else(|p| p.into_inner()));
        for id in closed {
            self.channels.remove(&id);
        }
    }

    /// Starts a shell, command or subsystem on `id`.
    fn start(&mut self, id: ChannelId, what: Start, session: &mut Session) -> anyhow::Result<()> {
        self.recheck();
        let unrecorded = self.event(codes::RECORDING_FAILURE, String::new());
        let Some(state) = self.channels.get_mut(&id) else {
            session.channel_failure(id)?;
            return Ok(());
        };
        let Some(channel) = state.channel.take() else {
            session.channel_failure(id)?;
            return Ok(());
        };
        // The session owns its X11 display and agent socket from here:
        // they go when it ends (the channel's close then never reaches
        // `channel_close`, as the node closed it first).
        let forwards = (state.x11_forward.take(), state.agent_forward.take());
        let closed = self.closed.clone();
        let Some(user) = &self.user else {
            session.channel_failure(id)?;
            return Ok(());
        };
        session.channel_success(id)?;
        if let Some(reason) = &user.denied {
            METRICS.node_rejections.inc();
            let mut ev = self.event(codes::SESSION_REJECTED, reason.clone());
            if !user.explanation.is_empty() {
                ev = ev.with("explanation", user.explanation.clone());
            }
            self.emit(ev);
            self.refuse(channel, reason.clone());
            return Ok(());
        }
        let account = user
            .account
            .clone()
            .expect("authorized users have an account");
        let (command, program, label) = match &what {
            Start::Shell => (None, None, "shell".to_string()),
            Start::Exec(c) => (Some(c.clone()), None, c.clone()),
            Start::Subsystem(name) => {
                let Some(path) = (name == "sftp").then(session::sftp_server).flatten() else {
                    self.refuse(
                        channel,
                        format!("subsystem {name:?} is not available on this node"),
                    );
                    return Ok(());
                };
                (None, Some(path), format!("subsystem {name}"))
            }
        };
        let session_id = uuid::Uuid::now_v7().to_string();
        if let Some((display, screen, proto, cookie)) = &state.x11 {
            let xauth = Spec {
                account: account.clone(),
                command: Some(format!(
                    "xauth -q add unix:{display}.{screen} {proto} {cookie}"
                )),
                program: None,
                pty: None,
                env: vec![],
                session_id: session_id.clone(),
                username: user.username.clone(),
                switch_user: unix::current_uid() == 0,
                addrs: None,
            };
            // Best effort, as in OpenSSH: without it X clients fail with
            // their own clear message. It must finish before the session.
            if let Err(e) = session::run_blocking(&xauth) {
                tracing::warn!(error = %e, "xauth failed");
            }
        }
        let spec = Spec {
            account,
            command,
            program,
            pty: state.pty.clone(),
            env: state.env.clone(),
            session_id: session_id.clone(),
            username: user.username.clone(),
            switch_user: unix::current_uid() == 0,
            addrs: Some((self.peer, self.local)),
        };
        let strict = user.record == warden_types::RecordMode::Strict;
        let recorder = match user.record {
            warden_types::RecordMode::Off => None,
            mode => {
                let header = recording_header(&self.identity, user, &session_id, &label, &spec);
                match self.identity.spool.start(&header) {
                    Ok(r) => Some(r),
                    Err(e) if mode == warden_types::RecordMode::Strict => {
                        let reason = format!(
                            "session refused: your role requires recording (record_session: strict) and this node cannot record: {e}"
                        );
                        let mut ev = self.event(codes::RECORDING_FAILURE, reason.clone());
                        ev.session_id = Some(session_id.clone());
                        self.emit(ev);
                        self.refuse(channel, reason);
                        return Ok(());
                    }
                    Err(e) => {
                        let mut ev = unrecorded.clone();
                        ev.message = format!("session not recorded: {e}");
                        ev.session_id = Some(session_id.clone());
                        let identity = self.identity.clone();
                        tokio::spawn(async move { identity.emit(ev).await });
                        None
                    }
                }
            }
        };
        let running = match session::spawn(&spec) {
            Ok(r) => r,
            Err(e) => {
                self.refuse(channel, format!("cannot start {label}: {e}"));
                if let Some(r) = recorder {
                    tokio::spawn(r.finish());
                }
                return Ok(());
            }
        };
        if let Some(r) = &recorder {
            r.spawn_syncer();
            if let Start::Exec(c) = &what {
                r.marker(&format!("exec: {c}"));
            }
        }
        state.recorder = recorder.clone();
        let (hangup_tx, hangup) = tokio::sync::oneshot::channel();
        state.hangup = Some(hangup_tx);
        state.master = running.master_fd();
        let leader = session::Leader::new(running.pid);
        state.leader = Some(leader.clone());
        let live = register(&self.identity, &mut self.live, user, session.handle());
        self.identity.registry.add_session(live, id, leader.clone());
        let mut start = self
            .event(
                codes::SESSION_START,
                format!("{} started {label}", user.username),
            )
            .with("roles", user.roles.clone())
            .with("pty", spec.pty.is_some());
        start.session_id = Some(session_id.clone());
        match &what {
            Start::Exec(c) => {
                let mut ev = self
                    .event(codes::EXEC, c.clone())
                    .with("command", c.clone());
                ev.session_id = Some(session_id.clone());
                self.emit(ev);
            }
            Start::Subsystem(n) => {
                let mut ev = self
                    .event(codes::SUBSYSTEM, n.clone())
                    .with("subsystem", n.clone());
                ev.session_id = Some(session_id.clone());
                self.emit(ev);
            }
            Start::Shell => {}
        }
        self.emit(start);
        let mut end = self.event(codes::SESSION_END, String::new());
        end.session_id = Some(session_id);
        let identity = self.identity.clone();
        let handle = session.handle();
        let sftp = match &what {
            Start::Subsystem(n) if n == "sftp" => {
                let (tx, mut rx) =
                    tokio::sync::mpsc::unbounded_channel::<crate::sftp_audit::FileOp>();
                let template = self.event(codes::SFTP, String::new());
                let sid = end.session_id.clone();
                let identity = identity.clone();
                let rec = recorder.clone();
                tokio::spawn(async move {
                    while let Some(op) = rx.recv().await {
                        if let Some(r) = &rec {
                            r.marker(&format!(
                                "sftp {} {}{} ({} bytes){}",
                                op.action,
                                op.path,
                                op.target
                                    .as_deref()
                                    .map(|t| format!(" -> {t}"))
                                    .unwrap_or_default(),
                                op.bytes,
                                if op.success { "" } else { " failed" }
                            ));
                        }
                        let mut ev = template.clone();
                        ev.id = uuid::Uuid::now_v7().to_string();
                        ev.time = time::OffsetDateTime::now_utc();
                        ev.session_id = sid.clone();
                        ev.success = op.success;
                        if !op.success {
                            ev.code = codes::SFTP_FAILURE.1.to_string();
                        }
                        ev.message = format!("sftp {} {}", op.action, op.path);
                        let ev = ev
                            .with("action", op.action)
                            .with("path", op.path)
                            .with("target", op.target)
                            .with("bytes", op.bytes);
                        identity.emit(ev).await;
                    }
                });
                Some(session::SftpTap {
                    tracker: Default::default(),
                    ops: tx,
                })
            }
            _ => None,
        };
        let mut unrecorded = unrecorded;
        unrecorded.session_id = end.session_id.clone();
        // Under `on` the session goes on unrecorded: say so when it
        // happens, not when the session ends hours later. (Under `strict`
        // the session ends at once and its end reports the failure.)
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Some(failure) = recorder.as_ref().filter(|_| !strict).map(|r| r.failure()) {
            let (identity, mut ev, ended) = (identity.clone(), unrecorded.clone(), ended.clone());
            tokio::spawn(async move {
                if let Some(error) = failure.await {
                    ev.id = uuid::Uuid::now_v7().to_string();
                    ev.time = time::OffsetDateTime::now_utc();
                    ev.success = false;
                    ev.message = if ended.load(std::sync::atomic::Ordering::SeqCst) {
                        format!("recording failed ({error}); the session's end is not recorded")
                    } else {
                        format!("recording failed ({error}); the session goes on unrecorded (record_session: on)")
                    };
                    identity.emit(ev).await;
                }
            });
        }
        tokio::spawn(async move {
            let began = Instant::now();
            METRICS.node_sessions.inc();
            let outcome = session::pump(
                running,
                leader,
                channel,
                handle,
                sftp,
                recorder.clone(),
                hangup,
                strict,
            )
            .await;
            METRICS.node_sessions.dec();
            drop(forwards);
            closed.lock().unwrap_or_else(|p| p.into_inner()).push(id);
            if let Some(r) = recorder {
                ended.store(true, std::sync::atomic::Ordering::SeqCst);
                r.clone().finish().await;
                if let Some(error) = r.failed().filter(|_| strict) {
                    let mut ev = unrecorded;
                    ev.id = uuid::Uuid::now_v7().to_string();
                    ev.time = time::OffsetDateTime::now_utc();
                    ev.success = false;
                    ev.message = if outcome.stopped.is_some() {
                        format!("recording failed mid-session ({error}); session ended (record_session: strict)")
                    } else {
                        format!("recording failed ({error}); the session's end is not recorded")
                    };
                    identity.emit(ev).await;
                }
            }
            end.message = format!("{label} ended");
            let end = end
                .with("duration_ms", began.elapsed().as_millis() as u64)
                .with("bytes_in", outcome.bytes_in)
                .with("bytes_out", outcome.bytes_out)
                .with("exit_code", outcome.exit_code)
                .with("signal", outcome.signal);
            identity.emit(end).await;
        });
        Ok(())
    }
}

/// The first line of a session's recording.
fn recording_header(
    identity: &NodeIdentity,
    user: &Authed,
    session_id: &str,
    label: &str,
    spec: &Spec,
) -> warden_recording::Header {
    let (width, height) = spec.pty.as_ref().map_or((80, 24), |p| (p.cols, p.rows));
    warden_recording::Header {
        version: 2,
        width,
        height,
        timestamp: time::OffsetDateTime::now_utc().unix_timestamp(),
        title: Some(format!("{}@{}: {label}", user.login, identity.node_name())),
        warden: warden_recording::SessionInfo {
            session_id: session_id.to_string(),
            user: user.username.clone(),
            login: user.login.clone(),
            node: identity.node_id().to_string(),
            node_name: identity.node_name().to_string(),
            command: label.to_string(),
            pty: spec.pty.is_some(),
        },
    }
}

enum Start {
    Shell,
    Exec(String),
    Subsystem(String),
}

impl russh::server::Handler for Conn {
    type Error = anyhow::Error;

    async fn auth_none(&mut self, login: &str) -> Result<Auth, Self::Error> {
        self.attempted = Some(login.chars().take(64).collect());
        Ok(Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
            partial_success: false,
        })
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        // Plain keys never get in: certificates only.
        Ok(Auth::reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        login: &str,
        cert: &Certificate,
    ) -> Result<Auth, Self::Error> {
        self.attempted = Some(login.chars().take(64).collect());
        self.refusal_audited = true;
        let refuse = |why: &str| {
            let mut ev = AuditEvent::new(
                codes::SESSION_REJECTED,
                self.identity.cluster(),
                cert.key_id(),
                format!("certificate refused: {why}"),
            )
            .source(Some(self.peer.ip().to_string()));
            ev.login = Some(login.to_string());
            ev
        };
        if cert.cert_type() != CertType::User {
            self.emit(refuse("not a user certificate"));
            return Ok(Auth::reject());
        }
        if let Err(e) = cert.validate(self.trusted.iter()) {
            self.emit(refuse(&format!(
                "not signed by this cluster's user CA, expired or not yet valid ({e})"
            )));
            return Ok(Auth::reject());
        }
        if let Some(opt) = cert.critical_options().keys().next() {
            self.emit(refuse(&format!("unsupported critical option {opt:?}")));
            return Ok(Auth::reject());
        }
        let authed = self.authorize(login, cert).await;
        if let Some(reason) = &authed.denied {
            tracing::info!(user = %authed.username, %login, %reason, "session will be refused");
        }
        self.user = Some(authed);
        self.authenticated
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.prune_closed();
        if self.user.is_none() || self.channels.len() >= MAX_SESSIONS_PER_CONN {
            return Ok(()); // dropping the reply refuses the channel
        }
        self.channels.insert(
            channel.id(),
            ChanState {
                channel: Some(channel),
                ..Default::default()
            },
        );
        reply.accept().await;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        id: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        _pw: u32,
        _ph: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let permitted = self.user.as_ref().is_some_and(|u| u.permit_pty);
        match self.channels.get_mut(&id) {
            Some(s) if permitted => {
                s.pty = Some(PtyRequest {
                    term: term.chars().take(64).collect(),
                    cols,
                    rows,
                });
                session.channel_success(id)?;
            }
            _ => session.channel_failure(id)?,
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        id: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channels.get_mut(&id) {
            Some(s) if session::env_allowed(name) && s.env.len() < 64 && value.len() < 4096 => {
                s.env.push((name.to_string(), value.to_string()));
                session.channel_success(id)?;
            }
            _ => session.channel_failure(id)?,
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        id: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(id, Start::Shell, session)
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        self.start(id, Start::Exec(command), session)
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(id, Start::Subsystem(name.to_string()), session)
    }

    async fn window_change_request(
        &mut self,
        id: ChannelId,
        cols: u32,
        rows: u32,
        _pw: u32,
        _ph: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channels.get(&id).and_then(|s| s.master) {
            Some(fd) => {
                crate::pty::resize(fd, cols, rows);
                if let Some(r) = self.channels.get(&id).and_then(|s| s.recorder.as_ref()) {
                    r.resize(cols, rows);
                }
                session.channel_success(id)?;
            }
            None => session.channel_failure(id)?,
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        id: ChannelId,
        signal: russh::Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let (Some(leader), Some(sig)) = (
            self.channels.get(&id).and_then(|s| s.leader.as_ref()),
            session::signal_number(&signal),
        ) {
            leader.signal_group(sig);
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.recheck();
        let Some(user) = &self.user else {
            return Ok(());
        };
        let target = format!("{host}:{port}");
        let allowed = user.denied.is_none() && user.permit_port_forwarding;
        let ev = self
            .event(
                if allowed {
                    codes::PORT_FORWARD
                } else {
                    codes::PORT_FORWARD_DENIED
                },
                if allowed {
                    format!("port forward to {target}")
                } else {
                    format!("port forward to {target} denied: not permitted by role or certificate")
                },
            )
            .with("target", target.clone())
            .with("originator", originator.to_string());
        self.mark_sessions(&ev.message);
        self.emit(ev);
        if !allowed {
            return Ok(()); // refused: administratively prohibited
        }
        // Forwarding alone is a live connection a lock or a role removal
        // ends, as a session is.
        if let Some(user) = &self.user {
            register(&self.identity, &mut self.live, user, session.handle());
        }
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            tracing::info!(peer = %self.peer, "too many forwarded streams on one connection");
            reply
                .reject(russh::ChannelOpenFailure::ResourceShortage)
                .await;
            return Ok(());
        };
        let stream = match tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(target.as_str()),
        )
        .await
        {
            Ok(Ok(s)) => s,
            _ => {
                reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
                return Ok(());
            }
        };
        reply.accept().await;
        tokio::spawn(async move {
            let _permit = permit;
            let mut chan = channel.into_stream();
            let mut tcp = stream;
            let _ = tokio::io::copy_bidirectional(&mut chan, &mut tcp).await;
        });
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.recheck();
        let permitted = self
            .user
            .as_ref()
            .is_some_and(|u| u.denied.is_none() && u.permit_port_forwarding);
        if permitted {
            if let Some(user) = &self.user {
                register(&self.identity, &mut self.live, user, session.handle());
            }
        }
        // OpenSSH's rule: ports below 1024 only for a login of uid 0.
        let root = self
            .user
            .as_ref()
            .and_then(|u| u.account.as_ref())
            .is_some_and(|a| a.uid == 0);
        let privileged = *port != 0 && *port < 1024 && !root;
        let full = self.remote_forwards.len() >= MAX_REMOTE_FORWARDS_PER_CONN;
        let allowed = permitted && !privileged && !full;
        let target = format!("{address}:{port}");
        let ev = self
            .event(
                if allowed { codes::PORT_FORWARD } else { codes::PORT_FORWARD_DENIED },
                if allowed {
                    format!("remote port forward from {target}")
                } else if !permitted {
                    format!("remote port forward from {target} denied: not permitted by role or certificate")
                } else if privileged {
                    format!("remote port forward from {target} denied: ports below 1024 are for the root login only")
                } else {
                    format!("remote port forward from {target} denied: at most {MAX_REMOTE_FORWARDS_PER_CONN} per connection")
                },
            )
            .with("listen", target)
            .with("direction", "remote");
        self.mark_sessions(&ev.message);
        self.emit(ev);
        if !allowed {
            return Ok(false);
        }
        match crate::forward::remote_listener(session.handle(), address, *port).await {
            Ok((bound, task)) => {
                *port = bound;
                self.remote_forwards.insert(
                    (address.to_string(), bound),
                    crate::forward::Forwarding {
                        task,
                        cleanup: None,
                    },
                );
                Ok(true)
            }
            Err(e) => {
                tracing::info!(error = %e, "remote forward failed");
                Ok(false)
            }
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self
            .remote_forwards
            .remove(&(address.to_string(), port))
            .is_some())
    }

    async fn agent_request(
        &mut self,
        id: ChannelId,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.prune_closed();
        let Some(user) = &self.user else {
            return Ok(false);
        };
        let (Some(account), true) = (
            &user.account,
            user.denied.is_none() && user.permit_agent_forwarding,
        ) else {
            return Ok(false);
        };
        let Some(state) = self.channels.get_mut(&id) else {
            return Ok(false);
        };
        if state.agent_forward.is_some() || state.channel.is_none() {
            return Ok(false);
        }
        let Ok(slot) = self.agent_slots.clone().try_acquire_owned() else {
            tracing::info!(peer = %self.peer, "agent forwarding refused: {MAX_AGENTS_PER_CONN} per connection");
            return Ok(false);
        };
        match crate::forward::agent_listener(session.handle(), account, unix::current_uid() == 0) {
            Ok((sock, fwd)) => {
                state.env.push(("SSH_AUTH_SOCK".into(), sock));
                state.agent_forward = Some((fwd, slot));
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "agent forwarding failed");
                Ok(false)
            }
        }
    }

    async fn x11_request(
        &mut self,
        id: ChannelId,
        _single_connection: bool,
        proto: &str,
        cookie: &str,
        screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let allowed = self
            .user
            .as_ref()
            .is_some_and(|u| u.denied.is_none() && u.permit_x11_forwarding && u.account.is_some());
        self.prune_closed();
        if !allowed
            || !crate::forward::x11_auth_ok(proto, cookie)
            || self
                .channels
                .get(&id)
                .is_none_or(|c| c.x11_forward.is_some() || c.channel.is_none())
        {
            session.channel_failure(id)?;
            return Ok(());
        }
        let Ok(slot) = self.x11_slots.clone().try_acquire_owned() else {
            tracing::info!(peer = %self.peer, "X11 forwarding refused: {MAX_X11_PER_CONN} displays per connection");
            session.channel_failure(id)?;
            return Ok(());
        };
        match crate::forward::x11_listener(session.handle()).await {
            Ok((display, fwd)) => {
                let state = self.channels.get_mut(&id).expect("checked above");
                state
                    .env
                    .push(("DISPLAY".into(), format!("localhost:{display}.{screen}")));
                state.x11 = Some((display, screen, proto.to_string(), cookie.to_string()));
                state.x11_forward = Some((fwd, slot));
                let ev = self
                    .event(
                        codes::X11_FORWARD,
                        format!("X11 forwarding on display {display}"),
                    )
                    .with("display", display);
                self.emit(ev);
                session.channel_success(id)?;
            }
            Err(e) => {
                tracing::warn!(error = %e, "X11 forwarding failed");
                session.channel_failure(id)?;
            }
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        id: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&id);
        Ok(())
    }
}
