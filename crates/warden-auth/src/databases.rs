//! Databases: the inventory database services heartbeat into, and the
//! database CA's certificates. A service asks for a client certificate per
//! connection; auth decides the connection with the user's live roles
//! (`warden_policy::decide_db_login`) before it signs one.

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::nodes::{require_node, LiveState};
use crate::routes::Serve;
use crate::server::AuthServer;
use axum::extract::State;
use axum::{Extension, Json, Router};
use time::{Duration, OffsetDateTime};
use warden_ca::tls::{self, CertRequest, Usage};
use warden_ca::CaType;
use warden_types::api::*;
use warden_types::endpoints;
use warden_types::resource::{resources as res, verbs};
use warden_types::IdentityKind;

/// Databases by service: `/databases/<service id>/<name>`.
const DATABASES: &str = "/databases/";
/// Most databases one service may register.
const MAX_PER_SERVICE: usize = 256;
/// A client certificate opens one connection: the database checks it at
/// the handshake only.
const CLIENT_CERT_TTL: Duration = Duration::minutes(5);
/// Default and longest lifetime of a database's server certificate.
const SERVER_CERT_TTL: Duration = Duration::days(90);
const SERVER_CERT_MAX: Duration = Duration::days(366);

pub fn routes() -> Router<AuthServer> {
    Router::new()
        .serve(&endpoints::DATABASES, list)
        .serve(&endpoints::DB_CERT, client_cert)
        .serve(&endpoints::DB_SERVER_CERT, server_cert)
        .serve(&endpoints::DB_CA, ca)
}

impl AuthServer {
    /// Records the databases a service reports with its heartbeat, and
    /// forgets the ones it no longer reports.
    pub(crate) async fn register_databases(
        &self,
        service: &str,
        service_name: &str,
        dbs: &[DatabaseHeartbeat],
        expires: std::time::SystemTime,
    ) -> Result<()> {
        validate(dbs)?;
        let prefix = format!("{DATABASES}{service}/");
        let now = OffsetDateTime::now_utc().unix_timestamp();
        for db in dbs {
            let info = DatabaseInfo {
                name: db.name.clone(),
                protocol: db.protocol.clone(),
                labels: db.labels.clone(),
                description: db.description.clone(),
                service: service.to_string(),
                service_name: service_name.to_string(),
                heartbeat: now,
            };
            let value =
                serde_json::to_vec(&info).map_err(|e| AuthError::Internal(e.to_string()))?;
            self.backend()
                .put(&format!("{prefix}{}", db.name), value, Some(expires))
                .await?;
        }
        for item in self.backend().range(&prefix).await? {
            let name = &item.key[prefix.len()..];
            if !dbs.iter().any(|d| d.name == name) {
                self.backend().delete(&item.key).await?;
            }
        }
        Ok(())
    }

    /// Forgets a leaving service's databases.
    pub(crate) async fn unregister_databases(&self, service: &str) -> Result<()> {
        for item in self
            .backend()
            .range(&format!("{DATABASES}{service}/"))
            .await?
        {
            self.backend().delete(&item.key).await?;
        }
        Ok(())
    }

    async fn databases(&self) -> Result<Vec<DatabaseInfo>> {
        Ok(self
            .backend()
            .range(DATABASES)
            .await?
            .into_iter()
            .filter_map(|i| serde_json::from_slice(&i.value).ok())
            .collect())
    }

    /// The user of a certificate a service was shown: it must be a user
    /// certificate from the tls CA, valid now.
    async fn presented_user(&self, b64: &str) -> Result<warden_types::Identity> {
        let bad = |why: &str| AuthError::BadRequest(format!("user_cert: {why}"));
        let der = data_encoding::BASE64
            .decode(b64.as_bytes())
            .map_err(|_| bad("not base64"))?;
        if der.len() > 16 * 1024 {
            return Err(bad("too large"));
        }
        let pems = self.authority(CaType::Tls).await?.tls_cert_pems();
        let verifier = tls::client_cert_verifier(&pems)?;
        let cert = rustls::pki_types::CertificateDer::from(der.as_slice());
        verifier
            .verify_client_cert(&cert, &[], rustls::pki_types::UnixTime::now())
            .map_err(|e| AuthError::Unauthenticated(format!("the user's certificate: {e}")))?;
        let identity = tls::identity_from_der(&der)?.ok_or_else(|| bad("no Warden identity"))?;
        if identity.kind != IdentityKind::User || identity.cluster != self.cluster() {
            return Err(bad("not a user certificate of this cluster"));
        }
        Ok(identity)
    }

    async fn db_ca(&self) -> Result<(std::sync::Arc<dyn warden_ca::CaSigner>, Vec<String>)> {
        let (signer, authority) = self.signer(CaType::Db).await?;
        let pems = authority.tls_cert_pems();
        Ok((signer, pems))
    }
}

/// Checks the databases a heartbeat reports, before anything is written.
pub(crate) fn validate(dbs: &[DatabaseHeartbeat]) -> Result<()> {
    if dbs.len() > MAX_PER_SERVICE {
        return Err(AuthError::BadRequest(format!(
            "a database service registers at most {MAX_PER_SERVICE} databases"
        )));
    }
    for db in dbs {
        warden_types::resource::validate_name(&db.name).map_err(AuthError::BadRequest)?;
        warden_types::resource::validate_labels(&db.labels).map_err(AuthError::BadRequest)?;
        if !matches!(db.protocol.as_str(), "postgres" | "mysql") {
            return Err(AuthError::BadRequest(format!(
                "database {}: protocol {:?} is not served (postgres, mysql)",
                db.name, db.protocol
            )));
        }
        if db.description.len() > 256 || db.description.chars().any(char::is_control) {
            return Err(AuthError::BadRequest(format!(
                "database {}: invalid description",
                db.name
            )));
        }
    }
    Ok(())
}

/// A database CA certificate's request: no Warden identity, valid from a
/// minute ago (clock skew) for `ttl`.
fn cert_request(
    common_name: String,
    (dns_names, ips): (Vec<String>, Vec<std::net::IpAddr>),
    ttl: Duration,
    usage: Usage,
) -> CertRequest {
    let now = OffsetDateTime::now_utc();
    CertRequest {
        common_name,
        dns_names,
        ips,
        identity: None,
        not_before: now - Duration::minutes(1),
        not_after: now + ttl,
        usage,
    }
}

fn ed25519_key(b64: &str) -> Result<[u8; 32]> {
    data_encoding::BASE64
        .decode(b64.as_bytes())
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| AuthError::BadRequest("public_key must be an Ed25519 key, base64".into()))
}

/// The databases the caller may connect to (by `db_labels`); every one
/// for callers that may list nodes (admins), and for proxies.
async fn list(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
) -> Result<Json<Vec<DatabaseInfo>>> {
    let all = s.databases().await?;
    if c.identity.kind == IdentityKind::Proxy {
        return Ok(Json(all));
    }
    let roles = s.caller_roles(&c)?;
    if warden_policy::check_rule(&roles, res::NODE, verbs::LIST).allowed {
        return Ok(Json(all));
    }
    let traits = s
        .inner
        .users
        .get(&c.identity.username)
        .map(|u| u.spec.traits)
        .unwrap_or_default();
    Ok(Json(
        all.into_iter()
            .filter(|d| warden_policy::database_visible(&roles, &traits, &d.labels))
            .collect(),
    ))
}

/// A database service's request for a connection's client certificate:
/// decided here with live roles, audited by the service once the database
/// has accepted it.
async fn client_cert(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<DbCertRequest>,
) -> Result<Json<DbCertResponse>> {
    let service = require_node(&c)?.to_string();
    let key = ed25519_key(&req.public_key)?;
    let user = s.presented_user(&req.user_cert).await?;
    let item = s
        .backend()
        .get(&format!("{DATABASES}{service}/{}", req.database))
        .await?;
    let Some(info) = item.and_then(|i| serde_json::from_slice::<DatabaseInfo>(&i.value).ok())
    else {
        return Err(AuthError::NotFound(format!(
            "database {} is not registered by this service",
            req.database
        )));
    };
    let q = warden_policy::DbLogin {
        service: (&service, &info.service_name),
        database: &info.name,
        labels: &info.labels,
        user: &user.username,
        user_id: (!user.user_id.is_empty()).then_some(user.user_id.as_str()),
        db_user: &req.db_user,
        db_name: &req.db_name,
    };
    let decision = warden_policy::decide_db_login(&LiveState(&s), &q, crate::resources::now());
    if !decision.allowed {
        return Err(AuthError::AccessDenied(decision.reason));
    }
    let (signer, pems) = s.db_ca().await?;
    let request = cert_request(
        req.db_user.clone(),
        (vec![], vec![]),
        CLIENT_CERT_TTL,
        Usage::Client,
    );
    let cert_pem = tls::issue_for_ed25519(&*signer, &pems[0], key, &request)?;
    Ok(Json(DbCertResponse {
        cert_pem,
        ca_pems: pems,
        roles: decision.roles,
    }))
}

/// A server certificate for a database, for admins (those who may change
/// the cluster's configuration).
async fn server_cert(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<DbServerCertRequest>,
) -> Result<Json<DbCertResponse>> {
    s.authorize(&c, res::CLUSTER_CONFIG, verbs::UPDATE).await?;
    let key = ed25519_key(&req.public_key)?;
    if req.hosts.is_empty() || req.hosts.len() > 16 {
        return Err(AuthError::BadRequest(
            "name 1 to 16 hosts the database is reached at".into(),
        ));
    }
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    for h in &req.hosts {
        match h.parse::<std::net::IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) if h.len() <= 253 && !h.is_empty() => dns.push(h.clone()),
            Err(_) => return Err(AuthError::BadRequest(format!("invalid host {h:?}"))),
        }
    }
    let ttl = req
        .ttl_secs
        .map(|t| Duration::seconds(t.min(i64::MAX as u64) as i64))
        .unwrap_or(SERVER_CERT_TTL);
    if ttl > SERVER_CERT_MAX || ttl < Duration::minutes(5) {
        return Err(AuthError::BadRequest(
            "a database server certificate lasts from 5 minutes to 1 year".into(),
        ));
    }
    let (signer, pems) = s.db_ca().await?;
    let request = cert_request(req.hosts[0].clone(), (dns, ips), ttl, Usage::Server);
    let cert_pem = tls::issue_for_ed25519(&*signer, &pems[0], key, &request)
        .map_err(|e| AuthError::BadRequest(e.to_string()))?;
    tracing::info!(user = %c.identity.username, hosts = ?req.hosts, "issued a database server certificate");
    Ok(Json(DbCertResponse {
        cert_pem,
        ca_pems: pems,
        roles: vec![],
    }))
}

/// The database CA's certificates: public, for any authenticated caller.
async fn ca(State(s): State<AuthServer>) -> Result<Json<DbCa>> {
    Ok(Json(DbCa {
        ca_pems: s.authority(CaType::Db).await?.tls_cert_pems(),
    }))
}
