//! `warden start`: run the auth and proxy services.

use anyhow::{bail, Context};
use clap::Args;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use time::Duration;
use tokio::net::TcpListener;
use warden_auth::AuthServer;
use warden_ca::tls::pem_to_der;
use warden_client::tls::ClientCert;
use warden_types::IdentityKind;

#[derive(Args)]
pub struct StartArgs {
    /// Services to run, comma-separated: auth, proxy.
    #[arg(long, value_delimiter = ',', default_value = "auth,proxy")]
    roles: Vec<String>,
    /// Where the cluster state lives [default: /var/lib/warden as root, else
    /// $XDG_DATA_HOME/warden].
    #[arg(long, env = "WARDEN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The proxy's public port (port 0 picks a free one).
    #[arg(long, default_value = "0.0.0.0:3080")]
    listen_addr: SocketAddr,
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
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

async fn bind(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for the {what}; is another warden running? pass {flag} to pick another address")
    })
}

pub async fn run(a: StartArgs) -> anyhow::Result<()> {
    let data_dir = a.data_dir.clone().unwrap_or_else(crate::default_data_dir);
    for r in &a.roles {
        match r.as_str() {
            "auth" | "proxy" => {}
            "node" => {
                bail!("the node service is not part of this build yet; run --roles auth,proxy")
            }
            other => bail!("unknown service {other:?}: expected auth and/or proxy"),
        }
    }
    if !a.roles.iter().any(|r| r == "auth") {
        bail!("a proxy without a local auth service (joining by token) is not supported yet; add auth to --roles");
    }
    let run_proxy = a.roles.iter().any(|r| r == "proxy");

    let auth = AuthServer::open(&data_dir, a.cluster_name.as_deref())
        .await
        .with_context(|| format!("cannot open the cluster in {}", data_dir.display()))?;
    let auth_listener = bind(a.auth_addr, "auth API", "--auth-addr").await?;
    let auth_addr = auth_listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let auth_task = tokio::spawn(warden_auth::serve_mtls(
        auth.clone(),
        auth_listener,
        wait(shutdown_rx.clone()),
    ));

    let mut public = None;
    let mut proxy_task = None;
    if run_proxy {
        let listener = bind(a.listen_addr, "proxy", "--listen-addr").await?;
        let bound = listener.local_addr()?;
        let public_addrs = if a.public_addr.is_empty() {
            vec![format!("127.0.0.1:{}", bound.port())]
        } else {
            a.public_addr.clone()
        };
        let proxy = build_proxy(&auth, auth_addr, bound, &public_addrs).await?;
        public = Some(public_addrs[0].clone());
        proxy_task = Some(tokio::spawn(
            proxy.serve(listener, wait(shutdown_rx.clone())),
        ));
    }
    auth.write_admin_identity(&data_dir, &auth_addr.to_string(), public.as_deref())
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
    println!();
    println!("Next: add a user (on this host, as the same OS user):");
    println!("  warden admin users add alice --roles access --logins alice,root");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = auth_task.await;
    if let Some(t) = proxy_task {
        let _ = t.await;
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Issues the proxy's identity and builds its TLS configs.
async fn build_proxy(
    auth: &AuthServer,
    auth_addr: SocketAddr,
    bound: SocketAddr,
    public_addrs: &[String],
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
    let id = auth
        .issue_service_identity(IdentityKind::Proxy, "proxy", dns, ips, Duration::days(365))
        .await?;
    let mut chain = pem_to_der(&id.cert_pem)?;
    chain.extend(pem_to_der(&id.ca_pems[0])?);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.pkcs8_der().to_vec()));
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("proxy TLS config")?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let cert = ClientCert {
        cert_pem: id.cert_pem.clone(),
        key_pkcs8: id.key.pkcs8_der().to_vec(),
    };
    let auth_client = warden_client::login::direct_auth_client(
        &auth_addr.to_string(),
        id.ca_pems.clone(),
        &cert,
    )?;
    Ok(warden_proxy::Proxy {
        auth_addr: auth_addr.to_string(),
        tls: Arc::new(tls),
        auth: auth_client,
    })
}
