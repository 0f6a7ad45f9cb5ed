//! The auth service's state and its core operations, independent of HTTP.

use crate::error::{AuthError, Result};
use crate::ratelimit::RateLimiter;
use crate::resources::{self, AUTHORITIES, CLUSTER_CONFIG, ROLES, USERS};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use warden_ca::tls::{self, CertRequest, Usage};
use warden_ca::{CaKey, CaSigner, CaType, CertAuthority, ClientKey, KeyStore, SoftwareKeyStore};
use warden_store::{
    AuditLog, Backend, FileRecordingStore, RecordingStore, SqliteAuditLog, SqliteBackend,
    StoreError, WatchCache,
};
use warden_types::audit::AuditEvent;
use warden_types::metrics::METRICS;
use warden_types::resource::kind;
use warden_types::{ClusterConfigSpec, Document, Identity, IdentityKind, RoleSpec, UserSpec};

/// The auth service. Cheap to clone.
#[derive(Clone)]
pub struct AuthServer {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub cluster: String,
    pub backend: Arc<dyn Backend>,
    pub audit: Arc<dyn AuditLog>,
    pub recordings: Arc<dyn RecordingStore>,
    pub keys: Keys,
    pub limiter: RateLimiter,
    /// Rate-limited attempts, summarised per source and window.
    pub refusals: crate::ratelimit::Refusals,
    pub roles: WatchCache<RoleSpec>,
    pub users: WatchCache<UserSpec>,
    pub locks: WatchCache<warden_types::LockSpec>,
    pub requests: WatchCache<warden_types::AccessRequestSpec>,
    pub webhooks: crate::webhook::Webhooks,
    pub sso: crate::oidc::Sso,
    /// Bounds concurrent password hashing.
    pub hashing: tokio::sync::Semaphore,
    /// This server's own events while the audit log is unreachable.
    pub spool: warden_store::EventSpool,
    /// The node policy last encoded, and its revision: every node's long
    /// poll shares one encoding per change.
    pub node_policy: crate::push::PolicyCache,
    /// This process, for the node policy's versions.
    pub epoch: String,
    /// Outages of the recording store.
    pub recording_health: crate::recordings::StoreHealth,
    /// Uploads received at once (each holds a chunk and, for S3, a part).
    pub upload_slots: tokio::sync::Semaphore,
    /// CA signers already loaded (unsealed, or found in the HSM), by key.
    pub signers: std::sync::Mutex<std::collections::HashMap<String, Arc<dyn CaSigner>>>,
    /// CA keys this auth server could not load lately (another auth
    /// server's HSM key): not tried again on every signature.
    pub unloadable: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Whether this auth server can sign with every CA (`signing_gate`).
    pub signing_ready: std::sync::atomic::AtomicBool,
    /// The CA generation as it moves (`AuthServer::ca_generations`).
    pub generations: std::sync::OnceLock<tokio::sync::watch::Sender<String>>,
}

/// Where CA keys live: the software store (its key-encryption key also
/// seals TOTP secrets), and optionally this server's HSM.
pub struct Keys {
    pub software: Arc<SoftwareKeyStore>,
    pub hsm: Option<Arc<warden_ca::pkcs11::Pkcs11KeyStore>>,
    /// May join with keys of its own HSM (`StoreConfig::hsm_join`).
    pub hsm_join: bool,
}

impl Keys {
    /// Where new CA keys are made: the HSM if there is one.
    pub(crate) fn generator(&self) -> &dyn KeyStore {
        match &self.hsm {
            Some(hsm) => &**hsm,
            None => &*self.software,
        }
    }
}

/// Key and certificate of a service (proxy, auth itself) or of the local
/// admin.
pub struct ServiceIdentity {
    pub key: ClientKey,
    pub cert_pem: String,
    pub ca_pems: Vec<String>,
}

/// How long an audit append may take before the event goes to the spool.
const APPEND_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where an auth server keeps the cluster's state. Every auth server of a
/// cluster must name the same stores and hold the same key-encryption key.
#[derive(Clone, Debug, Default)]
pub struct StoreConfig {
    /// `postgres://...`; `None` (or `sqlite`): `state.db` in the data dir.
    pub backend: Option<String>,
    /// `postgres://...`; `None`: the backend's database when it is
    /// PostgreSQL, else `audit.db` in the data dir.
    pub audit_log: Option<String>,
    /// The key-encryption key sealing the CA keys; `None`: `DATA_DIR/kek`,
    /// created on first start.
    pub kek_file: Option<std::path::PathBuf>,
    /// `s3://BUCKET/PREFIX?endpoint=...`; `None`: `recordings/` in the
    /// data dir.
    pub recordings: Option<String>,
    /// An HSM for the CA keys: new CAs are generated in it, and keys held
    /// in it sign through it.
    pub hsm: Option<warden_ca::pkcs11::HsmConfig>,
    /// With an HSM that holds none of the cluster's keys: join with keys
    /// of its own (`--hsm-join`) instead of refusing to start.
    pub hsm_join: bool,
}

/// A store named on the command line.
enum StoreUrl {
    Sqlite,
    Postgres(String),
    Etcd(String),
}

fn store_url(flag: &str, url: Option<&str>) -> anyhow::Result<StoreUrl> {
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(StoreUrl::Sqlite);
    };
    match url.split_once("://").map(|(scheme, _)| scheme) {
        _ if url == "sqlite" => Ok(StoreUrl::Sqlite),
        Some("postgres" | "postgresql") => Ok(StoreUrl::Postgres(url.to_string())),
        Some("etcd" | "etcds") => Ok(StoreUrl::Etcd(url.to_string())),
        _ => anyhow::bail!(
            "{flag}: unknown store {}; expected sqlite, postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE or etcd[s]://HOST:PORT[,HOST:PORT...]",
            warden_store::postgres::redact_url(url)
        ),
    }
}

/// Opens the backend and the audit log `stores` name (in `data_dir` by
/// default), creating nothing in them.
pub(crate) async fn open_state(
    data_dir: &Path,
    stores: &StoreConfig,
) -> anyhow::Result<(Arc<dyn Backend>, Arc<dyn AuditLog>)> {
    use anyhow::Context;
    let backend_url = store_url("--backend", stores.backend.as_deref())?;
    let audit_url = match (stores.audit_log.as_deref(), &backend_url) {
        (None, StoreUrl::Postgres(url)) => StoreUrl::Postgres(url.clone()),
        (given, _) => store_url("--audit-log", given)?,
    };

    let backend: Arc<dyn Backend> = match &backend_url {
        StoreUrl::Sqlite => Arc::new(
            SqliteBackend::open(&data_dir.join("state.db")).context("cannot open state.db")?,
        ),
        StoreUrl::Postgres(url) => Arc::new(
            warden_store::PostgresBackend::connect(url)
                .await
                .with_context(|| {
                    format!(
                        "cannot open the backend at {}",
                        warden_store::postgres::redact_url(url)
                    )
                })?,
        ),
        StoreUrl::Etcd(url) => Arc::new(
            warden_store::EtcdBackend::connect(url)
                .await
                .with_context(|| format!("cannot open the backend at {url}"))?,
        ),
    };
    if matches!(backend_url, StoreUrl::Etcd(_)) && matches!(audit_url, StoreUrl::Sqlite) {
        tracing::warn!("the backend is etcd but the audit log is this server's audit.db: several auth servers need --audit-log postgres://... to share one chain");
    }
    let audit: Arc<dyn AuditLog> = match &audit_url {
        StoreUrl::Sqlite => Arc::new(
            SqliteAuditLog::open(&data_dir.join("audit.db")).context("cannot open audit.db")?,
        ),
        StoreUrl::Etcd(_) => anyhow::bail!(
            "--audit-log: the audit log lives in PostgreSQL (postgres://...) or this server's audit.db (sqlite), not in etcd"
        ),
        StoreUrl::Postgres(url) => Arc::new(
            warden_store::PostgresAuditLog::connect(url)
                .await
                .with_context(|| {
                    format!(
                        "cannot open the audit log at {}",
                        warden_store::postgres::redact_url(url)
                    )
                })?,
        ),
    };
    Ok((backend, audit))
}

/// Where the key-encryption key is: `--kek-file`, else the data dir's.
pub(crate) fn kek_path(data_dir: &Path, stores: &StoreConfig) -> std::path::PathBuf {
    stores
        .kek_file
        .clone()
        .unwrap_or_else(|| data_dir.join("kek"))
}

impl AuthServer {
    /// Opens the cluster state (in `data_dir`, or in the shared stores of
    /// `stores`), creating the CAs, the cluster config and the default
    /// roles on first start.
    pub async fn open(
        data_dir: &Path,
        cluster_name: Option<&str>,
        stores: &StoreConfig,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        create_private_dir(data_dir)
            .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let kek_path = kek_path(data_dir, stores);
        let keys = Arc::new(match stores.kek_file {
            // An operator-provided key is never made up here: a typo'd path
            // would otherwise start a second, unrelated CA key.
            Some(_) => SoftwareKeyStore::open_existing(&kek_path)?,
            None => SoftwareKeyStore::open_or_create(&kek_path)?,
        });
        let (backend, audit) = open_state(data_dir, stores).await?;
        let recordings: Arc<dyn RecordingStore> = match stores.recordings.as_deref() {
            None => Arc::new(
                FileRecordingStore::open(&data_dir.join("recordings"))
                    .context("cannot open the recordings directory")?,
            ),
            Some(url) if url.starts_with("s3://") => {
                let s3 = warden_store::S3RecordingStore::from_url(url)
                    .context("--recordings")?;
                s3.probe().await.context("--recordings")?;
                Arc::new(s3)
            }
            Some(url) => anyhow::bail!(
                "--recordings: {url:?} is not a recording store; expected s3://BUCKET/PREFIX[?endpoint=http(s)://HOST:PORT&region=REGION], or leave it out for the data dir"
            ),
        };
        let spool = warden_store::EventSpool::open(&data_dir.join("audit-spool"))
            .context("cannot open the audit spool")?;
        let hsm = match &stores.hsm {
            Some(config) => Some(Arc::new(
                warden_ca::pkcs11::Pkcs11KeyStore::open(config).context("--hsm-module")?,
            )),
            None => None,
        };
        let server = Self::with_stores(
            backend,
            audit,
            recordings,
            Keys {
                software: keys,
                hsm,
                hsm_join: stores.hsm_join,
            },
            spool,
            cluster_name,
        )
        .await?;
        server.check_kek(&kek_path).await?;
        Ok(server)
    }

    /// Fails start-up when the CA keys in the backend were sealed under
    /// another key-encryption key (a second auth server without the first
    /// one's KEK), instead of failing every login later.
    ///
    /// An auth server with an HSM of its own that holds none of a CA's
    /// keys joins instead: it adds a key from its HSM (see `rotation`).
    async fn check_kek(&self, kek_path: &Path) -> anyhow::Result<()> {
        self.check_sealed_secrets(kek_path).await?;
        self.refresh_signing_ready().await;
        for ca in CaType::ALL {
            let authority = self.authority(ca).await?;
            if self.own_signer(authority.clone(), true).is_ok() {
                continue;
            }
            if self.inner.keys.hsm.is_some()
                && self.inner.keys.hsm_join
                && self.join_at_start(ca).await?
            {
                continue;
            }
            let Err(e) = self.signer(ca).await else {
                continue;
            };
            if let Some(hsm) = &self.inner.keys.hsm {
                anyhow::bail!(
                    "this auth server's HSM (token {}) holds none of the cluster's {} CA keys ({e}). If it is a new auth server with an HSM of its own, start it with --hsm-join: its keys are trusted at once and sign after the join's switch. Otherwise check --hsm-token",
                    hsm.token(),
                    ca.as_str()
                );
            }
            let in_hsm = authority
                .signing_key()
                .is_some_and(|k| k.handle.store == warden_ca::pkcs11::STORE);
            if in_hsm {
                anyhow::bail!("cannot use the cluster's CA keys: {e}");
            }
            anyhow::bail!(
                "cannot unseal the cluster's {} CA key with the key-encryption key {} ({e}): every auth server sharing a backend needs the same KEK; copy it from the first auth server's data dir (kek) and start with --kek-file",
                ca.as_str(),
                kek_path.display()
            );
        }
        Ok(())
    }

    /// Users' TOTP seeds are sealed with the key-encryption key whether or
    /// not the CA keys live in HSMs: an auth server with another KEK (an
    /// HSM of its own, a typo'd --kek-file) must not start, or every OTP
    /// login through it fails. The first auth server leaves a sealed
    /// marker in the backend; the others must open it.
    async fn check_sealed_secrets(&self, kek_path: &Path) -> anyhow::Result<()> {
        const AAD: &[u8] = b"warden kek check";
        let software = &self.inner.keys.software;
        // Twice: another auth server may write the marker meanwhile.
        for _ in 0..2 {
            let Some(item) = self.backend().get(KEK_CHECK).await? else {
                // An upgraded cluster has sealed data but no marker yet: the
                // key must open that before it is written down as the
                // cluster's.
                if !self.kek_opens_sealed_data().await? {
                    anyhow::bail!(
                        "the key-encryption key {} is not the cluster's: it cannot unseal what other auth servers sealed (CA keys or users' TOTP seeds), HSM or not; copy the first auth server's (its data dir's kek) and start with --kek-file",
                        kek_path.display()
                    );
                }
                let value = software.seal(AAD, b"ok").into_bytes();
                match self.backend().create(KEK_CHECK, value, None).await {
                    Ok(_) => return Ok(()),
                    Err(StoreError::AlreadyExists(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            if software
                .open(AAD, &String::from_utf8_lossy(&item.value))
                .is_err()
            {
                anyhow::bail!(
                    "the key-encryption key {} is not the cluster's: it cannot unseal what other auth servers sealed (users' TOTP seeds), HSM or not; copy the first auth server's (its data dir's kek) and start with --kek-file",
                    kek_path.display()
                );
            }
            return Ok(());
        }
        Ok(())
    }

    /// Whether the key-encryption key opens what the backend already holds
    /// sealed: a software CA key, else a user's TOTP seed (true when there
    /// is nothing sealed yet).
    async fn kek_opens_sealed_data(&self) -> anyhow::Result<bool> {
        let software = &self.inner.keys.software;
        for ca in CaType::ALL {
            let authority = self.authority(ca).await?;
            let sealed = authority
                .all()
                .find(|k| k.handle.store != warden_ca::pkcs11::STORE)
                .map(|k| software.load(&k.handle).is_ok());
            if let Some(opens) = sealed {
                return Ok(opens);
            }
        }
        for item in self.backend().range(resources::CREDENTIALS).await? {
            if let Ok(c) = serde_json::from_slice::<resources::Credentials>(&item.value) {
                if !c.totp_sealed.is_empty() {
                    return Ok(software
                        .open(crate::login::TOTP_AAD, &c.totp_sealed)
                        .is_ok());
                }
            }
        }
        Ok(true)
    }

    /// Joins `ca` with a key of this auth server's HSM, retrying when
    /// another auth server moved the CA meanwhile.
    async fn join_at_start(&self, ca: CaType) -> anyhow::Result<bool> {
        for _ in 0..5 {
            if self.take_own_key(ca, true).await? {
                return Ok(true);
            }
            let authority = self.authority(ca).await?;
            if self.own_signer(authority, true).is_ok() {
                return Ok(true);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        Ok(false)
    }

    /// Builds the service over given stores.
    pub async fn with_stores(
        backend: Arc<dyn Backend>,
        audit: Arc<dyn AuditLog>,
        recordings: Arc<dyn RecordingStore>,
        keys: Keys,
        spool: warden_store::EventSpool,
        cluster_name: Option<&str>,
    ) -> anyhow::Result<Self> {
        if backend.get(crate::backup::RESTORING).await?.is_some() {
            anyhow::bail!(
                "a restore into this backend has not finished; run the same 'warden admin restore' again to complete it"
            );
        }
        let config = ensure_cluster_config(&*backend, cluster_name).await?;
        let cluster = config.spec.cluster_name.clone();
        for ca in CaType::ALL {
            ensure_authority(&*backend, keys.generator(), ca, &cluster).await?;
        }
        for role in warden_policy::defaults::roles() {
            let key = format!("{ROLES}{}", role.name());
            match backend.create(&key, resources::encode(&role), None).await {
                Ok(_) => {}
                Err(StoreError::AlreadyExists(_)) => upgrade_default_role(&*backend, &role).await?,
                Err(e) => return Err(e.into()),
            }
        }
        let roles = WatchCache::start(backend.clone(), ROLES).await?;
        let users = WatchCache::start(backend.clone(), USERS).await?;
        let locks = WatchCache::start(backend.clone(), crate::resources::LOCKS).await?;
        let requests = WatchCache::start(backend.clone(), crate::resources::REQUESTS).await?;
        let webhooks = crate::webhook::Webhooks::start(
            WatchCache::start(backend.clone(), crate::resources::WEBHOOKS).await?,
            audit.clone(),
            cluster.clone(),
        );
        Ok(AuthServer {
            inner: Arc::new(Inner {
                cluster,
                backend,
                audit,
                recordings,
                keys,
                limiter: RateLimiter::new(),
                refusals: crate::ratelimit::Refusals::new(),
                roles,
                users,
                locks,
                requests,
                webhooks,
                sso: crate::oidc::Sso::new(),
                hashing: tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
                ),
                spool,
                node_policy: Default::default(),
                epoch: uuid::Uuid::new_v4().to_string(),
                recording_health: Default::default(),
                upload_slots: tokio::sync::Semaphore::new(crate::recordings::CONCURRENT_UPLOADS),
                signers: Default::default(),
                unloadable: Default::default(),
                generations: Default::default(),
                signing_ready: std::sync::atomic::AtomicBool::new(true),
            }),
        })
    }

    pub fn cluster(&self) -> &str {
        &self.inner.cluster
    }

    pub(crate) fn backend(&self) -> &dyn Backend {
        &*self.inner.backend
    }

    pub(crate) async fn config(&self) -> Result<ClusterConfigSpec> {
        Ok(
            resources::get::<ClusterConfigSpec>(self.backend(), CLUSTER_CONFIG)
                .await?
                .map(|d| d.spec)
                .unwrap_or_default(),
        )
    }

    pub(crate) async fn authority(&self, ca: CaType) -> Result<CertAuthority> {
        resources::get_raw::<CertAuthority>(
            self.backend(),
            &format!("{AUTHORITIES}{}", ca.as_str()),
        )
        .await?
        .map(|(a, _)| a)
        .ok_or_else(|| AuthError::Internal(format!("{} CA missing", ca.as_str())))
    }

    /// The key this auth server signs with for `ca`, and the CA led by it
    /// (its certificate first among the tls CA's): with several signing
    /// keys, one per auth server whose HSM holds its own, the first it can
    /// load.
    pub(crate) async fn signer(&self, ca: CaType) -> Result<(Arc<dyn CaSigner>, CertAuthority)> {
        self.own_signer(self.authority(ca).await?, false)
    }

    /// As [`AuthServer::signer`]; with `pending`, a key of its own that is
    /// not signing yet will do (a joining auth server's own listener and
    /// admin identity: nodes and proxies trust it already).
    pub(crate) fn own_signer(
        &self,
        authority: CertAuthority,
        pending: bool,
    ) -> Result<(Arc<dyn CaSigner>, CertAuthority)> {
        let ca = authority.kind.as_str();
        let has_hsm = self.inner.keys.hsm.is_some();
        let loadable = |k: &CaKey| self.can_load(&k.handle);
        let key = CertAuthority::own_key(&authority.active, has_hsm, loadable)
            .or_else(|| {
                pending
                    .then(|| CertAuthority::own_key(&authority.pending, has_hsm, loadable))
                    .flatten()
            })
            .cloned();
        let Some(key) = key else {
            let first = authority
                .signing_key()
                .ok_or_else(|| AuthError::Internal(format!("{ca} CA has no active key")))?;
            if has_hsm && authority.pending.iter().any(loadable) {
                return Err(AuthError::NotReady(format!(
                    "this auth server cannot sign with the {ca} CA yet: its own HSM key is trusted but not signing until the join's switch ('warden admin ca ls'; 'warden admin ca rotate --type {ca} --phase switch' moves it on)"
                )));
            }
            if has_hsm {
                // It missed a rotation's init (or its join was rolled
                // back): other auth servers sign meanwhile.
                return Err(AuthError::NotReady(format!(
                    "this auth server holds none of the {ca} CA's signing keys: restart it with --hsm-join, or rotate the CA ('warden admin ca rotate --type {ca}': each auth server adds its own key at init)"
                )));
            }
            let e = self
                .load_key(&first.handle)
                .err()
                .map_or_else(|| "not usable here".to_string(), |e| e.to_string());
            return Err(AuthError::Internal(format!("the {ca} CA's key: {e}")));
        };
        let signer = self
            .load_key(&key.handle)
            .map_err(|e| AuthError::Internal(format!("the {ca} CA's key: {e}")))?;
        Ok((signer, authority.led_by(&key)))
    }

    /// Whether this auth server can sign with a CA key (remembered for a
    /// minute when it cannot: another auth server's HSM key stays out of
    /// reach).
    pub(crate) fn can_load(&self, handle: &warden_ca::KeyHandle) -> bool {
        const RETRY: std::time::Duration = std::time::Duration::from_secs(60);
        let id = key_id(handle);
        let recent_miss = self
            .inner
            .unloadable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .is_some_and(|at| at.elapsed() < RETRY);
        if recent_miss {
            return false;
        }
        let ok = self.load_key(handle).is_ok();
        if !ok {
            self.inner
                .unloadable
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, std::time::Instant::now());
        }
        ok
    }

    /// A CA key from the store that holds it, loaded once.
    pub(crate) fn load_key(
        &self,
        handle: &warden_ca::KeyHandle,
    ) -> warden_ca::Result<Arc<dyn CaSigner>> {
        let id = key_id(handle);
        let cached = self
            .inner
            .signers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        if let Some(signer) = cached {
            return Ok(signer);
        }
        let signer = self.open_key(handle)?;
        self.inner
            .signers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, signer.clone());
        Ok(signer)
    }

    fn open_key(&self, handle: &warden_ca::KeyHandle) -> warden_ca::Result<Arc<dyn CaSigner>> {
        match (handle.store.as_str(), &self.inner.keys.hsm) {
            (warden_ca::pkcs11::STORE, Some(hsm)) => hsm.load(handle),
            (warden_ca::pkcs11::STORE, None) => Err(warden_ca::CaError::Hsm(format!(
                "it is held in an HSM ({}); start this auth server with --hsm-module, --hsm-token and --hsm-pin-file",
                handle.data
            ))),
            _ => self.inner.keys.software.load(handle),
        }
    }

    /// PEM certificates of the tls CA.
    pub async fn tls_ca_pems(&self) -> Result<Vec<String>> {
        Ok(self.authority(CaType::Tls).await?.tls_cert_pems())
    }

    /// `sha256:...` pin of the tls CA's signing key.
    pub async fn ca_pin(&self) -> Result<String> {
        let pems = self.tls_ca_pems().await?;
        let first = pems
            .first()
            .ok_or_else(|| AuthError::Internal("tls CA has no certificate".into()))?;
        Ok(tls::ca_pin(first)?)
    }

    /// Appends an audit event; failures are logged, never swallowed silently.
    pub(crate) async fn audit(&self, event: AuditEvent) {
        self.audit_with::<()>(event, None).await
    }

    /// Audits `event` and passes it, with the document it is about, to
    /// the webhooks that want it.
    pub(crate) async fn audit_with<S: serde::Serialize>(
        &self,
        event: AuditEvent,
        about: Option<&Document<S>>,
    ) {
        if let Err(e) = self
            .record(event, about.and_then(|d| serde_json::to_value(d).ok()))
            .await
        {
            tracing::error!(error = %e, "cannot write audit event");
        }
    }

    /// A refused (rate-limited) attempt: the first from `key` in a window
    /// is audited, the rest are counted and summarised when it ends.
    pub(crate) async fn audit_refusal(&self, key: &str, event: impl FnOnce() -> AuditEvent) {
        if self.inner.refusals.note(key) {
            let e = event();
            let message = format!(
                "{}; further refusals for {key} in the next {}s are counted in one event",
                e.message,
                crate::ratelimit::SUMMARY_WINDOW.as_secs()
            );
            self.audit(AuditEvent { message, ..e }.with("refusal_key", key.to_string()))
                .await;
        }
    }

    /// Writes the summaries of refusal windows that ended, every few
    /// seconds while the service runs.
    pub fn spawn_refusal_summaries(&self) {
        let s = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                for (key, count) in s.inner.refusals.drain() {
                    s.audit(
                        AuditEvent::new(
                            warden_types::audit::codes::RATE_LIMITED,
                            s.cluster(),
                            "",
                            format!("{count} more attempts refused for {key} (rate limit)"),
                        )
                        .with("refusal_key", key)
                        .with("count", count),
                    )
                    .await;
                }
            }
        });
    }

    /// Appends durably, then notifies webhooks; errors are the caller's.
    /// Every event is bounded in size first, whoever supplied its strings.
    pub(crate) async fn record(
        &self,
        event: AuditEvent,
        about: Option<serde_json::Value>,
    ) -> std::result::Result<(), StoreError> {
        if let Some(stored) = self.store_or_spool(event).await? {
            self.inner.webhooks.notify(&stored, about);
        }
        Ok(())
    }

    /// Makes `event` durable before the caller goes on (certificates never
    /// leave without their audit event): in the audit log, or, while it is
    /// unreachable, in the local spool.
    pub(crate) async fn append_durably(
        &self,
        event: AuditEvent,
    ) -> std::result::Result<(), StoreError> {
        self.store_or_spool(event).await.map(|_| ())
    }

    /// Appends `event` (returned as stored), or spools it (`None`).
    async fn store_or_spool(
        &self,
        event: AuditEvent,
    ) -> std::result::Result<Option<AuditEvent>, StoreError> {
        let event = event.bounded();
        // While events wait in the spool, new ones queue behind them, so
        // the chain keeps the order they happened in.
        if self.inner.spool.queued() == 0 {
            // A log that does not answer is as good as down: a request
            // must not hang on it (ids make a late duplicate harmless).
            match tokio::time::timeout(APPEND_WAIT, self.inner.audit.append(event.clone())).await {
                Ok(Ok(stored)) => return Ok(Some(stored)),
                Ok(Err(e @ StoreError::AlreadyExists(_))) => return Err(e),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "audit log unreachable; keeping events in the local spool until it is back");
                }
                Err(_) => {
                    tracing::warn!("audit log not answering; keeping events in the local spool until it is back");
                }
            }
        }
        self.inner.spool.push(&event).map_err(|e| {
            StoreError::Backend(format!(
                "audit log unreachable and the local spool refused the event: {e}"
            ))
        })?;
        METRICS.audit_spooled.set(self.inner.spool.queued() as u64);
        Ok(None)
    }

    /// Delivers spooled events to the audit log, in order, forever; after
    /// an outage, records how long it lasted and how many events waited.
    pub fn spawn_spool_delivery(&self) {
        let s = self.clone();
        tokio::spawn(async move {
            use warden_store::spool::{deliver, Delivery};
            let send = |events: Vec<AuditEvent>| {
                let s = s.clone();
                async move {
                    let stored = tokio::time::timeout(
                        std::time::Duration::from_secs(30),
                        s.inner.audit.append_batch(events),
                    )
                    .await
                    .map_err(|_| "the audit log did not answer".to_string())?
                    .map_err(|e| e.to_string())?;
                    for e in &stored {
                        s.inner.webhooks.notify(e, None);
                    }
                    Ok(())
                }
            };
            // Since when events have been waiting, and how many.
            let mut outage: Option<(std::time::Instant, usize)> = None;
            loop {
                let queued = s.inner.spool.queued();
                if queued > 0 {
                    let started = outage.get_or_insert((std::time::Instant::now(), 0));
                    started.1 = started.1.max(queued);
                }
                let result = deliver(&s.inner.spool, &send).await;
                METRICS.audit_spooled.set(s.inner.spool.queued() as u64);
                match (result, outage) {
                    (Delivery::Done, Some((since, events))) => {
                        outage = None;
                        let seconds = since.elapsed().as_secs();
                        tracing::info!(
                            seconds,
                            events,
                            "audit log reachable again; spooled events delivered"
                        );
                        // Straight to the log, not through the spool: a note
                        // about an outage must not start another one.
                        let note = AuditEvent::new(
                            warden_types::audit::codes::AUDIT_OUTAGE,
                            &s.inner.cluster,
                            "warden",
                            format!("the audit log was unreachable for about {seconds}s; {events} event(s) waited in the local spool and were delivered"),
                        )
                        .with("seconds", seconds)
                        .with("events", events as u64);
                        match s.inner.audit.append(note.bounded()).await {
                            Ok(stored) => s.inner.webhooks.notify(&stored, None),
                            Err(e) => tracing::warn!(error = %e, "cannot record the audit outage"),
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                    (Delivery::Done, None) => {
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await
                    }
                    (Delivery::Failed, _) => {
                        tokio::time::sleep(std::time::Duration::from_secs(2)).await
                    }
                }
            }
        });
    }

    /// Stores events in one durable write (ids already stored are skipped)
    /// and hands the stored ones to the export sinks.
    pub(crate) async fn record_batch(
        &self,
        events: Vec<AuditEvent>,
    ) -> std::result::Result<(), StoreError> {
        let events = events.into_iter().map(AuditEvent::bounded).collect();
        for event in self.inner.audit.append_batch(events).await? {
            self.inner.webhooks.notify(&event, None);
        }
        Ok(())
    }

    /// Issues a key and X.509 certificate for a service or the admin.
    pub async fn issue_service_identity(
        &self,
        kind: IdentityKind,
        name: &str,
        dns_names: Vec<String>,
        ips: Vec<IpAddr>,
        ttl: Duration,
    ) -> Result<ServiceIdentity> {
        // The local admin identity of a joining auth server may come from
        // its own pending key (see `server_identity`).
        let (signer, authority) = self.own_signer(
            self.authority(CaType::Tls).await?,
            kind == IdentityKind::Admin,
        )?;
        let ca_pems = authority.tls_cert_pems();
        let key = ClientKey::generate();
        let now = OffsetDateTime::now_utc();
        let roles = match kind {
            IdentityKind::Admin => vec!["editor".to_string()],
            _ => Vec::new(),
        };
        let identity = Identity {
            kind,
            username: name.to_string(),
            cluster: self.inner.cluster.clone(),
            roles,
            logins: Vec::new(),
            traits: Default::default(),
            requests: Vec::new(),
            expires: (now + ttl).unix_timestamp(),
            login_expires: 0,
            user_id: String::new(),
        };
        let usage = match kind {
            IdentityKind::Admin | IdentityKind::User => Usage::Client,
            IdentityKind::Proxy | IdentityKind::Node => Usage::ClientAndServer,
        };
        let cert_pem = tls::issue_for_ed25519(
            &*signer,
            &ca_pems[0],
            key.public_raw(),
            &CertRequest {
                common_name: name.to_string(),
                dns_names,
                ips,
                identity: Some(identity),
                not_before: now - Duration::minutes(1),
                not_after: now + ttl,
                usage,
            },
        )?;
        Ok(ServiceIdentity {
            key,
            cert_pem,
            ca_pems,
        })
    }

    /// The auth server's own TLS certificate (name `warden-auth`).
    /// A joining auth server serves with its own pending key: nodes and
    /// proxies trust it from the join's start, and clients reach auth only
    /// through proxies.
    pub async fn server_identity(&self) -> Result<ServiceIdentity> {
        let (signer, authority) = self.own_signer(self.authority(CaType::Tls).await?, true)?;
        let ca_pems = authority.tls_cert_pems();
        let key = ClientKey::generate();
        let now = OffsetDateTime::now_utc();
        let cert_pem = tls::issue_for_ed25519(
            &*signer,
            &ca_pems[0],
            key.public_raw(),
            &CertRequest {
                common_name: warden_types::AUTH_SERVER_NAME.to_string(),
                dns_names: vec![warden_types::AUTH_SERVER_NAME.to_string()],
                ips: vec![],
                identity: None,
                not_before: now - Duration::minutes(1),
                not_after: now + crate::nodes::SERVICE_CERT_TTL,
                usage: Usage::Server,
            },
        )?;
        Ok(ServiceIdentity {
            key,
            cert_pem,
            ca_pems,
        })
    }

    /// Roles in force now for `names`, from the cache. Unknown names are
    /// skipped: a deleted role grants nothing.
    pub(crate) fn roles(&self, names: &[String]) -> Vec<Document<RoleSpec>> {
        names
            .iter()
            .filter_map(|n| self.inner.roles.get(n))
            .collect()
    }
}

/// A value sealed with the cluster's key-encryption key (`check_kek`).
const KEK_CHECK: &str = "/cluster/kek_check";

fn key_id(handle: &warden_ca::KeyHandle) -> String {
    format!("{}:{}:{}", handle.store, handle.public_key, handle.data)
}

/// Brings a built-in role left unchanged since an older release up to
/// today's default (the `editor` of clusters made before `grant_roles`
/// existed could otherwise grant nothing). Roles an admin edited stay as
/// they are.
async fn upgrade_default_role(
    backend: &dyn Backend,
    role: &Document<RoleSpec>,
) -> anyhow::Result<()> {
    let key = format!("{ROLES}{}", role.name());
    let Some(stored) = resources::get::<RoleSpec>(backend, &key).await? else {
        return Ok(());
    };
    let mut before = role.spec.clone();
    before.allow.grant_roles.clear();
    if stored.spec == before && stored.spec != role.spec {
        let rev = stored.metadata.revision.unwrap_or_default();
        let mut doc = stored.clone();
        doc.spec = role.spec.clone();
        match backend
            .compare_and_swap(&key, rev, resources::encode(&doc), None)
            .await
        {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // An existing directory is tightened too.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

async fn ensure_cluster_config(
    backend: &dyn Backend,
    name: Option<&str>,
) -> anyhow::Result<Document<ClusterConfigSpec>> {
    if let Some(existing) = resources::get::<ClusterConfigSpec>(backend, CLUSTER_CONFIG).await? {
        if let Some(name) = name {
            anyhow::ensure!(
                name == existing.spec.cluster_name,
                "this data dir belongs to cluster {:?}, not {name:?}; a cluster cannot be renamed",
                existing.spec.cluster_name
            );
        }
        return Ok(existing);
    }
    let mut spec = ClusterConfigSpec::default();
    if let Some(name) = name {
        warden_types::resource::validate_name(name).map_err(anyhow::Error::msg)?;
        spec.cluster_name = name.to_string();
    }
    let doc = Document::new(kind::CLUSTER_CONFIG, "cluster-config", spec);
    match backend
        .create(CLUSTER_CONFIG, resources::encode(&doc), None)
        .await
    {
        Ok(_) => Ok(doc),
        Err(StoreError::AlreadyExists(_)) => Ok(resources::get(backend, CLUSTER_CONFIG)
            .await?
            .ok_or_else(|| anyhow::anyhow!("cluster config vanished"))?),
        Err(e) => Err(e.into()),
    }
}

async fn ensure_authority(
    backend: &dyn Backend,
    keys: &dyn KeyStore,
    ca: CaType,
    cluster: &str,
) -> anyhow::Result<()> {
    let key = format!("{AUTHORITIES}{}", ca.as_str());
    if backend.get(&key).await?.is_some() {
        return Ok(());
    }
    let authority = CertAuthority::generate(ca, cluster, keys)?;
    match backend
        .create(&key, serde_json::to_vec(&authority)?, None)
        .await
    {
        // Another auth server won the race: its CA stands.
        Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
