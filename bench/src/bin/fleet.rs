//! A fleet of simulated nodes on real reverse tunnels to one proxy: each
//! joins with its own token and certificate, heartbeats into the inventory
//! and keeps a TLS + SSH tunnel open. Reports the proxy's memory per idle
//! tunnel and the time to reach a random node through the jump host.
//!
//! Usage: fleet DATA_DIR PROXY PROXY_PID N USER_KEY USER_CERT

use russh::client::{self, Msg, Session};
use russh::keys::{Certificate, PrivateKey, PublicKeyOrCertificate};
use russh::Channel;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warden_ca::ClientKey;
use warden_client::login::{direct_auth_client, public_client};
use warden_client::tls::{ClientCert, ClusterVerifier, Trust};
use warden_types::api::{
    AdminConfig, CreateTokenRequest, CreateTokenResponse, Heartbeat, JoinRequest, NodeCerts,
};
use warden_types::endpoints;
use warden_types::TokenKind;

/// A simulated node answers each session with an SSH banner, then idles.
struct SimNode;

impl client::Handler for SimNode {
    type Error = russh::Error;
    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        _: &str,
        _: u32,
        _: &str,
        _: u32,
        reply: client::ChannelOpenHandle,
        _: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        tokio::spawn(async move {
            let mut s = channel.into_stream();
            let _ = s.write_all(b"SSH-2.0-warden_sim\r\n").await;
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
        Ok(())
    }
}

struct Trusting;

impl client::Handler for Trusting {
    type Error = russh::Error;
    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn sim_node(
    i: usize,
    admin: warden_client::ApiClient,
    proxy: String,
    ca_pems: Vec<String>,
) -> anyhow::Result<client::Handle<SimNode>> {
    let tok: CreateTokenResponse = admin
        .call(
            &endpoints::CREATE_TOKEN,
            &CreateTokenRequest {
                kind: TokenKind::Node,
                ttl_secs: 3600,
                user: None,
                addrs: vec![],
                replace: false,
            },
        )
        .await?;
    let key = ClientKey::generate();
    let name = format!("sim-{i}");
    let certs: NodeCerts = public_client(&proxy, Trust::Roots(ca_pems.clone()))?
        .call(
            &endpoints::JOIN,
            &JoinRequest {
                token: tok.token,
                name: name.clone(),
                ssh_public_key: key.ssh_public_key().to_openssh()?,
                tls_csr_pem: key.csr_pem(&name)?,
                addrs: vec![],
                kind: TokenKind::Node,
            },
        )
        .await?;
    let cert = ClientCert {
        cert_pem: certs.tls_cert_pem.clone(),
        key_pkcs8: key.pkcs8_der().to_vec(),
    };
    let api = direct_auth_client(&proxy, ca_pems.clone(), &cert)?;
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(
        "env".to_string(),
        if i % 2 == 0 { "prod" } else { "dev" }.to_string(),
    );
    let _: warden_types::api::HeartbeatAck = api
        .call(
            &endpoints::NODE_HEARTBEAT,
            &Heartbeat {
                name,
                labels,
                addrs: vec![],
                version: "sim".into(),
                every_secs: None,
                ca_generation: String::new(),
                databases: vec![],
                db_only: false,
            },
        )
        .await?;
    let tls_config = warden_client::tls::client_config(
        ClusterVerifier::new(Trust::Roots(ca_pems)),
        warden_types::ALPN_TUNNEL,
        Some(&cert),
    )?;
    let host = warden_client::http::host_of(&proxy).to_string();
    let tcp = tokio::net::TcpStream::connect(&proxy).await?;
    let tls = tokio_rustls::TlsConnector::from(tls_config)
        .connect(rustls::pki_types::ServerName::try_from(host)?, tcp)
        .await?;
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        ..Default::default()
    });
    let mut handle = client::connect_stream(config, tls, SimNode).await?;
    anyhow::ensure!(
        handle.authenticate_none(certs.node_id).await?.success(),
        "tunnel refused"
    );
    Ok(handle)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 7,
        "usage: fleet DATA_DIR PROXY PROXY_PID N USER_KEY USER_CERT"
    );
    let data = std::path::PathBuf::from(&args[1]).join("admin");
    let (proxy, pid, n) = (args[2].clone(), args[3].clone(), args[4].parse::<usize>()?);
    let read = |f: &str| std::fs::read_to_string(data.join(f));
    let config: AdminConfig = serde_json::from_str(&read("config.json")?)?;
    let ca = read("ca.pem")?;
    let admin_key = ClientKey::from_openssh(&read("identity")?)?;
    let admin = direct_auth_client(
        &config.auth_addr,
        vec![ca.clone()],
        &ClientCert {
            cert_pem: read("identity.crt")?,
            key_pkcs8: admin_key.pkcs8_der().to_vec(),
        },
    )?;
    let before = rss_kib(&pid);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(n);
    let mut pending = tokio::task::JoinSet::new();
    let mut next = 0;
    while handles.len() < n {
        while pending.len() < 32 && next < n {
            pending.spawn(sim_node(
                next,
                admin.clone(),
                proxy.clone(),
                vec![ca.clone()],
            ));
            next += 1;
        }
        match pending.join_next().await {
            Some(Ok(Ok(h))) => handles.push(h),
            Some(Ok(Err(e))) => anyhow::bail!("node failed: {e:#}"),
            Some(Err(e)) => anyhow::bail!("task failed: {e}"),
            None => break,
        }
    }
    println!(
        "fleet.nodes {n} joined and tunnelled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(&pid);
    println!(
        "fleet.proxy_rss_per_tunnel_kib {:.1} (proxy+auth process, {} KiB for {n})",
        after.saturating_sub(before) as f64 / n as f64,
        after.saturating_sub(before)
    );

    // Time to reach a random node's banner through the jump host.
    let key = Arc::new(PrivateKey::from_openssh(std::fs::read_to_string(
        &args[5],
    )?)?);
    let cert = Certificate::from_openssh(std::fs::read_to_string(&args[6])?.trim())?;
    let mut times = Vec::new();
    for k in 0..20 {
        let target = format!("sim-{}", (k * 7919) % n);
        let t0 = Instant::now();
        let mut session = client::connect(
            Arc::new(client::Config::default()),
            proxy.as_str(),
            Trusting,
        )
        .await?;
        anyhow::ensure!(session
            .authenticate_openssh_cert("bench", key.clone(), cert.clone())
            .await?
            .success());
        let channel = session
            .channel_open_direct_tcpip(target.clone(), 22, "127.0.0.1", 0)
            .await?;
        let mut stream = channel.into_stream();
        let mut buf = [0u8; 64];
        let got = stream.read(&mut buf).await?;
        anyhow::ensure!(
            buf[..got].starts_with(b"SSH-2.0-warden_sim"),
            "no banner from {target}"
        );
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "fleet.connect_random_node_ms median {:.1} p90 {:.1}",
        times[times.len() / 2],
        times[times.len() * 9 / 10]
    );
    // Hold the fleet so `warden ls` can be timed against it.
    let hold = std::env::var("FLEET_HOLD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    tokio::time::sleep(Duration::from_secs(hold)).await;
    drop(handles);
    Ok(())
}
