//! The node agent: joins the cluster with a one-time token, keeps its host
//! certificates fresh, heartbeats into the inventory, and runs an SSH server
//! that trusts only the cluster's user CA and asks auth, with the user's
//! live roles, before every login.

pub mod db;
mod forward;
mod identity;
mod locks;
mod policy;
mod pty;
mod recording;
mod session;
mod sftp_audit;
mod sshd;
mod tunnel;
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
#[derive(Debug)]
pub struct NodeConfig {
    /// An already bound SSH listener (a graceful restart hands it over);
    /// used instead of binding `listen_addr`.
    pub listener: Option<std::net::TcpListener>,
    pub data_dir: PathBuf,
    /// The cluster's proxy, `host:port`.
    pub proxy: String,
    /// One-time join token (first start only).
    pub token: Option<String>,
    /// CA pin to verify the proxy on first contact.
    pub ca_pin: Option<String>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Where the SSH server listens; `None`: no listening port at all, the
    /// node is reached through its reverse tunnel only (behind NAT).
    pub listen_addr: Option<SocketAddr>,
    /// Address advertised to the cluster (defaults to `listen_addr`).
    pub advertise_addr: Option<String>,
    /// Labels whose values come from commands run periodically.
    pub label_commands: Vec<LabelCommand>,
    /// Keep a tunnel to every proxy of the cluster, not only `proxy`.
    pub proxy_discovery: bool,
    /// Time between heartbeats; three missed ones show the node offline.
    pub heartbeat_every: Duration,
    /// How long logins may be decided from the policy auth last pushed;
    /// past it, the node asks auth per login and fails closed without it.
    pub policy_max_stale: Duration,
    /// Set before shutdown when the node should leave the inventory (a
    /// stop); left unset when a successor process takes over.
    pub leave_on_shutdown: Arc<std::sync::atomic::AtomicBool>,
    /// Databases served through the tunnel (`--db`).
    pub databases: Vec<db::DatabaseConfig>,
    /// Serve databases only: take no SSH logins (`--roles db`).
    pub db_only: bool,
}

/// `--label-cmd arch='uname -m'@1m`: a label refreshed from a command.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelCommand {
    pub key: String,
    pub command: String,
    pub every: Duration,
}

impl std::str::FromStr for LabelCommand {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || {
            format!("invalid --label-cmd {s:?}: use KEY='COMMAND'@PERIOD, e.g. arch='uname -m'@1m")
        };
        let (key, rest) = s.split_once('=').ok_or_else(usage)?;
        let (command, every) = match rest.rsplit_once('@') {
            Some((c, p)) if humantime::parse_duration(p).is_ok() => {
                (c, humantime::parse_duration(p).map_err(|_| usage())?)
            }
            _ => (rest, Duration::from_secs(60)),
        };
        let command = command.trim().trim_matches('\'').to_string();
        warden_types::resource::validate_name(key).map_err(|e| format!("{}: {e}", usage()))?;
        if command.is_empty() || every < Duration::from_secs(1) {
            return Err(usage());
        }
        Ok(LabelCommand {
            key: key.to_string(),
            command,
            every,
        })
    }
}

/// Runs a label command: its first output line, bounded, or an error.
async fn run_label_command(cmd: &str) -> Result<String, String> {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| "timed out after 30s".to_string())?
    .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("exited with {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .take(128)
        .collect())
}

/// The default time between heartbeats.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);

/// Runs the node until `shutdown` completes.
pub async fn run(
    mut config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener = match (config.listener.take(), config.listen_addr) {
        (Some(l), _) => Some(TcpListener::from_std(l)?),
        (None, Some(addr)) => Some(TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} for SSH; pass --listen-addr to pick another address")
        })?),
        (None, None) => None,
    };
    let advertise: Vec<String> = match (&listener, &config.advertise_addr) {
        (_, Some(a)) => vec![a.clone()],
        (Some(l), None) => {
            let bound = l.local_addr()?;
            vec![if bound.ip().is_unspecified() {
                format!("127.0.0.1:{}", bound.port())
            } else {
                bound.to_string()
            }]
        }
        (None, None) => vec![],
    };
    let identity = Arc::new(NodeIdentity::load_or_join(&config, &advertise).await?);
    match advertise.first() {
        Some(a) => {
            tracing::info!(node_id = %identity.node_id(), advertise = %a, "node SSH server listening");
            println!(
                "Node {} ({}) serving SSH on {a}.",
                config.name,
                identity.node_id()
            );
        }
        None => println!(
            "Node {} ({}) has no listening port; reachable through the proxy at {}.",
            config.name,
            identity.node_id(),
            config.proxy
        ),
    }
    tokio::spawn(locks::enforce(identity.clone(), config.name.clone()));
    tokio::spawn(policy::follow(identity.clone(), config.name.clone()));
    tokio::spawn(recording::upload_loop(identity.clone()));
    {
        let identity = identity.clone();
        tokio::spawn(warden_store::spool::deliver_loop(
            identity.events.clone(),
            "auth",
            move |events| {
                let identity = identity.clone();
                async move {
                    identity
                        .send_events(&events)
                        .await
                        .map_err(|e| format!("{e:#}"))
                }
            },
        ));
    }
    tokio::spawn(tunnel::keep_tunnels(
        identity.clone(),
        config.proxy.clone(),
        config.proxy_discovery,
    ));
    // Heartbeats report these labels; logins are decided against them.
    let labels = identity.policy.labels.clone();
    let changed = Arc::new(tokio::sync::Notify::new());
    for lc in config.label_commands.clone() {
        let labels = labels.clone();
        let changed = changed.clone();
        tokio::spawn(async move {
            loop {
                let value = match run_label_command(&lc.command).await {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(label = %lc.key, error = %e, "label command failed");
                        format!("error: {e}").chars().take(128).collect()
                    }
                };
                let old = labels
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(lc.key.clone(), value.clone());
                if old.as_deref() != Some(value.as_str()) {
                    changed.notify_one();
                }
                tokio::time::sleep(lc.every).await;
            }
        });
    }
    let agent = identity.clone();
    let name = config.name.clone();
    let advertise_for_renew = advertise.clone();
    let every = config.heartbeat_every;
    let heartbeats = tokio::spawn(async move {
        loop {
            let hb = Heartbeat {
                name: name.clone(),
                labels: labels.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                addrs: advertise.clone(),
                version: warden_types::VERSION.to_string(),
                every_secs: Some(every.as_secs().max(1)),
                ca_generation: String::new(),
                databases: agent.db.heartbeat(),
                db_only: agent.db.only,
            };
            let rotated = match agent.heartbeat(&hb).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "heartbeat failed");
                    false
                }
            };
            if rotated {
                tracing::info!(
                    "the cluster's CA keys changed: renewing the certificates and trust"
                );
            }
            if let Err(e) = agent.renew_if_due(&advertise_for_renew, rotated).await {
                tracing::warn!(error = %format!("{e:#}"), "certificate renewal failed");
            }
            // A changed dynamic label is reported at once.
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = changed.notified() => {}
            }
        }
    });
    let served = match listener {
        Some(l) => sshd::serve(identity.clone(), l, shutdown).await,
        None => {
            shutdown.await;
            Ok(())
        }
    };
    heartbeats.abort();
    if config
        .leave_on_shutdown
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        // Shown gone at once rather than after three missed heartbeats.
        match tokio::time::timeout(Duration::from_secs(3), identity.leave()).await {
            Ok(Ok(())) => tracing::info!("left the inventory"),
            Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "cannot leave the inventory"),
            Err(_) => tracing::warn!("cannot leave the inventory: auth did not answer"),
        }
    }
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_commands_parse() {
        let lc: LabelCommand = "arch='uname -m'@1m".parse().unwrap();
        assert_eq!(
            lc,
            LabelCommand {
                key: "arch".into(),
                command: "uname -m".into(),
                every: Duration::from_secs(60)
            }
        );
        let lc: LabelCommand = "load=cat /proc/loadavg".parse().unwrap();
        assert_eq!(lc.every, Duration::from_secs(60));
        let lc: LabelCommand = "mail=echo a@b@30s".parse().unwrap();
        assert_eq!(
            (lc.command.as_str(), lc.every),
            ("echo a@b", Duration::from_secs(30))
        );
        assert!("nokey".parse::<LabelCommand>().is_err());
        assert!("a b=x".parse::<LabelCommand>().is_err());
        assert!("k=".parse::<LabelCommand>().is_err());
    }
}
