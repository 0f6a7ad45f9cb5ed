//! PostgreSQL stores: the [`Backend`](crate::Backend) and the
//! [`AuditLog`](crate::AuditLog) that several auth servers share.
//!
//! Both serialise their writes *in the database* (a row lock on the
//! revision counter, an advisory lock on the audit chain), never in one
//! process, so any number of auth servers may write at once and the
//! revisions and the hash chain stay one total order.

mod audit;
mod backend;

pub use audit::PostgresAuditLog;
pub use backend::PostgresBackend;

use crate::backend::StoreError;
use crate::Result;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Connections a store instance keeps open at most.
const POOL_SIZE: usize = 8;
/// How long connecting may take before the call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A `postgres://` URL with its password (if any) hidden, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The password may hold '/', '?' or '@': the user part ends at the
    // last '@'.
    let rest = match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => rest.to_string(),
    };
    // A password given as a parameter.
    let rest = match rest.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some(("password", _)) => "password=***".to_string(),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
        None => rest,
    };
    format!("{scheme}://{rest}")
}

/// A PostgreSQL server to connect to, and how to trust it.
pub(crate) struct Target {
    pub config: Config,
    pub tls: MakeRustlsConnect,
}

/// Parses a `postgres://` (or `postgresql://`) URL. TLS follows `sslmode`:
/// `disable`; `prefer` (TLS when the server offers it; the default for
/// loopback and unix sockets); `require`, `verify-ca` or `verify-full` (TLS
/// or nothing; the default for any other host). Whenever TLS is
/// used the server's certificate is verified, against `sslrootcert=FILE`
/// (PEM) if given, else the system's roots: libpq's `require` without
/// verification would let anyone on the path read the cluster's state.
pub(crate) fn parse_config(url: &str) -> Result<Target> {
    let bad = |why: String| {
        StoreError::Backend(format!(
            "invalid PostgreSQL URL {}: {why}; expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=require&sslrootcert=CA.pem]",
            redact_url(url)
        ))
    };
    // Parameters tokio-postgres does not know are taken out first.
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut root_file = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslrootcert", v)) => root_file = Some(v.to_string()),
            Some(("sslmode", "verify-ca" | "verify-full")) => {
                kept.push("sslmode=require".to_string())
            }
            _ => kept.push(pair.to_string()),
        }
    }
    let url_for_driver = match kept.is_empty() {
        true => base.to_string(),
        false => format!("{base}?{}", kept.join("&")),
    };
    let mut config = Config::from_str(&url_for_driver).map_err(|e| bad(e.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("warden");
    // Without a word from the operator, only loopback and unix sockets may
    // go without TLS: `prefer` lets anyone on the path answer "no TLS" and
    // then ask for the password in clear.
    let explicit = query.split('&').any(|kv| kv.starts_with("sslmode="));
    let remote = config.get_hosts().iter().any(|h| match h {
        tokio_postgres::config::Host::Tcp(name) => !crate::is_loopback_host(name),
        _ => false,
    });
    if !explicit && remote {
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
    }
    let mut roots = rustls::RootCertStore::empty();
    match &root_file {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
            for cert in certs {
                let cert = cert.map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
            }
        }
        None => {
            roots = warden_http::root_store();
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Target {
        config,
        tls: MakeRustlsConnect::new(tls),
    })
}

pub(crate) fn db_err(e: tokio_postgres::Error) -> StoreError {
    let text = match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
        None => {
            use std::error::Error;
            let mut text = format!("PostgreSQL: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    };
    StoreError::Backend(text)
}

/// A small pool of connections: idle clients are reused, broken ones
/// dropped, and at most [`POOL_SIZE`] are in use at once.
pub(crate) struct Pool {
    target: Target,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
}

/// A pooled connection; returns to the pool when dropped, unless broken.
pub(crate) struct Conn<'a> {
    client: Option<Client>,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until drop")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until drop")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if !client.is_closed() {
                self.pool
                    .idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(client);
            }
        }
    }
}

impl Pool {
    pub(crate) fn new(target: Target) -> Self {
        Pool {
            target,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(POOL_SIZE),
        }
    }

    /// Opens a connection outside the pool, driving it on a task.
    pub(crate) async fn connect(&self) -> Result<Client> {
        let (client, connection) = self
            .target
            .config
            .connect(self.target.tls.clone())
            .await
            .map_err(db_err)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    pub(crate) async fn get(&self) -> Result<Conn<'_>> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Backend("store closed".into()))?;
        let reuse = loop {
            let next = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match next {
                Some(c) if c.is_closed() => continue,
                other => break other,
            }
        };
        let client = match reuse {
            Some(c) => c,
            None => self.connect().await?,
        };
        Ok(Conn {
            client: Some(client),
            pool: self,
            _permit: permit,
        })
    }
}

/// Brings `component`'s tables to `version` by running `sql` once per
/// database, even when several processes start at once. A database already
/// at that version is not touched: DDL on live tables would take locks that
/// deadlock with writers of other auth servers.
pub(crate) async fn migrate(
    client: &mut Client,
    component: &str,
    version: i32,
    sql: &str,
) -> Result<()> {
    const LOCK: i64 = 0x5741_5244_454e_0000;
    async fn current(c: &impl tokio_postgres::GenericClient, component: &str) -> Result<i32> {
        let exists: bool = c
            .query_one("SELECT to_regclass('warden_schema') IS NOT NULL", &[])
            .await
            .map_err(db_err)?
            .get(0);
        if !exists {
            return Ok(0);
        }
        Ok(c.query_opt(
            "SELECT version FROM warden_schema WHERE component = $1",
            &[&component],
        )
        .await
        .map_err(db_err)?
        .map_or(0, |r| r.get(0)))
    }
    let found = current(&*client, component).await?;
    if found > version {
        return Err(StoreError::Backend(format!(
            "the PostgreSQL {component} tables are at version {found}, newer than this warden knows ({version}); upgrade warden"
        )));
    }
    if found == version {
        return Ok(());
    }
    let tx = client.transaction().await.map_err(db_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(db_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS warden_schema (component TEXT PRIMARY KEY, version INT NOT NULL)",
    )
    .await
    .map_err(db_err)?;
    if current(&tx, component).await? < version {
        tx.batch_execute(sql).await.map_err(db_err)?;
        tx.execute(
            "INSERT INTO warden_schema VALUES ($1, $2)
             ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            &[&component, &version],
        )
        .await
        .map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://warden:s3cret@db:5432/warden?sslmode=disable"),
            "postgres://warden:***@db:5432/warden?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://warden@db/warden"),
            "postgres://warden@db/warden"
        );
        assert_eq!(
            redact_url("postgres://a:p@ss@db/x"),
            "postgres://a:***@db/x"
        );
        assert_eq!(
            redact_url("postgres://a:pa/s?s@db/x"),
            "postgres://a:***@db/x"
        );
        assert_eq!(
            redact_url("postgres://a@db/x?sslmode=require&password=hunter2"),
            "postgres://a@db/x?sslmode=require&password=***"
        );
    }

    #[test]
    fn tls_by_default_beyond_loopback() {
        use tokio_postgres::config::SslMode;
        let mode = |url: &str| parse_config(url).unwrap().config.get_ssl_mode();
        assert!(matches!(
            mode("postgres://w@db.internal/x"),
            SslMode::Require
        ));
        assert!(matches!(mode("postgres://w@127.0.0.1/x"), SslMode::Prefer));
        assert!(matches!(mode("postgres://w@localhost/x"), SslMode::Prefer));
        assert!(matches!(
            mode("postgres://w@db.internal/x?sslmode=disable"),
            SslMode::Disable
        ));
    }

    #[test]
    fn tls_parameters() {
        let t = parse_config("postgres://w@db/x?sslmode=verify-full&application_name=a").unwrap();
        assert!(matches!(
            t.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        ));
        let e = parse_config("postgres://w@db/x?sslmode=require&sslrootcert=/nonexistent.pem")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sslrootcert /nonexistent.pem"), "{e}");
    }

    #[test]
    fn bad_urls_say_what_is_expected() {
        let e = parse_config("postgres://x:secret@host:notaport/db")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("expected postgres://"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }
}
