//! The database service: databases this agent serves, reached through its
//! reverse tunnel. A connection arrives as mTLS with the user's own
//! certificate (the proxy only routes it), names the database, and is
//! decided by auth with the user's live roles; the service then opens the
//! database with a short-lived client certificate from the database CA
//! and relays the protocol, auditing every statement. Live connections
//! end when a lock or a policy change no longer allows them.

mod mysql;
mod postgres;

use crate::identity::NodeIdentity;
use anyhow::{bail, Context};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use warden_types::api::DatabaseHeartbeat;
use warden_types::audit::{codes, AuditEvent};
use warden_types::{IdentityKind, ALPN_DB_MYSQL, ALPN_DB_POSTGRES};

/// How long a client has to finish TLS and name its database.
const HANDSHAKE: Duration = Duration::from_secs(15);
/// Longest first line (the database's name, as JSON).
const MAX_HELLO: usize = 1024;
/// How long the database has to answer and finish its start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Audit events of statements waiting to be spooled (the relay waits when
/// this many are).
const AUDIT_QUEUE: usize = 1024;

/// The wire protocol of a database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Postgres,
    Mysql,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
        }
    }

    fn alpn(self) -> &'static [u8] {
        match self {
            Protocol::Postgres => ALPN_DB_POSTGRES,
            Protocol::Mysql => ALPN_DB_MYSQL,
        }
    }
}

/// One database this service serves: `--db NAME=postgres://HOST:PORT`
/// (or `mysql://`),
/// with `?ca=FILE` (the CA of the database's server certificate; default:
/// the cluster's database CA) and labels as `&label.KEY=VALUE`.
#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseConfig {
    pub name: String,
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    pub ca_file: Option<PathBuf>,
    pub labels: BTreeMap<String, String>,
    pub description: String,
}

impl std::str::FromStr for DatabaseConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = |why: &str| {
            format!("invalid --db {s:?}: {why}; use NAME=postgres://HOST:PORT or NAME=mysql://HOST:PORT, with [?label.KEY=VALUE&ca=FILE], e.g. pg1=postgres://127.0.0.1:5432?label.env=dev")
        };
        let (name, uri) = s.split_once('=').ok_or_else(|| usage("no NAME="))?;
        warden_types::resource::validate_name(name).map_err(|e| usage(&e))?;
        let (scheme, rest) = uri.split_once("://").ok_or_else(|| usage("no scheme"))?;
        let (protocol, default_port) = match scheme {
            "postgres" | "postgresql" => (Protocol::Postgres, 5432),
            "mysql" | "mariadb" => (Protocol::Mysql, 3306),
            other => return Err(usage(&format!("unknown protocol {other:?}"))),
        };
        let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, port) = match addr.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| usage("bad port"))?),
            None => (addr, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(usage("no host"));
        }
        let mut db = DatabaseConfig {
            name: name.to_string(),
            protocol,
            host: host.to_string(),
            port,
            ca_file: None,
            labels: BTreeMap::new(),
            description: String::new(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| usage("bad option"))?;
            match k {
                "ca" => db.ca_file = Some(PathBuf::from(v)),
                "description" => db.description = v.to_string(),
                _ => match k.strip_prefix("label.") {
                    Some(key) => {
                        db.labels.insert(key.to_string(), v.to_string());
                    }
                    None => return Err(usage(&format!("unknown option {k:?}"))),
                },
            }
        }
        warden_types::resource::validate_labels(&db.labels).map_err(|e| usage(&e))?;
        if db.description.len() > 256 || db.description.chars().any(char::is_control) {
            return Err(usage(
                "the description is longer than 256 characters or has control characters",
            ));
        }
        Ok(db)
    }
}

/// A live database connection, as revocation sees it.
pub struct LiveDb {
    pub user: String,
    pub user_id: Option<String>,
    /// The roles that allowed it (a lock on one ends it).
    pub roles: Vec<String>,
    pub database: String,
    pub db_user: String,
    pub db_name: String,
    /// Told why, when the connection must end.
    end: tokio::sync::mpsc::Sender<String>,
}

/// Why `locks` cover a live connection on the service `node` (id, name):
/// a lock on its user, one of its roles, the service, the database by
/// name, or the database user as a login.
pub fn lock_reason(
    locks: &[warden_types::Document<warden_types::LockSpec>],
    node: (&str, &str),
    l: &LiveDb,
) -> Option<String> {
    locks
        .iter()
        .find(|k| {
            [node, (&l.database, &l.database)]
                .into_iter()
                .any(|target| {
                    k.spec
                        .target
                        .matches(&l.user, &l.roles, Some(target), Some(&l.db_user))
                })
        })
        .map(warden_policy::lock_message)
}

/// The databases this agent serves, and its live connections.
pub struct DbService {
    pub databases: Vec<DatabaseConfig>,
    /// Databases only: the agent takes no SSH logins.
    pub only: bool,
    live: Mutex<HashMap<u64, LiveDb>>,
    next: AtomicU64,
}

impl DbService {
    pub fn new(databases: Vec<DatabaseConfig>, only: bool) -> Self {
        DbService {
            databases,
            only,
            live: Mutex::default(),
            next: AtomicU64::new(1),
        }
    }

    /// What heartbeats report.
    pub fn heartbeat(&self) -> Vec<DatabaseHeartbeat> {
        self.databases
            .iter()
            .map(|d| DatabaseHeartbeat {
                name: d.name.clone(),
                protocol: d.protocol.as_str().to_string(),
                labels: d.labels.clone(),
                description: d.description.clone(),
            })
            .collect()
    }

    fn get(&self, name: &str) -> Option<&DatabaseConfig> {
        self.databases.iter().find(|d| d.name == name)
    }

    fn register(&self, live: LiveDb) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, live);
        id
    }

    fn remove(&self, id: u64) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Ends every live connection `why` gives a reason to end.
    pub fn end_where(&self, why: impl Fn(&LiveDb, &DatabaseConfig) -> Option<String>) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let hit: Vec<u64> = live
            .iter()
            .filter_map(|(id, l)| {
                let db = self.get(&l.database)?;
                why(l, db).map(|w| {
                    let _ = l.end.try_send(w);
                    *id
                })
            })
            .collect();
        for id in hit {
            live.remove(&id);
        }
    }
}

/// Removes a connection from the registry when it ends, however it ends.
struct Registered<'a>(&'a DbService, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

/// The TLS server config of database connections: the agent's own
/// certificate; clients must present a user certificate from the tls CA.
fn tls_config(identity: &NodeIdentity) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = identity.certs();
    let chain = warden_ca::tls::pem_to_der(&certs.tls_cert_pem)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(identity.tls_key_pkcs8().into());
    let verifier = warden_ca::tls::client_cert_verifier(&certs.tls_ca_pems)?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("the agent's certificate")?;
    config.alpn_protocols = vec![ALPN_DB_POSTGRES.to_vec(), ALPN_DB_MYSQL.to_vec()];
    Ok(Arc::new(config))
}

/// The first line a client sends inside TLS.
#[derive(serde::Deserialize)]
struct Hello {
    database: String,
}

/// Reads the client's first line (bounded), byte by byte so that nothing
/// after it is consumed.
async fn read_hello<S: AsyncRead + Unpin>(s: &mut S) -> anyhow::Result<Hello> {
    let mut line = Vec::new();
    loop {
        let b = s.read_u8().await.context("the client left")?;
        if b == b'\n' {
            break;
        }
        line.push(b);
        if line.len() > MAX_HELLO {
            bail!("the client's first line is longer than {MAX_HELLO} bytes");
        }
    }
    serde_json::from_slice(&line).context("the client's first line is not Warden's")
}

/// Serves one database connection from the tunnel.
pub async fn serve<S>(identity: Arc<NodeIdentity>, stream: S, peer: std::net::SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Err(e) = serve_inner(identity, stream, peer).await {
        tracing::info!(%peer, error = %format!("{e:#}"), "database connection ended");
    }
}

async fn serve_inner<S>(
    identity: Arc<NodeIdentity>,
    stream: S,
    peer: std::net::SocketAddr,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config(&identity)?);
    let (mut tls, hello) = tokio::time::timeout(HANDSHAKE, async {
        let mut tls = acceptor.accept(stream).await.context("TLS")?;
        let hello = read_hello(&mut tls).await?;
        anyhow::Ok((tls, hello))
    })
    .await
    .context("the client did not finish its handshake in time")??;
    let der = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no client certificate")?
        .clone();
    let user = warden_ca::tls::identity_from_der(&der)?
        .context("the certificate carries no Warden identity")?;
    if user.kind != IdentityKind::User || user.cluster != identity.cluster() {
        bail!("only users of this cluster open database connections");
    }
    let alpn = tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec();
    let db = identity
        .db
        .get(&hello.database)
        .filter(|d| d.protocol.alpn() == alpn.as_slice())
        .cloned();
    let Some(db) = db else {
        use tokio::io::AsyncWriteExt;
        let msg = format!(
            "warden: this service does not serve a {} database named {:?}; run 'warden db ls'",
            String::from_utf8_lossy(&alpn).trim_start_matches("warden-db-"),
            hello.database
        );
        let refusal = match alpn.as_slice() {
            ALPN_DB_MYSQL => warden_db::mysql::build::packet(
                0,
                &warden_db::mysql::err_packet(1049, "42000", &msg),
            ),
            _ => warden_db::postgres::fatal("3D000", &msg),
        };
        let _ = tls.write_all(&refusal).await;
        let _ = tls.flush().await;
        bail!("{msg}");
    };
    let conn = Conn {
        identity: identity.clone(),
        db,
        user: user.username,
        user_id: (!user.user_id.is_empty()).then_some(user.user_id),
        user_cert: der.to_vec(),
        peer,
    };
    match conn.db.protocol {
        Protocol::Postgres => conn.run_postgres(tls).await,
        Protocol::Mysql => conn.run_mysql(tls).await,
    }
}

/// One client connection, after TLS.
pub(super) struct Conn {
    pub identity: Arc<NodeIdentity>,
    pub db: DatabaseConfig,
    pub user: String,
    pub user_id: Option<String>,
    /// The certificate the user presented (DER), which auth checks again.
    pub user_cert: Vec<u8>,
    pub peer: std::net::SocketAddr,
}

impl Conn {
    /// A new session's audit context.
    fn session(&self, db_user: &str, db_name: &str) -> Session {
        Session {
            id: uuid::Uuid::new_v4().to_string(),
            user: self.user.clone(),
            database: self.db.name.clone(),
            protocol: self.db.protocol.as_str(),
            db_user: db_user.to_string(),
            db_name: db_name.to_string(),
            peer: self.peer.to_string(),
        }
    }

    /// Asks auth to decide the connection and sign its certificate; the
    /// refusal's words for the user when it does not.
    async fn certificate(
        &self,
        key: &warden_ca::ClientKey,
        db_user: &str,
        db_name: &str,
    ) -> Result<warden_types::api::DbCertResponse, (&'static str, String)> {
        let asked = self
            .identity
            .db_cert(&warden_types::api::DbCertRequest {
                user_cert: data_encoding::BASE64.encode(&self.user_cert),
                database: self.db.name.clone(),
                db_user: db_user.to_string(),
                db_name: db_name.to_string(),
                public_key: data_encoding::BASE64.encode(&key.public_raw()),
            })
            .await;
        match asked {
            Ok(g) => Ok(g),
            Err(warden_client::ClientError::Api {
                status: 403,
                message,
                ..
            }) => Err((
                "28000",
                format!(
                    "access to database {} as database user {db_user:?} on {db_name:?} denied: {message}",
                    self.db.name
                ),
            )),
            Err(warden_client::ClientError::Api {
                status: 404,
                message,
                ..
            }) => Err(("3D000", format!("{message}; try again in a few seconds"))),
            Err(warden_client::ClientError::Api {
                status: 400 | 401,
                message,
                ..
            }) => Err((
                "28000",
                format!("auth refused your certificate: {message}; run 'warden login'"),
            )),
            Err(e) => Err((
                "08006",
                format!("cannot ask the auth service about this connection: {e}"),
            )),
        }
    }

    /// Registers a live connection; the receiver hears why it must end. A
    /// lock that arrived between auth's decision and now (its push found
    /// nothing to end yet) ends it at once.
    fn register(
        &self,
        session: &Session,
        roles: &[String],
    ) -> (Registered<'_>, tokio::sync::mpsc::Receiver<String>) {
        let (end_tx, end_rx) = tokio::sync::mpsc::channel(1);
        let live = LiveDb {
            user: self.user.clone(),
            user_id: self.user_id.clone(),
            roles: roles.to_vec(),
            database: self.db.name.clone(),
            db_user: session.db_user.clone(),
            db_name: session.db_name.clone(),
            end: end_tx,
        };
        let node = (self.identity.node_id(), self.identity.name());
        if let Some(why) = lock_reason(&self.identity.policy.locks(), node, &live) {
            let _ = live.end.try_send(why);
        }
        let id = self.identity.db.register(live);
        (Registered(&self.identity.db, id), end_rx)
    }
}

/// What a protocol's relay reads off each direction: the statements the
/// bytes ran, for the audit log, and the reason the connection must end,
/// if they give one (the statements before it still count). Pure: the
/// relay loop does the I/O.
trait Audit: Send {
    fn client(&mut self, bytes: &[u8]) -> (Vec<warden_db::QueryRecord>, Option<String>);
    fn server(&mut self, bytes: &[u8]) -> (Vec<warden_db::QueryRecord>, Option<String>);
    /// What the client is told when the connection is ended (a lock).
    fn farewell(&self, why: &str) -> Option<Vec<u8>>;
}

impl Conn {
    /// Audits the start, relays until a side leaves or the connection must
    /// end (a lock, a policy change), and audits the end. `early`: what
    /// the client and the server sent after the start, already read but not
    /// yet passed on.
    async fn relay<C, S, A>(
        &self,
        session: &Session,
        roles: &[String],
        (client, server): (C, S),
        early: (Vec<u8>, Vec<u8>),
        audit: A,
    ) -> anyhow::Result<()>
    where
        C: AsyncRead + AsyncWrite + Unpin,
        S: AsyncRead + AsyncWrite + Unpin,
        A: Audit,
    {
        let start = session
            .event(
                codes::DB_SESSION_START,
                format!(
                    "{} connected to database {} as {}",
                    self.user, self.db.name, session.db_user
                ),
            )
            .with("roles", roles.to_vec());
        self.identity.emit(start).await;
        let (_registered, mut end_rx) = self.register(session, roles);
        let (tx, rx) = tokio::sync::mpsc::channel(AUDIT_QUEUE);
        let auditor = tokio::spawn(audit_writer(self.identity.clone(), rx));
        let audit = Mutex::new(audit);
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        let ended = tokio::select! {
            r = pump(&mut cr, &mut sw, &audit, Direction::Up, &early.0, session, &tx) => r.err().map(|e| format!("{e:#}")),
            r = pump(&mut sr, &mut cw, &audit, Direction::Down, &early.1, session, &tx) => r.err().map(|e| format!("{e:#}")),
            why = end_rx.recv() => {
                let why = why.unwrap_or_else(|| "ended".into());
                let farewell = audit.lock().unwrap_or_else(|p| p.into_inner()).farewell(&why);
                if let Some(bytes) = farewell {
                    let _ = cw.write_all(&bytes).await;
                    let _ = cw.flush().await;
                }
                let _ = cw.shutdown().await;
                let _ = sw.shutdown().await;
                let _ = tx.send(session.event(codes::DB_SESSION_TERMINATED, why.clone())).await;
                Some(why)
            }
        };
        let mut end = session.event(
            codes::DB_SESSION_END,
            format!("{} left database {}", self.user, self.db.name),
        );
        if let Some(why) = ended {
            end = end.with("reason", why);
        }
        let _ = tx.send(end).await;
        drop(tx);
        let _ = auditor.await;
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Direction {
    /// Client to database.
    Up,
    /// Database to client.
    Down,
}

/// One direction of a relay: bytes read, audited, passed on (`first`:
/// bytes already read, passed on before anything else).
async fn pump<R, W, A>(
    r: &mut R,
    w: &mut W,
    audit: &Mutex<A>,
    direction: Direction,
    first: &[u8],
    session: &Session,
    tx: &tokio::sync::mpsc::Sender<AuditEvent>,
) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    A: Audit,
{
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = first;
    loop {
        let bytes: &[u8] = if !pending.is_empty() {
            std::mem::take(&mut pending)
        } else {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                let _ = w.shutdown().await;
                return Ok(());
            }
            &buf[..n]
        };
        let (records, ends) = {
            let mut a = audit.lock().unwrap_or_else(|p| p.into_inner());
            match direction {
                Direction::Up => a.client(bytes),
                Direction::Down => a.server(bytes),
            }
        };
        for q in records {
            tx.send(query_event(session, q)).await?;
        }
        if let Some(why) = ends {
            bail!("{why}");
        }
        w.write_all(bytes).await?;
        w.flush().await?;
    }
}

/// What every event of a connection carries.
#[derive(Clone)]
struct Session {
    id: String,
    user: String,
    database: String,
    protocol: &'static str,
    db_user: String,
    db_name: String,
    peer: String,
}

impl Session {
    fn event(&self, code: (&str, &str), message: impl Into<String>) -> AuditEvent {
        let mut ev = AuditEvent::new(code, "", &self.user, message)
            .with("database", self.database.as_str())
            .with("db_protocol", self.protocol)
            .with("db_user", self.db_user.as_str())
            .with("db_name", self.db_name.as_str());
        ev.login = Some(self.db_user.clone());
        ev.session_id = Some(self.id.clone());
        ev.source_addr = Some(self.peer.clone());
        ev
    }
}

fn query_event(session: &Session, q: warden_db::QueryRecord) -> AuditEvent {
    let mut ev = session
        .event(codes::DB_QUERY, q.query.clone())
        .with("query", q.query);
    if !q.params.is_empty() {
        ev = ev.with("params", q.params);
    }
    ev
}

/// Spools statement events in order, off the relay's path: whatever has
/// queued up goes in one durable write.
async fn audit_writer(
    identity: Arc<NodeIdentity>,
    mut rx: tokio::sync::mpsc::Receiver<AuditEvent>,
) {
    let mut batch = Vec::new();
    while rx
        .recv_many(&mut batch, warden_store::spool::MAX_PER_FILE)
        .await
        > 0
    {
        identity.emit_all(std::mem::take(&mut batch)).await;
    }
}

/// Reads into `buf` from `r`; an error when the peer has left.
async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>, who: &str) -> anyhow::Result<()> {
    let mut chunk = [0u8; 8192];
    let n = r
        .read(&mut chunk)
        .await
        .with_context(|| format!("reading from the {who}"))?;
    if n == 0 {
        bail!("the {who} closed the connection");
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// The TLS client config of a connection to the database: the
/// connection's certificate, and the database's server certificate checked
/// against its CA file or the database CA.
fn tls_to_database(
    db: &DatabaseConfig,
    granted: &warden_types::api::DbCertResponse,
    key: &warden_ca::ClientKey,
) -> anyhow::Result<(
    Arc<rustls::ClientConfig>,
    rustls::pki_types::ServerName<'static>,
)> {
    let roots_pem = match &db.ca_file {
        Some(path) => vec![std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the database's CA file {}", path.display()))?],
        None => granted.ca_pems.clone(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for pem in &roots_pem {
        for der in warden_ca::tls::pem_to_der(pem)? {
            roots.add(der)?;
        }
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            warden_ca::tls::pem_to_der(&granted.cert_pem)?,
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.pkcs8_der().to_vec().into()),
        )?;
    let name = rustls::pki_types::ServerName::try_from(db.host.clone())
        .with_context(|| format!("{:?} is not a host name", db.host))?;
    Ok((Arc::new(config), name))
}
