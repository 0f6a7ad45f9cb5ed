//! The public API the proxy terminates: ping, signup and login, forwarded
//! to auth with the proxy's identity and the client's address.

use axum::body::Bytes;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_client::{ApiClient, ClientError};
use warden_types::api::{
    ApiError, SsoCallback, SsoCallbackResponse, SsoDeviceRequest, SsoDeviceResponse,
    CLIENT_ADDR_HEADER,
};

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
}

pub fn public_router(auth: ApiClient) -> Router {
    let state = Public {
        auth,
        ping: Arc::new(Mutex::new(None)),
    };
    Router::new()
        .route("/v1/ping", get(ping))
        .route("/v1/login", post(forward_login))
        .route("/v1/login/challenge", post(forward_login_challenge))
        .route("/v1/signup/info", post(forward_signup_info))
        .route("/v1/signup", post(forward_signup))
        .route("/v1/join", post(forward_join))
        .route("/v1/sso/start", post(forward_sso_start))
        .route("/v1/sso/result", post(forward_sso_result))
        .route("/v1/oidc/callback", get(oidc_callback))
        .route("/web/device", get(device_page).post(device_submit))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
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

fn error_response(e: ClientError) -> Response {
    let (status, code, message) = auth_failure(e);
    (status, Json(ApiError { code, message })).into_response()
}

/// The auth client, telling auth the client's address.
fn auth_for(auth: &ApiClient, addr: ClientAddr) -> ApiClient {
    auth.clone()
        .with_header(CLIENT_ADDR_HEADER, &addr.0.ip().to_string())
}

async fn ping(State(p): State<Public>) -> Response {
    if let Some((at, v)) = p.ping.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        if at.elapsed() < PING_CACHE {
            return Json(v.clone()).into_response();
        }
    }
    match p.auth.get::<serde_json::Value>("/v1/ping").await {
        Ok(v) => {
            *p.ping.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), v.clone()));
            Json(v).into_response()
        }
        Err(e) => error_response(e),
    }
}

async fn forward(auth: ApiClient, path: &str, addr: ClientAddr, body: Bytes) -> Response {
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
    match auth_for(&auth, addr)
        .post::<_, serde_json::Value>(path, &value)
        .await
    {
        Ok(v) => Json(v).into_response(),
        Err(e) => error_response(e),
    }
}

async fn forward_login(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    body: Bytes,
) -> Response {
    forward(p.auth, "/v1/login", addr, body).await
}

async fn forward_login_challenge(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    body: Bytes,
) -> Response {
    forward(p.auth, "/v1/login/challenge", addr, body).await
}

async fn forward_signup_info(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    body: Bytes,
) -> Response {
    forward(p.auth, "/v1/signup/info", addr, body).await
}

async fn forward_signup(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    body: Bytes,
) -> Response {
    forward(p.auth, "/v1/signup", addr, body).await
}

async fn forward_join(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    body: Bytes,
) -> Response {
    forward(p.auth, "/v1/join", addr, body).await
}

async fn forward_sso_start(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    body: Bytes,
) -> Response {
    forward(p.auth, "/v1/sso/start", addr, body).await
}

async fn forward_sso_result(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    body: Bytes,
) -> Response {
    forward(p.auth, "/v1/sso/result", addr, body).await
}

/// Cookie binding a headless login to the browser that typed its code.
const BINDING_COOKIE: &str = "warden_sso";

/// A small HTML page for the browser leg of single sign-on.
fn page(status: StatusCode, title: &str, message: &str, form: bool) -> Response {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let form = if form {
        r#"<form method="post" action="/web/device">
<p><label>Code: <input name="user_code" autocomplete="off" autofocus></label>
<button type="submit">Continue</button></p>
<p>Only enter a code that your own terminal showed you just now: whoever started the login gets the access.</p>
</form>"#
    } else {
        ""
    };
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
            ("referrer-policy", "no-referrer"),
        ],
        body,
    )
        .into_response()
}

fn see_other(url: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [("location", url), ("cache-control", "no-store")],
    )
        .into_response()
}

/// An auth error as a page.
fn error_page(title: &str, e: ClientError) -> Response {
    let (status, _, message) = auth_failure(e);
    page(status, title, &message, false)
}

/// The identity provider sends the browser here with `code` and `state`.
async fn oidc_callback(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    headers: axum::http::HeaderMap,
    Query(mut cb): Query<SsoCallback>,
) -> Response {
    cb.binding = headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == BINDING_COOKIE)
        .map(|(_, v)| warden_types::Secret::new(v.to_string()));
    match auth_for(&p.auth, addr)
        .post::<_, SsoCallbackResponse>("/v1/sso/callback", &cb)
        .await
    {
        Ok(SsoCallbackResponse {
            redirect: Some(url),
            ..
        }) => see_other(&url),
        Ok(r) => page(StatusCode::OK, "Login complete", &r.message, false),
        Err(e) => error_page("Login failed", e),
    }
}

/// Headless logins: the page where the code from the terminal is typed.
async fn device_page() -> Response {
    page(
        StatusCode::OK,
        "Log in to Warden",
        "Enter the code that 'warden login --headless' printed.",
        true,
    )
}

async fn device_submit(
    State(p): State<Public>,
    Extension(addr): Extension<ClientAddr>,
    Form(req): Form<SsoDeviceRequest>,
) -> Response {
    match auth_for(&p.auth, addr)
        .post::<_, SsoDeviceResponse>("/v1/sso/device", &req)
        .await
    {
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
