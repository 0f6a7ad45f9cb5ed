//! Local login (password + TOTP), signup, lockout and rate limits.

use crate::error::{AuthError, Result};
use crate::resources::{self, now, to_json, Credentials, CREDENTIALS, TOKENS, USERS};
use crate::server::AuthServer;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use subtle::ConstantTimeEq;
use warden_ca::otp;
use warden_store::StoreError;
use warden_types::api::{
    LoginChallengeRequest, LoginRequest, LoginResponse, MfaChallengeResponse, MfaPurpose,
    SignupInfo, SignupRequest,
};
use warden_types::audit::{codes, AuditEvent};
use warden_types::duration::relative;
use warden_types::{Document, Secret, TokenKind, TokenSpec, UserSpec};

/// Context bound into sealed TOTP secrets.
pub(crate) const TOTP_AAD: &[u8] = b"warden totp v1";
/// Message for every credential failure: it must not tell an attacker which
/// part was wrong or whether the user exists.
const BAD_CREDENTIALS: &str = "login failed: wrong user name, password, one-time code or \
     security key, or the account is locked after repeated failures (each code works once: \
     if you just used it, wait for the next)";
/// A checked password: the user, their credentials, its revision, and
/// whether the password matched.
type PasswordChecked = (Document<UserSpec>, Credentials, i64, bool);
/// Longest wait for a password-hashing slot.
const HASH_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The rate-limit key of a client address: IPv6 clients are grouped by /64,
/// since one host usually holds a whole /64.
pub(crate) fn source_key(addr: &str) -> String {
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        _ => addr.to_string(),
    }
}

fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&warden_ca::random_bytes::<16>())
        .map_err(|e| AuthError::Internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(e.to_string()))
}

fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the user does not exist, so timing does
/// not reveal which user names exist.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("warden-dummy-password").unwrap_or_default())
}

/// Splits a presented token into its store id and hash.
pub(crate) fn token_id(secret: &str) -> (String, String) {
    let hash = warden_ca::sha256_hex(secret.trim().as_bytes());
    (hash[..16].to_string(), hash)
}

impl AuthServer {
    /// Finds a live token by its secret, comparing hashes in constant time.
    /// Expired tokens are reported as such for a grace period.
    pub(crate) async fn find_token(
        &self,
        secret: &str,
        kind: TokenKind,
    ) -> Result<Document<TokenSpec>> {
        let (id, hash) = token_id(secret);
        let invalid = || {
            AuthError::Unauthenticated(format!(
                "invalid {kind} token: it was never issued, was already used, or was deleted; ask an admin for a new one"
            ))
        };
        let doc = resources::get::<TokenSpec>(self.backend(), &format!("{TOKENS}{id}"))
            .await?
            .ok_or_else(invalid)?;
        let same: bool = doc
            .spec
            .secret_sha256
            .as_bytes()
            .ct_eq(hash.as_bytes())
            .into();
        if !same || doc.spec.kind != kind {
            return Err(invalid());
        }
        if let Some(exp) = doc.metadata.expires {
            let left = exp.unix_timestamp() - now();
            if left <= 0 {
                return Err(AuthError::Expired(format!(
                    "{kind} token expired {}; ask an admin for a new one",
                    relative(left)
                )));
            }
        }
        Ok(doc)
    }

    pub async fn signup_info(&self, token: &str) -> Result<SignupInfo> {
        let doc = self.find_token(token, TokenKind::Signup).await?;
        Ok(SignupInfo {
            user: doc.spec.user.clone().unwrap_or_default(),
            cluster: self.cluster().to_string(),
            expires: doc
                .metadata
                .expires
                .map(|e| e.unix_timestamp())
                .unwrap_or(0),
        })
    }

    /// Sets a user's password and TOTP secret, consuming the signup token.
    pub async fn signup(&self, req: &SignupRequest, source: Option<String>) -> Result<String> {
        let token = self
            .find_token(req.token.expose(), TokenKind::Signup)
            .await?;
        let user = token
            .spec
            .user
            .clone()
            .ok_or_else(|| AuthError::BadRequest("token is not bound to a user".into()))?;
        let fail = |msg: String| {
            let ev = AuditEvent::new(codes::SIGNUP_FAILURE, self.cluster(), &user, msg.clone())
                .source(source.clone());
            (ev, AuthError::BadRequest(msg))
        };
        let password = req.password.expose();
        if let Err(why) = warden_policy::password_strength(password, &user) {
            let (ev, err) = fail(why);
            self.audit(ev).await;
            return Err(err);
        }
        let secret = otp::decode_secret(req.totp_secret.expose())
            .filter(|s| s.len() >= otp::MIN_SECRET)
            .ok_or_else(|| {
                AuthError::BadRequest(format!(
                    "TOTP secret must be base32 and at least {} bytes",
                    otp::MIN_SECRET
                ))
            })?;
        let Some(step) = otp::verify(&secret, req.otp.expose(), now() as u64) else {
            let (ev, err) = fail(
                "the one-time code does not match the new TOTP secret; check the authenticator app's clock and try again".into(),
            );
            self.audit(ev).await;
            return Err(err);
        };
        if resources::get::<UserSpec>(self.backend(), &format!("{USERS}{user}"))
            .await?
            .is_none()
        {
            return Err(AuthError::NotFound(format!(
                "user {user} no longer exists; ask an admin"
            )));
        }
        // Consume the token first: of two concurrent signups, one wins.
        let rev = token.metadata.revision.unwrap_or_default();
        match self
            .backend()
            .compare_and_delete(&format!("{TOKENS}{}", token.name()), rev)
            .await
        {
            Ok(()) => {}
            Err(StoreError::NotFound(_)) | Err(StoreError::Conflict { .. }) => {
                return Err(AuthError::Unauthenticated(
                    "signup token was already used".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        let password = password.to_string();
        let password_hash = self.hash_job(move || hash_password(&password)).await??;
        let creds = Credentials {
            password_hash,
            totp_sealed: self.inner.keys.software.seal(TOTP_AAD, &secret),
            last_otp_step: step,
            failed_attempts: 0,
            locked_until: 0,
            webauthn_user: None,
            webauthn: vec![],
        };
        self.backend()
            .put(
                &format!("{CREDENTIALS}{user}"),
                serde_json::to_vec(&creds).map_err(|e| AuthError::Internal(e.to_string()))?,
                None,
            )
            .await?;
        self.audit(
            AuditEvent::new(
                codes::SIGNUP,
                self.cluster(),
                &user,
                "user completed signup",
            )
            .source(source),
        )
        .await;
        Ok(user)
    }

    /// Runs a password hash on the blocking pool, at most a few at a time:
    /// each argon2id run takes ~19 MiB, so a login flood must queue, not
    /// exhaust memory.
    async fn hash_job<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let _permit = tokio::time::timeout(HASH_QUEUE_WAIT, self.inner.hashing.acquire())
            .await
            .map_err(|_| {
                AuthError::RateLimited(
                    "the auth service is busy; try again in a few seconds".into(),
                )
            })?
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))
    }

    async fn login_failed(&self, user: &str, reason: &str, source: &Option<String>) -> AuthError {
        self.audit(
            AuditEvent::new(codes::LOGIN_FAILURE, self.cluster(), user, reason)
                .source(source.clone()),
        )
        .await;
        AuthError::Unauthenticated(BAD_CREDENTIALS.into())
    }

    /// The first step of a login with a security key: the second factors
    /// the user can answer with, and a security-key challenge. Its answer
    /// tells nobody whether a user exists, has keys, or typed the right
    /// password (see below).
    pub async fn login_challenge(
        &self,
        req: &LoginChallengeRequest,
        source: Option<String>,
    ) -> Result<MfaChallengeResponse> {
        // The answer never depends on the password (it is judged only
        // together with the second factor, in `login`), nor on whether the
        // user exists or has keys: everyone gets a security-key challenge,
        // real or a decoy that is stable per user name.
        self.login_rate_limit(&req.user, &source).await?;
        Ok(MfaChallengeResponse {
            totp: true,
            webauthn: Some(self.login_webauthn_challenge(&req.user).await?),
        })
    }

    /// The first factor of a local login: the user, their credentials (and
    /// revision) and whether the password matches; or why it cannot be
    /// checked. Unknown users are hashed against a dummy so that timing
    /// does not tell which users exist.
    async fn check_password(
        &self,
        user: &str,
        password: &Secret<String>,
    ) -> Result<std::result::Result<PasswordChecked, &'static str>> {
        let doc = resources::get::<UserSpec>(self.backend(), &format!("{USERS}{user}")).await?;
        let creds =
            resources::get_raw::<Credentials>(self.backend(), &format!("{CREDENTIALS}{user}"))
                .await?;
        let password = password.expose().clone();
        let (Some(doc), Some((creds, rev))) = (doc, creds) else {
            self.hash_job(move || verify_password(&password, dummy_hash()))
                .await?;
            return Ok(Err("unknown user or signup not completed"));
        };
        if creds.locked_until > now() {
            return Ok(Err("account locked"));
        }
        let phc = creds.password_hash.clone();
        let ok = self
            .hash_job(move || verify_password(&password, &phc))
            .await?;
        Ok(Ok((doc, creds, rev, ok)))
    }

    /// Checks the user name's form, then the per-source and per-user rate
    /// limits, before any work is done or anything is written; refusals
    /// are summarised per source, not written one by one.
    async fn login_rate_limit(&self, user: &str, source: &Option<String>) -> Result<()> {
        // The name is not echoed back: it may be anything, of any size.
        warden_types::resource::validate_name(user).map_err(|_| {
            AuthError::BadRequest(
                "invalid user name: use 1-128 characters of a-z, A-Z, 0-9, '-', '_', '.', '@'"
                    .into(),
            )
        })?;
        let config = self.config().await?;
        let src = source.clone().unwrap_or_else(|| "unknown".into());
        let limiter = &self.inner.limiter;
        let src_key = source_key(&src);
        if !limiter.allow(&format!("src:{src_key}"), config.login_rate_per_minute)
            || !limiter.allow(&format!("user:{user}"), config.lockout_attempts.max(1) * 2)
        {
            self.audit_refusal(&format!("login from {src_key}"), || {
                AuditEvent::new(codes::LOGIN_FAILURE, self.cluster(), user, "rate limited")
                    .source(source.clone())
            })
            .await;
            return Err(AuthError::RateLimited(format!(
                "too many login attempts from {src} or for {user}; wait a minute and try again"
            )));
        }
        Ok(())
    }

    /// Password + TOTP (or security key) login; returns certificates for
    /// the client's keys.
    pub async fn login(&self, req: &LoginRequest, source: Option<String>) -> Result<LoginResponse> {
        let config = self.config().await?;
        self.login_rate_limit(&req.user, &source).await?;
        let cred_key = format!("{CREDENTIALS}{}", req.user);
        let (user, creds, rev, password_ok) =
            match self.check_password(&req.user, &req.password).await? {
                Ok(checked) => checked,
                Err(reason) => return Err(self.login_failed(&req.user, reason, &source).await),
            };
        // The second factor: a security key's answer, else a TOTP code.
        let (method, assertion, code_step) = match &req.webauthn {
            Some(answer) => {
                // A challenge that is gone (or never was) is a failed
                // attempt like any other, with the same answer to the client.
                let outcome = match self
                    .check_assertion(&req.user, MfaPurpose::Login, answer)
                    .await
                {
                    Ok(o) => o,
                    Err(AuthError::Unauthenticated(why)) => Err(why),
                    Err(e) => return Err(e),
                };
                ("password+webauthn", Some(outcome), None)
            }
            None => {
                let secret = self
                    .inner
                    .keys
                    .software
                    .open(TOTP_AAD, &creds.totp_sealed)?;
                let step = otp::verify(&secret, req.otp.expose(), now() as u64);
                ("password+totp", None, step)
            }
        };
        // Apply the outcome with compare-and-swap, re-reading on conflict, so
        // concurrent guesses each count and a code is accepted only once.
        let (mut creds, mut rev) = (creds, rev);
        for _ in 0..50 {
            if creds.locked_until != 0 && creds.locked_until <= now() {
                creds.locked_until = 0;
                creds.failed_attempts = 0;
            }
            if creds.locked_until > now() {
                return Err(self
                    .login_failed(&req.user, "account locked", &source)
                    .await);
            }
            let fresh_code = code_step.filter(|s| *s > creds.last_otp_step);
            let ok = password_ok
                && match &assertion {
                    Some(Ok(res)) => crate::webauthn::apply_assertion(&mut creds, res),
                    Some(Err(_)) => false,
                    None => fresh_code.is_some(),
                };
            let mut reason = String::new();
            if ok {
                creds.failed_attempts = 0;
                if let Some(step) = fresh_code {
                    creds.last_otp_step = step;
                }
            } else {
                reason = if !password_ok {
                    "wrong password".into()
                } else if let Some(Err(why)) = &assertion {
                    why.clone()
                } else if assertion.is_some() {
                    "security key not enrolled".into()
                } else if code_step.is_some() {
                    "reused one-time code".into()
                } else {
                    "wrong one-time code".into()
                };
                creds.failed_attempts += 1;
                if creds.failed_attempts >= config.lockout_attempts {
                    creds.locked_until = config.lockout_duration.after(now());
                }
            }
            match self
                .backend()
                .compare_and_swap(&cred_key, rev, to_json(&creds)?, None)
                .await
            {
                Ok(_) if ok => {
                    if let Some(lock) = self.user_lock(&user, &[]) {
                        self.audit(
                            AuditEvent::new(
                                codes::LOGIN_FAILURE,
                                self.cluster(),
                                &req.user,
                                crate::locks::lock_message(&lock),
                            )
                            .source(source.clone()),
                        )
                        .await;
                        return Err(AuthError::Locked(format!(
                            "{}; ask an admin ('warden admin locks ls')",
                            crate::locks::lock_message(&lock)
                        )));
                    }
                    return self.login_succeeded(&user, req, method, source).await;
                }
                Ok(_) => {
                    if creds.locked_until > now() {
                        reason.push_str("; account locked");
                        self.audit(
                            AuditEvent::new(
                                codes::USER_LOCKED_OUT,
                                self.cluster(),
                                &req.user,
                                format!(
                                    "locked for {} after {} failed logins",
                                    config.lockout_duration, creds.failed_attempts
                                ),
                            )
                            .source(source.clone()),
                        )
                        .await;
                    }
                    self.audit(
                        AuditEvent::new(codes::LOGIN_FAILURE, self.cluster(), &req.user, reason)
                            .source(source.clone())
                            .with("failed_attempts", creds.failed_attempts),
                    )
                    .await;
                    return Err(AuthError::Unauthenticated(BAD_CREDENTIALS.into()));
                }
                Err(StoreError::Conflict { .. }) => {
                    let Some(fresh) =
                        resources::get_raw::<Credentials>(self.backend(), &cred_key).await?
                    else {
                        return Err(self
                            .login_failed(&req.user, "credentials removed", &source)
                            .await);
                    };
                    (creds, rev) = fresh;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Internal("login state is too contended".into()))
    }

    async fn login_succeeded(
        &self,
        user: &Document<UserSpec>,
        req: &LoginRequest,
        method: &str,
        source: Option<String>,
    ) -> Result<LoginResponse> {
        let resp = self
            .issue_user_certs(
                user,
                &req.ssh_public_key,
                &req.tls_csr_pem,
                req.ttl_secs,
                None,
            )
            .await?;
        // No certificates leave without their audit event.
        self.append_durably(
            AuditEvent::new(
                codes::LOGIN_SUCCESS,
                self.cluster(),
                &req.user,
                "local login",
            )
            .source(source)
            .with("method", method.to_string())
            .with("roles", resp.identity.roles.clone())
            .with("logins", resp.identity.logins.clone())
            .with("expires", resp.identity.expires),
        )
        .await?;
        Ok(resp)
    }

    /// Clears a lockout.
    pub async fn unlock_user(&self, name: &str) -> Result<()> {
        let key = format!("{CREDENTIALS}{name}");
        let Some((mut creds, rev)) =
            resources::get_raw::<Credentials>(self.backend(), &key).await?
        else {
            return Err(AuthError::NotFound(format!(
                "user {name} has no local credentials (signup not completed?)"
            )));
        };
        creds.failed_attempts = 0;
        creds.locked_until = 0;
        self.backend()
            .compare_and_swap(&key, rev, to_json(&creds)?, None)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_round_trip() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn ipv6_sources_group_by_64() {
        assert_eq!(source_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(source_key("2001:db8:1:2:ffff::1"), "2001:db8:1:2::/64");
        assert_eq!(source_key("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn token_ids_are_prefixes_of_the_hash() {
        let (id, hash) = token_id("abc");
        assert_eq!(id.len(), 16);
        assert!(hash.starts_with(&id));
    }
}
