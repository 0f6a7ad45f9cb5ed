//! The public API the proxy terminates: ping, signup and login, forwarded
//! to auth with the proxy's identity and the client's address.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_client::{ApiClient, ClientError};
use warden_types::api::{ApiError, CLIENT_ADDR_HEADER};

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
        .route("/v1/signup/info", post(forward_signup_info))
        .route("/v1/signup", post(forward_signup))
        .route("/v1/join", post(forward_join))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn error_response(e: ClientError) -> Response {
    let (status, code, message) = match e {
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
    };
    (status, Json(ApiError { code, message })).into_response()
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
    let auth = auth.with_header(CLIENT_ADDR_HEADER, &addr.0.ip().to_string());
    match auth.post::<_, serde_json::Value>(path, &value).await {
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
