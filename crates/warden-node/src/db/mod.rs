//! The database service: databases this agent serves, reached through its
//! reverse tunnel. A connection arrives as mTLS with the user's own
//! certificate (the proxy only routes it), names the database, and is
//! decided by auth with the user's live roles; the service then opens the
//! database with a short-lived client certificate from the database CA
//! and relays the protocol, auditing every statement. Live connections
//! end when a lock or a policy change no longer allows them.

mod postgres;

use crate::identity::NodeIdentity;
use anyhow::{bail, Context};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use warden_types::api::DatabaseHeartbeat;
use warden_types::{IdentityKind, ALPN_DB_POSTGRES};

/// How long a client has to finish TLS and name its database.
const HANDSHAKE: Duration = Duration::from_secs(15);
/// Longest first line (the database's name, as JSON).
const MAX_HELLO: usize = 1024;

/// The wire protocol of a database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Postgres,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
        }
    }
}

/// One database this service serves: `--db NAME=postgres://HOST:PORT`,
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
            format!("invalid --db {s:?}: {why}; use NAME=postgres://HOST:PORT[?label.KEY=VALUE&ca=FILE], e.g. pg1=postgres://127.0.0.1:5432?label.env=dev")
        };
        let (name, uri) = s.split_once('=').ok_or_else(|| usage("no NAME="))?;
        warden_types::resource::validate_name(name).map_err(|e| usage(&e))?;
        let (scheme, rest) = uri.split_once("://").ok_or_else(|| usage("no scheme"))?;
        let protocol = match scheme {
            "postgres" | "postgresql" => Protocol::Postgres,
            "mysql" | "mariadb" => return Err(usage("MySQL is not served yet")),
            other => return Err(usage(&format!("unknown protocol {other:?}"))),
        };
        let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, port) = match addr.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| usage("bad port"))?),
            None => (addr, 5432),
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
    config.alpn_protocols = vec![ALPN_DB_POSTGRES.to_vec()];
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
    let Some(db) = identity.db.get(&hello.database).cloned() else {
        use tokio::io::AsyncWriteExt;
        let msg = format!(
            "warden: this service does not serve a database named {:?}; run 'warden db ls'",
            hello.database
        );
        let _ = tls
            .write_all(&warden_db::postgres::fatal("3D000", &msg))
            .await;
        let _ = tls.flush().await;
        bail!("{msg}");
    };
    let conn = postgres::Conn {
        identity: identity.clone(),
        db,
        user: user.username,
        user_id: (!user.user_id.is_empty()).then_some(user.user_id),
        user_cert: der.to_vec(),
        peer,
    };
    conn.run(tls).await
}
