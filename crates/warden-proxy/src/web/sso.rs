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
/// Logins one proxy keeps waiting at most, and per source address (a
/// /64 for IPv6): past either, the oldest waiting login goes, so a flood
/// from a few sources cannot shut everyone else out.
const MAX_PENDING: usize = 10_000;
const MAX_PENDING_PER_SOURCE: usize = 16;

/// A login waiting for the provider.
pub(super) struct Pending {
    id: String,
    poll_token: Secret<String>,
    key: ClientKey,
    expires: i64,
    /// Where it was started from (a /64 for IPv6).
    source: std::net::IpAddr,
    /// Unix seconds it was started, to find the oldest.
    started: i64,
}

/// Makes room for one more login from `source`: drops ended ones, then the
/// oldest of that source past its share, then the oldest of all.
fn make_room(pending: &mut HashMap<String, Pending>, source: std::net::IpAddr) {
    let at = super::now();
    pending.retain(|_, p| p.expires > at);
    let oldest = |pending: &HashMap<String, Pending>, of: Option<std::net::IpAddr>| {
        pending
            .iter()
            .filter(|(_, p)| of.is_none_or(|s| p.source == s))
            .min_by_key(|(_, p)| p.started)
            .map(|(k, _)| k.clone())
    };
    let mine = pending.values().filter(|p| p.source == source).count();
    if mine >= MAX_PENDING_PER_SOURCE {
        if let Some(k) = oldest(pending, Some(source)) {
            pending.remove(&k);
        }
    }
    if pending.len() >= MAX_PENDING {
        if let Some(k) = oldest(pending, None) {
            pending.remove(&k);
        }
    }
}

/// Started logins, by the SHA-256 of their cookie.
pub(super) type PendingLogins = Arc<Mutex<HashMap<String, Pending>>>;

/// How long the connector list is reused (the login page is public: it
/// must not cost auth a store read per visit).
const CONNECTORS_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// The connector list last fetched, and when.
pub(super) type ConnectorCache = Arc<Mutex<Option<(std::time::Instant, Vec<String>)>>>;

/// Connector names, for the login page's buttons.
pub(super) async fn connectors(State(w): State<Web>) -> Response {
    if let Some((at, names)) = w
        .connectors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
    {
        if at.elapsed() < CONNECTORS_FOR {
            return Json(names.clone()).into_response();
        }
    }
    match w
        .auth
        .call::<_, Vec<String>>(&endpoints::SSO_CONNECTORS, &())
        .await
    {
        Ok(names) => {
            *w.connectors.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((std::time::Instant::now(), names.clone()));
            Json(names).into_response()
        }
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
        let source = crate::limits::source_of(addr.0.ip());
        let mut pending = w.sso.lock().unwrap_or_else(|p| p.into_inner());
        make_room(&mut pending, source);
        pending.insert(
            super::session_key(&value),
            Pending {
                id: started.id,
                poll_token: started.poll_token,
                key,
                expires: started.expires,
                source,
                started: super::now(),
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
    // Taken out while auth is asked; put back unless the login is over
    // (a wrong completion value, from a link opened elsewhere, must not
    // end the real one).
    let slot = crate::public::cookie(&headers, COOKIE).map(|v| super::session_key(&v));
    let waiting = slot
        .as_ref()
        .and_then(|k| w.sso.lock().unwrap_or_else(|p| p.into_inner()).remove(k));
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
                id: p.id.clone(),
                poll_token: p.poll_token.clone(),
                completion: Some(q.completion),
            },
        )
        .await;
    let again = "<p><a href=\"/\">Log in</a></p>";
    let login = match result {
        Ok(SsoResult::Done { login }) => *login,
        Ok(SsoResult::Failed { error }) => {
            return page(StatusCode::FORBIDDEN, "Login failed", &error, again)
        }
        other => {
            if let Some(k) = slot {
                w.sso.lock().unwrap_or_else(|p| p.into_inner()).insert(k, p);
            }
            return match other {
                Err(e) => error_page("Login failed", e),
                _ => page(
                    StatusCode::BAD_REQUEST,
                    "Login failed",
                    "this link does not complete the login this browser started; finish it at your identity provider, or start again",
                    again,
                ),
            };
        }
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
        Err(r) => page(r.status, "Login failed", &r.message, again),
    }
}
