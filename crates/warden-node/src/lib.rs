//! The node agent: joins the cluster with a one-time token, keeps its host
//! certificates fresh, heartbeats into the inventory, and runs an SSH server
//! that trusts only the cluster's user CA and asks auth, with the user's
//! live roles, before every login.

mod forward;
mod identity;
mod pty;
mod session;
mod sshd;
mod unix;

pub use identity::{NodeIdentity, NODE_DIR};

use anyhow::Context;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use warden_types::api::Heartbeat;

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    /// The cluster's proxy, `host:port`.
    pub proxy: String,
    /// One-time join token (first start only).
    pub token: Option<String>,
    /// CA pin to verify the proxy on first contact.
    pub ca_pin: Option<String>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Where the SSH server listens.
    pub listen_addr: SocketAddr,
    /// Address advertised to the cluster (defaults to `listen_addr`).
    pub advertise_addr: Option<String>,
}

/// How often a node reports in.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);

/// Runs the node until `shutdown` completes.
pub async fn run(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for SSH; pass --listen-addr to pick another address",
                config.listen_addr
            )
        })?;
    let bound = listener.local_addr()?;
    let advertise = config.advertise_addr.clone().unwrap_or_else(|| {
        if bound.ip().is_unspecified() {
            format!("127.0.0.1:{}", bound.port())
        } else {
            bound.to_string()
        }
    });
    let identity =
        Arc::new(NodeIdentity::load_or_join(&config, std::slice::from_ref(&advertise)).await?);
    tracing::info!(node_id = %identity.node_id(), %advertise, "node SSH server listening");
    println!(
        "Node {} ({}) serving SSH on {advertise}.",
        config.name,
        identity.node_id()
    );
    let hb = Heartbeat {
        name: config.name.clone(),
        labels: config.labels.clone(),
        addrs: vec![advertise.clone()],
        version: warden_types::VERSION.to_string(),
    };
    let agent = identity.clone();
    let advertise_for_renew = vec![advertise];
    tokio::spawn(async move {
        loop {
            if let Err(e) = agent.heartbeat(&hb).await {
                tracing::warn!(error = %format!("{e:#}"), "heartbeat failed");
            }
            if let Err(e) = agent.renew_if_due(&advertise_for_renew).await {
                tracing::warn!(error = %format!("{e:#}"), "certificate renewal failed");
            }
            tokio::time::sleep(HEARTBEAT_EVERY).await;
        }
    });
    sshd::serve(identity, listener, shutdown).await
}
