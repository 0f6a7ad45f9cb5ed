//! `warden db` and `warden proxy db`: databases through the proxy. A local
//! listener (a private Unix socket for `connect`, a loopback port for
//! `proxy db`) takes the client's plain connection and carries it in TLS,
//! with the user's certificate, to the database service that serves the
//! database; the proxy only routes it.

use crate::nodes::profile;
use crate::output::{self, Format};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use warden_client::profile::{Profile, ProfileStore};
use warden_client::tls::{client_config, ClusterVerifier};
use warden_types::api::DatabaseInfo;
use warden_types::endpoints;

#[derive(Subcommand)]
pub enum DbCommand {
    /// List the databases your roles reach (by their db_labels).
    Ls {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Choose the database user and name `connect` and `proxy db` use for
    /// a database (checked when you connect).
    Login(DbLoginArgs),
    /// Open `psql` (or `mysql`) on a database through the proxy;
    /// arguments after `--` go to it (e.g. `-- -c 'select 1'`).
    Connect(DbConnectArgs),
}

#[derive(Args)]
pub struct DbLoginArgs {
    /// The database, as `warden db ls` names it.
    pub name: String,
    /// The database user to connect as.
    #[arg(long)]
    pub db_user: Option<String>,
    /// The logical database [default: as the database user].
    #[arg(long)]
    pub db_name: Option<String>,
}

#[derive(Args)]
pub struct DbConnectArgs {
    pub name: String,
    #[arg(long)]
    pub db_user: Option<String>,
    #[arg(long)]
    pub db_name: Option<String>,
    /// Passed to psql.
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Args)]
pub struct DbProxyArgs {
    pub name: String,
    /// The loopback port to listen on (0: any free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    #[arg(long)]
    pub db_user: Option<String>,
    #[arg(long)]
    pub db_name: Option<String>,
}

pub async fn run(c: DbCommand) -> anyhow::Result<()> {
    match c {
        DbCommand::Ls { format } => ls(format).await,
        DbCommand::Login(a) => login(a).await,
        DbCommand::Connect(a) => connect(a).await,
    }
}

async fn databases(store: &ProfileStore, p: &Profile) -> anyhow::Result<Vec<DatabaseInfo>> {
    Ok(warden_client::login::auth_client(store, p)?
        .call(&endpoints::DATABASES, &())
        .await?)
}

async fn ls(format: Format) -> anyhow::Result<()> {
    let (store, p) = profile()?;
    let mut dbs = databases(&store, &p).await?;
    dbs.sort_by(|a, b| (&a.name, &a.service_name).cmp(&(&b.name, &b.service_name)));
    let saved = Saved::load(&store);
    match format {
        Format::Json => println!("{}", output::json(&dbs)?),
        Format::Text => println!(
            "{}",
            output::table(
                &[
                    "database",
                    "protocol",
                    "labels",
                    "service",
                    "connect as",
                    "description"
                ],
                dbs.iter()
                    .map(|d| {
                        vec![
                            d.name.clone(),
                            d.protocol.clone(),
                            d.labels
                                .iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(","),
                            d.service_name.clone(),
                            saved
                                .get(&p, &d.name)
                                .map(|c| format!("{}@{}", c.db_user, c.db_name))
                                .unwrap_or_default(),
                            d.description.clone(),
                        ]
                    })
                    .collect(),
            )
        ),
    }
    Ok(())
}

/// The database user and name chosen per database (`warden db login`),
/// per cluster, in the profile's home.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Saved(BTreeMap<String, Chosen>);

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Chosen {
    db_user: String,
    db_name: String,
}

impl Saved {
    fn path(store: &ProfileStore) -> std::path::PathBuf {
        store.home().join("databases.json")
    }

    fn load(store: &ProfileStore) -> Self {
        std::fs::read(Self::path(store))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn key(p: &Profile, name: &str) -> String {
        format!("{}/{name}", p.cluster)
    }

    fn get(&self, p: &Profile, name: &str) -> Option<&Chosen> {
        self.0.get(&Self::key(p, name))
    }
}

/// The database user and name for a connection: flags, else what `warden
/// db login` saved.
fn chosen(
    store: &ProfileStore,
    p: &Profile,
    name: &str,
    db_user: Option<String>,
    db_name: Option<String>,
) -> anyhow::Result<Chosen> {
    let saved = Saved::load(store).get(p, name).cloned();
    let Some(db_user) = db_user.or_else(|| saved.as_ref().map(|s| s.db_user.clone())) else {
        bail!("name the database user: --db-user USER (or choose one for {name}: 'warden db login {name} --db-user USER')");
    };
    let db_name = db_name
        .or_else(|| saved.filter(|s| s.db_user == db_user).map(|s| s.db_name))
        .unwrap_or_else(|| db_user.clone());
    for v in [&db_user, &db_name] {
        if !warden_policy::valid_db_identifier(v) {
            bail!(
                "{v:?} is not a plain database identifier (letters, digits, _ - . @ $; at most 63)"
            );
        }
    }
    Ok(Chosen { db_user, db_name })
}

/// The database's entry, from the service heard from last.
async fn find(store: &ProfileStore, p: &Profile, name: &str) -> anyhow::Result<DatabaseInfo> {
    let mut found: Vec<DatabaseInfo> = databases(store, p)
        .await?
        .into_iter()
        .filter(|d| d.name == name)
        .collect();
    found.sort_by_key(|d| std::cmp::Reverse(d.heartbeat));
    match found.into_iter().next() {
        Some(d) if matches!(d.protocol.as_str(), "postgres" | "mysql") => Ok(d),
        Some(d) => bail!(
            "database {name} speaks {}, which this client does not serve",
            d.protocol
        ),
        None => bail!("no database {name} that your roles reach; run 'warden db ls'"),
    }
}

async fn login(a: DbLoginArgs) -> anyhow::Result<()> {
    let (store, p) = profile()?;
    let db = find(&store, &p, &a.name).await?;
    let c = chosen(&store, &p, &db.name, a.db_user, a.db_name)?;
    let mut saved = Saved::load(&store);
    saved.0.insert(Saved::key(&p, &db.name), c.clone());
    let path = Saved::path(&store);
    std::fs::write(&path, serde_json::to_vec_pretty(&saved)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "Database {} will be opened as {} on {} (your roles are checked when you connect).\n  warden db connect {}\n  warden proxy db {} --port 15432",
        db.name, c.db_user, c.db_name, db.name, db.name
    );
    Ok(())
}

/// What every local connection needs to reach the database service.
struct Route {
    proxy: String,
    service: String,
    database: String,
    alpn: &'static [u8],
    mysql: bool,
}

fn alpn(db: &DatabaseInfo) -> &'static [u8] {
    match db.protocol.as_str() {
        "mysql" => warden_types::ALPN_DB_MYSQL,
        _ => warden_types::ALPN_DB_POSTGRES,
    }
}

impl Route {
    async fn new(store: &ProfileStore, p: &Profile, db: &DatabaseInfo) -> anyhow::Result<Self> {
        let route = Route {
            proxy: p.proxy.clone(),
            service: db.service.clone(),
            database: db.name.clone(),
            alpn: alpn(db),
            mysql: db.protocol == "mysql",
        };
        route.tls(store, p)?;
        Ok(route)
    }

    /// TLS with the profile's certificate as it is now: a long-running
    /// `warden proxy db` picks up a `warden login` or renewal.
    fn tls(&self, store: &ProfileStore, p: &Profile) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        // Checks the certificate's expiry with a message to act on.
        warden_client::login::auth_client(store, p)?;
        let cert = store.client_cert(p)?;
        let verifier = ClusterVerifier::new(store.trust(p)?);
        Ok(client_config(verifier, self.alpn, Some(&cert))?)
    }

    /// TLS through the proxy to the service (its certificate must name the
    /// service's id), and the database's name.
    async fn open(&self) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let (store, p) = profile()?;
        let config = self.tls(&store, &p)?;
        let tcp = tokio::net::TcpStream::connect(&self.proxy)
            .await
            .with_context(|| format!("cannot reach the proxy at {}", self.proxy))?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(self.service.clone())
            .context("the service id is not a name")?;
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .with_context(|| {
                format!(
                    "cannot open a TLS connection to database service {} through the proxy (is it online? 'warden db ls')",
                    self.service
                )
            })?;
        let hello = serde_json::json!({ "database": self.database });
        tls.write_all(format!("{hello}\n").as_bytes()).await?;
        tls.flush().await?;
        Ok(tls)
    }

    /// Carries one local connection.
    async fn carry<S>(self: Arc<Self>, mut local: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        match self.open().await {
            Ok(mut remote) => {
                let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                // The client shows this as the server's message.
                let msg = format!("warden: {e:#}");
                let refusal = match self.mysql {
                    true => warden_db::mysql::build::packet(
                        0,
                        &warden_db::mysql::err_packet(2013, "08S01", &msg),
                    ),
                    false => warden_db::postgres::fatal("08006", &msg),
                };
                let _ = local.write_all(&refusal).await;
                let _ = local.flush().await;
            }
        }
    }
}

async fn connect(a: DbConnectArgs) -> anyhow::Result<()> {
    let (store, p) = profile()?;
    let db = find(&store, &p, &a.name).await?;
    let c = chosen(&store, &p, &db.name, a.db_user, a.db_name)?;
    let route = Arc::new(Route::new(&store, &p, &db).await?);
    // A socket in a directory only this user can enter: other local users
    // cannot ride on this connection.
    let dir = tempfile_dir()?;
    let mysql = db.protocol == "mysql";
    let socket = dir.join(if mysql { "mysql.sock" } else { ".s.PGSQL.5432" });
    let listener = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    let mut client = if mysql {
        let mut cmd = tokio::process::Command::new("mysql");
        cmd.arg(format!("--socket={}", socket.display()))
            .arg(format!("--user={}", c.db_user))
            .arg(format!("--database={}", c.db_name));
        cmd
    } else {
        let mut cmd = tokio::process::Command::new("psql");
        cmd.arg(format!(
            "host={} port=5432 user={} dbname={} sslmode=disable application_name=warden",
            dir.display(),
            c.db_user,
            c.db_name
        ));
        cmd
    };
    let (program, package) = match mysql {
        true => ("mysql", "mariadb-client"),
        false => ("psql", "postgresql-client"),
    };
    let mut psql = client
        .args(&a.args)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {program} (install it: apt install {package})"))?;
    let status = loop {
        tokio::select! {
            s = psql.wait() => break s?,
            accepted = listener.accept() => {
                let (local, _) = accepted?;
                tokio::spawn(route.clone().carry(local));
            }
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::process::exit(status.code().unwrap_or(1));
}

/// A fresh directory, mode 0700, under the temporary directory.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let id = data_encoding::HEXLOWER.encode(&warden_ca::random_bytes::<8>());
    let dir = std::env::temp_dir().join(format!("warden-db-{id}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// `warden proxy db NAME`: a loopback port for GUI tools and drivers.
pub async fn proxy(a: DbProxyArgs) -> anyhow::Result<()> {
    let (store, p) = profile()?;
    let db = find(&store, &p, &a.name).await?;
    let c = chosen(&store, &p, &db.name, a.db_user, a.db_name).ok();
    let route = Arc::new(Route::new(&store, &p, &db).await?);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", a.port))?;
    let port = listener.local_addr()?.port();
    let (user, name) = (
        c.as_ref().map_or("USER", |c| c.db_user.as_str()),
        c.as_ref().map_or("DB", |c| c.db_name.as_str()),
    );
    let hint = match db.protocol.as_str() {
        "mysql" => format!("mysql --protocol=TCP -h 127.0.0.1 -P {port} -u {user} -D {name}"),
        _ => format!("psql 'host=127.0.0.1 port={port} user={user} dbname={name} sslmode=disable'"),
    };
    println!(
        "Serving database {} on 127.0.0.1:{port}; anyone on this machine who can reach that port connects as you. Connect with:\n  {hint}",
        db.name
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // Until interrupted (Ctrl-C's default action ends the process).
    loop {
        let (local, _) = listener.accept().await?;
        let _ = local.set_nodelay(true);
        tokio::spawn(route.clone().carry(local));
    }
}
