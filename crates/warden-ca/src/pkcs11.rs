//! CA keys in a hardware security module, through PKCS#11: generated
//! inside the token (sensitive, never extractable) and used there; the
//! backend keeps only a reference (token label and object id).
//!
//! Every Warden CA key is Ed25519 (`CKM_EC_EDWARDS_KEY_PAIR_GEN`,
//! `CKM_EDDSA`), so a token must offer those; one that does not is refused
//! at start, naming what it lacks.

use crate::keystore::{CaSigner, KeyHandle, KeyStore};
use crate::{CaError, Result};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// `KeyHandle::store` of keys held in an HSM.
pub const STORE: &str = "pkcs11";

/// DER of the Ed25519 curve's OID (1.3.101.112), for `CKA_EC_PARAMS`.
const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// Where the HSM is and how to log in.
#[derive(Clone)]
pub struct HsmConfig {
    /// The token's PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The user PIN.
    pub pin: Zeroizing<String>,
}

impl std::fmt::Debug for HsmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmConfig")
            .field("module", &self.module)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

fn hsm_err(what: &str, e: impl std::fmt::Display) -> CaError {
    CaError::Hsm(format!("{what}: {e}"))
}

/// CA keys in one PKCS#11 token, through one logged-in session (opened
/// again, and logged in again, when the token drops it).
pub struct Pkcs11KeyStore {
    token: Arc<Token>,
}

/// A token and the session this process uses with it.
struct Token {
    label: String,
    ctx: Pkcs11,
    slot: cryptoki::slot::Slot,
    pin: Zeroizing<String>,
    session: Mutex<Session>,
}

impl Token {
    fn login(ctx: &Pkcs11, slot: cryptoki::slot::Slot, label: &str, pin: &str) -> Result<Session> {
        let session = ctx
            .open_rw_session(slot)
            .map_err(|e| hsm_err("cannot open a session", e))?;
        match session.login(UserType::User, Some(&AuthPin::from(pin))) {
            Ok(()) => Ok(session),
            // Logins are per token and application: another session's counts.
            Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => Ok(session),
            Err(e) => Err(hsm_err(
                &format!("cannot log in to token {label:?} (check the PIN)"),
                e,
            )),
        }
    }

    /// Runs `f` on the session; if the token refuses, opens a new session
    /// (logging in again) and runs it once more: an HSM that restarted or
    /// timed the session out costs one retry, not every signature until
    /// a restart.
    fn with<T>(&self, what: &str, f: impl Fn(&Session) -> cryptoki::error::Result<T>) -> Result<T> {
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        match f(&session) {
            Ok(v) => Ok(v),
            Err(first) => {
                tracing::warn!(error = %first, "{what}: the HSM refused; opening a new session");
                *session = Self::login(&self.ctx, self.slot, &self.label, &self.pin)?;
                f(&session).map_err(|e| hsm_err(what, e))
            }
        }
    }
}

impl Pkcs11KeyStore {
    /// Loads the module, finds the token by label, checks that it offers
    /// Ed25519 and logs in.
    pub fn open(config: &HsmConfig) -> Result<Self> {
        let module = config.module.display();
        let ctx = Pkcs11::new(&config.module)
            .map_err(|e| hsm_err(&format!("cannot load the PKCS#11 module {module}"), e))?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| hsm_err(&format!("{module}: cannot initialize"), e))?;
        let slots = ctx
            .get_slots_with_initialized_token()
            .map_err(|e| hsm_err("cannot list the HSM's slots", e))?;
        let mut labels = Vec::new();
        let mut found = None;
        for slot in slots {
            let info = ctx
                .get_token_info(slot)
                .map_err(|e| hsm_err("cannot read a token", e))?;
            let label = info.label().trim().to_string();
            if label == config.token {
                found = Some(slot);
                break;
            }
            labels.push(label);
        }
        let Some(slot) = found else {
            return Err(CaError::Hsm(format!(
                "no token labelled {:?} in {module} (tokens: {}); initialize one first (e.g. softhsm2-util --init-token --free --label {:?})",
                config.token,
                if labels.is_empty() { "none".into() } else { labels.join(", ") },
                config.token
            )));
        };
        let mechanisms = ctx
            .get_mechanism_list(slot)
            .map_err(|e| hsm_err("cannot list the token's mechanisms", e))?;
        let missing: Vec<&str> = [
            (
                MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
                "CKM_EC_EDWARDS_KEY_PAIR_GEN",
            ),
            (MechanismType::EDDSA, "CKM_EDDSA"),
        ]
        .into_iter()
        .filter(|(m, _)| !mechanisms.contains(m))
        .map(|(_, name)| name)
        .collect();
        if !missing.is_empty() {
            return Err(CaError::Hsm(format!(
                "token {:?} has no Ed25519 ({}), which every Warden CA key is",
                config.token,
                missing.join(", ")
            )));
        }
        let session = Token::login(&ctx, slot, &config.token, &config.pin)?;
        Ok(Pkcs11KeyStore {
            token: Arc::new(Token {
                label: config.token.clone(),
                ctx,
                slot,
                pin: config.pin.clone(),
                session: Mutex::new(session),
            }),
        })
    }

    /// The token this store uses.
    pub fn token(&self) -> &str {
        &self.token.label
    }

    /// Logs this process out of the token (at shutdown); a later use logs
    /// in again, as after the token dropped the session.
    pub fn logout(&self) -> Result<()> {
        self.token
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .logout()
            .map_err(|e| hsm_err("cannot log out", e))
    }

    /// The token and object id a handle names.
    fn reference(handle: &KeyHandle) -> Result<(String, Vec<u8>)> {
        let bad = || CaError::Key(format!("bad PKCS#11 key reference {:?}", handle.data));
        let mut token = None;
        let mut id = None;
        for part in handle.data.split(';') {
            match part.split_once('=') {
                Some(("token", t)) => token = Some(t.to_string()),
                Some(("id", i)) => {
                    id = Some(
                        data_encoding::HEXLOWER
                            .decode(i.as_bytes())
                            .map_err(|_| bad())?,
                    )
                }
                _ => return Err(bad()),
            }
        }
        Ok((token.ok_or_else(bad)?, id.ok_or_else(bad)?))
    }
}

/// The 32 key bytes of a `CKA_EC_POINT`: DER `OCTET STRING` (as the
/// standard says) or bare (as some tokens give it).
fn ed25519_point(value: &[u8]) -> Result<[u8; 32]> {
    let raw = match value {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
        v if v.len() == 32 => v,
        _ => {
            return Err(CaError::Key(format!(
                "unexpected Ed25519 public key encoding ({} bytes)",
                value.len()
            )))
        }
    };
    Ok(raw.try_into().expect("32 bytes"))
}

impl KeyStore for Pkcs11KeyStore {
    fn generate(&self) -> Result<KeyHandle> {
        let id = crate::random_bytes::<16>().to_vec();
        let hex = data_encoding::HEXLOWER.encode(&id);
        let label = format!("warden-ca-{hex}").into_bytes();
        let public_template = [
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::EcParams(ED25519_PARAMS.to_vec()),
            Attribute::Label(label.clone()),
            Attribute::Id(id.clone()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label),
            Attribute::Id(id),
        ];
        let public = self.token.with(
            &format!("cannot generate a key in token {:?}", self.token.label),
            |session| {
                session
                    .generate_key_pair(
                        &Mechanism::EccEdwardsKeyPairGen,
                        &public_template,
                        &private_template,
                    )
                    .map(|(public, _)| public)
            },
        )?;
        let point = public_point(&self.token, public)?;
        Ok(KeyHandle {
            store: STORE.into(),
            public_key: data_encoding::HEXLOWER.encode(&point),
            data: format!("token={};id={hex}", self.token.label),
        })
    }

    fn load(&self, handle: &KeyHandle) -> Result<Arc<dyn CaSigner>> {
        if handle.store != STORE {
            return Err(CaError::UnknownKeyStore(handle.store.clone()));
        }
        let (token, id) = Self::reference(handle)?;
        if token != self.token.label {
            return Err(CaError::Hsm(format!(
                "the key is in token {token:?}; this server's HSM token is {:?}",
                self.token.label
            )));
        }
        let (key, public) = find_pair(&self.token, &id)?;
        let point = public_point(&self.token, public)?;
        if data_encoding::HEXLOWER.encode(&point) != handle.public_key {
            return Err(CaError::Key(
                "the HSM's key does not match the CA's public key".into(),
            ));
        }
        Ok(Arc::new(Pkcs11Signer {
            token: self.token.clone(),
            id,
            key: Mutex::new(key),
            public: point,
        }))
    }
}

/// The private and public key objects with CKA_ID `id`.
fn find_pair(token: &Token, id: &[u8]) -> Result<(ObjectHandle, ObjectHandle)> {
    let find = |class| {
        token.with("cannot search the token", |session| {
            session.find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
        })
    };
    match (
        find(ObjectClass::PRIVATE_KEY)?.first(),
        find(ObjectClass::PUBLIC_KEY)?.first(),
    ) {
        (Some(&key), Some(&public)) => Ok((key, public)),
        _ => Err(CaError::Hsm(format!(
            "token {:?} holds no key {}; was the token replaced?",
            token.label,
            data_encoding::HEXLOWER.encode(id)
        ))),
    }
}

/// The Ed25519 public key of a public key object.
fn public_point(token: &Token, public: ObjectHandle) -> Result<[u8; 32]> {
    let attrs = token.with("cannot read a public key", |session| {
        session.get_attributes(public, &[AttributeType::EcPoint])
    })?;
    match attrs.as_slice() {
        [Attribute::EcPoint(p)] => ed25519_point(p),
        _ => Err(CaError::Hsm("the token did not give the public key".into())),
    }
}

struct Pkcs11Signer {
    token: Arc<Token>,
    id: Vec<u8>,
    /// Found again after the token drops the session.
    key: Mutex<ObjectHandle>,
    public: [u8; 32],
}

impl CaSigner for Pkcs11Signer {
    fn public_key(&self) -> [u8; 32] {
        self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let key = *self.key.lock().unwrap_or_else(|p| p.into_inner());
        let sig = match self
            .token
            .with("the HSM did not sign", |s| s.sign(&mechanism, key, msg))
        {
            Ok(sig) => sig,
            Err(first) => {
                // A new session may number its objects anew.
                let (key, _) = find_pair(&self.token, &self.id).map_err(|_| first)?;
                *self.key.lock().unwrap_or_else(|p| p.into_inner()) = key;
                self.token
                    .with("the HSM did not sign", |s| s.sign(&mechanism, key, msg))
                    .inspect_err(|e| tracing::warn!(error = %e, "the HSM did not sign"))?
            }
        };
        if sig.len() != 64 {
            return Err(CaError::Hsm(format!(
                "the HSM gave a {}-byte signature, not 64",
                sig.len()
            )));
        }
        Ok(sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_and_references() {
        let mut der = vec![0x04, 0x20];
        der.extend([7u8; 32]);
        assert_eq!(ed25519_point(&der).unwrap(), [7; 32]);
        assert_eq!(ed25519_point(&[9; 32]).unwrap(), [9; 32]);
        assert!(ed25519_point(&[1, 2, 3]).is_err());
        let h = KeyHandle {
            store: STORE.into(),
            public_key: String::new(),
            data: "token=warden;id=00ff".into(),
        };
        assert_eq!(
            Pkcs11KeyStore::reference(&h).unwrap(),
            ("warden".to_string(), vec![0, 255])
        );
        let bad = KeyHandle {
            data: "id=zz".into(),
            ..h
        };
        assert!(Pkcs11KeyStore::reference(&bad).is_err());
    }
}
