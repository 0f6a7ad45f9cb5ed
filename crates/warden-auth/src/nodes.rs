//! Nodes: joining with a token, certificate renewal, heartbeats into the
//! inventory, live access decisions and audit events from nodes.

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::resources::{self, NODES, PROXIES, TOKENS};
use crate::routes::Serve;
use crate::server::AuthServer;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json, Router};
use time::{Duration, OffsetDateTime};
use warden_ca::ssh::{sign_host_cert, HostCert};
use warden_ca::tls::{self, CertRequest, Usage};
use warden_ca::CaType;
use warden_store::StoreError;
use warden_types::api::*;
use warden_types::audit::{codes, AuditEvent};
use warden_types::endpoints;
use warden_types::resource::NodeGrant;
use warden_types::resource::{kind, resources as res, verbs};
use warden_types::{
    AccessRequestSpec, Document, Identity, IdentityKind, LockSpec, NodeSpec, RoleSpec, TokenKind,
    TokenSpec, UserSpec,
};

/// Lifetime of node certificates; nodes renew at half-life.
pub const NODE_CERT_TTL: Duration = Duration::hours(24);
/// Lifetime of proxies' and auth's own certificates; they renew at
/// half-life (and at every CA rotation step).
pub const SERVICE_CERT_TTL: Duration = Duration::days(30);
/// An offline node leaves the inventory after this long.
const INVENTORY_TTL: std::time::Duration = std::time::Duration::from_secs(600);

pub fn routes() -> Router<AuthServer> {
    Router::new()
        .serve(&endpoints::JOIN, join)
        .serve(&endpoints::NODES, list_nodes)
        .serve(&endpoints::REMOVE_NODE, remove_node)
        .serve(&endpoints::NODE_CERTS, renew)
        .serve(&endpoints::NODE_HEARTBEAT, heartbeat)
        .serve(&endpoints::NODE_LEAVE, leave)
        .serve(&endpoints::NODE_ACCESS, access)
        .serve(&endpoints::EVENT, node_event)
        .serve(&endpoints::EVENTS, node_events)
        .serve(&endpoints::PROXIES, list_proxies)
        .serve(&endpoints::PROXY_HEARTBEAT, proxy_heartbeat)
        .serve(&endpoints::PROXY_CERTS, renew_proxy)
}

/// What each node was admitted as (`NodeGrant`), by node id.
const GRANTS: &str = "/node_grants/";
/// The host names and addresses each proxy was admitted with (a JSON
/// list), by proxy id: its renewals get those and no others.
const PROXY_GRANTS: &str = "/proxy_grants/";

/// Join attempts a source may make per minute (a fleet behind one NAT
/// joins in bursts; tokens are single use and 256-bit, so this only bounds
/// the cost of bogus attempts).
const JOIN_RATE_PER_MINUTE: u32 = 60;

/// Is a certificate carrying `user_id` one of `user`'s (not of an earlier
/// user of the same name)? Users made before uids existed have none.
pub(crate) use warden_policy::same_user;

pub(crate) fn require_node(c: &Caller) -> Result<&str> {
    if c.identity.kind == IdentityKind::Node {
        Ok(&c.identity.username)
    } else {
        Err(AuthError::AccessDenied(
            "only nodes may make this call".into(),
        ))
    }
}

fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl AuthServer {
    /// An X.509 certificate (server and client) for a service's key in
    /// `csr_pem`, carrying its identity; with the tls CA certificates.
    #[allow(clippy::too_many_arguments)]
    async fn service_tls_cert(
        &self,
        kind: IdentityKind,
        id: &str,
        csr_pem: &str,
        dns_names: Vec<String>,
        ips: Vec<std::net::IpAddr>,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<(String, Vec<String>)> {
        let (tls_ca, tls_authority) = self.signer(CaType::Tls).await?;
        let tls_ca_pems = tls_authority.tls_cert_pems();
        let identity = Identity {
            kind,
            username: id.to_string(),
            cluster: self.cluster().to_string(),
            roles: vec![],
            logins: vec![],
            traits: Default::default(),
            requests: vec![],
            expires: until.unix_timestamp(),
            login_expires: 0,
            user_id: String::new(),
        };
        let pem = tls::issue_from_csr(
            &*tls_ca,
            &tls_ca_pems[0],
            csr_pem,
            &CertRequest {
                common_name: id.to_string(),
                dns_names,
                ips,
                identity: Some(identity),
                not_before: now - Duration::minutes(1),
                not_after: until,
                usage: Usage::ClientAndServer,
            },
        )
        .map_err(|e| AuthError::BadRequest(e.to_string()))?;
        Ok((pem, tls_ca_pems))
    }

    /// Host and X.509 certificates for a node's keys.
    async fn node_certs(
        &self,
        node_id: &str,
        name: &str,
        ssh_public_key: &str,
        tls_csr_pem: &str,
        addrs: &[String],
    ) -> Result<NodeCerts> {
        warden_types::resource::validate_name(name).map_err(AuthError::BadRequest)?;
        // Read before signing (see `proxy_certs`).
        let ca_generation = self.ca_generation().await?;
        let public_key = ssh_key::PublicKey::from_openssh(ssh_public_key.trim())
            .map_err(|e| AuthError::BadRequest(format!("invalid SSH public key: {e}")))?;
        // `<name>.<cluster>` is how `warden config` users address nodes.
        let mut principals = vec![
            node_id.to_string(),
            name.to_string(),
            format!("{name}.{}", self.cluster()),
        ];
        // `addrs` are hosts already checked against the node's grant.
        for h in addrs.iter().take(16) {
            if !h.is_empty() && !principals.contains(h) {
                principals.push(h.clone());
            }
        }
        let now = OffsetDateTime::now_utc();
        let until = now + NODE_CERT_TTL;
        let (host_ca, _) = self.signer(CaType::Host).await?;
        let cert = sign_host_cert(
            &*host_ca,
            &HostCert {
                public_key,
                host_id: node_id.to_string(),
                principals,
                valid_after: (now - Duration::minutes(1)).unix_timestamp() as u64,
                valid_before: until.unix_timestamp() as u64,
                cluster: self.cluster().to_string(),
            },
        )?;
        let (tls_cert_pem, tls_ca_pems) = self
            .service_tls_cert(
                IdentityKind::Node,
                node_id,
                tls_csr_pem,
                vec![node_id.to_string()],
                vec![],
                now,
                until,
            )
            .await?;
        Ok(NodeCerts {
            node_id: node_id.to_string(),
            cluster: self.cluster().to_string(),
            ssh_host_cert: cert
                .to_openssh()
                .map_err(|e| AuthError::Internal(e.to_string()))?,
            tls_cert_pem,
            tls_ca_pems,
            ssh_user_ca_keys: self.authority(CaType::User).await?.ssh_public_keys(),
            ca_generation,
        })
    }

    /// A host certificate for a proxy's SSH key (the jump host).
    pub async fn proxy_host_cert(
        &self,
        ssh_public_key: &str,
        principals: Vec<String>,
    ) -> Result<String> {
        let public_key = ssh_key::PublicKey::from_openssh(ssh_public_key.trim())
            .map_err(|e| AuthError::BadRequest(format!("invalid SSH public key: {e}")))?;
        let now = OffsetDateTime::now_utc();
        let (host_ca, _) = self.signer(CaType::Host).await?;
        let cert = sign_host_cert(
            &*host_ca,
            &HostCert {
                public_key,
                host_id: "proxy".into(),
                principals,
                valid_after: (now - Duration::minutes(1)).unix_timestamp() as u64,
                valid_before: (now + SERVICE_CERT_TTL).unix_timestamp() as u64,
                cluster: self.cluster().to_string(),
            },
        )?;
        cert.to_openssh()
            .map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// The hosts of a proxy's claimed `host:port` addresses that it may
    /// carry as names: never auth's own name (a proxy must not pose as
    /// auth to nodes), a wildcard, or a `<node>.<cluster>` name. A host
    /// name shared with a node on the same machine is allowed: the admin
    /// admitted the proxy with a token.
    fn proxy_hosts(&self, addrs: &[String]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for a in addrs.iter().take(16) {
            let h = host_of(a).to_ascii_lowercase();
            if h.is_empty() || out.contains(&h) {
                continue;
            }
            let cluster_suffix = format!(".{}", self.cluster().to_ascii_lowercase());
            let reserved = h == warden_types::AUTH_SERVER_NAME
                || h.contains('*')
                || h.ends_with(&cluster_suffix);
            if reserved {
                return Err(AuthError::BadRequest(format!(
                    "a proxy cannot be known as {h:?}: the name is auth's, a node's within the cluster, or a wildcard"
                )));
            }
            out.push(h);
        }
        Ok(out)
    }

    /// Certificates for a joining proxy: its TLS identity (server and
    /// client, for users, nodes and peers) and its jump host's SSH cert.
    /// `addrs` are hosts already checked by [`AuthServer::proxy_hosts`].
    async fn proxy_certs(
        &self,
        id: &str,
        ssh_public_key: &str,
        tls_csr_pem: &str,
        hosts: &[String],
    ) -> Result<NodeCerts> {
        // Read before signing: should a rotation step land meanwhile, the
        // proxy sees a generation older than its certificates and renews.
        let ca_generation = self.ca_generation().await?;
        let mut dns = vec!["localhost".to_string()];
        let mut ips: Vec<std::net::IpAddr> = vec![std::net::Ipv4Addr::LOCALHOST.into()];
        for h in hosts.iter().take(16) {
            let h = h.as_str();
            match h.parse::<std::net::IpAddr>() {
                Ok(ip) if !ips.contains(&ip) => ips.push(ip),
                Ok(_) => {}
                Err(_) if !dns.iter().any(|d| d == h) => dns.push(h.to_string()),
                Err(_) => {}
            }
        }
        let mut principals = dns.clone();
        principals.extend(ips.iter().map(|i| i.to_string()));
        let ssh_host_cert = self.proxy_host_cert(ssh_public_key, principals).await?;
        let now = OffsetDateTime::now_utc();
        let until = now + SERVICE_CERT_TTL;
        let (tls_cert_pem, tls_ca_pems) = self
            .service_tls_cert(IdentityKind::Proxy, id, tls_csr_pem, dns, ips, now, until)
            .await?;
        Ok(NodeCerts {
            node_id: id.to_string(),
            cluster: self.cluster().to_string(),
            ssh_host_cert,
            tls_cert_pem,
            tls_ca_pems,
            ssh_user_ca_keys: self.authority(CaType::User).await?.ssh_public_keys(),
            ca_generation,
        })
    }

    /// Records a proxy's heartbeat (it disappears 90 s after the last).
    pub async fn proxy_heartbeat(&self, hb: &ProxyHeartbeat) -> Result<()> {
        let info = ProxyInfo {
            id: hb.id.clone(),
            addrs: hb.addrs.iter().take(16).cloned().collect(),
            version: hb.version.clone(),
            heartbeat: OffsetDateTime::now_utc().unix_timestamp(),
        };
        let expires = std::time::SystemTime::now()
            + std::time::Duration::from_secs(warden_types::resource::NODE_ONLINE_SECS as u64);
        self.backend()
            .put(
                &format!("{PROXIES}{}", hb.id),
                serde_json::to_vec(&info).map_err(|e| AuthError::Internal(e.to_string()))?,
                Some(expires),
            )
            .await?;
        Ok(())
    }

    /// Joins a node (or proxy): consumes its token and certifies its keys.
    pub async fn join(&self, req: &JoinRequest, source: Option<String>) -> Result<NodeCerts> {
        // Form and rate first: nothing is looked up or written for a
        // malformed or flooding request (refusals are summarised).
        warden_types::resource::validate_name(&req.name).map_err(|_| {
            AuthError::BadRequest(
                "invalid node name: use 1-128 characters of a-z, A-Z, 0-9, '-', '_', '.', '@' (--name)"
                    .into(),
            )
        })?;
        let src = crate::login::source_key(&source.clone().unwrap_or_else(|| "unknown".into()));
        if !self
            .inner
            .limiter
            .allow(&format!("join:{src}"), JOIN_RATE_PER_MINUTE)
        {
            self.audit_refusal(&format!("join from {src}"), || {
                AuditEvent::new(
                    codes::NODE_JOIN_FAILURE,
                    self.cluster(),
                    &req.name,
                    "rate limited",
                )
                .source(source.clone())
            })
            .await;
            return Err(AuthError::RateLimited(format!(
                "too many join attempts from {src}; wait a minute and try again"
            )));
        }
        let admitted = match self.find_token(req.token.expose(), req.kind).await {
            Ok(token) => self.admit_name(req, &token).await.map(|()| token),
            Err(e) => Err(e),
        };
        let token = match admitted {
            Ok(t) => t,
            Err(e) => {
                self.audit(
                    AuditEvent::new(
                        codes::NODE_JOIN_FAILURE,
                        self.cluster(),
                        &req.name,
                        e.to_string(),
                    )
                    .source(source),
                )
                .await;
                return Err(e);
            }
        };
        let rev = token.metadata.revision.unwrap_or_default();
        match self
            .backend()
            .compare_and_delete(&format!("{TOKENS}{}", token.name()), rev)
            .await
        {
            Ok(()) => {}
            Err(StoreError::NotFound(_)) | Err(StoreError::Conflict { .. }) => {
                return Err(AuthError::Unauthenticated(
                    "node token was already used; ask an admin for a new one".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        let node_id = uuid::Uuid::new_v4().to_string();
        let mut refused_addrs = Vec::new();
        let certs = if req.kind == TokenKind::Proxy {
            let hosts = self.proxy_hosts(&req.addrs)?;
            self.backend()
                .put(
                    &format!("{PROXY_GRANTS}{node_id}"),
                    resources::to_json(&hosts)?,
                    None,
                )
                .await?;
            self.proxy_certs(&node_id, &req.ssh_public_key, &req.tls_csr_pem, &hosts)
                .await?
        } else {
            // Only addresses the admin allowed on the token are principals.
            let (allowed, refused): (Vec<String>, Vec<String>) = req
                .addrs
                .iter()
                .take(16)
                .map(|a| host_of(a).to_string())
                .filter(|h| !h.is_empty())
                .partition(|h| token.spec.allows_addr(h));
            refused_addrs = refused;
            let grant = NodeGrant {
                name: req.name.clone(),
                addrs: allowed,
            };
            self.save_grant(&node_id, &grant).await?;
            self.node_certs(
                &node_id,
                &grant.name,
                &req.ssh_public_key,
                &req.tls_csr_pem,
                &grant.addrs,
            )
            .await?
        };
        self.audit(
            AuditEvent::new(
                codes::NODE_JOIN,
                self.cluster(),
                &req.name,
                format!("node {} joined", req.name),
            )
            .source(source)
            .with("node_id", node_id.clone())
            .with("token_id", token.name().to_string())
            .with("addresses_not_allowed", refused_addrs),
        )
        .await;
        Ok(certs)
    }

    /// Whether a node may join under the name it asks for: not a locked
    /// node's, not one that reads as a host name or address unless the
    /// token allows it (the name is a host-certificate principal), and not
    /// a live node's unless the token says `replace`.
    async fn admit_name(&self, req: &JoinRequest, token: &Document<TokenSpec>) -> Result<()> {
        if let Some(lock) = warden_policy::node_lock(&self.active_locks(), "", &req.name) {
            return Err(AuthError::Locked(crate::locks::lock_message(lock)));
        }
        if req.kind == TokenKind::Proxy {
            return Ok(());
        }
        let dotted = req.name.contains('.') || req.name.parse::<std::net::IpAddr>().is_ok();
        if dotted && !token.spec.allows_addr(&req.name) {
            return Err(AuthError::BadRequest(format!(
                "node name {} reads as a host name or address, which its host certificate would vouch for; pick a name without dots (--name), or ask an admin for a token with --addr {}",
                req.name, req.name
            )));
        }
        if !token.spec.replace {
            if let Some(holder) = self.live_node_named(&req.name).await? {
                return Err(AuthError::Conflict(format!(
                    "a live node ({holder}) already has the name {}; pick another --name, or ask an admin for a token made with --replace",
                    req.name
                )));
            }
        }
        Ok(())
    }

    /// What node `id` was admitted as, if it joined since grants exist.
    async fn stored_grant(&self, id: &str) -> Result<Option<NodeGrant>> {
        match self.backend().get(&format!("{GRANTS}{id}")).await? {
            Some(item) => serde_json::from_slice(&item.value)
                .map(Some)
                .map_err(|e| AuthError::Internal(format!("corrupt node grant: {e}"))),
            None => Ok(None),
        }
    }

    /// The ids of the nodes admitted as `name`, oldest grants first
    /// (replaced nodes keep their grant, so their history stays findable).
    pub(crate) async fn node_ids_named(&self, name: &str) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for item in self.backend().range(GRANTS).await? {
            let Ok(grant) = serde_json::from_slice::<NodeGrant>(&item.value) else {
                continue;
            };
            if grant.name == name {
                if let Some(id) = item.key.strip_prefix(GRANTS) {
                    ids.push(id.to_string());
                }
            }
        }
        Ok(ids)
    }

    /// Whether a node with id `id` was ever admitted.
    pub(crate) async fn node_known(&self, id: &str) -> Result<bool> {
        Ok(self.stored_grant(id).await?.is_some())
    }

    /// The name node `id` was admitted with (its grant), else its inventory
    /// name; empty when neither is known.
    pub(crate) async fn node_name(&self, id: &str) -> Result<String> {
        if let Some(g) = self.stored_grant(id).await? {
            return Ok(g.name);
        }
        Ok(
            resources::get::<NodeSpec>(self.backend(), &format!("{NODES}{id}"))
                .await?
                .map(|n| n.spec.hostname)
                .unwrap_or_default(),
        )
    }

    /// The id of an online node called `name`, if any.
    async fn live_node_named(&self, name: &str) -> Result<Option<String>> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        Ok(resources::list::<NodeSpec>(self.backend(), NODES)
            .await?
            .into_iter()
            .find(|n| n.spec.hostname == name && n.spec.online(now))
            .map(|n| n.name().to_string()))
    }

    async fn save_grant(&self, node_id: &str, grant: &NodeGrant) -> Result<()> {
        self.backend()
            .put(
                &format!("{GRANTS}{node_id}"),
                resources::to_json(grant)?,
                None,
            )
            .await?;
        Ok(())
    }

    /// What node `id` was admitted as. A node joined before grants existed
    /// gets one now from what it holds (its inventory name and the
    /// addresses it claims), once.
    async fn grant(&self, id: &str, claimed: &[String]) -> Result<NodeGrant> {
        if let Some(g) = self.stored_grant(id).await? {
            return Ok(g);
        }
        let name = resources::get::<NodeSpec>(self.backend(), &format!("{NODES}{id}"))
            .await?
            .map(|n| n.spec.hostname)
            .unwrap_or_else(|| id.to_string());
        let grant = NodeGrant {
            name,
            addrs: claimed
                .iter()
                .take(16)
                .map(|a| host_of(a).to_string())
                .collect(),
        };
        self.save_grant(id, &grant).await?;
        Ok(grant)
    }

    /// Records a heartbeat of node `id`.
    pub async fn heartbeat(&self, id: &str, hb: &Heartbeat) -> Result<()> {
        warden_types::resource::validate_name(&hb.name).map_err(AuthError::BadRequest)?;
        warden_types::resource::validate_labels(&hb.labels).map_err(AuthError::BadRequest)?;
        if hb.version.len() > 64 || hb.version.chars().any(|c| c.is_control()) {
            return Err(AuthError::BadRequest("invalid version string".into()));
        }
        if hb
            .addrs
            .iter()
            .any(|a| a.len() > 262 || a.chars().any(|c| c.is_control() || c.is_whitespace()))
        {
            return Err(AuthError::BadRequest("invalid node address".into()));
        }
        crate::databases::validate(&hb.databases)?;
        let every = hb.every_secs.unwrap_or(0);
        if every > 300 {
            return Err(AuthError::BadRequest(
                "heartbeats must come at least every 300 s".into(),
            ));
        }
        if let Some(grant) = self.stored_grant(id).await? {
            if grant.name != hb.name {
                return Err(AuthError::BadRequest(format!(
                    "this node joined as {}; a node's name is fixed at join (join again with a new token to rename it)",
                    grant.name
                )));
            }
        }
        let now = OffsetDateTime::now_utc();
        let mut doc = Document::new(
            kind::NODE,
            id,
            NodeSpec {
                hostname: hb.name.clone(),
                addrs: hb.addrs.iter().take(16).cloned().collect(),
                version: hb.version.clone(),
                heartbeat: now.unix_timestamp(),
                heartbeat_every: every,
                db_only: hb.db_only,
            },
        );
        doc.metadata.labels = hb.labels.clone();
        let expires = std::time::SystemTime::now() + INVENTORY_TTL;
        doc.metadata.expires = Some(OffsetDateTime::from(expires));
        self.backend()
            .put(
                &format!("{NODES}{id}"),
                resources::encode(&doc),
                Some(expires),
            )
            .await?;
        self.register_databases(id, &hb.name, &hb.databases, expires)
            .await?;
        Ok(())
    }

    /// Takes node `id` out of the inventory: it is shutting down. Its
    /// identity stays valid; its next heartbeat brings it back.
    pub async fn leave(&self, id: &str) -> Result<()> {
        self.backend().delete(&format!("{NODES}{id}")).await?;
        self.unregister_databases(id).await?;
        tracing::info!(node = %id, "node left the inventory");
        Ok(())
    }

    /// Decides, with the user's current roles, whether `user` may log in as
    /// `login` on node `node_id` (the evaluator nodes run on their pushed
    /// copy of the same state).
    pub async fn check_access(
        &self,
        node_id: &str,
        user: &str,
        login: &str,
        mfa_node: Option<&str>,
        user_id: Option<&str>,
    ) -> Result<AccessCheckResponse> {
        let node = resources::get::<NodeSpec>(self.backend(), &format!("{NODES}{node_id}")).await?;
        let node_name = node
            .as_ref()
            .map(|n| n.spec.hostname.clone())
            .unwrap_or_default();
        let labels = node.map(|n| n.metadata.labels).unwrap_or_default();
        let q = warden_policy::NodeLogin {
            node_id,
            node_name: &node_name,
            labels: &labels,
            user,
            user_id,
            login,
            mfa_node,
        };
        Ok(warden_policy::decide_node_login(
            &LiveState(self),
            &q,
            crate::resources::now(),
        ))
    }
}

/// The auth server's watch-fed caches, as the policy evaluator reads them.
pub(crate) struct LiveState<'a>(pub(crate) &'a AuthServer);

impl warden_policy::AccessState for LiveState<'_> {
    fn user(&self, name: &str) -> Option<Document<UserSpec>> {
        self.0.inner.users.get(name)
    }
    fn role(&self, name: &str) -> Option<Document<RoleSpec>> {
        self.0.inner.roles.get(name)
    }
    fn requests(&self) -> Vec<Document<AccessRequestSpec>> {
        self.0.inner.requests.list()
    }
    fn locks(&self) -> Vec<Document<LockSpec>> {
        self.0.inner.locks.list()
    }
}

async fn join(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Json(req): Json<JoinRequest>,
) -> Result<Json<NodeCerts>> {
    crate::api::require_proxy(&c)?;
    Ok(Json(
        s.join(&req, crate::api::client_addr(&c, &headers)).await?,
    ))
}

async fn renew(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<RenewNodeRequest>,
) -> Result<Json<NodeCerts>> {
    let id = require_node(&c)?.to_string();
    // The name and addresses admitted at join, never what the node claims
    // now; addresses it no longer claims are left out.
    let grant = s.grant(&id, &req.addrs).await?;
    let claimed: Vec<&str> = req.addrs.iter().map(|a| host_of(a)).collect();
    let addrs: Vec<String> = grant
        .addrs
        .iter()
        .filter(|a| claimed.iter().any(|c| c.eq_ignore_ascii_case(a)))
        .cloned()
        .collect();
    Ok(Json(
        s.node_certs(
            &id,
            &grant.name,
            &req.ssh_public_key,
            &req.tls_csr_pem,
            &addrs,
        )
        .await?,
    ))
}

/// A proxy's fresh certificates (it renews when a CA rotates, and at
/// half-life): for the names it was admitted with at join, no others.
async fn renew_proxy(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<RenewNodeRequest>,
) -> Result<Json<NodeCerts>> {
    crate::api::require_proxy(&c)?;
    let id = c.identity.username.clone();
    let Some(item) = s.backend().get(&format!("{PROXY_GRANTS}{id}")).await? else {
        return Err(AuthError::AccessDenied(
            "this proxy joined before renewals were bound to what it was admitted with; join it again with a new proxy token".into(),
        ));
    };
    let granted: Vec<String> = serde_json::from_slice(&item.value)
        .map_err(|e| AuthError::Internal(format!("corrupt proxy grant: {e}")))?;
    // Addresses it no longer claims are left out; new ones are not added.
    let claimed: Vec<String> = req
        .addrs
        .iter()
        .map(|a| host_of(a).to_ascii_lowercase())
        .collect();
    let hosts: Vec<String> = granted
        .into_iter()
        .filter(|h| claimed.contains(h))
        .collect();
    Ok(Json(
        s.proxy_certs(&id, &req.ssh_public_key, &req.tls_csr_pem, &hosts)
            .await?,
    ))
}

async fn heartbeat(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(hb): Json<Heartbeat>,
) -> Result<Json<HeartbeatAck>> {
    let id = require_node(&c)?.to_string();
    s.heartbeat(&id, &hb).await?;
    Ok(Json(HeartbeatAck {
        ca_generation: s.heartbeat_trust(&id, &hb.ca_generation).await?,
    }))
}

async fn leave(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
) -> Result<Json<serde_json::Value>> {
    let id = require_node(&c)?.to_string();
    s.leave(&id).await?;
    Ok(Json(serde_json::json!({})))
}

async fn access(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<AccessCheckRequest>,
) -> Result<Json<AccessCheckResponse>> {
    let id = require_node(&c)?.to_string();
    Ok(Json(
        s.check_access(
            &id,
            &req.user,
            &req.login,
            req.mfa_node.as_deref(),
            req.user_id.as_deref(),
        )
        .await?,
    ))
}

/// Most events in one delivery from a node's spool.
const MAX_EVENT_BATCH: usize = 500;

async fn node_event(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(ev): Json<AuditEvent>,
) -> Result<Json<serde_json::Value>> {
    store_node_events(&s, &c, vec![ev]).await
}

/// Events a node delivers from its spool, oldest first, in one write.
async fn node_events(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(events): Json<Vec<AuditEvent>>,
) -> Result<Json<serde_json::Value>> {
    if events.len() > MAX_EVENT_BATCH {
        return Err(AuthError::BadRequest(format!(
            "at most {MAX_EVENT_BATCH} events per batch"
        )));
    }
    store_node_events(&s, &c, events).await
}

async fn store_node_events(
    s: &AuthServer,
    c: &Caller,
    mut events: Vec<AuditEvent>,
) -> Result<Json<serde_json::Value>> {
    // Nodes report their sessions; proxies only the sign-ins their jump
    // host refused. Each speaks for itself only.
    let (id, allowed, proxy) = match c.identity.kind {
        IdentityKind::Proxy => (c.identity.username.clone(), codes::PROXY_EVENT_TYPES, true),
        _ => (require_node(c)?.to_string(), codes::NODE_EVENT_TYPES, false),
    };
    for ev in &mut events {
        if !allowed.contains(&ev.event_type.as_str()) {
            return Err(AuthError::BadRequest(format!(
                "{} may not report events of type {:?}",
                if proxy { "proxies" } else { "nodes" },
                ev.event_type
            )));
        }
        ev.cluster = s.cluster().to_string();
        if proxy {
            ev.node = None;
            ev.fields.insert("proxy".into(), id.clone().into());
        } else {
            ev.node = Some(id.clone());
        }
        // Nodes name their events (a UUID) so that a resend from their
        // spool, after an acknowledgement was lost, is not stored twice.
        if uuid::Uuid::parse_str(&ev.id).is_err() {
            ev.id = uuid::Uuid::now_v7().to_string();
        }
        // Spooled events may be old, but none comes from the future: a
        // node's clock (or a lying node) must not pin events to the top of
        // every newest-first search.
        let now = time::OffsetDateTime::now_utc();
        if ev.time > now + time::Duration::minutes(5) {
            ev.time = now;
        }
    }
    // Acknowledged only once durable.
    s.record_batch(events).await?;
    Ok(Json(serde_json::json!({})))
}

async fn proxy_heartbeat(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(mut hb): Json<ProxyHeartbeat>,
) -> Result<Json<serde_json::Value>> {
    if c.identity.kind != IdentityKind::Proxy {
        return Err(AuthError::AccessDenied(
            "only proxies may make this call".into(),
        ));
    }
    // A proxy speaks for itself only.
    hb.id = c.identity.username.clone();
    s.proxy_heartbeat(&hb).await?;
    s.proxy_trust(&hb.id, &hb.ca_generation).await?;
    Ok(Json(serde_json::json!({})))
}

/// The proxies of the cluster (nodes keep a tunnel to each; proxies peer).
async fn list_proxies(
    State(s): State<AuthServer>,
    Extension(_c): Extension<Caller>,
) -> Result<Json<Vec<ProxyInfo>>> {
    let mut out = Vec::new();
    for item in s.backend().range(PROXIES).await? {
        if let Ok(info) = serde_json::from_slice::<ProxyInfo>(&item.value) {
            out.push(info);
        }
    }
    Ok(Json(out))
}

/// Inventory: all nodes for those who may list nodes; for other users, the
/// nodes they may log in to.
/// An admin takes a node out of the inventory (a running node comes back
/// with its next heartbeat; a lock keeps it out).
async fn remove_node(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<warden_types::api::ChangeResponse>> {
    s.authorize(&c, res::NODE, verbs::DELETE).await?;
    if !s.backend().delete(&format!("{NODES}{id}")).await? {
        return Err(AuthError::NotFound(format!(
            "node {id} is not in the inventory; see 'warden admin nodes ls'"
        )));
    }
    s.audit(
        AuditEvent::new(
            codes::NODE_DELETE,
            s.cluster(),
            &c.identity.username,
            format!("removed node {id} from the inventory"),
        )
        .with("node_id", id.clone()),
    )
    .await;
    Ok(Json(warden_types::api::ChangeResponse {
        name: id,
        change: warden_types::api::Change::Deleted,
        revision: None,
    }))
}

async fn list_nodes(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
) -> Result<Json<Vec<Document<NodeSpec>>>> {
    let nodes: Vec<Document<NodeSpec>> = resources::list(s.backend(), NODES).await?;
    // Proxies route to every node; the node itself decides access.
    if c.identity.kind == IdentityKind::Proxy {
        return Ok(Json(nodes));
    }
    let roles = s.caller_roles(&c)?;
    if warden_policy::check_rule(&roles, res::NODE, verbs::LIST).allowed {
        return Ok(Json(nodes));
    }
    let user = match c.identity.kind {
        IdentityKind::User => s.inner.users.get(&c.identity.username),
        _ => None,
    };
    let traits = user
        .as_ref()
        .map(|u: &Document<UserSpec>| u.spec.traits.clone())
        .unwrap_or_default();
    // Nodes granted by resource requests are listed too.
    let requested: Vec<String> = user
        .map(|u| s.effective(&u).resources)
        .unwrap_or_default()
        .into_iter()
        .map(|(n, _)| n.node)
        .collect();
    let logins = warden_policy::allowed_logins(&roles, &traits);
    Ok(Json(
        nodes
            .into_iter()
            .filter(|n| !n.spec.db_only)
            .filter(|n| {
                requested.iter().any(|id| id == n.name())
                    || logins.iter().any(|l| {
                        warden_policy::check_node_access(&roles, &traits, l, &n.metadata.labels)
                            .allowed
                    })
            })
            .collect(),
    ))
}
