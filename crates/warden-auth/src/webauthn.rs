//! Security keys (FIDO2/WebAuthn) as a second factor for local users.
//!
//! The relying party ID is the cluster name (so it must be a DNS name and,
//! like the cluster name, never changes: keys are bound to it). Clients
//! answer with the origin `https://<proxy host>` when the proxy's host lies
//! under the RP ID, else `https://<RP ID>`; any port is accepted.
//!
//! Ceremony state lives in the backend for a few minutes, so any auth
//! server can finish a ceremony another began, and each challenge can be
//! answered only once.

use crate::error::{AuthError, Result};
use crate::resources::{self, now, to_json, Credentials, CREDENTIALS};
use crate::server::AuthServer;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};
use warden_store::StoreError;
use warden_types::api::{MfaPurpose, WebauthnAnswer, WebauthnChallenge};
use webauthn_rs::prelude::{
    AuthenticationResult, PublicKeyCredential, RegisterPublicKeyCredential, SecurityKey,
    SecurityKeyAuthentication, SecurityKeyRegistration, Url, Uuid, Webauthn, WebauthnBuilder,
};

/// Pending ceremonies, one document each.
pub(crate) const CHALLENGES: &str = "/mfa_challenges/";
/// How long a challenge can be answered.
const CHALLENGE_TTL: i64 = 300;
/// Security keys per user.
const MAX_KEYS: usize = 10;

/// An enrolled security key.
#[derive(Clone, Serialize, Deserialize)]
pub struct SecurityKeyDevice {
    pub name: String,
    pub added: i64,
    #[serde(default)]
    pub last_used: i64,
    pub key: SecurityKey,
}

#[derive(Serialize, Deserialize)]
enum Ceremony {
    Authenticate(SecurityKeyAuthentication),
    Register {
        name: String,
        handle: Uuid,
        state: SecurityKeyRegistration,
    },
}

#[derive(Serialize, Deserialize)]
struct Pending {
    user: String,
    purpose: MfaPurpose,
    expires: i64,
    ceremony: Ceremony,
}

/// Where the decoy-credential secret lives.
const DECOY_SECRET: &str = "/secrets/webauthn_decoy";

/// A security-key request shaped as webauthn-rs makes them for real keys
/// (same options, one credential), naming a credential id that is an HMAC
/// of the user name: stable per user, unguessable, owned by nobody.
fn decoy_request(cluster: &str, secret: &[u8], user: &str) -> Result<serde_json::Value> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    // 64 bytes, the length of a YubiKey 5's ECDSA credential ids.
    let mut id = Vec::with_capacity(64);
    for part in [b"webauthn-decoy-1".as_slice(), b"webauthn-decoy-2"] {
        let mut ctx = ring::hmac::Context::with_key(&key);
        ctx.update(part);
        ctx.update(cluster.as_bytes());
        ctx.update(&[0]);
        ctx.update(user.as_bytes());
        id.extend_from_slice(ctx.sign().as_ref());
    }
    let b64 = |b: &[u8]| data_encoding::BASE64URL_NOPAD.encode(b);
    let request = serde_json::json!({
        "publicKey": {
            "challenge": b64(&warden_ca::random_bytes::<32>()),
            "timeout": DECOY_TIMEOUT_MS,
            "rpId": cluster,
            "allowCredentials": [{"type": "public-key", "id": b64(&id), "transports": ["usb"]}],
            "userVerification": "preferred",
            "hints": ["security-key"],
        }
    });
    // Must read as a real request does.
    serde_json::from_value::<webauthn_rs::prelude::RequestChallengeResponse>(request.clone())
        .map_err(internal)?;
    Ok(request)
}

/// webauthn-rs's default authenticator timeout, which real requests carry.
const DECOY_TIMEOUT_MS: u32 = 300_000;

/// The relying party of `cluster`.
pub(crate) fn relying_party(cluster: &str) -> Result<Webauthn> {
    let unusable = || {
        AuthError::BadRequest(format!(
            "security keys need a cluster name that is a DNS name (it is the WebAuthn relying party ID); \
             {cluster:?} is not: use TOTP, or start a new cluster with --cluster-name"
        ))
    };
    let origin = Url::parse(&format!("https://{cluster}")).map_err(|_| unusable())?;
    let name = format!("Warden {cluster}");
    WebauthnBuilder::new(cluster, &origin)
        .map_err(|_| unusable())?
        .rp_name(&name)
        .allow_subdomains(true)
        .allow_any_port(true)
        .build()
        .map_err(|e| AuthError::Internal(format!("WebAuthn relying party: {e}")))
}

/// Records a verified assertion on the key that made it (signature
/// counter, last use). False when no enrolled key made it, or when its
/// counter did not grow past the one stored *now*: webauthn-rs compares
/// with the counter as of the challenge, so two answers racing (or a
/// cloned key answering an older challenge) are caught here.
pub(crate) fn apply_assertion(creds: &mut Credentials, res: &AuthenticationResult) -> bool {
    for d in &mut creds.webauthn {
        match d.key.update_credential(res) {
            None => continue,
            Some(false) if res.counter() > 0 => return false,
            Some(_) => {
                d.last_used = now();
                return true;
            }
        }
    }
    false
}

/// Device names are shown in lists and typed in commands.
pub(crate) fn check_device_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name != "totp";
    if ok {
        Ok(())
    } else {
        Err(AuthError::BadRequest(format!(
            "invalid device name {name:?}: use 1-32 letters, digits, '-', '_' or '.' (not \"totp\")"
        )))
    }
}

/// Refuses an enrolment past the per-user limit.
fn check_room(creds: &Credentials) -> Result<()> {
    if creds.webauthn.len() >= MAX_KEYS {
        return Err(AuthError::BadRequest(format!(
            "at most {MAX_KEYS} security keys per user; remove one first ('warden mfa rm')"
        )));
    }
    Ok(())
}

fn internal(e: impl std::fmt::Display) -> AuthError {
    AuthError::Internal(e.to_string())
}

impl AuthServer {
    async fn save_ceremony(&self, user: &str, purpose: MfaPurpose, c: Ceremony) -> Result<String> {
        let id = data_encoding::HEXLOWER.encode(&warden_ca::random_bytes::<16>());
        let pending = Pending {
            user: user.to_string(),
            purpose,
            expires: now() + CHALLENGE_TTL,
            ceremony: c,
        };
        let expires = SystemTime::now() + Duration::from_secs(CHALLENGE_TTL as u64);
        self.backend()
            .create(
                &format!("{CHALLENGES}{id}"),
                to_json(&pending)?,
                Some(expires),
            )
            .await?;
        Ok(id)
    }

    /// Takes (deletes) the ceremony `id` that `user` began for `purpose`.
    async fn take_ceremony(&self, user: &str, purpose: MfaPurpose, id: &str) -> Result<Ceremony> {
        let gone = || {
            AuthError::Unauthenticated(
                "the security-key challenge expired or was already answered; try again".into(),
            )
        };
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(gone());
        }
        let key = format!("{CHALLENGES}{id}");
        let Some((p, rev)) = resources::get_raw::<Pending>(self.backend(), &key).await? else {
            return Err(gone());
        };
        match self.backend().compare_and_delete(&key, rev).await {
            Ok(()) => {}
            Err(StoreError::NotFound(_)) | Err(StoreError::Conflict { .. }) => return Err(gone()),
            Err(e) => return Err(e.into()),
        }
        if p.user != user || p.purpose != purpose || p.expires <= now() {
            return Err(gone());
        }
        Ok(p.ceremony)
    }

    /// The login step's security-key challenge: `user`'s real one, or for
    /// a user without keys (or without an account) a decoy naming
    /// credentials derived from the name, so answers reveal nothing.
    pub(crate) async fn login_webauthn_challenge(&self, user: &str) -> Result<WebauthnChallenge> {
        if let Some(real) = self.webauthn_challenge(user, MfaPurpose::Login).await? {
            return Ok(real);
        }
        let secret = self.decoy_secret().await?;
        Ok(WebauthnChallenge {
            id: data_encoding::HEXLOWER.encode(&warden_ca::random_bytes::<16>()),
            request: decoy_request(self.cluster(), &secret, user)?,
        })
    }

    /// The cluster's secret for decoy credentials, made on first use and
    /// shared by every auth server through the backend.
    async fn decoy_secret(&self) -> Result<Vec<u8>> {
        loop {
            if let Some(item) = self.backend().get(DECOY_SECRET).await? {
                return Ok(item.value);
            }
            let fresh = warden_ca::random_bytes::<32>().to_vec();
            match self
                .backend()
                .create(DECOY_SECRET, fresh.clone(), None)
                .await
            {
                Ok(_) => return Ok(fresh),
                Err(StoreError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A challenge for `user`'s security keys, or `None` without keys.
    pub(crate) async fn webauthn_challenge(
        &self,
        user: &str,
        purpose: MfaPurpose,
    ) -> Result<Option<WebauthnChallenge>> {
        let key = format!("{CREDENTIALS}{user}");
        let Some((creds, _)) = resources::get_raw::<Credentials>(self.backend(), &key).await?
        else {
            return Ok(None);
        };
        if creds.webauthn.is_empty() {
            return Ok(None);
        }
        let keys: Vec<SecurityKey> = creds.webauthn.iter().map(|d| d.key.clone()).collect();
        let (request, state) = relying_party(self.cluster())?
            .start_securitykey_authentication(&keys)
            .map_err(internal)?;
        let id = self
            .save_ceremony(user, purpose, Ceremony::Authenticate(state))
            .await?;
        Ok(Some(WebauthnChallenge {
            id,
            request: serde_json::to_value(&request).map_err(internal)?,
        }))
    }

    /// Checks a security key's answer to a challenge `user` got for
    /// `purpose`. The outer error is a request that cannot be judged
    /// (challenge gone); the inner one is a failed check, which counts
    /// toward the lockout. Apply a success with [`apply_assertion`].
    pub(crate) async fn check_assertion(
        &self,
        user: &str,
        purpose: MfaPurpose,
        answer: &WebauthnAnswer,
    ) -> Result<std::result::Result<AuthenticationResult, String>> {
        let Ceremony::Authenticate(state) = self
            .take_ceremony(user, purpose, &answer.challenge_id)
            .await?
        else {
            return Ok(Err("answer to an enrolment challenge".into()));
        };
        let cred: PublicKeyCredential = match serde_json::from_value(answer.credential.clone()) {
            Ok(c) => c,
            Err(e) => return Ok(Err(format!("malformed security-key answer: {e}"))),
        };
        Ok(relying_party(self.cluster())?
            .finish_securitykey_authentication(&cred, &state)
            .map_err(|e| format!("security key check failed: {e:?}")))
    }

    /// Checks that `user` can enrol a key named `name`, before the
    /// confirming MFA check spends a code.
    pub(crate) async fn can_register(&self, user: &str, name: &str) -> Result<Credentials> {
        check_device_name(name)?;
        relying_party(self.cluster())?;
        let key = format!("{CREDENTIALS}{user}");
        let (creds, _) = resources::get_raw::<Credentials>(self.backend(), &key)
            .await?
            .ok_or_else(|| {
                AuthError::BadRequest(format!(
                    "{user} is not a local user: single sign-on users get MFA from their identity provider"
                ))
            })?;
        if creds.webauthn.iter().any(|d| d.name == name) {
            return Err(AuthError::Conflict(format!(
                "you already have a device named {name}: pick another name, or remove it first ('warden mfa rm {name}')"
            )));
        }
        check_room(&creds)?;
        Ok(creds)
    }

    /// Starts enrolling a security key named `name` for `user`.
    pub(crate) async fn begin_registration(
        &self,
        user: &str,
        name: &str,
    ) -> Result<WebauthnChallenge> {
        let creds = self.can_register(user, name).await?;
        let handle = creds.webauthn_user.unwrap_or_else(Uuid::new_v4);
        let exclude = creds
            .webauthn
            .iter()
            .map(|d| d.key.cred_id().clone())
            .collect();
        let (request, state) = relying_party(self.cluster())?
            .start_securitykey_registration(handle, user, user, Some(exclude), None, None)
            .map_err(internal)?;
        let id = self
            .save_ceremony(
                user,
                MfaPurpose::Manage,
                Ceremony::Register {
                    name: name.to_string(),
                    handle,
                    state,
                },
            )
            .await?;
        Ok(WebauthnChallenge {
            id,
            request: serde_json::to_value(&request).map_err(internal)?,
        })
    }

    /// Completes an enrolment; returns the device name.
    pub(crate) async fn finish_registration(
        &self,
        user: &str,
        answer: &WebauthnAnswer,
    ) -> Result<String> {
        let Ceremony::Register {
            name,
            handle,
            state,
        } = self
            .take_ceremony(user, MfaPurpose::Manage, &answer.challenge_id)
            .await?
        else {
            return Err(AuthError::BadRequest(
                "that challenge was not an enrolment".into(),
            ));
        };
        let reg: RegisterPublicKeyCredential = serde_json::from_value(answer.credential.clone())
            .map_err(|e| AuthError::BadRequest(format!("malformed security-key answer: {e}")))?;
        let sk = relying_party(self.cluster())?
            .finish_securitykey_registration(&reg, &state)
            .map_err(|e| {
                AuthError::BadRequest(format!("the security key's registration failed: {e:?}"))
            })?;
        let key = format!("{CREDENTIALS}{user}");
        for _ in 0..50 {
            let (mut creds, rev) = resources::get_raw::<Credentials>(self.backend(), &key)
                .await?
                .ok_or_else(|| AuthError::NotFound(format!("{user} has no credentials")))?;
            if creds.webauthn.iter().any(|d| d.name == name) {
                return Err(AuthError::Conflict(format!(
                    "you already have a device named {name}"
                )));
            }
            check_room(&creds)?;
            if creds
                .webauthn
                .iter()
                .any(|d| d.key.cred_id() == sk.cred_id())
            {
                return Err(AuthError::Conflict(
                    "this security key is already enrolled".into(),
                ));
            }
            if *creds.webauthn_user.get_or_insert(handle) != handle {
                return Err(AuthError::Conflict(
                    "another enrolment finished first; try again".into(),
                ));
            }
            creds.webauthn.push(SecurityKeyDevice {
                name: name.clone(),
                added: now(),
                last_used: 0,
                key: sk.clone(),
            });
            match self
                .backend()
                .compare_and_swap(&key, rev, to_json(&creds)?, None)
                .await
            {
                Ok(_) => return Ok(name),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Internal("credentials are too contended".into()))
    }

    /// Removes the security key `name` of `user`.
    pub(crate) async fn remove_security_key(&self, user: &str, name: &str) -> Result<()> {
        let key = format!("{CREDENTIALS}{user}");
        for _ in 0..50 {
            let Some((mut creds, rev)) =
                resources::get_raw::<Credentials>(self.backend(), &key).await?
            else {
                return Err(AuthError::NotFound(format!("{user} has no credentials")));
            };
            let before = creds.webauthn.len();
            creds.webauthn.retain(|d| d.name != name);
            if creds.webauthn.len() == before {
                return Err(AuthError::NotFound(format!(
                    "no security key named {name} ('warden mfa ls' lists them)"
                )));
            }
            match self
                .backend()
                .compare_and_swap(&key, rev, to_json(&creds)?, None)
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Internal("credentials are too contended".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoys_are_stable_per_user_and_read_as_real_requests() {
        let ids = |user: &str| {
            let v = decoy_request("warden.example.com", b"secret", user).unwrap();
            assert_eq!(v["publicKey"]["rpId"], "warden.example.com");
            v["publicKey"]["allowCredentials"].clone()
        };
        assert_eq!(ids("alice"), ids("alice"));
        assert_ne!(ids("alice"), ids("bob"));
        let a = decoy_request("c", b"secret", "alice").unwrap();
        let b = decoy_request("c", b"other secret", "alice").unwrap();
        assert_ne!(
            a["publicKey"]["allowCredentials"],
            b["publicKey"]["allowCredentials"]
        );
        // A fresh challenge each time, as for real keys.
        assert_ne!(
            a["publicKey"]["challenge"],
            decoy_request("c", b"secret", "alice").unwrap()["publicKey"]["challenge"]
        );
    }

    #[test]
    fn relying_party_needs_a_dns_name() {
        assert!(relying_party("warden").is_ok());
        assert!(relying_party("proxy.example.com").is_ok());
        assert!(relying_party("127.0.0.1").is_err());
        assert!(relying_party("not a name").is_err());
    }

    #[test]
    fn device_names() {
        assert!(check_device_name("yubikey-5c").is_ok());
        for bad in ["", "totp", "a b", "x/y", &"k".repeat(33)] {
            assert!(check_device_name(bad).is_err(), "{bad}");
        }
    }
}
