//! The public API the proxy terminates: ping, signup and login, forwarded
//! to auth with the proxy's identity and the client's address.

use axum::body::Bytes;
use axum::extract::{Form, Query, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_client::{ApiClient, ClientError};
use warden_types::api::{
    ApiError, SsoCallback, SsoCallbackResponse, SsoDeviceInfo, SsoDeviceRequest, CLIENT_ADDR_HEADER,
};
use warden_types::endpoints;

/// The client's address as the proxy saw it.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// Largest request body forwarded.
const MAX_BODY: usize = 64 * 1024;

/// How long the proxy reuses auth's ping answer (public, unauthenticated
/// traffic must not cost an auth round trip each).
const PING_CACHE: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Public {
    auth: ApiClient,
    ping: Arc<Mutex<Option<(Instant, serde_json::Value)>>>,
    /// The CA generation the proxy's certificates are from: a cached ping
    /// from another is stale (a client checks its pin against the CAs the
    /// ping lists, and the proxy's certificate against its pin).
    generation: Arc<std::sync::RwLock<String>>,
}

/// The public API: `auth` forwards to auth; `generation` is the CA
/// generation the proxy's own certificates are from; `jump` reaches nodes
/// for the web terminal.
pub(crate) fn public_router(
    auth: ApiClient,
    generation: Arc<std::sync::RwLock<String>>,
    jump: crate::jump::Jump,
) -> Router {
    let web = crate::web::routes(auth.clone(), jump);
    let state = Public {
        auth,
        ping: Arc::new(Mutex::new(None)),
        generation,
    };
    Router::new()
        .route(endpoints::PING.path, get(ping))
        .route(endpoints::LOGIN.path, post(forward_login))
        .route(
            endpoints::LOGIN_CHALLENGE.path,
            post(forward_login_challenge),
        )
        .route(endpoints::SIGNUP_INFO.path, post(forward_signup_info))
        .route(endpoints::SIGNUP.path, post(forward_signup))
        .route(endpoints::JOIN.path, post(forward_join))
        .route(endpoints::SSO_START.path, post(forward_sso_start))
        .route(endpoints::SSO_RESULT.path, post(forward_sso_result))
        .route(
            warden_types::endpoints::OIDC_CALLBACK_PATH,
            get(oidc_callback),
        )
        .route("/web/device", get(device_page).post(device_submit))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
        .merge(web)
}

/// Status, code and message of a failed auth call: auth's own answer, or
/// that auth is unreachable.
fn auth_failure(e: ClientError) -> (StatusCode, String, String) {
    match e {
        ClientError::Api {
            status,
            code,
            message,
        } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            code,
            message,
        ),
        other => {
            tracing::warn!(error = %other, "auth unreachable from proxy");
            (
                StatusCode::BAD_GATEWAY,
                "auth_unavailable".to_string(),
                "the proxy cannot reach the auth service; try again shortly or tell your admin"
                    .to_string(),
            )
        }
    }
}

pub(crate) fn error_response(e: ClientError) -> Response {
    let (status, code, message) = auth_failure(e);
    (status, Json(ApiError { code, message })).into_response()
}

/// The auth client, telling auth the client's address.
pub(crate) fn auth_for(auth: &ApiClient, addr: ClientAddr) -> ApiClient {
    auth.clone()
        .with_header(CLIENT_ADDR_HEADER, &addr.0.ip().to_string())
}

async fn ping(State(p): State<Public>) -> Response {
    if let Some((at, v)) = p.ping.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        let generation = p.generation.read().unwrap_or_else(|e| e.into_inner());
        let current = v["ca_generation"].as_str().unwrap_or_default() == generation.as_str();
        if at.elapsed() < PING_CACHE && current {
            return Json(v.clone()).into_response();
        }
    }
    // Passed through as auth wrote it: fields a newer auth adds survive.
    let ping =
        p.auth
            .call_as::<serde_json::Value, _, _>(&endpoints::PING, endpoints::PING.path, &());
    match ping.await {
        Ok(v) => {
            *p.ping.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), v.clone()));
            Json(v).into_response()
        }
        Err(e) => error_response(e),
    }
}

async fn forward<Req, Resp>(
    auth: ApiClient,
    e: &endpoints::Endpoint<Req, Resp>,
    addr: ClientAddr,
    body: Bytes,
) -> Response {
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(ApiError {
                    code: "bad_request".into(),
                    message: format!("invalid JSON: {e}"),
                }),
            )
                .into_response()
        }
    };
    match auth_for(&auth, addr).forward_json(e, &value).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error_response(e),
    }
}

async fn forward_login(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    body: Bytes,
) -> Response {
    forward(p.auth, &endpoints::LOGIN, addr, body).await
}

async fn forward_login_challenge(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    body: Bytes,
) -> Response {
    forward(p.auth, &endpoints::LOGIN_CHALLENGE, addr, body).await
}

async fn forward_signup_info(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    body: Bytes,
) -> Response {
    forward(p.auth, &endpoints::SIGNUP_INFO, addr, body).await
}

async fn forward_signup(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    body: Bytes,
) -> Response {
    forward(p.auth, &endpoints::SIGNUP, addr, body).await
}

async fn forward_join(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    body: Bytes,
) -> Response {
    forward(p.auth, &endpoints::JOIN, addr, body).await
}

async fn forward_sso_start(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    body: Bytes,
) -> Response {
    forward(p.auth, &endpoints::SSO_START, addr, body).await
}

async fn forward_sso_result(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    body: Bytes,
) -> Response {
    forward(p.auth, &endpoints::SSO_RESULT, addr, body).await
}

/// Longest a request may take, body included: a client that declares a
/// body and sends it slowly (or never) is cut off.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Ends a request that has not been answered within [`REQUEST_TIMEOUT`].
pub async fn deadline(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            Json(ApiError {
                code: "request_timeout".into(),
                message: format!(
                    "the request was not completed within {}s",
                    REQUEST_TIMEOUT.as_secs()
                ),
            }),
        )
            .into_response(),
    }
}

/// Cookie binding a headless login to the browser that typed its code.
const BINDING_COOKIE: &str = "warden_sso";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A small HTML page for the browser leg of single sign-on; `form` is
/// trusted HTML (built here, with every value escaped).
pub(crate) fn page(status: StatusCode, title: &str, message: &str, form: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Warden: {t}</title></head>\
         <body><h1>{t}</h1><p>{m}</p>{form}</body></html>",
        t = esc(title),
        m = esc(message),
    );
    (
        status,
        [
            ("content-type", "text/html; charset=utf-8"),
            ("cache-control", "no-store"),
            // Browsers send `Origin: null` on a form post from a page with
            // `no-referrer`; `same-origin` keeps the Origin check meaningful
            // and still sends nothing to other sites.
            ("referrer-policy", "same-origin"),
            // Never framed (clickjacking of the confirmation), no script.
            ("x-frame-options", "DENY"),
            (
                "content-security-policy",
                "default-src 'none'; form-action 'self' https:; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

pub(crate) fn see_other(url: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [("location", url), ("cache-control", "no-store")],
    )
        .into_response()
}

/// An auth error as a page.
pub(crate) fn error_page(title: &str, e: ClientError) -> Response {
    let (status, _, message) = auth_failure(e);
    page(status, title, &message, "")
}

/// The identity provider sends the browser here with `code` and `state`.
async fn oidc_callback(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    headers: HeaderMap,
    Query(mut cb): Query<SsoCallback>,
) -> Response {
    cb.binding = cookie(&headers, BINDING_COOKIE).map(warden_types::Secret::new);
    match auth_for(&p.auth, addr)
        .call(&endpoints::SSO_CALLBACK, &cb)
        .await
    {
        Ok(SsoCallbackResponse {
            redirect: Some(url),
            ..
        }) => see_other(&url),
        Ok(r) => page(StatusCode::OK, "Login complete", &r.message, ""),
        Err(e) => error_page("Login failed", e),
    }
}

/// Cookie holding the device page's anti-forgery token.
const CSRF_COOKIE: &str = "warden_csrf";

/// A cookie's value from the request's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Headless logins: the page where the code from the terminal is typed.
/// It sets a fresh anti-forgery token as a strict cookie and in the form;
/// a post must carry both (a cross-site form cannot read the cookie).
async fn device_page() -> Response {
    let csrf = data_encoding::BASE64URL_NOPAD.encode(&warden_ca::random_bytes::<32>());
    let form = format!(
        r#"<form method="post" action="/web/device">
<input type="hidden" name="csrf" value="{csrf}">
<p><label>Code: <input name="user_code" autocomplete="off" autofocus></label>
<button type="submit">Continue</button></p>
<p>Only enter a code that your own terminal showed you just now: whoever started the login gets the access.</p>
</form>"#
    );
    let mut resp = page(
        StatusCode::OK,
        "Log in to Warden",
        "Enter the code that 'warden login --headless' printed.",
        &form,
    );
    let cookie = format!(
        "{CSRF_COOKIE}={csrf}; Path=/web/device; Max-Age=1800; HttpOnly; Secure; SameSite=Strict"
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert("set-cookie", v);
    }
    resp
}

/// The device form: the code, the page's anti-forgery token, and whether
/// the user confirmed the login shown to them.
#[derive(serde::Deserialize)]
struct DeviceForm {
    user_code: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: Option<String>,
}

/// Why a device-page post is not from the page itself, if it is not: a
/// foreign `Origin`, a cross-site fetch, or a missing or wrong token.
fn forged(headers: &HeaderMap, uri: &axum::http::Uri, form: &DeviceForm) -> Option<&'static str> {
    if let Some(why) = cross_site(headers, uri) {
        return Some(why);
    }
    let Some(expected) = cookie(headers, CSRF_COOKIE) else {
        return Some("this browser did not open the code page first");
    };
    let ok: bool = subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), form.csrf.as_bytes()).into();
    if form.csrf.is_empty() || !ok {
        return Some("the form's token does not match this browser");
    }
    None
}

/// Why a request is from another site, if it is: a foreign `Origin`, or a
/// browser saying it is a cross-site fetch.
pub(crate) fn cross_site(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<&'static str> {
    // HTTP/1.1 names the host in `Host`, HTTP/2 in the URI's authority.
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    // `Origin: null` (privacy settings, some redirects) says nothing; the
    // token and Sec-Fetch-Site still decide.
    if let Some(origin) = headers.get("origin").filter(|o| o.as_bytes() != b"null") {
        let same = match (origin.to_str().ok(), host) {
            (Some(o), Some(h)) => o.eq_ignore_ascii_case(&format!("https://{h}")),
            _ => false,
        };
        if !same {
            return Some("the form was posted from another site");
        }
    }
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
    {
        return Some("the form was posted from another site");
    }
    None
}

/// The code is checked and the login it belongs to shown (who asked, from
/// where, when); only an explicit confirmation sends the browser on to
/// the identity provider (RFC 8628 §5.4).
async fn device_submit(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Form(req): Form<DeviceForm>,
) -> Response {
    if let Some(why) = forged(&headers, &uri, &req) {
        tracing::warn!(client = %addr.0, why, "device login form refused");
        return page(
            StatusCode::FORBIDDEN,
            "Request refused",
            &format!("{why}. Open the address your terminal printed and type the code there."),
            "",
        );
    }
    let auth = auth_for(&p.auth, addr);
    let code = SsoDeviceRequest {
        user_code: req.user_code.clone(),
    };
    if req.confirm.as_deref() != Some("yes") {
        return match auth.call(&endpoints::SSO_DEVICE_INFO, &code).await {
            Ok(info) => confirm_page(&info, &req.csrf),
            Err(e) => error_page("Code not accepted", e),
        };
    }
    match auth.call(&endpoints::SSO_DEVICE, &code).await {
        Ok(r) => {
            let mut resp = see_other(&r.auth_url);
            let cookie = format!(
                "{BINDING_COOKIE}={}; Path=/v1/oidc/callback; Max-Age=3600; HttpOnly; Secure; SameSite=Lax",
                r.binding.expose()
            );
            if let Ok(v) = axum::http::HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert("set-cookie", v);
            }
            resp
        }
        Err(e) => error_page("Code not accepted", e),
    }
}

/// Shows which client started the login before the user goes on.
fn confirm_page(info: &SsoDeviceInfo, csrf: &str) -> Response {
    let started = time::OffsetDateTime::from_unix_timestamp(info.started)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "unknown".into());
    let form = format!(
        r#"<dl>
<dt>Code</dt><dd>{code}</dd>
<dt>Started from address</dt><dd>{source}</dd>
<dt>Client host name</dt><dd>{host}</dd>
<dt>Started at</dt><dd>{started}</dd>
<dt>Identity provider</dt><dd>{connector}</dd>
</dl>
<p>Continue only if you started this login yourself, just now, on that machine. Whoever started it receives your access.</p>
<form method="post" action="/web/device">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="user_code" value="{code}">
<input type="hidden" name="confirm" value="yes">
<button type="submit">Yes, this is my login: continue</button>
</form>"#,
        code = esc(&info.user_code),
        source = esc(info.source.as_deref().unwrap_or("unknown")),
        host = esc(info.client_host.as_deref().unwrap_or("not given")),
        started = esc(&started),
        connector = esc(&info.connector),
        csrf = esc(csrf),
    );
    page(
        StatusCode::OK,
        "Confirm this login",
        "A terminal asked to log in with this code:",
        &form,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(csrf: &str) -> DeviceForm {
        DeviceForm {
            user_code: "ABCD-EFGH".into(),
            csrf: csrf.into(),
            confirm: None,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn device_posts_need_the_pages_token_and_origin() {
        let uri: axum::http::Uri = "/web/device".parse().unwrap();
        let ok = headers(&[
            ("host", "proxy.example.com:3080"),
            ("origin", "https://proxy.example.com:3080"),
            ("cookie", "a=b; warden_csrf=tok123"),
        ]);
        assert_eq!(forged(&ok, &uri, &form("tok123")), None);
        let null_origin = headers(&[
            ("host", "p:1"),
            ("origin", "null"),
            ("cookie", "warden_csrf=tok123"),
        ]);
        assert_eq!(forged(&null_origin, &uri, &form("tok123")), None);
        assert!(forged(&null_origin, &uri, &form("x")).is_some());
        // Without Origin (older clients) the token alone decides.
        let no_origin = headers(&[("host", "p:1"), ("cookie", "warden_csrf=tok123")]);
        assert_eq!(forged(&no_origin, &uri, &form("tok123")), None);
        assert!(forged(&ok, &uri, &form("other")).is_some());
        assert!(forged(&ok, &uri, &form("")).is_some());
        let no_cookie = headers(&[("host", "p:1")]);
        assert!(forged(&no_cookie, &uri, &form("tok123")).is_some());
        let evil = headers(&[
            ("host", "proxy.example.com:3080"),
            ("origin", "https://evil.example"),
            ("cookie", "warden_csrf=tok123"),
        ]);
        assert!(forged(&evil, &uri, &form("tok123")).is_some());
        let cross = headers(&[
            ("host", "p:1"),
            ("sec-fetch-site", "cross-site"),
            ("cookie", "warden_csrf=tok123"),
        ]);
        assert!(forged(&cross, &uri, &form("tok123")).is_some());
        // HTTP/2: the host comes from the URI's authority.
        let h2: axum::http::Uri = "https://p.example:3080/web/device".parse().unwrap();
        let h2_headers = headers(&[
            ("origin", "https://p.example:3080"),
            ("cookie", "warden_csrf=t"),
        ]);
        assert_eq!(forged(&h2_headers, &h2, &form("t")), None);
    }

    #[test]
    fn confirmation_page_escapes_what_clients_sent() {
        let info = SsoDeviceInfo {
            user_code: "ABCD-EFGH".into(),
            connector: "okta".into(),
            source: Some("10.0.0.9".into()),
            client_host: Some("<script>x</script>".into()),
            started: 0,
        };
        let resp = confirm_page(&info, "tok\"><b>");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = futures_body(resp);
        assert!(
            body.contains("10.0.0.9") && body.contains("ABCD-EFGH"),
            "{body}"
        );
        assert!(
            !body.contains("<script>") && !body.contains("\"><b>"),
            "{body}"
        );
    }

    fn futures_body(resp: Response) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            String::from_utf8(bytes.to_vec()).unwrap()
        })
    }
}
