//! `warden start`: run the auth and proxy services.

use anyhow::{bail, Context};
use clap::Args;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use warden_auth::AuthServer;
use warden_client::tls::ClientCert;
use warden_types::IdentityKind;

#[derive(Args)]
pub struct StartArgs {
    /// Read settings from this YAML file: its keys are these flags
    /// (`listen-addr: 0.0.0.0:3080`, `labels: [env=prod]`); flags and
    /// environment variables override it.
    #[arg(long, env = "WARDEN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the settings this start would run with (defaults, file,
    /// environment and flags combined) as a config file, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Services to run, comma-separated: auth, proxy, node, db (a node
    /// agent that serves the --db databases only, with no SSH logins).
    #[arg(long, value_delimiter = ',', default_value = "auth,proxy,node")]
    roles: Vec<String>,
    /// Where this service keeps its state [default: /var/lib/warden as
    /// root, else $XDG_DATA_HOME/warden].
    #[arg(long, env = "WARDEN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The public port: the proxy's [default: 0.0.0.0:3080]; for a node
    /// started alone, its SSH server's (without it, the node listens on no
    /// port and is reached through its tunnel to the proxy). Port 0 picks a
    /// free port.
    #[arg(long)]
    listen_addr: Option<SocketAddr>,
    /// The auth API (mTLS only); keep it private.
    #[arg(long, default_value = "127.0.0.1:3025")]
    auth_addr: SocketAddr,
    /// Address users reach the proxy at, HOST:PORT (repeatable); goes into
    /// the proxy's certificate. Defaults to 127.0.0.1 and this host's name.
    #[arg(long)]
    public_addr: Vec<String>,
    /// Cluster name, fixed at first start.
    #[arg(long)]
    cluster_name: Option<String>,
    #[command(flatten)]
    state: StateArgs,
    /// Auth: keep the CA keys in an HSM, through its PKCS#11 module (e.g.
    /// /usr/lib/softhsm/libsofthsm2.so). A new cluster's CA keys are
    /// generated inside the token (Ed25519, never extractable) and every
    /// signature is made there; the backend keeps only a reference.
    #[arg(
        long,
        env = "WARDEN_HSM_MODULE",
        value_name = "FILE",
        requires = "hsm_token"
    )]
    hsm_module: Option<std::path::PathBuf>,
    /// Auth: the label of the HSM token holding the CA keys.
    #[arg(
        long,
        env = "WARDEN_HSM_TOKEN",
        value_name = "LABEL",
        requires = "hsm_module"
    )]
    hsm_token: Option<String>,
    /// Auth: a file holding the token's user PIN (its first line)
    /// [default: the WARDEN_HSM_PIN environment variable].
    #[arg(long, value_name = "FILE", requires = "hsm_module")]
    hsm_pin_file: Option<std::path::PathBuf>,
    /// Auth: the algorithm of CA keys made in the HSM. `auto`: Ed25519
    /// where the token offers it, else ECDSA P-256 (both work with stock
    /// OpenSSH and every TLS client).
    #[arg(
        long,
        env = "WARDEN_HSM_KEY_TYPE",
        value_name = "TYPE",
        value_parser = ["auto", "ed25519", "ecdsa-p256"],
        default_value = "auto",
        requires = "hsm_module"
    )]
    hsm_key_type: String,
    /// Auth: let this auth server join a cluster whose CA keys its HSM does
    /// not hold: it adds a key of its own per CA, trusted at once, signing
    /// after the join's switch (paced like a rotation). Without it such a
    /// start is refused (a mistyped --hsm-token must not make new keys).
    #[arg(long, requires = "hsm_module")]
    hsm_join: bool,
    /// Auth: where session recordings go: the data dir, or
    /// s3://BUCKET/PREFIX?endpoint=http(s)://HOST:PORT&region=REGION
    /// (S3-compatible object storage, shared by every auth server; keys
    /// from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "WARDEN_RECORDINGS", value_name = "URL")]
    recordings: Option<String>,
    /// Proxy: the certificate chain (PEM) browsers get for the web UI, e.g.
    /// a publicly trusted one for the proxy's public name. Without it the
    /// proxy makes up a self-signed one at start (browsers warn). Warden's
    /// own clients always get the cluster-signed certificate their pin
    /// names.
    #[arg(long, value_name = "FILE", requires = "web_key")]
    web_cert: Option<PathBuf>,
    /// Proxy: the private key (PEM) of --web-cert; keep it 0600.
    #[arg(long, value_name = "FILE", requires = "web_cert")]
    web_key: Option<PathBuf>,
    /// Proxy on its own: the auth API to use, HOST:PORT; several
    /// (comma-separated) for failover: the first that answers serves.
    #[arg(long)]
    auth_server: Option<String>,
    /// Node: the cluster's proxy, HOST:PORT (not needed all-in-one); a new
    /// proxy joins through this one.
    #[arg(long, env = "WARDEN_PROXY", value_parser = crate::output::proxy_addr)]
    proxy: Option<String>,
    /// Node: one-time join token ('warden admin tokens add --type node').
    #[arg(long, env = "WARDEN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Node: read the join token from FILE (`-`: the first line of stdin)
    /// instead of --token, which other users can see in `ps`.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Node: the cluster's CA pin, verified on first contact.
    #[arg(long)]
    ca_pin: Option<String>,
    /// Node: its name in the inventory [default: this host's name].
    #[arg(long)]
    name: Option<String>,
    /// Node: labels, e.g. env=prod,team=db.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Node, all-in-one: where the local node's SSH server listens.
    #[arg(long, default_value = "127.0.0.1:3022")]
    node_listen_addr: SocketAddr,
    /// Node: the address to advertise for its SSH server, HOST:PORT.
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Serve /metrics (Prometheus), /healthz and /readyz here, e.g.
    /// 127.0.0.1:3000 (keep it private).
    #[arg(long)]
    diag_addr: Option<SocketAddr>,
    /// Node: a label from a command run periodically (repeatable), e.g.
    /// --label-cmd arch='uname -m'@1m.
    #[arg(long = "label-cmd", value_name = "KEY=CMD@PERIOD")]
    label_cmd: Vec<warden_node::LabelCommand>,
    /// Node or db service: a database to serve through the proxy
    /// (repeatable), e.g. --db 'pg1=postgres://127.0.0.1:5432?label.env=dev'.
    /// Options: label.KEY=VALUE, description=TEXT, ca=FILE (the CA of the
    /// database's server certificate; default: the cluster's database CA).
    #[arg(long = "db", value_name = "NAME=postgres://HOST:PORT[?OPTIONS]")]
    db: Vec<warden_node::db::DatabaseConfig>,
    /// On SIGHUP a new process takes over the listening sockets; this one
    /// serves its live sessions at most this long.
    #[arg(long, default_value = "10m")]
    drain_timeout: warden_types::duration::HumanDuration,
    /// Node: keep a tunnel only to --proxy, not to every proxy of the
    /// cluster (e.g. when the others are not reachable from this network).
    #[arg(long)]
    no_proxy_discovery: bool,
    /// Node: time between heartbeats; a node that misses three is shown
    /// offline. A node that is stopped (SIGTERM, Ctrl-C) leaves the
    /// inventory at once.
    #[arg(long, default_value = "30s")]
    heartbeat_interval: warden_types::duration::HumanDuration,
    /// Node: logins are decided from the users, roles, requests and locks
    /// auth pushes to the node; when the node has not heard from auth for
    /// longer than this, it asks auth for each login instead and refuses
    /// logins while auth cannot be reached (fails closed).
    #[arg(long, default_value = "2m")]
    policy_max_stale: warden_types::duration::HumanDuration,
}

fn parse_labels(items: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for item in items.iter().filter(|i| !i.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            bail!("invalid label {item:?}: use key=value, e.g. env=prod");
        };
        warden_types::resource::validate_name(k)
            .map_err(|e| anyhow::anyhow!("invalid label key: {e}"))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Binds the proxy's public port; returns it with the addresses users
/// reach it at (`--public-addr`, else 127.0.0.1 and the bound port).
async fn bind_proxy(
    a: &StartArgs,
    listeners: &mut Listeners,
) -> anyhow::Result<(TcpListener, SocketAddr, Vec<String>)> {
    let listen = a
        .listen_addr
        .unwrap_or_else(|| "0.0.0.0:3080".parse().expect("valid"));
    let listener = bind(listen, "proxy", "proxy", "--listen-addr", listeners).await?;
    let bound = listener.local_addr()?;
    let public_addrs = if a.public_addr.is_empty() {
        vec![format!("127.0.0.1:{}", bound.port())]
    } else {
        a.public_addr.clone()
    };
    Ok((listener, bound, public_addrs))
}

/// Listening sockets by name, for a graceful restart's handover.
type Listeners = Vec<(String, std::os::fd::RawFd)>;

/// Binds `addr`, or takes over the socket a predecessor handed over.
async fn bind(
    addr: SocketAddr,
    name: &str,
    what: &str,
    flag: &str,
    listeners: &mut Listeners,
) -> anyhow::Result<TcpListener> {
    let listener = match crate::handover::inherited(name) {
        Some(l) => TcpListener::from_std(l)?,
        None => TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} for the {what}; is another warden running? pass {flag} to pick another address")
        })?,
    };
    listeners.push((name.to_string(), crate::handover::fd_of(&listener)));
    Ok(listener)
}

pub async fn run(mut a: StartArgs) -> anyhow::Result<()> {
    // Caught from the first moment: a SIGHUP that arrives while starting
    // (or just after READY) must restart, never kill with the default action.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    warden_proxy::limits::raise_fd_limit();
    a.token = crate::prompt::token_from(a.token.take(), a.token_file.as_deref(), "join token")?;
    let data_dir = a.data_dir.clone().unwrap_or_else(crate::default_data_dir);
    for r in &a.roles {
        if !matches!(r.as_str(), "auth" | "proxy" | "node" | "db") {
            bail!("unknown service {r:?}: expected auth, proxy, node and/or db");
        }
    }
    let has = |r: &str| a.roles.iter().any(|x| x == r);
    if !a.db.is_empty() && !has("node") && !has("db") {
        bail!("--db needs a node or db service to serve it: --roles node (or db)");
    }
    if has("db") && a.db.is_empty() {
        bail!("a db service needs a database to serve: --db NAME=postgres://HOST:PORT");
    }
    if has("db") && has("auth") && !has("node") {
        bail!("serve databases from the all-in-one node (--roles auth,proxy,node --db ...), or start the db service as its own process (--roles db)");
    }
    // Without the node service, the agent serves databases only.
    let db_only = has("db") && !has("node");
    let beat = a.heartbeat_interval.0;
    if beat < std::time::Duration::from_secs(1) || beat > std::time::Duration::from_secs(300) {
        bail!("--heartbeat-interval must be between 1s and 300s");
    }
    // A bad web certificate or a key others may read stops the start
    // before anything is bound.
    if has("proxy") && a.web_cert.is_some() {
        web_cert(&a, &[])?;
    }
    let stale = a.policy_max_stale.0;
    if stale < std::time::Duration::from_secs(30) || stale > std::time::Duration::from_secs(3600) {
        bail!("--policy-max-stale must be between 30s (auth answers the node's watch at least every 25 s) and 1h");
    }
    // One process per data dir, refused before anything is bound or
    // written. A data dir without a lock file is locked once the ports
    // are bound, so a start whose ports are taken creates nothing.
    let early_lock = crate::datadir::DataDirLock::take(&data_dir, false)?;
    let lock_data_dir = |listeners: &mut Listeners| -> anyhow::Result<crate::datadir::DataDirLock> {
        let lock = match early_lock {
            Some(l) => l,
            None => crate::datadir::DataDirLock::take(&data_dir, true)?
                .context("the data dir lock was not created")?,
        };
        listeners.push((crate::datadir::HANDOVER_NAME.to_string(), lock.fd()));
        Ok(lock)
    };
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Whether the node leaves the inventory on shutdown: yes when stopped,
    // no when a successor process takes over.
    let leave = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut listeners = Listeners::new();
    if let Some(addr) = a.diag_addr {
        let listener = bind(addr, "diag", "diagnostics", "--diag-addr", &mut listeners).await?;
        tokio::spawn(serve_diag(listener, ready.clone()));
    }
    let labels = parse_labels(&a.labels)?;
    let name = a
        .name
        .clone()
        .or_else(hostname)
        .unwrap_or_else(|| "node".into());
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    if !has("auth") && has("proxy") {
        if has("node") {
            bail!("run a node next to a standalone proxy as its own process: --roles node");
        }
        let Some(auth_server) = a.auth_server.clone() else {
            bail!("a proxy on its own needs --auth-server HOST:PORT of the auth API");
        };
        let (listener, _, public_addrs) = bind_proxy(&a, &mut listeners).await?;
        let _lock = lock_data_dir(&mut listeners)?;
        let join = match (&a.proxy, &a.token, &a.ca_pin) {
            (Some(via), Some(token), Some(pin)) => Some(warden_proxy::Join {
                via: via.clone(),
                token: token.clone(),
                ca_pin: pin.clone(),
            }),
            _ => None,
        };
        let identity =
            warden_proxy::ProxyIdentity::load_or_join(&data_dir, join, public_addrs.clone())
                .await?;
        let cert = ClientCert {
            cert_pem: identity.tls_cert_pem.clone(),
            key_pkcs8: identity.key.pkcs8_der().to_vec(),
        };
        let auth_client = warden_client::login::direct_auth_client(
            &auth_server,
            identity.ca_pems.clone(),
            &cert,
        )?;
        let id = identity.id.clone();
        let renew = std::sync::Arc::new(warden_proxy::Joined::new(&data_dir));
        let web = web_cert(&a, &public_addrs)?;
        let proxy = warden_proxy::Proxy::new(auth_server, identity, auth_client, renew, web)?;
        println!("Proxy {id} serving on {}.", public_addrs[0]);
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        crate::handover::notify_systemd_ready();
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let task = tokio::spawn(proxy.serve(listener, wait(shutdown_rx.clone())));
        shutdown_signal().await;
        let _ = shutdown_tx.send(true);
        let _ = task.await;
        return Ok(());
    }
    if !has("auth") {
        // A node on its own: join the cluster through its proxy.
        let Some(proxy) = a.proxy.clone() else {
            bail!("a node needs --proxy HOST:PORT of the cluster (and --token, --ca-pin on first start)");
        };
        let _lock = lock_data_dir(&mut listeners)?;
        let config = warden_node::NodeConfig {
            data_dir,
            proxy,
            token: a.token.clone(),
            ca_pin: a.ca_pin.clone(),
            name,
            labels,
            // No --listen-addr: outbound only, reached through the tunnel.
            listen_addr: a.listen_addr.filter(|_| !db_only),
            listener: None,
            advertise_addr: a.advertise_addr.clone(),
            label_commands: a.label_cmd.clone(),
            proxy_discovery: !a.no_proxy_discovery,
            heartbeat_every: a.heartbeat_interval.0,
            policy_max_stale: a.policy_max_stale.0,
            leave_on_shutdown: leave.clone(),
            databases: a.db.clone(),
            db_only,
        };
        let mut node = tokio::spawn(warden_node::run(config, wait(shutdown_rx.clone())));
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        crate::handover::notify_systemd_ready();
        tokio::select! {
            r = &mut node => return r.map_err(|e| anyhow::anyhow!("node task failed: {e}"))?,
            _ = shutdown_signal() => {}
        }
        // Stopped: leave the inventory before exiting.
        leave.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = shutdown_tx.send(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), node).await;
        return Ok(());
    }

    // Every port first: a start that cannot listen creates no state.
    let auth_listener = bind(
        a.auth_addr,
        "auth",
        "auth API",
        "--auth-addr",
        &mut listeners,
    )
    .await?;
    let proxy_listener = match has("proxy") {
        true => Some(bind_proxy(&a, &mut listeners).await?),
        false => None,
    };
    let node_listener = match has("node") {
        true => Some(
            bind(
                a.node_listen_addr,
                "node",
                "node's SSH server",
                "--node-listen-addr",
                &mut listeners,
            )
            .await?
            .into_std()?,
        ),
        false => None,
    };
    let _lock = lock_data_dir(&mut listeners)?;
    let mut stores = a.state.stores(a.recordings.clone(), hsm_config(&a)?);
    stores.hsm_join = a.hsm_join;
    let auth = AuthServer::open(&data_dir, a.cluster_name.as_deref(), &stores)
        .await
        .with_context(|| format!("cannot open the cluster in {}", data_dir.display()))?;
    auth.spawn_audit_signer();
    auth.spawn_spool_delivery();
    auth.spawn_refusal_summaries();
    auth.spawn_rotation_driver();
    let auth_addr = auth_listener.local_addr()?;
    let auth_task = tokio::spawn(warden_auth::serve_mtls(
        auth.clone(),
        auth_listener,
        wait(shutdown_rx.clone()),
    ));

    let mut public = None;
    let mut proxy_task = None;
    if let Some((listener, bound, public_addrs)) = proxy_listener {
        let web = web_cert(&a, &public_addrs)?;
        let proxy = build_proxy(&auth, &data_dir, auth_addr, bound, &public_addrs, web).await?;
        public = Some(public_addrs[0].clone());
        proxy_task = Some(tokio::spawn(
            proxy.serve(listener, wait(shutdown_rx.clone())),
        ));
    }
    auth.keep_admin_identity(&data_dir, &auth_addr.to_string(), public.as_deref())
        .await
        .context("cannot write the admin identity")?;
    let pin = auth.ca_pin().await?;
    println!(
        "Warden {} cluster {:?} is running.",
        warden_types::VERSION,
        auth.cluster()
    );
    println!("  data dir:   {}", data_dir.display());
    println!("  auth:       {auth_addr} (mTLS)");
    if let Some(p) = &public {
        println!("  proxy:      {p}");
    }
    println!("  CA pin:     {pin}");

    let mut node_task = None;
    if node_listener.is_some() {
        let Some(proxy) = public.clone() else {
            bail!("an all-in-one node needs the proxy too: --roles auth,proxy,node");
        };
        // The local node joins like any other, through the proxy; it asks
        // for a token only on first start.
        let joined = data_dir
            .join(warden_node::NODE_DIR)
            .join("state.json")
            .exists();
        let token = if joined {
            None
        } else {
            // The host the node will advertise may be in its certificate.
            let advertised = a
                .advertise_addr
                .clone()
                .unwrap_or_else(|| a.node_listen_addr.to_string());
            let host = match advertised.rsplit_once(':') {
                Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
                None => advertised,
            };
            let host = if host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_unspecified())
            {
                "127.0.0.1".to_string()
            } else {
                host
            };
            // This machine's own name may be a dotted host name.
            Some(
                auth.create_node_token(
                    std::time::Duration::from_secs(300),
                    vec![host, name.clone()],
                )
                .await?,
            )
        };
        let config = warden_node::NodeConfig {
            data_dir: data_dir.clone(),
            proxy,
            token,
            ca_pin: Some(pin.clone()),
            name,
            labels,
            listen_addr: Some(a.node_listen_addr),
            listener: node_listener,
            advertise_addr: a.advertise_addr.clone(),
            label_commands: a.label_cmd.clone(),
            proxy_discovery: !a.no_proxy_discovery,
            heartbeat_every: a.heartbeat_interval.0,
            policy_max_stale: a.policy_max_stale.0,
            leave_on_shutdown: leave.clone(),
            databases: a.db.clone(),
            db_only,
        };
        node_task = Some(tokio::spawn(warden_node::run(
            config,
            wait(shutdown_rx.clone()),
        )));
    }
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    println!();
    crate::datadir::record(&data_dir);
    println!("Next: add a user (on this host, as the same OS user):");
    println!(
        "  warden admin{} users add alice --roles access --logins alice,root",
        crate::datadir::flag_for(&data_dir)
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();

    // systemd learns the new main process before the old one may exit.
    crate::handover::notify_systemd_ready();
    crate::datadir::write_pid(&data_dir);
    crate::handover::signal_ready();
    let mut handed_over = false;
    let node_done = async {
        match node_task {
            Some(t) => t.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(node_done);
    loop {
        tokio::select! {
            _ = hup.recv() => match crate::handover::start_successor(&listeners).await {
                Ok(pid) => {
                    println!("Handed over to process {pid}; draining live sessions.");
                    tracing::info!(pid, "successor is serving; draining");
                    handed_over = true;
                    break;
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "restart failed"),
            },
            r = &mut node_done => {
                let _ = shutdown_tx.send(true);
                r.map_err(|e| anyhow::anyhow!("node task failed: {e}"))??;
                break;
            }
            _ = shutdown_signal() => break,
        }
    }
    // Stop accepting; live sessions go on.
    ready.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = shutdown_tx.send(true);
    if handed_over {
        let deadline = std::time::Instant::now() + a.drain_timeout.0;
        while warden_types::metrics::METRICS.active_connections.get() > 0
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        tracing::info!("drained; exiting");
        return Ok(());
    }
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = auth_task.await;
    if let Some(t) = proxy_task {
        let _ = t.await;
    }
    Ok(())
}

/// The diagnostics endpoint: metrics and health for load balancers and
/// Prometheus.
async fn serve_diag(listener: TcpListener, ready: Arc<std::sync::atomic::AtomicBool>) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    warden_types::metrics::METRICS.render(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(std::sync::atomic::Ordering::Relaxed);
                // Spooling auth events still serves: it stays in rotation,
                // and says why its metric is not 0.
                let m = &warden_types::metrics::METRICS;
                let spooled = m.audit_spooled.get();
                let recordings = m.recording_store_failing.get() > 0;
                async move {
                    if !ready {
                        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_string());
                    }
                    let mut notes = Vec::new();
                    if spooled > 0 {
                        notes.push(format!(
                            "audit log unreachable: {spooled} event(s) kept in the local spool"
                        ));
                    }
                    if recordings {
                        notes.push(
                            "recording store unavailable: recordings wait in the nodes' spools"
                                .to_string(),
                        );
                    }
                    if notes.is_empty() {
                        (StatusCode::OK, "ready\n".to_string())
                    } else {
                        (StatusCode::OK, format!("ready; {}\n", notes.join("; ")))
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "diagnostics server failed");
    }
}

/// SIGTERM or Ctrl-C. A SIGHUP here (a node or proxy on its own, which
/// hands nothing over) is logged and ignored rather than ending the
/// process: graceful restarts belong to processes that run auth.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::warn!("SIGHUP ignored: a node or proxy on its own restarts with 'systemctl restart' (its sessions end; nodes' users reconnect)");
            }
        }
    }
}

/// Issues the proxy's identity and builds its TLS configs.
async fn build_proxy(
    auth: &AuthServer,
    data_dir: &std::path::Path,
    auth_addr: SocketAddr,
    bound: SocketAddr,
    public_addrs: &[String],
    web: warden_proxy::WebCert,
) -> anyhow::Result<warden_proxy::Proxy> {
    let mut dns = vec!["localhost".to_string()];
    dns.extend(hostname());
    let mut ips: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
    if !bound.ip().is_unspecified() {
        ips.push(bound.ip());
    }
    for p in public_addrs {
        let host = warden_client::http::host_of(p);
        match host.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(host.to_string()),
        }
    }
    dns.sort();
    dns.dedup();
    ips.sort();
    ips.dedup();
    // A stable id, so this proxy's heartbeats replace their predecessors.
    let id_file = data_dir.join("proxy_id");
    let proxy_id = match std::fs::read_to_string(&id_file) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            std::fs::write(&id_file, &id)?;
            id
        }
    };
    let local = LocalProxy {
        auth: auth.clone(),
        id: proxy_id,
        public_addrs: public_addrs.to_vec(),
        dns,
        ips,
    };
    let identity = local.issue().await?;
    let cert = ClientCert {
        cert_pem: identity.tls_cert_pem.clone(),
        key_pkcs8: identity.key.pkcs8_der().to_vec(),
    };
    let auth_client = warden_client::login::direct_auth_client(
        &auth_addr.to_string(),
        identity.ca_pems.clone(),
        &cert,
    )?;
    warden_proxy::Proxy::new(
        auth_addr.to_string(),
        identity,
        auth_client,
        std::sync::Arc::new(local),
        web,
    )
}

/// The certificate browsers get: the operator's, else a self-signed one
/// for the proxy's public names (and this host's).
fn web_cert(a: &StartArgs, public_addrs: &[String]) -> anyhow::Result<warden_proxy::WebCert> {
    if let (Some(cert), Some(key)) = (&a.web_cert, &a.web_key) {
        if let Err(e) = warden_ca::keystore::check_private_mode(key) {
            anyhow::bail!("--web-key {}: {e}", key.display());
        }
        return warden_proxy::WebCert::load(cert, key);
    }
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend(hostname());
    names.extend(
        public_addrs
            .iter()
            .map(|p| warden_client::http::host_of(p).to_string()),
    );
    names.retain(|n| n != "0.0.0.0" && n != "::");
    names.sort();
    names.dedup();
    warden_proxy::WebCert::self_signed(&names)
}

/// The all-in-one proxy's identity, issued in process by its auth server
/// (at start and whenever a CA rotates).
struct LocalProxy {
    auth: AuthServer,
    id: String,
    public_addrs: Vec<String>,
    dns: Vec<String>,
    ips: Vec<IpAddr>,
}

impl LocalProxy {
    async fn issue(&self) -> anyhow::Result<warden_proxy::ProxyIdentity> {
        // Read first: certificates issued meanwhile are at least this new,
        // and a later step is noticed and renews again.
        let ca_generation = self.auth.ca_generation().await?;
        let id = self
            .auth
            .issue_service_identity(
                IdentityKind::Proxy,
                &self.id,
                self.dns.clone(),
                self.ips.clone(),
                warden_auth::SERVICE_CERT_TTL,
            )
            .await?;
        let mut principals = self.dns.clone();
        principals.extend(self.ips.iter().map(|ip| ip.to_string()));
        let ssh_host_cert = self
            .auth
            .proxy_host_cert(&id.key.ssh_public_key().to_openssh()?, principals)
            .await?;
        Ok(warden_proxy::ProxyIdentity {
            id: self.id.clone(),
            public_addrs: self.public_addrs.clone(),
            key: id.key,
            tls_cert_pem: id.cert_pem,
            ca_pems: id.ca_pems,
            ssh_host_cert,
            ca_generation,
        })
    }
}

impl warden_proxy::Renew for LocalProxy {
    fn renew<'a>(
        &'a self,
        _current: &'a warden_proxy::ProxyIdentity,
        _auth: &'a warden_client::ApiClient,
    ) -> warden_proxy::BoxFuture<'a, anyhow::Result<warden_proxy::ProxyIdentity>> {
        Box::pin(self.issue())
    }
}

/// Where the cluster state lives (auth): the flags `warden start` and
/// `warden admin restore` share.
#[derive(clap::Args, Clone, Debug)]
pub struct StateArgs {
    /// Auth: the cluster state store. `sqlite` (state.db in the data dir)
    /// or postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE, shared by every
    /// auth server of the cluster [default: sqlite].
    #[arg(
        long,
        env = "WARDEN_BACKEND",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub backend: Option<String>,
    /// Auth: the audit log. `sqlite` (audit.db in the data dir) or
    /// postgres://... [default: the --backend database when it is
    /// PostgreSQL, else sqlite].
    #[arg(
        long,
        env = "WARDEN_AUDIT_LOG",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub audit_log: Option<String>,
    /// Auth: the key-encryption key that seals the CA keys in the backend.
    /// Every auth server sharing a backend needs the same one: copy the
    /// first auth server's DATA_DIR/kek [default: DATA_DIR/kek, created on
    /// first start].
    #[arg(long, env = "WARDEN_KEK_FILE", value_name = "FILE")]
    pub kek_file: Option<std::path::PathBuf>,
}

impl StateArgs {
    /// The stores these flags name.
    pub fn stores(
        &self,
        recordings: Option<String>,
        hsm: Option<warden_ca::pkcs11::HsmConfig>,
    ) -> warden_auth::StoreConfig {
        warden_auth::StoreConfig {
            backend: self.backend.clone(),
            audit_log: self.audit_log.clone(),
            kek_file: self.kek_file.clone(),
            recordings,
            hsm,
            hsm_join: false,
        }
    }
}

/// The HSM named by `--hsm-*`, with its PIN read.
fn hsm_config(a: &StartArgs) -> anyhow::Result<Option<warden_ca::pkcs11::HsmConfig>> {
    let (Some(module), Some(token)) = (&a.hsm_module, &a.hsm_token) else {
        return Ok(None);
    };
    // The environment variable stays set: removing it while other threads
    // run is not sound; --hsm-pin-file keeps it out of child processes.
    let pin = crate::prompt::secret_from_file_or_env(
        a.hsm_pin_file.as_deref(),
        "--hsm-pin-file",
        "WARDEN_HSM_PIN",
        "--hsm-module needs the token's PIN: --hsm-pin-file FILE or WARDEN_HSM_PIN",
    )?;
    let key_type = match a.hsm_key_type.as_str() {
        "ed25519" => Some(warden_ca::KeyAlg::Ed25519),
        "ecdsa-p256" => Some(warden_ca::KeyAlg::EcdsaP256),
        _ => None,
    };
    Ok(Some(warden_ca::pkcs11::HsmConfig {
        key_type,
        module: module.clone(),
        token: token.clone(),
        pin,
    }))
}
