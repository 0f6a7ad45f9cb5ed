//! Security keys in the browser: the login's challenge (after the
//! password, as for `warden login`), and enrolling a key from the page
//! (a current one-time code or key proves it is the user). The browser's
//! WebAuthn API answers; auth verifies, exactly as for the CLI.

use super::{Authed, ForChange, Web};
use crate::public::{auth_for, cross_site, error_response, ClientAddr};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use warden_types::api::{
    LoginChallengeRequest, MfaChallengeRequest, MfaChallengeResponse, MfaProof, MfaPurpose,
    MfaRegisterFinish, MfaRegisterRequest, MfaRequiredRequest, WebauthnAnswer,
};
use warden_types::{endpoints, Secret};

/// What second factors the user has, asked with the password (auth gives
/// every caller the same shape, so this tells nobody who has keys).
pub(super) async fn login_challenge(
    State(w): State<Web>,
    Extension(addr): Extension<ClientAddr>,
    headers: HeaderMap,
    uri: Uri,
    Json(req): Json<LoginChallengeRequest>,
) -> Response {
    if let Some(why) = cross_site(&headers, &uri) {
        return super::refuse(StatusCode::FORBIDDEN, "cross_site", why).into_response();
    }
    match auth_for(&w.auth, addr)
        .call::<_, MfaChallengeResponse>(&endpoints::LOGIN_CHALLENGE, &req)
        .await
    {
        Ok(r) => Json(r).into_response(),
        Err(e) => error_response(e),
    }
}

/// The user's MFA devices.
pub(super) async fn devices(Authed(s): Authed) -> Response {
    s.forward(&endpoints::MFA_DEVICES, endpoints::MFA_DEVICES.path, &())
        .await
}

#[derive(Deserialize)]
pub(super) struct Enrol {
    name: String,
    /// A current one-time code, or
    #[serde(default)]
    otp: Option<Secret<String>>,
    /// an enrolled key's answer to an MFA challenge.
    #[serde(default)]
    webauthn: Option<WebauthnAnswer>,
}

/// Starts enrolling a key: the creation options for the browser.
pub(super) async fn register(ForChange(s): ForChange, Json(req): Json<Enrol>) -> Response {
    let body = MfaRegisterRequest {
        name: req.name,
        proof: MfaProof {
            otp: req.otp,
            webauthn: req.webauthn,
        },
    };
    s.forward(
        &endpoints::MFA_REGISTER,
        endpoints::MFA_REGISTER.path,
        &body,
    )
    .await
}

/// Completes enrolment with the browser's attestation.
pub(super) async fn register_finish(
    ForChange(s): ForChange,
    Json(req): Json<MfaRegisterFinish>,
) -> Response {
    s.forward(
        &endpoints::MFA_REGISTER_FINISH,
        endpoints::MFA_REGISTER_FINISH.path,
        &req,
    )
    .await
}

#[derive(Deserialize)]
pub(super) struct NodeQuery {
    node: String,
}

/// Whether the user's roles ask for a second factor before a session on
/// `node` (the page then asks for one before it connects).
pub(super) async fn required(
    Authed(s): Authed,
    State(w): State<Web>,
    Query(q): Query<NodeQuery>,
) -> Response {
    let Some(route) = w.jump.inventory.resolve(&q.node, 22).await else {
        return super::refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no single node is named {:?}", q.node),
        )
        .into_response();
    };
    let req = MfaRequiredRequest { node: route.id };
    s.forward(&endpoints::MFA_REQUIRED, endpoints::MFA_REQUIRED.path, &req)
        .await
}

/// A challenge for a session's second factor (TOTP, or the user's keys).
pub(super) async fn session_challenge(ForChange(s): ForChange) -> Response {
    let req = MfaChallengeRequest {
        purpose: MfaPurpose::Session,
    };
    s.forward(
        &endpoints::MFA_CHALLENGE,
        endpoints::MFA_CHALLENGE.path,
        &req,
    )
    .await
}
