//! Single sign-on from the web UI: a button per connector starts the
//! login; the identity provider returns the browser to the proxy's OIDC
//! callback, auth sends it on to `/web/sso/done` with a completion value,
//! and the proxy collects the login there, for the browser holding the
//! cookie set at the start (a login link forwarded to someone else
//! finishes nothing). The key stays in the proxy, as for a password login.

use super::{Web, SESSION_TTL_SECS};
use crate::public::{auth_for, error_page, error_response, page, see_other, ClientAddr};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use warden_ca::ClientKey;
use warden_types::api::{SsoResult, SsoResultRequest, SsoStartRequest, SsoStartResponse};
use warden_types::{endpoints, Secret};

/// Binds a started login to its browser. Lax, not Strict: the browser
/// comes back from the identity provider's site.
const COOKIE: &str = "__Host-warden-sso";
/// Logins one proxy keeps waiting at most.
const MAX_PENDING: usize = 10_000;

/// A login waiting for the provider.
pub(super) struct Pending {
    id: String,
    poll_token: Secret<String>,
    key: ClientKey,
    expires: i64,
}

/// Started logins, by the SHA-256 of their cookie.
pub(super) type PendingLogins = Arc<Mutex<HashMap<String, Pending>>>;

/// Connector names, for the login page's buttons.
pub(super) async fn connectors(State(w): State<Web>) -> Response {
    match w
        .auth
        .call::<_, Vec<String>>(&endpoints::SSO_CONNECTORS, &())
        .await
    {
        Ok(names) => Json(names).into_response(),
        Err(e) => error_response(e),
    }
}

#[derive(Deserialize)]
pub(super) struct Start {
    connector: String,
}

/// Starts a login and sends the browser to the identity provider.
pub(super) async fn start(
    State(w): State<Web>,
    Extension(addr): Extension<ClientAddr>,
    Query(q): Query<Start>,
) -> Response {
    let key = ClientKey::generate();
    let (ssh_public_key, tls_csr_pem) =
        match (key.ssh_public_key().to_openssh(), key.csr_pem("sso")) {
            (Ok(ssh), Ok(csr)) => (ssh, csr),
            _ => {
                return page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Login failed",
                    "no key",
                    "",
                )
            }
        };
    let req = SsoStartRequest {
        connector: q.connector,
        ssh_public_key,
        tls_csr_pem,
        ttl_secs: Some(SESSION_TTL_SECS),
        client_redirect: None,
        client_host: None,
        web: true,
    };
    let started: SsoStartResponse = match auth_for(&w.auth, addr)
        .call(&endpoints::SSO_START, &req)
        .await
    {
        Ok(r) => r,
        Err(e) => return error_page("Login failed", e),
    };
    let Some(auth_url) = started.auth_url else {
        return page(
            StatusCode::BAD_GATEWAY,
            "Login failed",
            "the auth service does not know web logins yet; upgrade it",
            "",
        );
    };
    let value = data_encoding::BASE64URL_NOPAD.encode(&warden_ca::random_bytes::<32>());
    {
        let mut pending = w.sso.lock().unwrap_or_else(|p| p.into_inner());
        let at = super::now();
        pending.retain(|_, p| p.expires > at);
        if pending.len() >= MAX_PENDING {
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Login failed",
                "this proxy has as many logins waiting as it may; try again shortly",
                "",
            );
        }
        pending.insert(
            super::session_key(&value),
            Pending {
                id: started.id,
                poll_token: started.poll_token,
                key,
                expires: started.expires,
            },
        );
    }
    let max_age = (started.expires - super::now()).max(0);
    let mut resp = see_other(&auth_url);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age={max_age}"
    )) {
        resp.headers_mut().append("set-cookie", v);
    }
    resp
}

#[derive(Deserialize)]
pub(super) struct Done {
    completion: Secret<String>,
}

/// The browser is back: the login is collected and becomes its session.
pub(super) async fn done(
    State(w): State<Web>,
    headers: HeaderMap,
    Query(q): Query<Done>,
) -> Response {
    let waiting = crate::public::cookie(&headers, COOKIE).and_then(|v| {
        w.sso
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&super::session_key(&v))
    });
    let Some(p) = waiting else {
        return page(
            StatusCode::BAD_REQUEST,
            "Login failed",
            "this browser did not start this login (or it expired); start it again from the login page",
            "<p><a href=\"/\">Log in</a></p>",
        );
    };
    let result = w
        .auth
        .call::<_, SsoResult>(
            &endpoints::SSO_RESULT,
            &SsoResultRequest {
                id: p.id,
                poll_token: p.poll_token,
                completion: Some(q.completion),
            },
        )
        .await;
    let login = match result {
        Ok(SsoResult::Done { login }) => *login,
        Ok(SsoResult::Failed { error }) => {
            return page(
                StatusCode::FORBIDDEN,
                "Login failed",
                &error,
                "<p><a href=\"/\">Log in</a></p>",
            )
        }
        Ok(SsoResult::Pending) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Login failed",
                "the identity provider has not completed this login; start it again",
                "<p><a href=\"/\">Log in</a></p>",
            )
        }
        Err(e) => return error_page("Login failed", e),
    };
    match w.begin(&headers, &p.key, login) {
        Ok((_, session_cookie)) => {
            let mut resp = see_other("/");
            for c in [
                session_cookie,
                format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=0"),
            ] {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    resp.headers_mut().append("set-cookie", v);
                }
            }
            resp
        }
        Err(r) => r.into_response(),
    }
}
