//! CA rotation without an outage, for each of the three CAs: a new key
//! is trusted everywhere first, then signs, and the old one is dropped;
//! live sessions never notice. Nodes learn each step from their
//! heartbeat's answer (the CA generation moved: they renew at once, which
//! brings the new trust and certificates from the signing key); proxies
//! notice within seconds and renew the same way; clients learn at their
//! next login or renewal, which is why the host and tls CAs wait a grace
//! period before the switch (`warden_ca::CaType::wait`).
//!
//! An auth server whose HSM holds none of a CA's keys *joins*: it adds a
//! key of its own as pending (to a rotation in `init`, or in a join of its
//! own, paced like one), and from the switch signs with it beside the
//! other auth servers' keys. For the tls CA each signing key certifies the
//! others' (`CertAuthority::cross`), so a client that pinned one auth
//! server's key accepts certificates issued with another's.
//!
//! The phases themselves are pure (`warden_ca::CertAuthority::rotate_*`);
//! this module stores them with compare-and-swap (several auth servers may
//! drive the same rotation), audits each, and runs automatic rotations.

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::resources::{AUTHORITIES, NODES, PROXIES};
use crate::routes::Serve;
use crate::server::AuthServer;
use axum::extract::State;
use axum::{Extension, Json, Router};
use std::time::Duration;
use warden_ca::{CaKey, CaType, CertAuthority, CrossCert, Phase};
use warden_store::StoreError;
use warden_types::api::{CaKeyInfo, ProxyInfo, RotateRequest};
use warden_types::audit::{codes, AuditEvent};
use warden_types::resource::{resources as res, verbs};
use warden_types::{endpoints, Document, NodeSpec};

/// Where nodes' and proxies' reports of the CA generation they hold are
/// kept while a rotation is under way (proxies as `proxy:<id>`).
const TRUST: &str = "/ca_trust/";
/// What [`AuthServer::ca_state`] reads.
struct CaState {
    generation: String,
    rotating: bool,
}

/// How often automatic rotations are looked at.
const DRIVE_EVERY: Duration = Duration::from_secs(2);
/// How often this process's own followers of the CAs learn a step.
const FOLLOW_EVERY: Duration = Duration::from_secs(5);

pub fn routes() -> Router<AuthServer> {
    Router::new().serve(&endpoints::CA_ROTATE, rotate)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// One step of a rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Init,
    Switch,
    Drop,
    Rollback,
}

impl Step {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "init" => Step::Init,
            "switch" => Step::Switch,
            "drop" => Step::Drop,
            "rollback" => Step::Rollback,
            other => {
                return Err(AuthError::BadRequest(format!(
                    "unknown phase {other:?}: init, switch, drop or rollback"
                )))
            }
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Step::Init => "init",
            Step::Switch => "switch",
            Step::Drop => "drop",
            Step::Rollback => "rollback",
        }
    }
}

async fn rotate(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<RotateRequest>,
) -> Result<Json<Vec<CaKeyInfo>>> {
    s.authorize(&c, res::CLUSTER_CONFIG, verbs::UPDATE).await?;
    let ca = match req.ca.as_str() {
        "user" => CaType::User,
        "host" => CaType::Host,
        "tls" => CaType::Tls,
        "db" => CaType::Db,
        other => {
            return Err(AuthError::BadRequest(format!(
                "unknown CA {other:?}: user, host, tls or db"
            )))
        }
    };
    let (step, grace) = match req.phase.as_deref() {
        Some(p) => (Step::parse(p)?, None),
        None => {
            let grace = match req.grace_secs {
                Some(g) => g,
                None => s.config().await?.default_session_ttl.0.as_secs(),
            };
            if grace > 30 * 24 * 3600 {
                return Err(AuthError::BadRequest("--grace is at most 30 days".into()));
            }
            (Step::Init, Some(grace as i64))
        }
    };
    // By hand too, a tls step that would cut off a node or proxy still on
    // the previous one waits for it (unless forced): it could not reach
    // auth again.
    if ca == CaType::Tls && matches!(step, Step::Switch | Step::Drop) && !req.force {
        let behind = s.behind(&s.ca_generation().await?).await?;
        if !behind.is_empty() {
            return Err(AuthError::Conflict(format!(
                "not yet: {} still hold the tls CA's previous step (they renew within a heartbeat, proxies within 5 s); try again shortly, or pass --force to cut them off",
                behind.join(", ")
            )));
        }
    }
    s.rotation_step(ca, step, grace, &c.identity.username)
        .await?;
    Ok(Json(s.ca_keys().await?))
}

impl AuthServer {
    /// Takes one rotation step on `ca`, stored with compare-and-swap and
    /// audited. `grace`: an automatic rotation (init only).
    async fn rotation_step(
        &self,
        ca: CaType,
        step: Step,
        grace: Option<i64>,
        by: &str,
    ) -> Result<()> {
        let key = format!("{AUTHORITIES}{}", ca.as_str());
        let (mut authority, revision) =
            crate::resources::get_raw::<CertAuthority>(self.backend(), &key)
                .await?
                .ok_or_else(|| AuthError::Internal(format!("{} CA missing", ca.as_str())))?;
        let at = now();
        let join = authority.rotation.as_ref().is_some_and(|r| r.join);
        let result = match step {
            Step::Init => {
                let fresh = authority.new_key(self.inner.keys.generator())?;
                authority.rotate_init(fresh, at, grace)
            }
            Step::Switch => authority.rotate_switch(at),
            Step::Drop => authority.rotate_drop(),
            Step::Rollback => authority.rotate_rollback(),
        };
        result.map_err(|e| AuthError::Conflict(e.to_string()))?;
        if !self.store_authority(&key, revision, &authority).await? {
            return Err(AuthError::Conflict(format!(
                "the {} CA changed meanwhile (another auth server moved the rotation); look with 'warden admin ca ls'",
                ca.as_str()
            )));
        }
        if step == Step::Drop || step == Step::Rollback {
            // The reports were for this rotation only.
            for item in self.backend().range(TRUST).await? {
                let _ = self.backend().delete(&item.key).await;
            }
        }
        let signing = authority
            .signing_key()
            .map(|k| k.handle.public_key.clone())
            .unwrap_or_default();
        let what = match step {
            Step::Init if grace.is_some() => format!(
                "started an automatic rotation of the {} CA: a new key is trusted; {}",
                ca.as_str(),
                schedule(ca, grace.unwrap_or(0))
            ),
            Step::Init => format!(
                "started a rotation of the {} CA: a new key is trusted, the old one still signs",
                ca.as_str()
            ),
            Step::Switch if join => format!(
                "the {} CA's joining key signs beside the others",
                ca.as_str()
            ),
            Step::Switch => format!(
                "the {} CA's new key signs; the old one is still trusted",
                ca.as_str()
            ),
            Step::Drop => format!(
                "the {} CA's old key was dropped: what it signed is refused",
                ca.as_str()
            ),
            Step::Rollback => format!(
                "the {} CA's rotation was rolled back: the old key signs, the new one is forgotten",
                ca.as_str()
            ),
        };
        tracing::info!(ca = ca.as_str(), phase = step.as_str(), "{what}");
        self.audit(
            AuditEvent::new(codes::CA_ROTATE, self.cluster(), by, what)
                .with("ca", ca.as_str())
                .with("phase", step.as_str())
                .with("signing_key", signing)
                .with("trusted_keys", authority.all().count()),
        )
        .await;
        Ok(())
    }

    /// A short digest of every CA's keys and which one signs: a node whose
    /// certificates were issued under another renews.
    pub async fn ca_generation(&self) -> Result<String> {
        Ok(self.ca_state().await?.generation)
    }

    /// The CA generation as it moves, for what in this process follows
    /// it (the auth listener, the local admin identity): one reader of
    /// the CAs every [`FOLLOW_EVERY`], however many follow.
    pub async fn ca_generations(&self) -> Result<tokio::sync::watch::Receiver<String>> {
        if let Some(tx) = self.inner.generations.get() {
            return Ok(tx.subscribe());
        }
        let first = self.ca_generation().await?;
        let tx = self.inner.generations.get_or_init(|| {
            let (tx, _) = tokio::sync::watch::channel(first);
            // Holds the server weakly: it ends with the server.
            let inner = std::sync::Arc::downgrade(&self.inner);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(FOLLOW_EVERY).await;
                    let Some(inner) = inner.upgrade() else { return };
                    let s = AuthServer { inner };
                    match s.ca_generation().await {
                        Ok(now) => {
                            if let Some(tx) = s.inner.generations.get() {
                                tx.send_if_modified(|g| std::mem::replace(g, now.clone()) != now);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot read the CAs"),
                    }
                }
            });
            tx
        });
        Ok(tx.subscribe())
    }

    /// The CA generation, and whether a rotation is under way: what a
    /// heartbeat needs, read once.
    async fn ca_state(&self) -> Result<CaState> {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut rotating = false;
        for ca in CaType::ALL {
            let a = self.authority(ca).await?;
            rotating |= a.rotation.is_some();
            digest.update(ca.as_str().as_bytes());
            // Which keys sign matters, not only which are trusted: after a
            // join's switch services renew, and may then get certificates
            // from the new key.
            for (state, keys) in [("a", &a.active), ("p", &a.pending), ("t", &a.trusted)] {
                digest.update(state.as_bytes());
                for key in keys {
                    digest.update(b"\0");
                    digest.update(key.handle.public_key.as_bytes());
                }
            }
            // New cross certificates (daily) go into services' chains at
            // renewal.
            for c in &a.cross {
                digest.update(b"\0x");
                digest.update(c.pem.as_bytes());
            }
            digest.update(b"\n");
        }
        Ok(CaState {
            generation: data_encoding::HEXLOWER.encode(&digest.finish().as_ref()[..8]),
            rotating,
        })
    }

    /// Answers a node's heartbeat: the current CA generation, noting the
    /// one node `id` reported while a rotation needs it.
    pub(crate) async fn heartbeat_trust(&self, id: &str, reported: &str) -> Result<String> {
        let state = self.ca_state().await?;
        if reported.is_empty() || !state.rotating {
            return Ok(state.generation);
        }
        let key = format!("{TRUST}{id}");
        let same = self
            .backend()
            .get(&key)
            .await?
            .is_some_and(|i| i.value == reported.as_bytes());
        if !same {
            self.backend()
                .put(&key, reported.as_bytes().to_vec(), None)
                .await?;
        }
        Ok(state.generation)
    }

    /// Online nodes and proxies that do not yet report `generation`.
    async fn behind(&self, generation: &str) -> Result<Vec<String>> {
        let at = now();
        let reports: std::collections::HashMap<String, Vec<u8>> = self
            .backend()
            .range(TRUST)
            .await?
            .into_iter()
            .map(|i| (i.key[TRUST.len()..].to_string(), i.value))
            .collect();
        let holds = |id: &str| reports.get(id).map(Vec::as_slice) == Some(generation.as_bytes());
        let mut behind = Vec::new();
        for item in self.backend().range(NODES).await? {
            let Ok(doc) = serde_json::from_slice::<Document<NodeSpec>>(&item.value) else {
                continue;
            };
            if doc.spec.online(at) && !holds(doc.name()) {
                behind.push(doc.spec.hostname.clone());
            }
        }
        // Proxies' records expire when their heartbeats stop.
        for item in self.backend().range(PROXIES).await? {
            let Ok(p) = serde_json::from_slice::<ProxyInfo>(&item.value) else {
                continue;
            };
            if !holds(&format!("proxy:{}", p.id)) {
                behind.push(format!("proxy {}", p.id));
            }
        }
        Ok(behind)
    }

    /// Notes the CA generation a proxy holds, while a rotation needs it.
    pub(crate) async fn proxy_trust(&self, id: &str, reported: &str) -> Result<()> {
        if !reported.is_empty() {
            self.heartbeat_trust(&format!("proxy:{id}"), reported)
                .await?;
        }
        Ok(())
    }

    /// Moves automatic rotations on, each CA at its own pace
    /// (`CaType::wait`): nodes and proxies must hold the new trust, and
    /// the grace period must have passed where clients need it.
    async fn drive_rotations(&self) -> Result<()> {
        if self.inner.keys.hsm.is_some() {
            for ca in CaType::ALL {
                // A rotation's init takes this server's own key; a join
                // only starts when the operator asked (`--hsm-join`).
                if let Err(e) = self.take_own_key(ca, false).await {
                    tracing::warn!(ca = ca.as_str(), error = %e, "cannot add this auth server's key");
                }
            }
        }
        if let Err(e) = self.certify_peers().await {
            tracing::warn!(error = %e, "cannot certify the other auth servers' tls keys");
        }
        self.refresh_signing_ready().await;
        for ca in CaType::ALL {
            let authority = self.authority(ca).await?;
            let Some(r) = authority.rotation.clone() else {
                continue;
            };
            let Some(grace) = r.grace else {
                continue; // an operator moves it
            };
            let waited = now() - r.since;
            let wait = ca.wait(r.phase, grace);
            if waited < wait.after {
                continue;
            }
            let behind = match wait.nodes {
                true => self.behind(&self.ca_generation().await?).await?,
                false => Vec::new(),
            };
            match wait.due(waited, behind.is_empty()) {
                None => continue,
                Some(false) => tracing::warn!(
                    ca = ca.as_str(),
                    lagging = %behind.join(", "),
                    "moving the CA rotation on although these have not confirmed its last step for {waited}s"
                ),
                Some(true) => {}
            }
            let step = match r.phase {
                Phase::Init => Step::Switch,
                Phase::Switched => Step::Drop,
            };
            self.rotation_step(ca, step, None, "warden").await?;
        }
        Ok(())
    }

    /// Keeps automatic rotations moving while the service runs.
    pub fn spawn_rotation_driver(&self) {
        let s = self.clone();
        tokio::spawn(async move {
            loop {
                match s.drive_rotations().await {
                    // Another auth server took the step first.
                    Ok(()) | Err(AuthError::Conflict(_)) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot move the CA rotation on"),
                }
                tokio::time::sleep(DRIVE_EVERY).await;
            }
        });
    }
}

/// Requests that end in signing something after a side effect (a
/// one-time code, a join token, an SSO state used up).
const SIGNING_PATHS: &[&str] = &[
    endpoints::LOGIN.path,
    endpoints::SIGNUP.path,
    endpoints::SSO_RESULT.path,
    endpoints::SSO_CALLBACK.path,
    endpoints::JOIN.path,
    endpoints::RENEW.path,
    endpoints::MFA_SESSION.path,
    endpoints::NODE_CERTS.path,
    endpoints::PROXY_CERTS.path,
];

/// Answers a signing request with 503 `not_ready`, before its handler
/// changes anything, while this auth server cannot sign with every CA
/// (it joins with keys of its own that sign after the switch): clients
/// with several auth addresses send it to the next.
pub(crate) async fn signing_gate(
    State(s): State<AuthServer>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let ready = s
        .inner
        .signing_ready
        .load(std::sync::atomic::Ordering::Relaxed);
    if !ready && SIGNING_PATHS.contains(&req.uri().path()) {
        return AuthError::NotReady(
            "this auth server cannot sign yet: its own HSM keys are trusted but sign only after the join's switch ('warden admin ca ls'); another auth server can".into(),
        )
        .into_response();
    }
    next.run(req).await
}

impl AuthServer {
    /// Notes whether this auth server can sign with every CA now.
    pub(crate) async fn refresh_signing_ready(&self) {
        let mut ready = true;
        for ca in CaType::ALL {
            match self.authority(ca).await {
                Ok(a) => ready &= self.own_signer(a, false).is_ok(),
                // The backend's trouble shows on the request itself.
                Err(_) => return,
            }
        }
        self.inner
            .signing_ready
            .store(ready, std::sync::atomic::Ordering::Relaxed);
    }

    /// With an HSM of its own: adds a key from it to `ca` when this auth
    /// server needs one (`CertAuthority::wants_own_key`): to the rotation
    /// in `init`, or, with `may_join` (`--hsm-join`, at start), in a join
    /// (automatic, paced like a rotation over the cluster's default
    /// session TTL). Returns whether it added one.
    pub(crate) async fn take_own_key(&self, ca: CaType, may_join: bool) -> Result<bool> {
        let Some(hsm) = self.inner.keys.hsm.as_deref() else {
            return Ok(false);
        };
        let key = format!("{AUTHORITIES}{}", ca.as_str());
        let (mut authority, revision) =
            crate::resources::get_raw::<CertAuthority>(self.backend(), &key)
                .await?
                .ok_or_else(|| AuthError::Internal(format!("{} CA missing", ca.as_str())))?;
        if !authority.wants_own_key(|k: &CaKey| self.can_load(&k.handle)) {
            return Ok(false);
        }
        // A rotation's init takes every auth server's key; a join (its own
        // or one under way) only when the operator said so at start.
        let rotating = authority
            .rotation
            .as_ref()
            .is_some_and(|r| r.phase == Phase::Init && !r.join);
        if !rotating && !may_join {
            return Ok(false);
        }
        let grace = self.config().await?.default_session_ttl.0.as_secs() as i64;
        let fresh = authority.new_key(hsm)?;
        let location = fresh.handle.data.clone();
        let started = authority
            .join(fresh, now(), Some(grace))
            .map_err(|e| AuthError::Conflict(e.to_string()))?;
        if !self.store_authority(&key, revision, &authority).await? {
            // Another step came first: the next round looks again (the
            // key made in the token is left unused).
            return Ok(false);
        }
        let what = match started {
            true => format!(
                "an auth server joined the {} CA with a key of its own HSM ({location}): trusted now, it signs after the join's switch ({})",
                ca.as_str(),
                schedule(ca, grace)
            ),
            false => format!(
                "an auth server added a key of its own HSM ({location}) to the {} CA's rotation",
                ca.as_str()
            ),
        };
        tracing::info!(ca = ca.as_str(), "{what}");
        self.audit(
            AuditEvent::new(codes::CA_ROTATE, self.cluster(), "warden", what)
                .with("ca", ca.as_str())
                .with("phase", if started { "join" } else { "init" })
                .with("key", location)
                .with("trusted_keys", authority.all().count()),
        )
        .await;
        Ok(true)
    }

    /// Issues this auth server's cross certificates: its tls signing key
    /// certifies every other signing or pending key it cannot use itself
    /// (other auth servers' HSM keys).
    async fn certify_peers(&self) -> Result<()> {
        let key = format!("{AUTHORITIES}{}", CaType::Tls.as_str());
        let Some((mut authority, revision)) =
            crate::resources::get_raw::<CertAuthority>(self.backend(), &key).await?
        else {
            return Ok(());
        };
        let has_hsm = self.inner.keys.hsm.is_some();
        let loadable = |k: &CaKey| self.can_load(&k.handle);
        let Some(mine) = CertAuthority::own_key(&authority.active, has_hsm, loadable).cloned()
        else {
            return Ok(());
        };
        let others: Vec<CaKey> = authority
            .uncertified(&mine, now())
            .filter(|k| !loadable(k))
            .cloned()
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let signer = self.load_key(&mine.handle)?;
        let issuer_pem = mine
            .tls_cert_pem
            .as_deref()
            .ok_or_else(|| AuthError::Internal("a tls CA key without its certificate".into()))?;
        for other in &others {
            let pem = warden_ca::tls::cross_certify(
                &*signer,
                issuer_pem,
                self.cluster(),
                other.handle.alg,
                &other.handle.public_bytes()?,
            )?;
            authority.certify(CrossCert {
                subject: other.handle.public_key.clone(),
                issuer: mine.handle.public_key.clone(),
                pem,
            });
        }
        // Lost to another writer: the next round certifies again.
        if self.store_authority(&key, revision, &authority).await? {
            tracing::info!(
                keys = others.len(),
                "certified other auth servers' tls CA keys with this one's"
            );
        }
        Ok(())
    }

    /// Stores a CA at `key` if it is still at `revision` (several auth
    /// servers write CAs); false when another write came first.
    async fn store_authority(
        &self,
        key: &str,
        revision: i64,
        authority: &CertAuthority,
    ) -> Result<bool> {
        let value =
            serde_json::to_vec(authority).map_err(|e| AuthError::Internal(e.to_string()))?;
        match self
            .backend()
            .compare_and_swap(key, revision, value, None)
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// What an automatic rotation of `ca` will do, for its audit event.
fn schedule(ca: CaType, grace: i64) -> String {
    match ca {
        CaType::User => format!(
            "it signs once every online node and proxy trusts it, and the old key is dropped {grace}s after that"
        ),
        CaType::Host => format!(
            "it signs after {grace}s (clients learn it when they log in or renew), and the old key is dropped once every node and proxy holds a host certificate from the new one"
        ),
        CaType::Db => format!(
            "it signs after {grace}s (add it to every database's trusted CAs meanwhile: 'warden admin db ca export'), and the old key is dropped {grace}s after that"
        ),
        CaType::Tls => format!(
            "it signs after {grace}s (clients learn it when they log in or renew), and the old key is dropped {grace}s after that, once every node and proxy holds a certificate from the new one"
        ),
    }
}
