//! Per-session MFA (role option `require_mfa: session`): before each SSH
//! session the client proves a fresh second factor and gets a one-minute
//! certificate that names the one node it is good for. Nodes pass that
//! name to the access check, which refuses sessions without it.

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::resources::{self, now, to_json, Credentials, CREDENTIALS, NODES};
use crate::server::AuthServer;
use axum::extract::State;
use axum::routing::post;
use axum::{Extension, Json, Router};
use warden_ca::otp;
use warden_store::StoreError;
use warden_types::api::{
    MfaRequiredRequest, MfaRequiredResponse, MfaSessionRequest, MfaSessionResponse,
};
use warden_types::audit::{codes, AuditEvent};
use warden_types::{IdentityKind, NodeSpec, RequireMfa};

/// Lifetime of a per-session certificate: long enough to connect.
const SESSION_CERT_TTL: u64 = 60;

pub fn routes() -> Router<AuthServer> {
    Router::new()
        .route("/v1/mfa/required", post(required))
        .route("/v1/mfa/session", post(session))
}

impl AuthServer {
    /// The roles of `user` that ask for per-session MFA.
    fn session_mfa_roles(&self, user: &str) -> Vec<String> {
        let Some(u) = self.inner.users.get(user) else {
            return vec![];
        };
        self.roles(&self.effective(&u).roles)
            .iter()
            .filter(|r| r.spec.options.require_mfa == RequireMfa::Session)
            .map(|r| r.name().to_string())
            .collect()
    }

    /// Checks a TOTP code of a local user: each code once, failures count
    /// toward the lockout like failed logins.
    pub(crate) async fn verify_totp(&self, user: &str, code: &str) -> Result<()> {
        let config = self.config().await?;
        let key = format!("{CREDENTIALS}{user}");
        for _ in 0..50 {
            let Some((mut creds, rev)) =
                resources::get_raw::<Credentials>(self.backend(), &key).await?
            else {
                return Err(AuthError::AccessDenied(format!(
                    "{user} has no one-time-code device (single sign-on users: ask an admin to drop require_mfa or enrol a local account)"
                )));
            };
            if creds.locked_until > now() {
                return Err(AuthError::Locked(
                    "account locked after repeated failures; wait or ask an admin ('warden admin users unlock')".into(),
                ));
            }
            let secret = self
                .inner
                .keys
                .open(crate::login::TOTP_AAD, &creds.totp_sealed)?;
            let step =
                otp::verify(&secret, code, now() as u64).filter(|s| *s > creds.last_otp_step);
            match step {
                Some(s) => {
                    creds.last_otp_step = s;
                    creds.failed_attempts = 0;
                }
                None => {
                    creds.failed_attempts += 1;
                    if creds.failed_attempts >= config.lockout_attempts {
                        creds.locked_until = now() + config.lockout_duration.0.as_secs() as i64;
                    }
                }
            }
            let value = to_json(&creds)?;
            match self
                .backend()
                .compare_and_swap(&key, rev, value, None)
                .await
            {
                Ok(_) if step.is_some() => return Ok(()),
                Ok(_) => {
                    return Err(AuthError::Unauthenticated(
                        "wrong or already used one-time code; wait for the next one and try again"
                            .into(),
                    ))
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Internal("credentials are too contended".into()))
    }
}

fn require_user(c: &Caller) -> Result<&str> {
    if c.identity.kind == IdentityKind::User {
        Ok(&c.identity.username)
    } else {
        Err(AuthError::AccessDenied("only users make this call".into()))
    }
}

async fn required(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<MfaRequiredRequest>,
) -> Result<Json<MfaRequiredResponse>> {
    let user = require_user(&c)?;
    let _ = req.node;
    let roles = s.session_mfa_roles(user);
    Ok(Json(MfaRequiredResponse {
        required: !roles.is_empty(),
        roles,
    }))
}

async fn session(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<MfaSessionRequest>,
) -> Result<Json<MfaSessionResponse>> {
    let user = require_user(&c)?.to_string();
    let node = resources::get::<NodeSpec>(s.backend(), &format!("{NODES}{}", req.node))
        .await?
        .ok_or_else(|| AuthError::NotFound(format!("no node {:?}", req.node)))?;
    let doc = s
        .inner
        .users
        .get(&user)
        .ok_or_else(|| AuthError::AccessDenied(format!("user {user} no longer exists")))?;
    // The session certificate is for the caller's own key (one key signs
    // TLS and SSH), and never outlives the caller's certificate.
    let key = ssh_key::PublicKey::from_openssh(req.ssh_public_key.trim())
        .map_err(|e| AuthError::BadRequest(format!("invalid SSH public key: {e}")))?;
    let same_key = matches!(key.key_data(), ssh_key::public::KeyData::Ed25519(k) if k.0.as_slice() == c.public_key.as_slice());
    if !same_key {
        return Err(AuthError::AccessDenied(
            "the SSH key is not the key of your certificate; run 'warden login'".into(),
        ));
    }
    let left = (c.identity.expires - now()).max(0) as u64;
    if left < 5 {
        return Err(AuthError::Expired(
            "your certificate is about to expire; run 'warden login'".into(),
        ));
    }
    let ev = |code, msg: String| {
        AuditEvent::new(code, s.cluster(), &user, msg)
            .with("node", node.name().to_string())
            .with("method", "totp")
    };
    if let Err(e) = s.verify_totp(&user, req.otp.expose()).await {
        s.audit(ev(codes::MFA_SESSION_FAILURE, e.to_string())).await;
        return Err(e);
    }
    let resp = s
        .issue_certs(
            &doc,
            &req.ssh_public_key,
            None,
            Some(SESSION_CERT_TTL.min(left)),
            Some(node.name()),
        )
        .await?;
    s.inner
        .audit
        .append(ev(
            codes::MFA_SESSION,
            format!("MFA check for a session on {}", node.spec.hostname),
        ))
        .await?;
    Ok(Json(MfaSessionResponse {
        ssh_cert: resp.ssh_cert,
        expires: resp.identity.expires,
    }))
}
