//! CA keys in a hardware security module, through PKCS#11: generated
//! inside the token (sensitive, never extractable) and used there; the
//! backend keeps only a reference (token label and object id).
//!
//! New keys are Ed25519 (`CKM_EC_EDWARDS_KEY_PAIR_GEN`, `CKM_EDDSA`)
//! where the token offers it, else ECDSA P-256 (`CKM_EC_KEY_PAIR_GEN`,
//! `CKM_ECDSA` over a SHA-256 digest); the operator may pick one. A token
//! with neither is refused at start, naming what it lacks. Each key's
//! handle records its algorithm, so a token may hold both.

use crate::keystore::{CaSigner, KeyAlg, KeyHandle, KeyStore};
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
/// DER of P-256's OID (1.2.840.10045.3.1.7, prime256v1).
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// What each algorithm needs of a token.
fn mechanisms(alg: KeyAlg) -> [(MechanismType, &'static str); 2] {
    match alg {
        KeyAlg::Ed25519 => [
            (
                MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
                "CKM_EC_EDWARDS_KEY_PAIR_GEN",
            ),
            (MechanismType::EDDSA, "CKM_EDDSA"),
        ],
        KeyAlg::EcdsaP256 => [
            (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"),
            (MechanismType::ECDSA, "CKM_ECDSA"),
        ],
    }
}

/// The algorithm of new keys: `wanted`, or Ed25519 if the token offers it
/// and ECDSA P-256 otherwise. `offered` is the token's mechanism list.
fn choose(
    wanted: Option<KeyAlg>,
    offered: &[MechanismType],
) -> std::result::Result<KeyAlg, String> {
    let missing = |alg| -> Vec<&'static str> {
        mechanisms(alg)
            .into_iter()
            .filter(|(m, _)| !offered.contains(m))
            .map(|(_, name)| name)
            .collect()
    };
    let candidates = match wanted {
        Some(alg) => vec![alg],
        None => vec![KeyAlg::Ed25519, KeyAlg::EcdsaP256],
    };
    let mut lacks = Vec::new();
    for alg in candidates {
        let m = missing(alg);
        if m.is_empty() {
            return Ok(alg);
        }
        lacks.push(format!("{} ({})", alg.as_str(), m.join(", ")));
    }
    Err(format!("it has no {}", lacks.join(" and no ")))
}

/// Where the HSM is and how to log in.
#[derive(Clone)]
pub struct HsmConfig {
    /// The token's PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The user PIN.
    pub pin: Zeroizing<String>,
    /// The algorithm of new keys; `None`: Ed25519 if the token offers it,
    /// else ECDSA P-256.
    pub key_type: Option<KeyAlg>,
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
    /// The algorithm of the keys it generates.
    alg: KeyAlg,
}

/// A token and the session this process uses with it.
struct Token {
    label: String,
    ctx: Pkcs11,
    slot: cryptoki::slot::Slot,
    pin: Zeroizing<String>,
    session: Mutex<Session>,
    /// What the token offers.
    mechanisms: Vec<MechanismType>,
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
        let alg = choose(config.key_type, &mechanisms).map_err(|why| {
            CaError::Hsm(format!(
                "token {:?} cannot hold CA keys: {why}",
                config.token
            ))
        })?;
        let session = Token::login(&ctx, slot, &config.token, &config.pin)?;
        Ok(Pkcs11KeyStore {
            alg,
            token: Arc::new(Token {
                label: config.token.clone(),
                ctx,
                slot,
                pin: config.pin.clone(),
                session: Mutex::new(session),
                mechanisms,
            }),
        })
    }

    /// The token this store uses.
    pub fn token(&self) -> &str {
        &self.token.label
    }

    /// The algorithm of the keys it generates.
    pub fn alg(&self) -> KeyAlg {
        self.alg
    }

    /// The same token and session, generating keys of `key_type` (a
    /// module initializes once per process: a second `open` would fail).
    pub fn with_key_type(&self, key_type: Option<KeyAlg>) -> Result<Self> {
        let alg = choose(key_type, &self.token.mechanisms).map_err(|why| {
            CaError::Hsm(format!(
                "token {:?} cannot hold CA keys: {why}",
                self.token.label
            ))
        })?;
        Ok(Pkcs11KeyStore {
            token: self.token.clone(),
            alg,
        })
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

/// The key bytes of a `CKA_EC_POINT` (raw Ed25519, or an uncompressed
/// SEC1 P-256 point): DER `OCTET STRING` (as the standard says) or bare
/// (as some tokens give it).
fn ec_point(alg: KeyAlg, value: &[u8]) -> Result<Vec<u8>> {
    let len = match alg {
        KeyAlg::Ed25519 => 32,
        KeyAlg::EcdsaP256 => 65,
    };
    let raw = match value {
        [0x04, l, rest @ ..] if usize::from(*l) == len && rest.len() == len => rest,
        v if v.len() == len => v,
        _ => {
            return Err(CaError::Key(format!(
                "unexpected {} public key encoding ({} bytes)",
                alg.as_str(),
                value.len()
            )))
        }
    };
    if alg == KeyAlg::EcdsaP256 && raw[0] != 0x04 {
        return Err(CaError::Key(
            "a P-256 public key that is not an uncompressed point".into(),
        ));
    }
    Ok(raw.to_vec())
}

impl KeyStore for Pkcs11KeyStore {
    fn generate(&self) -> Result<KeyHandle> {
        let id = crate::random_bytes::<16>().to_vec();
        let hex = data_encoding::HEXLOWER.encode(&id);
        let label = format!("warden-ca-{hex}").into_bytes();
        let (mechanism, params) = match self.alg {
            KeyAlg::Ed25519 => (Mechanism::EccEdwardsKeyPairGen, ED25519_PARAMS),
            KeyAlg::EcdsaP256 => (Mechanism::EccKeyPairGen, P256_PARAMS),
        };
        let public_template = [
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::EcParams(params.to_vec()),
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
                    .generate_key_pair(&mechanism, &public_template, &private_template)
                    .map(|(public, _)| public)
            },
        )?;
        let point = public_point(&self.token, public, self.alg)?;
        Ok(KeyHandle {
            store: STORE.into(),
            public_key: data_encoding::HEXLOWER.encode(&point),
            data: format!("token={};id={hex}", self.token.label),
            alg: self.alg,
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
        let point = public_point(&self.token, public, handle.alg)?;
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
            alg: handle.alg,
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

/// The public key of a public key object.
fn public_point(token: &Token, public: ObjectHandle, alg: KeyAlg) -> Result<Vec<u8>> {
    let attrs = token.with("cannot read a public key", |session| {
        session.get_attributes(public, &[AttributeType::EcPoint])
    })?;
    match attrs.as_slice() {
        [Attribute::EcPoint(p)] => ec_point(alg, p),
        _ => Err(CaError::Hsm("the token did not give the public key".into())),
    }
}

struct Pkcs11Signer {
    token: Arc<Token>,
    id: Vec<u8>,
    /// Found again after the token drops the session.
    key: Mutex<ObjectHandle>,
    public: Vec<u8>,
    alg: KeyAlg,
}

impl CaSigner for Pkcs11Signer {
    fn alg(&self) -> KeyAlg {
        self.alg
    }

    fn public_key(&self) -> Vec<u8> {
        self.public.clone()
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        // CKM_ECDSA signs a digest: the SHA-256 is taken here.
        let digest;
        let (mechanism, msg) = match self.alg {
            KeyAlg::Ed25519 => (
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                msg,
            ),
            KeyAlg::EcdsaP256 => {
                digest = ring::digest::digest(&ring::digest::SHA256, msg);
                (Mechanism::Ecdsa, digest.as_ref())
            }
        };
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
        assert_eq!(ec_point(KeyAlg::Ed25519, &der).unwrap(), [7; 32]);
        assert_eq!(ec_point(KeyAlg::Ed25519, &[9; 32]).unwrap(), [9; 32]);
        assert!(ec_point(KeyAlg::Ed25519, &[1, 2, 3]).is_err());
        let mut point = vec![0x04];
        point.extend([5u8; 64]);
        let mut der = vec![0x04, 0x41];
        der.extend(&point);
        assert_eq!(ec_point(KeyAlg::EcdsaP256, &der).unwrap(), point);
        assert_eq!(ec_point(KeyAlg::EcdsaP256, &point).unwrap(), point);
        let mut compressed = vec![0x02];
        compressed.extend([5u8; 64]);
        assert!(ec_point(KeyAlg::EcdsaP256, &compressed).is_err());
        assert!(ec_point(KeyAlg::EcdsaP256, &[7; 32]).is_err());
        let h = KeyHandle {
            store: STORE.into(),
            public_key: String::new(),
            data: "token=warden;id=00ff".into(),
            alg: KeyAlg::Ed25519,
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

    #[test]
    fn ed25519_where_offered_else_p256() {
        use MechanismType as M;
        let both = [
            M::ECC_EDWARDS_KEY_PAIR_GEN,
            M::EDDSA,
            M::ECC_KEY_PAIR_GEN,
            M::ECDSA,
        ];
        assert_eq!(choose(None, &both), Ok(KeyAlg::Ed25519));
        assert_eq!(choose(None, &both[2..]), Ok(KeyAlg::EcdsaP256));
        assert_eq!(
            choose(Some(KeyAlg::EcdsaP256), &both),
            Ok(KeyAlg::EcdsaP256)
        );
        let err = choose(Some(KeyAlg::Ed25519), &both[2..]).unwrap_err();
        assert!(err.contains("CKM_EC_EDWARDS_KEY_PAIR_GEN"), "{err}");
        let err = choose(None, &[M::ECDSA]).unwrap_err();
        assert!(
            err.contains("no ed25519") && err.contains("no ecdsa-p256 (CKM_EC_KEY_PAIR_GEN)"),
            "{err}"
        );
    }
}
