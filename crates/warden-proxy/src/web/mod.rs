//! The web UI: a small page and script served by the proxy on its one
//! port, and the JSON they call.
//!
//! A web login makes the proxy a client for the user: it makes a key,
//! logs in to auth with it (the same password and TOTP checks, rate
//! limits and audit as `warden login`, with the browser's address) and
//! keeps the key and the certificate issued for it in memory only, under a
//! random id in an HttpOnly, Secure, SameSite=Strict cookie. Each call
//! then goes to auth with that certificate, so auth decides everything,
//! exactly as for the CLI; the page is never the security boundary. A
//! session ends with its certificate or at logout, when the key is
//! forgotten (the certificate is then useless). Calls that change
//! anything carry the session's anti-forgery token in a header, and every
//! answer carries a strict Content-Security-Policy (no inline script).

mod mfa;
mod player;
mod sso;
mod terminal;

use crate::public::{auth_for, cookie, cross_site, error_response, ClientAddr};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use warden_ca::ClientKey;
use warden_client::tls::ClientCert;
use warden_client::ApiClient;
use warden_types::api::{
    ApiError, AuditQuery, CreateLockRequest, CreateRequestRequest, LoginRequest, LoginResponse,
    RecordingQuery, ReviewRequest,
};
use warden_types::{endpoints, Document, NodeSpec, Secret};

/// The session cookie. `__Host-`: only set by this host over HTTPS, for
/// the whole site, never for a parent domain.
const COOKIE: &str = "__Host-warden-web";
/// The lifetime asked for a web session's certificate (roles may clamp it).
const SESSION_TTL_SECS: u64 = 12 * 3600;
/// Web sessions one proxy keeps at most, and per user.
const MAX_SESSIONS: usize = 10_000;
const MAX_SESSIONS_PER_USER: usize = 16;
/// Servers per page, by default and at most.
const PER_PAGE: usize = 50;
const MAX_PER_PAGE: usize = 500;
/// Audit events per search, and per export, at most.
const MAX_EVENTS: u32 = 500;
const MAX_EXPORT: u32 = 10_000;

/// Every answer: scripts and styles from this origin only, never framed.
/// The page itself also admits `<style>` elements stamped with its
/// per-response nonce: the terminal emulator sizes its cells with them.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");
/// The terminal emulator, vendored (web/vendor/update.sh re-fetches it).
const XTERM_JS: &str = include_str!("../../web/vendor/xterm.js");
const XTERM_CSS: &str = include_str!("../../web/vendor/xterm.css");
const XTERM_FIT_JS: &str = include_str!("../../web/vendor/addon-fit.js");
/// Where the vendored files are served: the version is in the path, so
/// browsers may keep them.
const VENDOR: &str = "/web/vendor/xterm-6.0.0";

/// A logged-in browser.
struct Session {
    user: String,
    roles: Vec<String>,
    /// The anti-forgery token the page sends back in `x-csrf-token`.
    csrf: String,
    /// Unix seconds: the certificate's end.
    expires: i64,
    /// When the session began (the oldest goes first when a user has too
    /// many).
    started: std::time::Instant,
    /// Auth, as the user.
    api: ApiClient,
    /// The key and certificate the terminal logs in to nodes with.
    ssh_key: Arc<russh::keys::PrivateKey>,
    ssh_cert: russh::keys::Certificate,
    /// Set when the session ends (logout, a newer login of this browser,
    /// eviction): its terminals end with it.
    ended: tokio::sync::watch::Sender<bool>,
}

impl Session {
    /// Is `sent` this session's anti-forgery token? (constant time)
    fn token_ok(&self, sent: &[u8]) -> bool {
        subtle::ConstantTimeEq::ct_eq(self.csrf.as_bytes(), sent).into()
    }

    /// Ends the session's terminals.
    fn end(&self) {
        self.ended.send_replace(true);
    }
}

#[derive(Clone)]
struct Web {
    /// Auth, as the proxy (logins go through it, as for the CLI).
    auth: ApiClient,
    /// By the SHA-256 of the cookie's value.
    sessions: Arc<Mutex<HashMap<String, Arc<Session>>>>,
    /// How the terminal reaches nodes (as the jump host does).
    jump: crate::jump::Jump,
    /// Single sign-on logins waiting for the identity provider.
    sso: sso::PendingLogins,
    /// The connector names the login page shows.
    connectors: sso::ConnectorCache,
}

/// The web UI's routes; `auth` is the proxy's auth client, `jump` how it
/// reaches nodes.
pub(crate) fn routes(auth: ApiClient, jump: crate::jump::Jump) -> Router {
    let state = Web {
        auth,
        sessions: Default::default(),
        jump,
        sso: Default::default(),
        connectors: Default::default(),
    };
    Router::new()
        .route("/", get(index))
        .route("/web/app.js", get(app_js))
        .route("/web/app.css", get(app_css))
        .route(&format!("{VENDOR}/xterm.js"), get(xterm_js))
        .route(&format!("{VENDOR}/xterm.css"), get(xterm_css))
        .route(&format!("{VENDOR}/addon-fit.js"), get(xterm_fit_js))
        .route("/web/api/login", post(login))
        .route("/web/api/login/challenge", post(mfa::login_challenge))
        .route("/web/api/sso/connectors", get(sso::connectors))
        .route("/web/sso/start", get(sso::start))
        .route(endpoints::WEB_SSO_DONE_PATH, get(sso::done))
        .route("/web/api/mfa/devices", get(mfa::devices))
        .route("/web/api/mfa/required", get(mfa::required))
        .route("/web/api/mfa/challenge", post(mfa::session_challenge))
        .route("/web/api/mfa/register", post(mfa::register))
        .route("/web/api/mfa/register/finish", post(mfa::register_finish))
        .route("/web/api/session", get(session_info))
        .route("/web/api/logout", post(logout))
        .route("/web/api/nodes", get(nodes))
        .route("/web/api/audit", get(audit))
        .route("/web/api/audit/export", get(audit_export))
        .route("/web/api/recordings", get(recordings))
        .route("/web/api/recordings/{id}/text", get(transcript))
        .route("/web/api/recordings/{id}/events", get(player::events))
        .route("/web/api/terminal", get(terminal::terminal))
        .route("/web/api/sessions", get(sessions))
        .route("/web/api/sessions/end", post(end_session))
        .route("/web/api/requests", get(requests).post(create_request))
        .route("/web/api/requests/{id}/review", post(review_request))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.entry("content-security-policy")
        .or_insert(HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // A page on another site that opened this one cannot steer it later.
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.entry("cache-control")
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([("content-type", content_type)], body).into_response()
}

/// The page, with a fresh style nonce in its policy and its stylesheet
/// link (where the script reads it back: see app.js).
async fn index() -> Response {
    let nonce = data_encoding::BASE64.encode(&warden_ca::random_bytes::<18>());
    let csp = CSP.replace(
        "style-src 'self'",
        &format!("style-src 'self' 'nonce-{nonce}'"),
    );
    (
        [
            ("content-type", "text/html; charset=utf-8".to_string()),
            ("content-security-policy", csp),
        ],
        INDEX_HTML.replace("{{nonce}}", &nonce),
    )
        .into_response()
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// A vendored file: versioned path, so cacheable for a day; deflated
/// (once, on first use) for browsers that take it, as they all do.
fn vendored(
    headers: &HeaderMap,
    content_type: &'static str,
    body: &'static str,
    packed: &'static std::sync::LazyLock<Vec<u8>>,
) -> Response {
    let deflate = headers
        .get_all("accept-encoding")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';').map(str::trim);
            parts.next() == Some("deflate")
                && !parts.any(|p| {
                    p.replace(' ', "")
                        .strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        == Some(0.0)
                })
        });
    let head = [
        ("content-type", content_type),
        ("cache-control", "public, max-age=86400, immutable"),
        ("vary", "accept-encoding"),
    ];
    if deflate {
        (head, [("content-encoding", "deflate")], packed.as_slice()).into_response()
    } else {
        (head, body).into_response()
    }
}

/// zlib-wrapped deflate (HTTP's `deflate`).
fn pack(text: &str) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec_zlib(text.as_bytes(), 6)
}

static XTERM_JS_PACKED: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| pack(XTERM_JS));
static XTERM_CSS_PACKED: std::sync::LazyLock<Vec<u8>> =
    std::sync::LazyLock::new(|| pack(XTERM_CSS));
static XTERM_FIT_JS_PACKED: std::sync::LazyLock<Vec<u8>> =
    std::sync::LazyLock::new(|| pack(XTERM_FIT_JS));

async fn xterm_js(headers: HeaderMap) -> Response {
    vendored(
        &headers,
        "text/javascript; charset=utf-8",
        XTERM_JS,
        &XTERM_JS_PACKED,
    )
}

async fn xterm_css(headers: HeaderMap) -> Response {
    vendored(
        &headers,
        "text/css; charset=utf-8",
        XTERM_CSS,
        &XTERM_CSS_PACKED,
    )
}

async fn xterm_fit_js(headers: HeaderMap) -> Response {
    vendored(
        &headers,
        "text/javascript; charset=utf-8",
        XTERM_FIT_JS,
        &XTERM_FIT_JS_PACKED,
    )
}

/// Why a web call is refused, as the page gets it.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ApiError {
                code: self.code.to_string(),
                message: self.message,
            }),
        )
            .into_response()
    }
}

fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn session_key(id: &str) -> String {
    warden_ca::sha256_hex(id.as_bytes())
}

impl Web {
    /// The request's session, or the answer to give instead.
    fn session(&self, headers: &HeaderMap) -> Result<Arc<Session>, Refusal> {
        let key = cookie(headers, COOKIE).map(|id| session_key(&id));
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match key.and_then(|k| sessions.get(&k).cloned().map(|s| (k, s))) {
            Some((_, s)) if s.expires > now() => Ok(s),
            Some((k, s)) => {
                sessions.remove(&k);
                s.end();
                Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "expired",
                    "your web session has ended; log in again",
                ))
            }
            None => Err(refuse(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "log in first",
            )),
        }
    }

    /// The session of a request that changes something: it must carry the
    /// session's token (a page on another site cannot read it).
    fn session_for_change(&self, headers: &HeaderMap, uri: &Uri) -> Result<Arc<Session>, Refusal> {
        if let Some(why) = cross_site(headers, uri) {
            return Err(refuse(StatusCode::FORBIDDEN, "cross_site", why));
        }
        let s = self.session(headers)?;
        let sent = headers
            .get("x-csrf-token")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !s.token_ok(sent) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "csrf",
                "this request lacks the page's anti-forgery token; reload the page",
            ));
        }
        Ok(s)
    }
}

/// A logged-in browser's session; the request is refused otherwise.
struct Authed(Arc<Session>);

/// The session of a request that changes something: it also carries the
/// page's anti-forgery token and comes from no other site.
struct ForChange(Arc<Session>);

impl axum::extract::FromRequestParts<Web> for Authed {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        w: &Web,
    ) -> Result<Self, Refusal> {
        w.session(&parts.headers).map(Authed)
    }
}

impl axum::extract::FromRequestParts<Web> for ForChange {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        w: &Web,
    ) -> Result<Self, Refusal> {
        w.session_for_change(&parts.headers, &parts.uri)
            .map(ForChange)
    }
}

#[derive(Deserialize)]
struct WebLogin {
    user: String,
    password: Secret<String>,
    #[serde(default)]
    otp: Secret<String>,
    /// A security key's answer, instead of `otp`.
    #[serde(default)]
    webauthn: Option<warden_types::api::WebauthnAnswer>,
}

/// What the page knows of its session.
#[derive(Serialize)]
struct SessionInfo {
    user: String,
    roles: Vec<String>,
    /// The logins the certificate names (the terminal offers these).
    logins: Vec<String>,
    csrf: String,
    expires: i64,
}

impl SessionInfo {
    fn of(s: &Session) -> Self {
        SessionInfo {
            user: s.user.clone(),
            roles: s.roles.clone(),
            logins: s.ssh_cert.valid_principals().to_vec(),
            csrf: s.csrf.clone(),
            expires: s.expires,
        }
    }
}

/// Password and TOTP, checked by auth as for `warden login`. The body is
/// JSON (a form on another site cannot send it without the browser asking
/// first), and a post from another site is refused outright.
async fn login(
    State(w): State<Web>,
    Extension(addr): Extension<ClientAddr>,
    headers: HeaderMap,
    uri: Uri,
    Json(req): Json<WebLogin>,
) -> Response {
    if let Some(why) = cross_site(&headers, &uri) {
        return refuse(StatusCode::FORBIDDEN, "cross_site", why).into_response();
    }
    let key = ClientKey::generate();
    let (ssh_public_key, tls_csr_pem) =
        match (key.ssh_public_key().to_openssh(), key.csr_pem(&req.user)) {
            (Ok(ssh), Ok(csr)) => (ssh, csr),
            _ => {
                return refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no key")
                    .into_response()
            }
        };
    let login = LoginRequest {
        user: req.user,
        password: req.password,
        otp: req.otp,
        webauthn: req.webauthn,
        ssh_public_key,
        tls_csr_pem,
        ttl_secs: Some(SESSION_TTL_SECS),
    };
    let resp: LoginResponse = match auth_for(&w.auth, addr)
        .call(&endpoints::LOGIN, &login)
        .await
    {
        Ok(r) => r,
        Err(e) => return error_response(e),
    };
    match w.begin(&headers, &key, resp) {
        Ok((session, cookie)) => {
            ([("set-cookie", cookie)], Json(SessionInfo::of(&session))).into_response()
        }
        Err(r) => r.into_response(),
    }
}

impl Web {
    /// A new session for the browser that sent `headers`, from a login's
    /// certificates for `key`: the session and its `Set-Cookie` value. The
    /// browser's previous session, and every ended one, is dropped.
    fn begin(
        &self,
        headers: &HeaderMap,
        key: &ClientKey,
        resp: LoginResponse,
    ) -> Result<(Arc<Session>, String), Refusal> {
        let ssh_cert =
            russh::keys::Certificate::from_openssh(resp.ssh_cert.trim()).map_err(|e| {
                refuse(
                    StatusCode::BAD_GATEWAY,
                    "internal",
                    format!("auth issued an unreadable SSH certificate: {e}"),
                )
            })?;
        let cert = ClientCert {
            cert_pem: resp.tls_cert_pem,
            key_pkcs8: key.pkcs8_der().to_vec(),
        };
        let api = self
            .auth
            .as_identity(&cert)
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
        let id = data_encoding::BASE64URL_NOPAD.encode(&warden_ca::random_bytes::<32>());
        let session = Arc::new(Session {
            user: resp.identity.username.clone(),
            roles: resp.identity.roles.clone(),
            csrf: data_encoding::BASE64URL_NOPAD.encode(&warden_ca::random_bytes::<32>()),
            expires: resp.identity.expires,
            started: std::time::Instant::now(),
            api,
            ssh_key: Arc::new(key.ssh_private()),
            ssh_cert,
            ended: tokio::sync::watch::channel(false).0,
        });
        {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let at = now();
            sessions.retain(|_, s| s.expires > at);
            if let Some(old) =
                cookie(headers, COOKIE).and_then(|c| sessions.remove(&session_key(&c)))
            {
                old.end();
            }
            // One user's logins cannot crowd out everyone else's: past
            // their share, their own oldest session goes.
            let mine: Vec<(String, std::time::Instant)> = sessions
                .iter()
                .filter(|(_, s)| s.user == session.user)
                .map(|(k, s)| (k.clone(), s.started))
                .collect();
            if mine.len() >= MAX_SESSIONS_PER_USER {
                if let Some((k, _)) = mine.into_iter().min_by_key(|(_, started)| *started) {
                    if let Some(old) = sessions.remove(&k) {
                        old.end();
                    }
                }
            }
            if sessions.len() >= MAX_SESSIONS {
                return Err(refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "this proxy holds as many web sessions as it may; try again later",
                ));
            }
            sessions.insert(session_key(&id), session.clone());
        }
        tracing::info!(user = %session.user, "web session started");
        let max_age = (session.expires - now()).max(0);
        let cookie =
            format!("{COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age}");
        Ok((session, cookie))
    }
}

async fn session_info(State(w): State<Web>, headers: HeaderMap) -> Response {
    match w.session(&headers) {
        Ok(s) => Json(SessionInfo::of(&s)).into_response(),
        Err(r) => r.into_response(),
    }
}

/// Forgets the session's key: its certificate can no longer be used.
async fn logout(ForChange(s): ForChange, State(w): State<Web>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, COOKIE) {
        w.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&session_key(&id));
    }
    // Its terminals end too, in every tab.
    s.end();
    tracing::info!(user = %s.user, "web session ended");
    (
        [(
            "set-cookie",
            format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0"),
        )],
        Json(serde_json::json!({})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct NodeQuery {
    /// Words that must all match: `key=value` a label, anything else part
    /// of the name or of a label's value.
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: usize,
    #[serde(default)]
    per_page: Option<usize>,
}

/// One row of the servers table.
#[derive(Serialize)]
struct NodeRow {
    id: String,
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    online: bool,
}

#[derive(Serialize)]
struct NodePage {
    total: usize,
    page: usize,
    per_page: usize,
    nodes: Vec<NodeRow>,
}

/// Whether a node matches every word of a search.
fn matches(doc: &Document<NodeSpec>, words: &[String]) -> bool {
    let labels = &doc.metadata.labels;
    words.iter().all(|w| match w.split_once('=') {
        Some((k, v)) => labels
            .iter()
            .any(|(lk, lv)| lk.eq_ignore_ascii_case(k) && lv.eq_ignore_ascii_case(v)),
        None => {
            doc.spec.hostname.to_lowercase().contains(w)
                || labels.values().any(|v| v.to_lowercase().contains(w))
        }
    })
}

/// The servers the user may reach (auth filters them by the user's roles,
/// as for `warden ls`), searched and paged here so the page stays small.
async fn nodes(Authed(s): Authed, Query(q): Query<NodeQuery>) -> Response {
    let docs: Vec<Document<NodeSpec>> = match s.api.call(&endpoints::NODES, &()).await {
        Ok(d) => d,
        Err(e) => return error_response(e),
    };
    let words: Vec<String> = q.q.split_whitespace().map(str::to_lowercase).collect();
    let mut found: Vec<&Document<NodeSpec>> = docs.iter().filter(|d| matches(d, &words)).collect();
    found.sort_by(|a, b| a.spec.hostname.cmp(&b.spec.hostname));
    let per_page = q.per_page.unwrap_or(PER_PAGE).clamp(1, MAX_PER_PAGE);
    let at = now();
    let nodes = found
        .iter()
        .skip(q.page.saturating_mul(per_page))
        .take(per_page)
        .map(|d| NodeRow {
            id: d.name().to_string(),
            name: d.spec.hostname.clone(),
            labels: d.metadata.labels.clone(),
            online: d.spec.online(at),
        })
        .collect();
    Json(NodePage {
        total: found.len(),
        page: q.page,
        per_page,
        nodes,
    })
    .into_response()
}

/// An audit search with the CLI's filters; auth decides who may read it.
async fn audit(Authed(s): Authed, Query(mut q): Query<AuditQuery>) -> Response {
    q.limit = Some(q.limit.unwrap_or(100).min(MAX_EVENTS));
    s.forward(&endpoints::AUDIT_EVENTS, endpoints::AUDIT_EVENTS.path, &q)
        .await
}

/// The same search as a download, one JSON event per line (what a SIEM
/// or `jq` takes), oldest first.
async fn audit_export(Authed(s): Authed, Query(mut q): Query<AuditQuery>) -> Response {
    q.limit = Some(q.limit.unwrap_or(MAX_EXPORT).min(MAX_EXPORT));
    let events: warden_types::api::AuditEvents =
        match s.api.call(&endpoints::AUDIT_EVENTS, &q).await {
            Ok(e) => e,
            Err(e) => return error_response(e),
        };
    let mut body = String::new();
    for event in events.events.iter().rev() {
        match serde_json::to_string(event) {
            Ok(line) => {
                body.push_str(&line);
                body.push('\n');
            }
            Err(e) => {
                return refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                    .into_response()
            }
        }
    }
    (
        [
            ("content-type", "application/x-ndjson"),
            (
                "content-disposition",
                "attachment; filename=\"warden-audit.jsonl\"",
            ),
        ],
        body,
    )
        .into_response()
}

/// Recordings, filtered by user, node and start, for roles that may read
/// them (auth decides).
async fn recordings(Authed(s): Authed, Query(q): Query<RecordingQuery>) -> Response {
    s.forward(&endpoints::RECORDINGS, endpoints::RECORDINGS.path, &q)
        .await
}

/// The largest transcript the page gets (the CLI exports any size).
const MAX_TRANSCRIPT: usize = 16 << 20;

/// A recording's output as plain text (escape sequences removed, markers
/// on lines of their own), decoded as it downloads from auth, which
/// checks the right to read it and audits the playback.
async fn transcript(Authed(s): Authed, Path(id): Path<String>) -> Response {
    let mut download = match s
        .api
        .download(&endpoints::RECORDING, &endpoints::RECORDING.at(&[&id]))
        .await
    {
        Ok(d) => d,
        Err(e) => return error_response(e),
    };
    let mut text = warden_recording::TextWriter::new(Vec::new());
    let mut reader = warden_recording::Reader::new(|item| text.item(&item));
    let mut read = 0usize;
    loop {
        match download.next().await {
            Ok(Some(piece)) => {
                read += piece.len();
                if read > MAX_TRANSCRIPT {
                    return refuse(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        format!("this recording is larger than {} MiB; export it with 'warden play {id} --format text'", MAX_TRANSCRIPT >> 20),
                    )
                    .into_response();
                }
                if let Err(e) = reader.push(&piece) {
                    return refuse(StatusCode::BAD_GATEWAY, "bad_recording", e.to_string())
                        .into_response();
                }
            }
            Ok(None) => break,
            Err(e) => return error_response(e),
        }
    }
    if let Err(e) = reader.finish() {
        return refuse(StatusCode::BAD_GATEWAY, "bad_recording", e.to_string()).into_response();
    }
    match text.finish() {
        Ok(bytes) => (
            [("content-type", "text/plain; charset=utf-8")],
            String::from_utf8_lossy(&bytes).into_owned(),
        )
            .into_response(),
        Err(e) => {
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()).into_response()
        }
    }
}

/// Sessions running now, for roles that may list sessions.
async fn sessions(Authed(s): Authed) -> Response {
    s.forward(
        &endpoints::ACTIVE_SESSIONS,
        endpoints::ACTIVE_SESSIONS.path,
        &(),
    )
    .await
}

/// Which session to end.
#[derive(Deserialize)]
struct EndSession {
    user: String,
    node: String,
    login: String,
}

/// How long ending a session keeps its user off that node as that login.
const END_LOCK_SECS: u64 = 15 * 60;

/// Ends a session with a lock on its user, node and login (the node ends
/// what the lock covers at once), for a quarter of an hour; auth decides
/// who may lock.
async fn end_session(ForChange(s): ForChange, Json(req): Json<EndSession>) -> Response {
    let lock = CreateLockRequest {
        target: warden_types::LockTarget {
            user: Some(req.user),
            node: Some(req.node),
            login: Some(req.login),
            ..Default::default()
        },
        reason: format!("session ended by {} from the web UI", s.user),
        ttl_secs: Some(END_LOCK_SECS),
    };
    s.forward(&endpoints::CREATE_LOCK, endpoints::CREATE_LOCK.path, &lock)
        .await
}

/// The access requests the user may see (their own, and those they may
/// review), as auth lists them.
async fn requests(Authed(s): Authed) -> Response {
    s.forward(&endpoints::REQUESTS, endpoints::REQUESTS.path, &())
        .await
}

/// A request for roles (or nodes), checked by auth as `warden request
/// create` is.
async fn create_request(
    ForChange(s): ForChange,
    Json(req): Json<CreateRequestRequest>,
) -> Response {
    s.forward(
        &endpoints::CREATE_REQUEST,
        endpoints::CREATE_REQUEST.path,
        &req,
    )
    .await
}

/// Approves or denies a request; auth decides whether this user may.
async fn review_request(
    ForChange(s): ForChange,
    Path(id): Path<String>,
    Json(req): Json<ReviewRequest>,
) -> Response {
    s.forward(
        &endpoints::REVIEW_REQUEST,
        &endpoints::REVIEW_REQUEST.at(&[&id]),
        &req,
    )
    .await
}

impl Session {
    /// Calls auth as the user: its answer as it is, or its refusal.
    async fn forward<Req: Serialize + ?Sized, Resp>(
        &self,
        e: &endpoints::Endpoint<Req, Resp>,
        path: &str,
        req: &Req,
    ) -> Response {
        match self
            .api
            .call_as::<serde_json::Value, _, _>(e, path, req)
            .await
        {
            Ok(v) => Json(v).into_response(),
            Err(e) => error_response(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: &[(&str, &str)]) -> Document<NodeSpec> {
        let mut d = Document::new(
            warden_types::resource::kind::NODE,
            name,
            NodeSpec {
                hostname: name.to_string(),
                addrs: vec![],
                version: String::new(),
                heartbeat: 0,
                heartbeat_every: 0,
                db_only: false,
            },
        );
        for (k, v) in labels {
            d.metadata.labels.insert(k.to_string(), v.to_string());
        }
        d
    }

    #[tokio::test]
    async fn vendored_files_are_deflated_for_browsers_that_take_it() {
        let mut h = HeaderMap::new();
        h.insert(
            "accept-encoding",
            HeaderValue::from_static("gzip, deflate, br, zstd"),
        );
        let resp = xterm_js(h).await;
        assert_eq!(resp.headers()["content-encoding"], "deflate");
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(body.len() < XTERM_JS.len() / 2, "{} bytes", body.len());
        let plain = miniz_oxide::inflate::decompress_to_vec_zlib(&body).unwrap();
        assert_eq!(plain, XTERM_JS.as_bytes());
        for refused in ["gzip", "gzip, deflate;q=0", "deflate; q=0.000"] {
            let mut h = HeaderMap::new();
            h.insert("accept-encoding", HeaderValue::from_static(refused));
            let resp = xterm_js(h).await;
            assert!(
                resp.headers().get("content-encoding").is_none(),
                "{refused}"
            );
        }
    }

    #[test]
    fn searches_match_names_labels_and_key_value_pairs() {
        let db = node(
            "db-1",
            &[("env", "prod"), ("team", "payments"), ("Zone", "EU")],
        );
        let web = node("web-1", &[("env", "staging")]);
        let q = |s: &str| -> Vec<String> { s.split_whitespace().map(str::to_lowercase).collect() };
        assert!(matches(&db, &q("")));
        assert!(matches(&db, &q("DB")));
        assert!(matches(&db, &q("env=prod")));
        assert!(!matches(&web, &q("env=prod")));
        assert!(matches(&db, &q("pay env=PROD")), "all words, any case");
        assert!(!matches(&db, &q("pay env=staging")));
        assert!(!matches(&db, &q("nosuch=prod")));
        assert!(matches(&db, &q("zone=eu")), "label keys in any case");
    }
}
