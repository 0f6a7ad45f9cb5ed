//! Single sign-on through OpenID Connect: the auth service is the relying
//! party. Authorization code flow with PKCE (S256), state and nonce; the ID
//! token is checked by `warden_ca::jwt` (signature, issuer, one audience,
//! expiry, nonce) and claims become traits and, through `claims_to_roles`,
//! roles.
//!
//! A login is a short-lived pending record in the backend (so any auth
//! server can finish it). The client that started it polls for the result
//! with a secret only it holds. To keep a forwarded login link from handing
//! someone else's identity to the attacker's key, the result is released
//! only (browser mode) to the client whose loopback listener the browser
//! was sent back to, or (headless mode) after the user typed the code shown
//! in their own terminal on the proxy's page.

use crate::api::{client_addr, require_proxy, Caller};
use crate::error::{AuthError, Result};
use crate::resources::{self, now, to_json, CONNECTORS, CREDENTIALS, USERS};
use crate::routes::Serve;
use crate::server::AuthServer;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json, Router};
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use subtle::ConstantTimeEq;
use warden_ca::jwt::{self, JwkSet, JwtError};
use warden_store::{Item, StoreError};
use warden_types::api::{
    LoginResponse, SsoCallback, SsoCallbackResponse, SsoDeviceInfo, SsoDeviceRequest,
    SsoDeviceResponse, SsoResult, SsoResultRequest, SsoStartRequest, SsoStartResponse,
    PROXY_ADDRS_HEADER,
};
use warden_types::audit::{codes, AuditEvent};
use warden_types::endpoints;
use warden_types::{Document, OidcConnectorSpec, Secret, UserSpec};

const PENDING: &str = "/sso_pending/";
const USER_CODES: &str = "/sso_codes/";
/// How long discovery documents and key sets are reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);
/// Largest answer read from the provider.
const MAX_ANSWER: usize = 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);
/// Clock skew allowed on ID token times.
const LEEWAY: i64 = 60;
/// How long a finished login waits for its client to collect it.
const COLLECT: Duration = Duration::from_secs(120);
/// Headless codes: no 0/O/1/I, so they can be read aloud and typed.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// The part of a provider's discovery document used here.
#[derive(Clone, Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
}

#[derive(Clone)]
struct Provider {
    fetched: Instant,
    discovery: Discovery,
    keys: JwkSet,
}

/// Per-process caches and the HTTPS client configuration.
pub(crate) struct Sso {
    tls: Arc<rustls::ClientConfig>,
    providers: Mutex<HashMap<String, Provider>>,
}

impl Sso {
    pub fn new() -> Self {
        Sso {
            tls: crate::http_out::tls_config(),
            providers: Mutex::new(HashMap::new()),
        }
    }
}

/// A login in progress.
#[derive(Clone, Serialize, Deserialize)]
struct Pending {
    connector: String,
    redirect_url: String,
    /// SHA-256 of the secret half of `state`.
    state_hash: String,
    nonce: String,
    pkce_verifier: String,
    ssh_public_key: String,
    tls_csr_pem: String,
    ttl_secs: Option<u64>,
    auth_url: String,
    poll_hash: String,
    client_redirect: Option<String>,
    source: Option<String>,
    /// Set once the provider's callback arrived: it is accepted only once.
    callback_used: bool,
    /// SHA-256 of the value sent to the loopback listener (browser mode).
    completion_hash: Option<String>,
    /// SHA-256 of the cookie the device page set (headless mode).
    #[serde(default)]
    binding_hash: Option<String>,
    /// The host name the client gave, for the confirmation page.
    #[serde(default)]
    client_host: Option<String>,
    /// Unix seconds the login was started.
    #[serde(default)]
    started: i64,
    /// Started by the proxy's web UI: the browser returns to the proxy.
    #[serde(default)]
    web: bool,
    outcome: Option<SsoResult>,
    expires: i64,
}

fn unknown_code() -> AuthError {
    AuthError::NotFound(
        "unknown or expired code: check it against your terminal, or run 'warden login --headless' again".into(),
    )
}

/// A client-supplied host name as it may be shown: short, printable.
fn clean_host(h: &str) -> String {
    h.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(64)
        .collect()
}

fn token() -> String {
    data_encoding::BASE64URL_NOPAD.encode(&warden_ca::random_bytes::<32>())
}

fn hash(s: &str) -> String {
    warden_ca::sha256_hex(s.as_bytes())
}

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn user_code() -> String {
    let bytes = warden_ca::random_bytes::<8>();
    let c: String = bytes
        .iter()
        .map(|b| CODE_ALPHABET[(*b as usize) % CODE_ALPHABET.len()] as char)
        .collect();
    format!("{}-{}", &c[..4], &c[4..])
}

fn form(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).expect("string pairs always encode")
}

/// The connector's redirect URL for a proxy with `proxy_addrs` (host:port):
/// the one naming one of them, else the only one.
fn choose_redirect(spec: &OidcConnectorSpec, proxy_addrs: &[String]) -> Result<String> {
    for url in &spec.redirect_url {
        if let Ok(t) = crate::http_out::parse_url(url) {
            let hp = format!("{}:{}", t.host, t.port);
            if proxy_addrs.iter().any(|a| a.eq_ignore_ascii_case(&hp)) {
                return Ok(url.clone());
            }
        }
    }
    match spec.redirect_url.as_slice() {
        [only] => Ok(only.clone()),
        _ => Err(AuthError::BadRequest(format!(
            "no redirect_url of this connector names this proxy ({}); add https://{}/v1/oidc/callback to the connector and to the identity provider's client",
            proxy_addrs.join(", "),
            proxy_addrs.first().map(String::as_str).unwrap_or("PROXY")
        ))),
    }
}

/// The proxy's origin in a connector's callback URL (what precedes the
/// callback path).
fn origin_of(redirect_url: &str) -> &str {
    redirect_url
        .find(warden_types::endpoints::OIDC_CALLBACK_PATH)
        .map(|i| &redirect_url[..i])
        .unwrap_or(redirect_url)
}

/// Is `url` a plain-http loopback URL (the CLI's listener)?
fn is_loopback(url: &str) -> bool {
    crate::http_out::parse_url(url)
        .is_ok_and(|t| !t.https && t.path == "/callback" && is_loopback_host(&t.host))
}

fn is_loopback_host(host: &str) -> bool {
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Provider endpoints must be https, except on this machine (tests, a
/// local IdP): an http key set would let the network forge ID tokens.
fn check_endpoint(name: &str, what: &str, url: &str) -> Result<()> {
    match crate::http_out::parse_url(url) {
        Ok(t) if t.https || is_loopback_host(&t.host) => Ok(()),
        _ => Err(AuthError::Unavailable(format!(
            "identity provider {name}: its {what} {url:?} is not an https URL; refusing to use it"
        ))),
    }
}

/// Checks a connector before it is stored.
pub(crate) fn validate(spec: &OidcConnectorSpec) -> std::result::Result<(), String> {
    let mut errs = Vec::new();
    match crate::http_out::parse_url(&spec.issuer_url) {
        Ok(t)
            if !t.https
                && !t
                    .host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|i| i.is_loopback()) =>
        {
            errs.push("issuer_url must be https:// (plain http only on 127.0.0.1)".into())
        }
        Ok(_) => {}
        Err(e) => errs.push(format!("issuer_url: {e}")),
    }
    if spec.client_id.is_empty() {
        errs.push("client_id is required".into());
    }
    if spec.client_secret.expose().is_empty() {
        errs.push("client_secret (or client_secret_file) is required".into());
    }
    if spec.redirect_url.is_empty() {
        errs.push("redirect_url: list https://<proxy>/v1/oidc/callback for every proxy".into());
    }
    for u in &spec.redirect_url {
        match crate::http_out::parse_url(u) {
            Ok(t)
                if !t
                    .path
                    .starts_with(warden_types::endpoints::OIDC_CALLBACK_PATH) =>
            {
                errs.push(format!(
                    "redirect_url {u:?} must end in /v1/oidc/callback (the proxy's callback)"
                ))
            }
            Ok(_) => {}
            Err(e) => errs.push(format!("redirect_url: {e}")),
        }
    }
    if spec.claims_to_roles.is_empty() {
        errs.push("claims_to_roles: map at least one claim value to roles".into());
    }
    if let Err(e) = warden_policy::validate_claim_mappings(&spec.claims_to_roles) {
        errs.extend(e);
    }
    if spec.username_claim.is_empty() {
        errs.push("username_claim must name a claim (email by default)".into());
    }
    if spec.login_timeout.0 < Duration::from_secs(1)
        || spec.login_timeout.0 > Duration::from_secs(3600)
    {
        errs.push("login_timeout must be between 1s and 1h".into());
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

impl AuthServer {
    async fn connector(&self, name: &str) -> Result<OidcConnectorSpec> {
        resources::get::<OidcConnectorSpec>(self.backend(), &format!("{CONNECTORS}{name}"))
            .await?
            .map(|d| d.spec)
            .ok_or_else(|| {
                AuthError::NotFound(format!(
                    "no identity provider connector {name:?}; ask an admin ('warden admin connectors ls')"
                ))
            })
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(
        &self,
        connector: &str,
        what: &str,
        url: &str,
        method: hyper::Method,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(u16, T)> {
        let unavailable = |e: String| {
            AuthError::Unavailable(format!(
                "cannot reach identity provider {connector} ({what} at {url}): {e}; try again later or tell your admin"
            ))
        };
        let resp = tokio::time::timeout(
            TIMEOUT,
            crate::http_out::send(&self.inner.sso.tls, method, url, headers, body, MAX_ANSWER),
        )
        .await
        .map_err(|_| unavailable("timed out".into()))?
        .map_err(unavailable)?;
        if resp.status >= 500 {
            return Err(unavailable(format!("HTTP {}", resp.status)));
        }
        let v = serde_json::from_slice(&resp.body).map_err(|e| {
            AuthError::Unavailable(format!(
                "identity provider {connector} answered {what} with HTTP {} and no valid JSON: {e}",
                resp.status
            ))
        })?;
        Ok((resp.status, v))
    }

    /// Discovery and keys, cached; `refresh` forces a new fetch (an ID
    /// token signed by a key we have not seen: the provider rotated).
    async fn provider(
        &self,
        name: &str,
        spec: &OidcConnectorSpec,
        refresh: bool,
    ) -> Result<Provider> {
        let key = format!("{name}\n{}", spec.issuer_url);
        if !refresh {
            let cache = self
                .inner
                .sso
                .providers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(p) = cache
                .get(&key)
                .filter(|p| p.fetched.elapsed() < DISCOVERY_TTL)
            {
                return Ok(p.clone());
            }
        }
        let issuer = spec.issuer_url.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let (status, discovery): (u16, Discovery) = self
            .fetch_json(
                name,
                "discovery",
                &url,
                hyper::Method::GET,
                &[],
                Bytes::new(),
            )
            .await?;
        if status != 200 || discovery.issuer.trim_end_matches('/') != issuer {
            return Err(AuthError::Unavailable(format!(
                "identity provider {name}: discovery at {url} answered HTTP {status} for issuer {:?}, expected {issuer:?}; check issuer_url",
                discovery.issuer
            )));
        }
        for (what, url) in [
            (
                "authorization endpoint",
                Some(&discovery.authorization_endpoint),
            ),
            ("token endpoint", Some(&discovery.token_endpoint)),
            ("key set", Some(&discovery.jwks_uri)),
            ("userinfo endpoint", discovery.userinfo_endpoint.as_ref()),
        ] {
            if let Some(url) = url {
                check_endpoint(name, what, url)?;
            }
        }
        let (_, keys): (u16, JwkSet) = self
            .fetch_json(
                name,
                "key set",
                &discovery.jwks_uri,
                hyper::Method::GET,
                &[],
                Bytes::new(),
            )
            .await?;
        let p = Provider {
            fetched: Instant::now(),
            discovery,
            keys,
        };
        self.inner
            .sso
            .providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, p.clone());
        Ok(p)
    }

    /// Starts a login: returns where the user goes next.
    pub async fn sso_start(
        &self,
        req: &SsoStartRequest,
        proxy_addrs: &[String],
        source: Option<String>,
    ) -> Result<SsoStartResponse> {
        let config = self.config().await?;
        let src = source.clone().unwrap_or_default();
        if !self
            .inner
            .limiter
            .allow(&format!("sso:{src}"), config.login_rate_per_minute)
        {
            return Err(AuthError::RateLimited(
                "too many logins started from this address; wait a minute".into(),
            ));
        }
        let spec = self.connector(&req.connector).await?;
        if req.web && req.client_redirect.is_some() {
            return Err(AuthError::BadRequest(
                "a web login has no client_redirect: the browser returns to the proxy".into(),
            ));
        }
        if let Some(r) = &req.client_redirect {
            if !is_loopback(r) {
                return Err(AuthError::BadRequest(
                    "client_redirect must be an http://127.0.0.1:PORT/ URL".into(),
                ));
            }
        }
        ssh_key::PublicKey::from_openssh(req.ssh_public_key.trim())
            .map_err(|e| AuthError::BadRequest(format!("invalid SSH public key: {e}")))?;
        let redirect_url = choose_redirect(&spec, proxy_addrs)?;
        let provider = self.provider(&req.connector, &spec, false).await?;
        let id = data_encoding::HEXLOWER.encode(&warden_ca::random_bytes::<16>());
        let state_secret = token();
        let state = format!("{id}.{state_secret}");
        let nonce = token();
        let verifier = token();
        let challenge = data_encoding::BASE64URL_NOPAD
            .encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
        let mut scopes = vec!["openid".to_string()];
        scopes.extend(spec.scopes.iter().filter(|s| *s != "openid").cloned());
        let query = form(&[
            ("response_type", "code"),
            ("client_id", &spec.client_id),
            ("redirect_uri", &redirect_url),
            ("scope", &scopes.join(" ")),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]);
        let endpoint = &provider.discovery.authorization_endpoint;
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        let auth_url = format!("{endpoint}{sep}{query}");
        let poll_token = token();
        let expires = spec.login_timeout.after(now());
        let pending = Pending {
            connector: req.connector.clone(),
            redirect_url: redirect_url.clone(),
            state_hash: hash(&state_secret),
            nonce,
            pkce_verifier: verifier,
            ssh_public_key: req.ssh_public_key.clone(),
            tls_csr_pem: req.tls_csr_pem.clone(),
            ttl_secs: req.ttl_secs,
            auth_url: auth_url.clone(),
            poll_hash: hash(&poll_token),
            client_redirect: req.client_redirect.clone(),
            source,
            callback_used: false,
            completion_hash: None,
            binding_hash: None,
            client_host: req.client_host.as_deref().map(clean_host),
            started: now(),
            web: req.web,
            outcome: None,
            expires,
        };
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs(expires as u64);
        self.backend()
            .create(&format!("{PENDING}{id}"), to_json(&pending)?, Some(until))
            .await?;
        let mut resp = SsoStartResponse {
            id: id.clone(),
            poll_token: Secret::new(poll_token),
            auth_url: None,
            device_url: None,
            user_code: None,
            expires,
        };
        if req.client_redirect.is_some() || req.web {
            resp.auth_url = Some(auth_url);
        } else {
            let code = user_code();
            self.backend()
                .create(&format!("{USER_CODES}{code}"), id.into_bytes(), Some(until))
                .await?;
            resp.device_url = Some(format!("{}/web/device", origin_of(&redirect_url)));
            resp.user_code = Some(code);
        }
        Ok(resp)
    }

    /// Headless mode: the pending login behind a typed code, for the page
    /// to show before the user confirms it. Consumes nothing.
    pub async fn sso_device_info(
        &self,
        code: &str,
        source: Option<String>,
    ) -> Result<SsoDeviceInfo> {
        let (code, item) = self.user_code(code, source).await?;
        let id = String::from_utf8_lossy(&item.value).to_string();
        let (p, _) = self.pending(&id).await?.ok_or_else(unknown_code)?;
        Ok(SsoDeviceInfo {
            user_code: code,
            connector: p.connector,
            source: p.source,
            client_host: p.client_host,
            started: p.started,
        })
    }

    /// A typed code and its stored entry; rate-limited per source.
    async fn user_code(&self, code: &str, source: Option<String>) -> Result<(String, Item)> {
        let src = source.unwrap_or_default();
        if !self.inner.limiter.allow(&format!("sso-code:{src}"), 10) {
            return Err(AuthError::RateLimited(
                "too many codes tried from this address; wait a minute".into(),
            ));
        }
        let code = code.trim().to_ascii_uppercase();
        if code.len() > 16 {
            return Err(unknown_code());
        }
        let key = format!("{USER_CODES}{code}");
        let item = self.backend().get(&key).await?.ok_or_else(unknown_code)?;
        Ok((code, item))
    }

    /// Headless mode: the code typed (and confirmed) on the proxy's page
    /// leads to the provider. Each code works once.
    pub async fn sso_device(&self, code: &str, source: Option<String>) -> Result<(String, String)> {
        let unknown = unknown_code;
        let (code, item) = self.user_code(code, source).await?;
        let key = format!("{USER_CODES}{code}");
        self.backend()
            .compare_and_delete(&key, item.revision)
            .await
            .map_err(|_| unknown())?;
        let id = String::from_utf8_lossy(&item.value).to_string();
        let (mut p, rev) = self.pending(&id).await?.ok_or_else(unknown)?;
        let binding = token();
        p.binding_hash = Some(hash(&binding));
        self.save_pending(&id, &p, rev, p.expires).await?;
        Ok((p.auth_url, binding))
    }

    async fn pending(&self, id: &str) -> Result<Option<(Pending, i64)>> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        match self.backend().get(&format!("{PENDING}{id}")).await? {
            Some(item) => Ok(Some((
                serde_json::from_slice(&item.value)
                    .map_err(|e| AuthError::Internal(format!("corrupt login state: {e}")))?,
                item.revision,
            ))),
            None => Ok(None),
        }
    }

    /// Writes `p` if it is still at `rev`; returns the new revision.
    async fn save_pending(&self, id: &str, p: &Pending, rev: i64, until: i64) -> Result<i64> {
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs(until.max(0) as u64);
        self.backend()
            .compare_and_swap(&format!("{PENDING}{id}"), rev, to_json(p)?, Some(until))
            .await
            .map_err(|e| match e {
                StoreError::Conflict { .. } | StoreError::NotFound(_) => AuthError::Conflict(
                    "this login link was already used; run 'warden login' again".into(),
                ),
                other => other.into(),
            })
    }

    /// The provider sent the browser back: finish the login.
    pub async fn sso_callback(&self, cb: &SsoCallback) -> Result<SsoCallbackResponse> {
        let expired = || {
            AuthError::Expired(
                "this login link has expired or is unknown; run 'warden login --auth ...' again"
                    .into(),
            )
        };
        let (id, secret) = cb.state.split_once('.').ok_or_else(expired)?;
        let (mut p, rev) = self.pending(id).await?.ok_or_else(expired)?;
        if !same(&hash(secret), &p.state_hash) || p.expires <= now() {
            return Err(expired());
        }
        if p.callback_used {
            return Err(AuthError::Conflict(
                "this login link was already used; run 'warden login' again".into(),
            ));
        }
        if p.client_redirect.is_none() && !p.web {
            // Headless: only the browser that typed the code may finish.
            let bound = match (&p.binding_hash, &cb.binding) {
                (Some(want), Some(got)) => same(&hash(got.expose()), want),
                _ => false,
            };
            if !bound {
                return Err(AuthError::AccessDenied(
                    "this login link was not opened from the code page in this browser; open the page 'warden login --headless' printed and enter the code there".into(),
                ));
            }
        }
        // Claim the callback first: a replay loses this race. The record
        // outlives the provider calls even when the link was about to expire.
        p.callback_used = true;
        let finish_by = p.expires.max(now() + 4 * TIMEOUT.as_secs() as i64);
        let rev = self.save_pending(id, &p, rev, finish_by).await?;
        let result = self.finish(&p, cb).await;
        let collect_until = now() + COLLECT.as_secs() as i64;
        let (outcome, response) = match result {
            Ok(login) => {
                let mut msg = format!(
                    "Logged in as {}. Return to your terminal.",
                    login.identity.username
                );
                let mut redirect = None;
                // Browser and web modes: only who holds the completion
                // value (the loopback listener, or the proxy for the
                // browser that started it) collects the login.
                let back = match &p.client_redirect {
                    Some(r) => Some(r.clone()),
                    None if p.web => Some(format!(
                        "{}{}",
                        origin_of(&p.redirect_url),
                        warden_types::endpoints::WEB_SSO_DONE_PATH
                    )),
                    None => None,
                };
                if let Some(r) = back {
                    let completion = token();
                    p.completion_hash = Some(hash(&completion));
                    redirect = Some(format!("{r}?{}", form(&[("completion", &completion)])));
                    msg = format!("Logged in as {}.", login.identity.username);
                }
                (
                    SsoResult::Done {
                        login: Box::new(login),
                    },
                    Ok(SsoCallbackResponse {
                        redirect,
                        message: msg,
                    }),
                )
            }
            Err(e) => (
                SsoResult::Failed {
                    error: e.to_string(),
                },
                Err(e),
            ),
        };
        p.outcome = Some(outcome);
        self.save_pending(id, &p, rev, collect_until).await?;
        response
    }

    /// The waiting client asks for its result.
    pub async fn sso_result(
        &self,
        id: &str,
        poll_token: &str,
        completion: Option<&str>,
    ) -> Result<SsoResult> {
        let gone = || {
            AuthError::Expired(
                "the login was not completed in time (or was already collected); run 'warden login' again".into(),
            )
        };
        let (p, rev) = self.pending(id).await?.ok_or_else(gone)?;
        if !same(&hash(poll_token), &p.poll_hash) {
            return Err(gone());
        }
        match &p.outcome {
            None => Ok(SsoResult::Pending),
            Some(SsoResult::Done { .. }) => {
                if let Some(want) = &p.completion_hash {
                    if !completion.is_some_and(|c| same(&hash(c), want)) {
                        return Ok(SsoResult::Pending);
                    }
                }
                self.backend()
                    .compare_and_delete(&format!("{PENDING}{id}"), rev)
                    .await
                    .map_err(|_| gone())?;
                Ok(p.outcome.clone().unwrap_or(SsoResult::Pending))
            }
            Some(failed) => {
                let _ = self.backend().delete(&format!("{PENDING}{id}")).await;
                Ok(failed.clone())
            }
        }
    }

    /// Audits a refused SSO login; the error the user sees.
    async fn refuse(&self, p: &Pending, subject: &str, reason: String) -> AuthError {
        self.audit(
            AuditEvent::new(
                codes::LOGIN_FAILURE,
                self.cluster(),
                subject,
                reason.clone(),
            )
            .source(p.source.clone())
            .with("method", "oidc")
            .with("connector", p.connector.clone()),
        )
        .await;
        AuthError::AccessDenied(format!("single sign-on refused: {reason}"))
    }

    /// Exchanges the code, checks the ID token, maps claims and issues
    /// certificates. Every refusal is audited.
    async fn finish(&self, p: &Pending, cb: &SsoCallback) -> Result<LoginResponse> {
        let spec = self.connector(&p.connector).await?;
        if let Some(err) = &cb.error {
            let why = format!(
                "the identity provider returned {err}{}",
                cb.error_description
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            );
            return Err(self.refuse(p, "", why).await);
        }
        let Some(code) = &cb.code else {
            return Err(self
                .refuse(p, "", "the callback carried no code".into())
                .await);
        };
        let provider = self.provider(&p.connector, &spec, false).await?;
        let d = &provider.discovery;
        // client_secret_basic unless the provider supports only _post.
        let post_auth = !d.token_endpoint_auth_methods_supported.is_empty()
            && !d
                .token_endpoint_auth_methods_supported
                .iter()
                .any(|m| m == "client_secret_basic")
            && d.token_endpoint_auth_methods_supported
                .iter()
                .any(|m| m == "client_secret_post");
        let mut params = vec![
            ("grant_type", "authorization_code"),
            ("code", code.expose().as_str()),
            ("redirect_uri", p.redirect_url.as_str()),
            ("code_verifier", p.pkce_verifier.as_str()),
        ];
        let basic;
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if post_auth {
            params.push(("client_id", &spec.client_id));
            params.push(("client_secret", spec.client_secret.expose()));
        } else {
            let enc = |s: &str| form(&[("", s)])[1..].to_string();
            basic = format!(
                "Basic {}",
                data_encoding::BASE64.encode(
                    format!(
                        "{}:{}",
                        enc(&spec.client_id),
                        enc(spec.client_secret.expose())
                    )
                    .as_bytes()
                )
            );
            headers.push(("authorization", basic.as_str()));
        }
        headers.push(("accept", "application/json"));
        let (status, tokens): (u16, Map<String, Value>) = self
            .fetch_json(
                &p.connector,
                "token exchange",
                &d.token_endpoint,
                hyper::Method::POST,
                &headers,
                Bytes::from(form(&params)),
            )
            .await?;
        let text =
            |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        if status != 200 {
            let why = format!(
                "the identity provider refused the code (HTTP {status}: {} {})",
                text(&tokens, "error").unwrap_or_default(),
                text(&tokens, "error_description").unwrap_or_default()
            );
            return Err(self.refuse(p, "", why).await);
        }
        let Some(id_token) = text(&tokens, "id_token") else {
            return Err(self
                .refuse(p, "", "the token answer has no id_token".into())
                .await);
        };
        let claims = match jwt::verify_signature(&id_token, &provider.keys) {
            Err(JwtError::UnknownKey(_)) => {
                let fresh = self.provider(&p.connector, &spec, true).await?;
                jwt::verify_signature(&id_token, &fresh.keys)
            }
            other => other,
        };
        let mut claims = match claims {
            Ok(c) => c,
            Err(e) => return Err(self.refuse(p, "", e.to_string()).await),
        };
        let want = jwt::Expected {
            issuer: &d.issuer,
            client_id: &spec.client_id,
            nonce: &p.nonce,
            now: now(),
            leeway: LEEWAY,
        };
        if let Err(e) = jwt::check_id_token(&claims, &want) {
            let sub = text(&claims, "sub").unwrap_or_default();
            return Err(self.refuse(p, &sub, e.to_string()).await);
        }
        let subject = text(&claims, "sub").unwrap_or_default();
        // Scope claims (email, groups) often come only from userinfo.
        if let (Some(url), Some(access)) = (&d.userinfo_endpoint, text(&tokens, "access_token")) {
            let bearer = format!("Bearer {access}");
            let (status, info): (u16, Map<String, Value>) = self
                .fetch_json(
                    &p.connector,
                    "userinfo",
                    url,
                    hyper::Method::GET,
                    &[("authorization", &bearer), ("accept", "application/json")],
                    Bytes::new(),
                )
                .await?;
            if status == 200 {
                if text(&info, "sub").as_deref() != Some(subject.as_str()) {
                    return Err(self
                        .refuse(
                            p,
                            &subject,
                            "userinfo names another subject than the ID token".into(),
                        )
                        .await);
                }
                for (k, v) in info {
                    claims.entry(k).or_insert(v);
                }
            }
        }
        let Some(username) = text(&claims, &spec.username_claim) else {
            return Err(self.refuse(p, &subject,
                format!(
                    "the identity provider sent no {} claim for subject {subject}; Warden names users by it (does the connector ask for the {} scope?)",
                    spec.username_claim,
                    if spec.username_claim == "email" { "email" } else { "right" }
                ),
            )
            .await);
        };
        if spec.username_claim == "email"
            && claims.get("email_verified") == Some(&Value::Bool(false))
        {
            return Err(self
                .refuse(
                    p,
                    &username,
                    format!("email {username} is not verified at the identity provider"),
                )
                .await);
        }
        if let Err(e) = warden_types::resource::validate_name(&username) {
            return Err(self
                .refuse(
                    p,
                    &subject,
                    format!("user name from {}: {e}", spec.username_claim),
                )
                .await);
        }
        let traits = warden_policy::claims_to_traits(&claims);
        let mapped = warden_policy::map_roles(&spec.claims_to_roles, &traits);
        let roles: Vec<String> = mapped
            .iter()
            .filter(|r| self.inner.roles.get(r).is_some())
            .cloned()
            .collect();
        if roles.is_empty() {
            let groups = spec
                .claims_to_roles
                .iter()
                .map(|m| {
                    format!(
                        "{}: {}",
                        m.claim,
                        traits
                            .get(&m.claim)
                            .map(|v| v.join(", "))
                            .unwrap_or_else(|| "(none)".into())
                    )
                })
                .collect::<Vec<_>>();
            let extra = if mapped.is_empty() {
                String::new()
            } else {
                format!(" (mapped roles {} do not exist)", mapped.join(", "))
            };
            return Err(self.refuse(p, &username,
                format!(
                    "{username}'s identity provider claims ({}) map to no Warden role{extra}; ask an admin to add a claims_to_roles rule to connector {}",
                    groups.join("; "),
                    p.connector
                ),
            )
            .await);
        }
        // Before the user document is written: the roles the provider maps
        // to, and the requests an existing user of this name holds.
        let requests = self
            .inner
            .users
            .get(&username)
            .map(|u| self.effective(&u).requests)
            .unwrap_or_default();
        let locked = self.lock_for(&warden_policy::LockSubject {
            user: &username,
            roles: &roles,
            requests: &requests,
            ..Default::default()
        });
        if let Some(lock) = locked {
            return Err(self
                .refuse(p, &username, crate::locks::lock_message(&lock))
                .await);
        }
        let user = match self
            .upsert_sso_user(
                &p.connector,
                &subject,
                &username,
                roles,
                warden_policy::external_traits(traits),
            )
            .await
        {
            Ok(u) => u,
            Err(e) => return Err(self.refuse(p, &username, e.to_string()).await),
        };
        // Roles and requests gained through access requests count too.
        if let Some(lock) = self.user_lock(&user, &[]) {
            return Err(self
                .refuse(p, &username, crate::locks::lock_message(&lock))
                .await);
        }
        let resp = self
            .issue_user_certs(&user, &p.ssh_public_key, &p.tls_csr_pem, p.ttl_secs, None)
            .await?;
        self.append_durably(
            AuditEvent::new(codes::LOGIN_SUCCESS, self.cluster(), &username, "SSO login")
                .source(p.source.clone())
                .with("method", "oidc")
                .with("connector", p.connector.clone())
                .with("subject", subject)
                .with("roles", resp.identity.roles.clone())
                .with("logins", resp.identity.logins.clone())
                .with("expires", resp.identity.expires),
        )
        .await?;
        Ok(resp)
    }

    /// The user document of an SSO login: roles and traits as the provider
    /// says now (so group changes apply at the next login), expiring with
    /// the longest certificate it can back. A local user of the same name
    /// is never taken over.
    async fn upsert_sso_user(
        &self,
        connector: &str,
        subject: &str,
        name: &str,
        roles: Vec<String>,
        traits: warden_policy::Traits,
    ) -> Result<Document<UserSpec>> {
        let key = format!("{USERS}{name}");
        // The provider's subject is part of the origin: another account
        // whose claims produce the same name does not become this user.
        let origin = format!("oidc:{connector}:{subject}");
        let existing = resources::get::<UserSpec>(self.backend(), &key).await?;
        let has_credentials = self
            .backend()
            .get(&format!("{CREDENTIALS}{name}"))
            .await?
            .is_some();
        if has_credentials
            || existing
                .as_ref()
                .is_some_and(|u| u.spec.created_by.as_deref() != Some(origin.as_str()))
        {
            return Err(AuthError::Conflict(format!(
                "a user named {name} already exists in Warden and was not created by connector {connector} for this identity-provider account; an admin must rename or remove it"
            )));
        }
        let max = warden_policy::session_options(&self.roles(&roles))
            .max_ttl
            .min(warden_policy::MAX_SESSION_TTL);
        let until =
            time::OffsetDateTime::now_utc() + time::Duration::seconds(max.as_secs() as i64 + 300);
        let mut doc = Document::new(
            warden_types::resource::kind::USER,
            name,
            UserSpec {
                roles,
                traits,
                created_by: Some(origin),
                // The same account keeps its uid from login to login.
                uid: existing
                    .as_ref()
                    .map(|u| u.spec.uid.clone())
                    .filter(|u| !u.is_empty())
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            },
        );
        doc.metadata.expires = Some(until);
        let expires =
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(until.unix_timestamp() as u64));
        let rev = match existing {
            Some(old) => {
                self.backend()
                    .compare_and_swap(
                        &key,
                        old.metadata.revision.unwrap_or(0),
                        resources::encode(&doc),
                        expires,
                    )
                    .await?
            }
            None => {
                self.backend()
                    .create(&key, resources::encode(&doc), expires)
                    .await?
            }
        };
        doc.metadata.revision = Some(rev);
        Ok(doc)
    }
}

pub fn routes() -> Router<AuthServer> {
    Router::new()
        .serve(&endpoints::SSO_START, start)
        .serve(&endpoints::SSO_CALLBACK, callback)
        .serve(&endpoints::SSO_DEVICE, device)
        .serve(&endpoints::SSO_DEVICE_INFO, device_info)
        .serve(&endpoints::SSO_RESULT, result)
        .serve(&endpoints::SSO_CONNECTORS, connectors)
}

/// Connector names, for the web UI's login buttons (nothing else of them).
async fn connectors(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
) -> Result<Json<Vec<String>>> {
    require_proxy(&c)?;
    let docs = resources::list::<OidcConnectorSpec>(s.backend(), CONNECTORS).await?;
    Ok(Json(docs.iter().map(|d| d.name().to_string()).collect()))
}

async fn start(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Json(req): Json<SsoStartRequest>,
) -> Result<Json<SsoStartResponse>> {
    require_proxy(&c)?;
    let addrs: Vec<String> = headers
        .get(PROXY_ADDRS_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(',')
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    Ok(Json(
        s.sso_start(&req, &addrs, client_addr(&c, &headers)).await?,
    ))
}

async fn callback(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(cb): Json<SsoCallback>,
) -> Result<Json<SsoCallbackResponse>> {
    require_proxy(&c)?;
    Ok(Json(s.sso_callback(&cb).await?))
}

async fn device(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Json(req): Json<SsoDeviceRequest>,
) -> Result<Json<SsoDeviceResponse>> {
    require_proxy(&c)?;
    let (auth_url, binding) = s
        .sso_device(&req.user_code, client_addr(&c, &headers))
        .await?;
    Ok(Json(SsoDeviceResponse {
        auth_url,
        binding: Secret::new(binding),
    }))
}

async fn device_info(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Json(req): Json<SsoDeviceRequest>,
) -> Result<Json<SsoDeviceInfo>> {
    require_proxy(&c)?;
    Ok(Json(
        s.sso_device_info(&req.user_code, client_addr(&c, &headers))
            .await?,
    ))
}

async fn result(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<SsoResultRequest>,
) -> Result<Json<SsoResult>> {
    require_proxy(&c)?;
    Ok(Json(
        s.sso_result(
            &req.id,
            req.poll_token.expose(),
            req.completion.as_ref().map(|c| c.expose().as_str()),
        )
        .await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_per_proxy() {
        let spec = OidcConnectorSpec {
            redirect_url: vec![
                "https://eu.example.com/v1/oidc/callback".into(),
                "https://us.example.com:3080/v1/oidc/callback".into(),
            ],
            ..Default::default()
        };
        assert_eq!(
            choose_redirect(&spec, &["us.example.com:3080".into()]).unwrap(),
            "https://us.example.com:3080/v1/oidc/callback"
        );
        assert_eq!(
            choose_redirect(&spec, &["EU.example.com:443".into()]).unwrap(),
            "https://eu.example.com/v1/oidc/callback"
        );
        assert!(choose_redirect(&spec, &["ap.example.com:443".into()]).is_err());
        let one = OidcConnectorSpec {
            redirect_url: vec!["https://lb.example.com/v1/oidc/callback".into()],
            ..Default::default()
        };
        assert!(choose_redirect(&one, &["10.0.0.1:3080".into()]).is_ok());
    }

    #[test]
    fn loopback_only() {
        assert!(is_loopback("http://127.0.0.1:4242/callback"));
        assert!(!is_loopback("http://127.0.0.1:4242/other"));
        assert!(!is_loopback("http://127.0.0.1:4242/callback?x=1"));
        assert!(is_loopback("http://[::1]:4242/callback"));
        assert!(!is_loopback("https://127.0.0.1:4242/callback"));
        assert!(!is_loopback("http://evil.example.com/callback"));
        assert!(!is_loopback("http://10.0.0.1/callback"));
    }

    #[test]
    fn user_codes_are_readable() {
        let c = user_code();
        assert_eq!(c.len(), 9);
        assert!(c
            .chars()
            .all(|ch| ch == '-' || CODE_ALPHABET.contains(&(ch as u8))));
    }
}
