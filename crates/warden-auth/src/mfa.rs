//! Per-session MFA (role option `require_mfa: session`): before each SSH
//! session the client proves a fresh second factor and gets a one-minute
//! certificate that names the one node it is good for. Nodes pass that
//! name to the access check, which refuses sessions without it.

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::resources::{self, now, to_json, Credentials, CREDENTIALS, NODES};
use crate::routes::Serve;
use crate::server::AuthServer;
use axum::extract::State;
use axum::{Extension, Json, Router};
use warden_ca::otp;
use warden_store::StoreError;
use warden_types::api::{
    MfaChallengeRequest, MfaChallengeResponse, MfaDevice, MfaProof, MfaPurpose, MfaRegisterFinish,
    MfaRegisterRequest, MfaRemoveRequest, MfaRequiredRequest, MfaRequiredResponse,
    MfaSessionRequest, MfaSessionResponse, WebauthnChallenge,
};
use warden_types::audit::{codes, AuditEvent};
use warden_types::endpoints;
use warden_types::{IdentityKind, NodeSpec, RequireMfa};

/// Lifetime of a per-session certificate: long enough to connect.
const SESSION_CERT_TTL: u64 = 60;

/// MFA challenges one user may ask for per minute.
const CHALLENGES_PER_MINUTE: u32 = 30;

pub fn routes() -> Router<AuthServer> {
    Router::new()
        .serve(&endpoints::MFA_REQUIRED, required)
        .serve(&endpoints::MFA_SESSION, session)
        .serve(&endpoints::MFA_CHALLENGE, challenge)
        .serve(&endpoints::MFA_DEVICES, devices)
        .serve(&endpoints::MFA_REGISTER, register)
        .serve(&endpoints::MFA_REGISTER_FINISH, register_finish)
        .serve(&endpoints::MFA_REMOVE, remove)
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

    /// Applies one second-factor attempt to `user`'s credentials under
    /// compare-and-swap: `check` judges it (and records what a success
    /// consumes: the TOTP step, a key's counter); failures count toward
    /// the lockout like failed logins. Returns whether it passed.
    pub(crate) async fn apply_factor(
        &self,
        user: &str,
        mut check: impl FnMut(&mut Credentials) -> Result<bool>,
    ) -> Result<bool> {
        let config = self.config().await?;
        let key = format!("{CREDENTIALS}{user}");
        for _ in 0..50 {
            let Some((mut creds, rev)) =
                resources::get_raw::<Credentials>(self.backend(), &key).await?
            else {
                return Err(AuthError::AccessDenied(format!(
                    "{user} has no MFA device (single sign-on users: ask an admin to drop require_mfa or enrol a local account)"
                )));
            };
            // A lock that has run out starts a fresh count.
            if creds.locked_until != 0 && creds.locked_until <= now() {
                creds.locked_until = 0;
                creds.failed_attempts = 0;
            }
            if creds.locked_until > now() {
                return Err(AuthError::Locked(
                    "account locked after repeated failures; wait or ask an admin ('warden admin users unlock')".into(),
                ));
            }
            let ok = check(&mut creds)?;
            let mut locks_now = false;
            if ok {
                creds.failed_attempts = 0;
            } else {
                creds.failed_attempts += 1;
                if creds.failed_attempts >= config.lockout_attempts {
                    creds.locked_until = config.lockout_duration.after(now());
                    locks_now = true;
                }
            }
            match self
                .backend()
                .compare_and_swap(&key, rev, to_json(&creds)?, None)
                .await
            {
                Ok(_) => {
                    if locks_now {
                        self.audit(AuditEvent::new(
                            codes::USER_LOCKED_OUT,
                            self.cluster(),
                            user,
                            format!(
                                "locked for {} after {} failed attempts",
                                config.lockout_duration, creds.failed_attempts
                            ),
                        ))
                        .await;
                    }
                    return Ok(ok);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Internal("credentials are too contended".into()))
    }

    /// Checks a fresh second factor of a local user for `purpose`: a TOTP
    /// code (each once) or a security key's answer. Returns the method.
    pub(crate) async fn verify_factor(
        &self,
        user: &str,
        purpose: MfaPurpose,
        proof: &MfaProof,
    ) -> Result<&'static str> {
        if let Some(answer) = &proof.webauthn {
            let outcome = self.check_assertion(user, purpose, answer).await?;
            let ok = self
                .apply_factor(user, |c| {
                    Ok(matches!(&outcome, Ok(res) if crate::webauthn::apply_assertion(c, res)))
                })
                .await?;
            return match outcome {
                Ok(_) if ok => Ok("webauthn"),
                Ok(_) => Err(AuthError::Unauthenticated(
                    "that security key is not enrolled ('warden mfa ls')".into(),
                )),
                Err(reason) => Err(AuthError::Unauthenticated(reason)),
            };
        }
        let Some(code) = &proof.otp else {
            return Err(AuthError::BadRequest(
                "an MFA check needs a one-time code or a security key".into(),
            ));
        };
        let ok = self
            .apply_factor(user, |c| {
                let secret = self
                    .inner
                    .keys
                    .software
                    .open(crate::login::TOTP_AAD, &c.totp_sealed)?;
                let step = otp::verify(&secret, code.expose(), now() as u64)
                    .filter(|s| *s > c.last_otp_step);
                if let Some(s) = step {
                    c.last_otp_step = s;
                }
                Ok(step.is_some())
            })
            .await?;
        if ok {
            Ok("totp")
        } else {
            Err(AuthError::Unauthenticated(
                "wrong or already used one-time code; wait for the next one and try again".into(),
            ))
        }
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
    let ev = |code, msg: String, method: &str| {
        AuditEvent::new(code, s.cluster(), &user, msg)
            .with("node", node.name().to_string())
            .with("method", method.to_string())
    };
    let method = match s
        .verify_factor(&user, MfaPurpose::Session, &req.proof)
        .await
    {
        Ok(m) => m,
        Err(e) => {
            let tried = if req.proof.webauthn.is_some() {
                "webauthn"
            } else {
                "totp"
            };
            s.audit(ev(codes::MFA_SESSION_FAILURE, e.to_string(), tried))
                .await;
            return Err(e);
        }
    };
    let resp = s
        .issue_certs(
            &doc,
            &req.ssh_public_key,
            None,
            Some(SESSION_CERT_TTL.min(left)),
            Some(node.name()),
            None,
        )
        .await?;
    s.append_durably(ev(
        codes::MFA_SESSION,
        format!("MFA check for a session on {}", node.spec.hostname),
        method,
    ))
    .await?;
    Ok(Json(MfaSessionResponse {
        ssh_cert: resp.ssh_cert,
        expires: resp.identity.expires,
    }))
}

/// The factors the caller can answer with, and a security-key challenge.
async fn challenge(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<MfaChallengeRequest>,
) -> Result<Json<MfaChallengeResponse>> {
    let user = require_user(&c)?;
    if req.purpose == MfaPurpose::Login {
        return Err(AuthError::BadRequest(
            "login challenges come from /v1/login/challenge".into(),
        ));
    }
    // Each challenge is a stored ceremony: bound how fast one user makes
    // them (a person touches a key far less often than this).
    if !s
        .inner
        .limiter
        .allow(&format!("mfa-challenge:{user}"), CHALLENGES_PER_MINUTE)
    {
        return Err(AuthError::RateLimited(
            "too many MFA challenges for your account; wait a minute".into(),
        ));
    }
    let totp = resources::get_raw::<Credentials>(s.backend(), &format!("{CREDENTIALS}{user}"))
        .await?
        .is_some();
    Ok(Json(MfaChallengeResponse {
        totp,
        webauthn: s.webauthn_challenge(user, req.purpose).await?,
    }))
}

/// The caller's MFA devices.
async fn devices(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
) -> Result<Json<Vec<MfaDevice>>> {
    let user = require_user(&c)?;
    let Some((creds, _)) =
        resources::get_raw::<Credentials>(s.backend(), &format!("{CREDENTIALS}{user}")).await?
    else {
        return Ok(Json(vec![]));
    };
    let mut out = vec![MfaDevice {
        name: "totp".into(),
        kind: "totp".into(),
        added: 0,
        last_used: 0,
    }];
    out.extend(creds.webauthn.iter().map(|d| MfaDevice {
        name: d.name.clone(),
        kind: "webauthn".into(),
        added: d.added,
        last_used: d.last_used,
    }));
    Ok(Json(out))
}

/// Adding and removing devices needs a fresh check with one the user has:
/// a stolen certificate alone cannot enrol the thief's key.
async fn manage_check(
    s: &AuthServer,
    user: &str,
    proof: &MfaProof,
    code: (&str, &str),
    device: &str,
) -> Result<()> {
    if let Err(e) = s.verify_factor(user, MfaPurpose::Manage, proof).await {
        s.audit(
            AuditEvent::new(code, s.cluster(), user, e.to_string())
                .with("device", device.to_string()),
        )
        .await;
        return Err(e);
    }
    Ok(())
}

async fn register(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<MfaRegisterRequest>,
) -> Result<Json<WebauthnChallenge>> {
    let user = require_user(&c)?;
    s.can_register(user, &req.name).await?;
    manage_check(&s, user, &req.proof, codes::MFA_ADD_FAILURE, &req.name).await?;
    Ok(Json(s.begin_registration(user, &req.name).await?))
}

async fn register_finish(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<MfaRegisterFinish>,
) -> Result<Json<MfaDevice>> {
    let user = require_user(&c)?;
    let name = match s.finish_registration(user, &req.answer).await {
        Ok(n) => n,
        Err(e) => {
            s.audit(AuditEvent::new(
                codes::MFA_ADD_FAILURE,
                s.cluster(),
                user,
                e.to_string(),
            ))
            .await;
            return Err(e);
        }
    };
    s.append_durably(
        AuditEvent::new(
            codes::MFA_ADD,
            s.cluster(),
            user,
            format!("security key {name} enrolled"),
        )
        .with("device", name.clone())
        .with("type", "webauthn"),
    )
    .await?;
    Ok(Json(MfaDevice {
        name,
        kind: "webauthn".into(),
        added: now(),
        last_used: 0,
    }))
}

async fn remove(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<MfaRemoveRequest>,
) -> Result<Json<serde_json::Value>> {
    let user = require_user(&c)?;
    if req.name == "totp" {
        return Err(AuthError::BadRequest(
            "the TOTP device cannot be removed (an admin can reset the account: 'warden admin users reset')".into(),
        ));
    }
    let enrolled = resources::get_raw::<Credentials>(s.backend(), &format!("{CREDENTIALS}{user}"))
        .await?
        .is_some_and(|(c, _)| c.webauthn.iter().any(|d| d.name == req.name));
    if !enrolled {
        return Err(AuthError::NotFound(format!(
            "no security key named {} ('warden mfa ls' lists them)",
            req.name
        )));
    }
    manage_check(&s, user, &req.proof, codes::MFA_REMOVE_FAILURE, &req.name).await?;
    s.remove_security_key(user, &req.name).await?;
    s.append_durably(
        AuditEvent::new(
            codes::MFA_REMOVE,
            s.cluster(),
            user,
            format!("security key {} removed", req.name),
        )
        .with("device", req.name.clone())
        .with("type", "webauthn"),
    )
    .await?;
    Ok(Json(serde_json::json!({})))
}
