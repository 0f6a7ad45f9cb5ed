//! The node's identity: joined once with a token, persisted in the data dir
//! (so a restart keeps the same node id), renewed before expiry.

use crate::NodeConfig;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use warden_ca::keystore::write_private_file;
use warden_ca::ClientKey;
use warden_client::login::{direct_auth_client, public_client};
use warden_client::tls::{ClientCert, Trust};
use warden_client::ApiClient;
use warden_types::api::{
    AccessCheckRequest, AccessCheckResponse, Heartbeat, HeartbeatAck, JoinRequest, NodeCerts,
    RenewNodeRequest,
};
use warden_types::audit::AuditEvent;
use warden_types::endpoints;
use warden_types::Secret;

/// Sub-directory of the data dir with the node's identity.
pub const NODE_DIR: &str = "node";

#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    node_id: String,
    name: String,
    cluster: String,
}

/// A joined node's keys and certificates.
pub struct NodeIdentity {
    dir: PathBuf,
    proxy: String,
    key: ClientKey,
    state: State,
    certs: RwLock<NodeCerts>,
    /// Live connections, for ending them on a lock.
    pub registry: crate::locks::Registry,
    /// Session recordings waiting for upload.
    pub spool: crate::recording::Spool,
    /// Audit events waiting for auth.
    pub events: warden_store::EventSpool,
    /// The auth client of the current certificate, with its kept-alive
    /// connections; rebuilt when the certificate rotates.
    api: std::sync::Mutex<Option<(String, ApiClient)>>,
    /// The users, roles, requests and locks logins are decided from.
    pub policy: crate::policy::PolicyCache,
    /// The databases this agent serves, and their live connections.
    pub db: crate::db::DbService,
}

fn open_events(data_dir: &Path) -> anyhow::Result<warden_store::EventSpool> {
    let dir = data_dir.join(NODE_DIR).join("events");
    warden_store::EventSpool::open(&dir)
        .with_context(|| format!("cannot open the audit event spool {}", dir.display()))
}

/// An answer, or `None` from an auth server without the endpoint (older
/// than this node, during a rolling upgrade).
fn absent_on_404<T>(r: Result<T, warden_client::ClientError>) -> anyhow::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(warden_client::ClientError::Api { status: 404, .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

impl NodeIdentity {
    /// Loads the identity in `<data-dir>/node`, or joins with the token.
    pub async fn load_or_join(config: &NodeConfig, addrs: &[String]) -> anyhow::Result<Self> {
        let dir = config.data_dir.join(NODE_DIR);
        if dir.join("state.json").exists() {
            let state: State = serde_json::from_str(&read(&dir.join("state.json"))?)?;
            let certs: NodeCerts = serde_json::from_str(&read(&dir.join("certs.json"))?)?;
            let key = ClientKey::from_openssh(&read(&dir.join("key"))?)?;
            let id = NodeIdentity {
                dir,
                proxy: config.proxy.clone(),
                key,
                state,
                certs: RwLock::new(certs),
                registry: Default::default(),
                db: crate::db::DbService::new(config.databases.clone(), config.db_only),
                spool: crate::recording::Spool::new(
                    &config.data_dir.join(NODE_DIR).join("recordings"),
                ),
                events: open_events(&config.data_dir)?,
                api: Default::default(),
                policy: crate::policy::PolicyCache::new(
                    config.policy_max_stale,
                    config.labels.clone(),
                ),
            };
            return Ok(id);
        }
        let Some(token) = &config.token else {
            bail!(
                "this node has not joined a cluster yet: pass --token (from 'warden admin tokens add --type node') and --ca-pin"
            );
        };
        let Some(pin) = &config.ca_pin else {
            bail!("pass --ca-pin to verify the cluster on first contact ('warden admin tokens add' prints it)");
        };
        let key = ClientKey::generate();
        let req = JoinRequest {
            token: Secret::new(token.clone()),
            name: config.name.clone(),
            ssh_public_key: key.ssh_public_key().to_openssh()?,
            tls_csr_pem: key.csr_pem(&config.name)?,
            addrs: addrs.to_vec(),
            kind: warden_types::TokenKind::Node,
        };
        let certs: NodeCerts = public_client(&config.proxy, Trust::Pin(pin.clone()))?
            .call(&endpoints::JOIN, &req)
            .await
            .context("cannot join the cluster")?;
        let state = State {
            node_id: certs.node_id.clone(),
            name: config.name.clone(),
            cluster: certs.cluster.clone(),
        };
        std::fs::create_dir_all(&dir)?;
        write_private_file(&dir.join("key"), key.to_openssh()?.as_bytes())?;
        write_private_file(&dir.join("state.json"), &serde_json::to_vec_pretty(&state)?)?;
        let id = NodeIdentity {
            dir,
            proxy: config.proxy.clone(),
            key,
            state,
            certs: RwLock::new(certs.clone()),
            registry: Default::default(),
            spool: crate::recording::Spool::new(&config.data_dir.join(NODE_DIR).join("recordings")),
            events: open_events(&config.data_dir)?,
            api: Default::default(),
            policy: crate::policy::PolicyCache::new(config.policy_max_stale, config.labels.clone()),
            db: crate::db::DbService::new(config.databases.clone(), config.db_only),
        };
        id.save_certs(&certs)?;
        tracing::info!(node_id = %id.state.node_id, cluster = %id.state.cluster, "joined the cluster");
        Ok(id)
    }

    fn save_certs(&self, certs: &NodeCerts) -> anyhow::Result<()> {
        write_private_file(
            &self.dir.join("certs.json"),
            &serde_json::to_vec_pretty(certs)?,
        )?;
        Ok(())
    }

    pub fn node_id(&self) -> &str {
        &self.state.node_id
    }

    pub fn node_name(&self) -> &str {
        &self.state.name
    }

    pub fn cluster(&self) -> &str {
        &self.state.cluster
    }

    pub fn certs(&self) -> NodeCerts {
        self.certs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The host private key.
    pub fn host_key(&self) -> russh::keys::PrivateKey {
        self.key.ssh_private()
    }

    /// The node's key as PKCS#8, for TLS.
    pub fn tls_key_pkcs8(&self) -> Vec<u8> {
        self.key.pkcs8_der().to_vec()
    }

    /// mTLS client of the auth API, through the proxy.
    pub(crate) fn api(&self) -> anyhow::Result<ApiClient> {
        let certs = self.certs();
        let mut cached = self.api.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((pem, client)) = cached.as_ref() {
            if *pem == certs.tls_cert_pem {
                return Ok(client.clone());
            }
        }
        let cert = ClientCert {
            cert_pem: certs.tls_cert_pem.clone(),
            key_pkcs8: self.key.pkcs8_der().to_vec(),
        };
        let client = direct_auth_client(&self.proxy, certs.tls_ca_pems.clone(), &cert)?;
        *cached = Some((certs.tls_cert_pem.clone(), client.clone()));
        Ok(client)
    }

    /// Reports this node; `true` when auth's CA keys moved on (a rotation)
    /// since these certificates were issued: renew now.
    pub async fn heartbeat(&self, hb: &Heartbeat) -> anyhow::Result<bool> {
        let mut hb = hb.clone();
        hb.ca_generation = self.certs().ca_generation.clone();
        let ack: HeartbeatAck = self.api()?.call(&endpoints::NODE_HEARTBEAT, &hb).await?;
        Ok(!ack.ca_generation.is_empty() && ack.ca_generation != hb.ca_generation)
    }

    /// Takes this node out of the inventory (it is stopping).
    pub async fn leave(&self) -> anyhow::Result<()> {
        let _: serde_json::Value = self.api()?.call(&endpoints::NODE_LEAVE, &()).await?;
        Ok(())
    }

    /// Renews the certificates once half their lifetime has passed, or
    /// at once when `force`.
    pub async fn renew_if_due(&self, addrs: &[String], force: bool) -> anyhow::Result<()> {
        // Half-life read from the certificate itself, as proxies do; an
        // unreadable one is renewed.
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if !force && !warden_ca::tls::renewal_due(&self.certs().tls_cert_pem, now) {
            return Ok(());
        }
        let req = RenewNodeRequest {
            ssh_public_key: self.key.ssh_public_key().to_openssh()?,
            tls_csr_pem: self.key.csr_pem(&self.state.name)?,
            addrs: addrs.to_vec(),
        };
        let fresh: NodeCerts = self.api()?.call(&endpoints::NODE_CERTS, &req).await?;
        self.save_certs(&fresh)?;
        *self.certs.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        tracing::info!("node certificates renewed");
        Ok(())
    }

    /// Locks in force.
    pub async fn locks(
        &self,
    ) -> anyhow::Result<Vec<warden_types::Document<warden_types::LockSpec>>> {
        Ok(self.api()?.call(&endpoints::LOCKS, &()).await?)
    }

    /// Locks in force once they change after `after` (a long poll of at
    /// most `wait`); `None` when auth predates the push (404), and the
    /// caller polls [`NodeIdentity::locks`] instead.
    pub async fn watch_locks(
        &self,
        after: Option<i64>,
        wait: std::time::Duration,
    ) -> anyhow::Result<Option<warden_types::api::LockWatch>> {
        let query = warden_types::api::WatchQuery {
            after,
            wait: after.map(|_| wait.as_secs()),
        };
        absent_on_404(self.api()?.call(&endpoints::LOCKS_WATCH, &query).await)
    }

    /// The cluster's proxies (to keep a tunnel to each).
    pub async fn proxies(&self) -> anyhow::Result<Vec<warden_types::api::ProxyInfo>> {
        Ok(self.api()?.call(&endpoints::PROXIES, &()).await?)
    }

    /// The node policy once it differs from `version` as held from the
    /// auth server of `epoch` (a long poll of at most `wait`); `None` from
    /// an auth server that does not push it.
    pub async fn watch_policy(
        &self,
        epoch: Option<String>,
        version: Option<String>,
        wait: std::time::Duration,
    ) -> anyhow::Result<Option<warden_types::api::NodePolicy>> {
        let query = warden_types::api::PolicyQuery {
            wait: version.as_ref().map(|_| wait.as_secs()),
            epoch,
            version,
        };
        absent_on_404(self.api()?.call(&endpoints::NODE_POLICY, &query).await)
    }

    /// The node's name, fixed at join.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Decides whether `user` may log in as `login` here, now: from the
    /// pushed policy while it is current, else by asking auth. Without
    /// either, the answer is an error (the caller refuses the login).
    pub async fn decide_login(
        &self,
        user: &str,
        login: &str,
        mfa_node: Option<&str>,
        user_id: Option<&str>,
    ) -> anyhow::Result<AccessCheckResponse> {
        let node = (self.node_id(), self.name());
        let stale = match self.policy.decide(node, user, user_id, login, mfa_node) {
            crate::policy::Cached::Decided(d) => return Ok(d),
            crate::policy::Cached::Stale(age) => age,
        };
        let asked = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.check_access(user, login, mfa_node, user_id),
        )
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("auth did not answer within 10 s")));
        match (asked, stale) {
            (Ok(d), _) => Ok(d),
            (Err(e), Some(age)) => {
                tracing::warn!(error = %format!("{e:#}"), stale_secs = age.as_secs(), "login refused: the node policy is stale and auth cannot be reached");
                Err(crate::policy::Stale(age).into())
            }
            (Err(e), None) => Err(e),
        }
    }

    /// Asks auth to decide a database connection and, when it allows it,
    /// for the client certificate that opens it.
    pub async fn db_cert(
        &self,
        req: &warden_types::api::DbCertRequest,
    ) -> Result<warden_types::api::DbCertResponse, warden_client::ClientError> {
        let api = self
            .api()
            .map_err(|e| warden_client::ClientError::Local(format!("{e:#}")))?;
        api.call(&endpoints::DB_CERT, req).await
    }

    /// Asks auth whether `user` may log in as `login` here, now.
    pub async fn check_access(
        &self,
        user: &str,
        login: &str,
        mfa_node: Option<&str>,
        user_id: Option<&str>,
    ) -> anyhow::Result<AccessCheckResponse> {
        Ok(self
            .api()?
            .call(
                &endpoints::NODE_ACCESS,
                &AccessCheckRequest {
                    user: user.to_string(),
                    login: login.to_string(),
                    mfa_node: mfa_node.map(str::to_string),
                    user_id: user_id.map(str::to_string),
                },
            )
            .await?)
    }

    /// Records an audit event: spooled durably here, then delivered to auth
    /// in order (later, if auth is unreachable now).
    pub async fn emit(&self, event: AuditEvent) {
        self.emit_all(vec![event]).await
    }

    /// Records audit events with one durable write (a database
    /// connection's statements come in batches).
    pub async fn emit_all(&self, mut events: Vec<AuditEvent>) {
        for e in &mut events {
            e.cluster = self.state.cluster.clone();
            e.node = Some(self.state.node_id.clone());
        }
        let spool = self.events.clone();
        let pushed = tokio::task::spawn_blocking(move || {
            let r = spool.push_all(&events);
            (r, events)
        })
        .await;
        match pushed {
            Ok((Ok(()), _)) => {}
            Ok((Err(e), events)) => {
                // The spool is unusable (disk full?): try auth directly.
                tracing::error!(error = %e, "cannot spool audit events; sending them directly");
                if let Err(e) = self.send_events(&events).await {
                    tracing::error!(error = %format!("{e:#}"), count = events.len(), "audit events lost");
                }
            }
            Err(e) => tracing::error!(error = %e, "audit spool task failed"),
        }
    }

    /// Sends events (oldest first) in one request and one durable write.
    pub async fn send_events(&self, events: &[AuditEvent]) -> anyhow::Result<()> {
        let _: serde_json::Value = self.api()?.call(&endpoints::EVENTS, events).await?;
        Ok(())
    }
}
