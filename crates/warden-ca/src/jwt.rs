//! Verifying OpenID Connect ID tokens: the JWS signature against the
//! provider's key set (JWKS), then the claims that bind a token to one
//! issuer, one client and one login attempt. Pure: no I/O, so it is unit
//! tested with keys made here.
//!
//! Only asymmetric algorithms are accepted (RS256/384/512, PS256/384/512,
//! ES256, ES384, EdDSA): `none` and the HMAC family are refused, since the
//! client secret is not a key a relying party should trust tokens by.

use data_encoding::BASE64URL_NOPAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Claims of a verified token.
pub type Claims = Map<String, Value>;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("malformed ID token: {0}")]
    Malformed(String),
    #[error("ID token algorithm {0:?} is not accepted (use RS256, PS256, ES256, ES384 or EdDSA)")]
    Algorithm(String),
    /// No key of the set matches; the caller may refresh the set once.
    #[error("no key in the provider's key set matches the ID token (kid {0:?})")]
    UnknownKey(String),
    #[error("ID token signature is invalid")]
    Signature,
    #[error("ID token rejected: {0}")]
    Claims(String),
}

/// One JSON Web Key (RFC 7517); only the public members used here.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Jwk {
    #[serde(default)]
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

/// A provider's key set, as served at its `jwks_uri`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct JwkSet {
    #[serde(default)]
    pub keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn b64(part: &str, what: &str) -> Result<Vec<u8>, JwtError> {
    BASE64URL_NOPAD
        .decode(part.as_bytes())
        .map_err(|_| JwtError::Malformed(format!("{what} is not base64url")))
}

fn member(k: &Jwk, v: &Option<String>, name: &str) -> Result<Vec<u8>, JwtError> {
    let s = v
        .as_deref()
        .ok_or_else(|| JwtError::Malformed(format!("JWK {:?} lacks {name}", k.kid)))?;
    b64(s, name)
}

/// The key type and curve an algorithm needs.
fn key_type(alg: &str) -> Result<(&'static str, Option<&'static str>), JwtError> {
    Ok(match alg {
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => ("RSA", None),
        "ES256" => ("EC", Some("P-256")),
        "ES384" => ("EC", Some("P-384")),
        "EdDSA" => ("OKP", Some("Ed25519")),
        other => return Err(JwtError::Algorithm(other.to_string())),
    })
}

fn verify_with(alg: &str, k: &Jwk, msg: &[u8], sig: &[u8]) -> Result<bool, JwtError> {
    let rsa = |params: &'static signature::RsaParameters| -> Result<bool, JwtError> {
        let (n, e) = (member(k, &k.n, "n")?, member(k, &k.e, "e")?);
        Ok(RsaPublicKeyComponents { n: &n, e: &e }
            .verify(params, msg, sig)
            .is_ok())
    };
    let ec = |params: &'static signature::EcdsaVerificationAlgorithm| -> Result<bool, JwtError> {
        let mut point = vec![4u8];
        point.extend(member(k, &k.x, "x")?);
        point.extend(member(k, &k.y, "y")?);
        Ok(UnparsedPublicKey::new(params, point)
            .verify(msg, sig)
            .is_ok())
    };
    match alg {
        "RS256" => rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
        "RS384" => rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
        "RS512" => rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
        "PS256" => rsa(&signature::RSA_PSS_2048_8192_SHA256),
        "PS384" => rsa(&signature::RSA_PSS_2048_8192_SHA384),
        "PS512" => rsa(&signature::RSA_PSS_2048_8192_SHA512),
        "ES256" => ec(&signature::ECDSA_P256_SHA256_FIXED),
        "ES384" => ec(&signature::ECDSA_P384_SHA384_FIXED),
        "EdDSA" => {
            let x = member(k, &k.x, "x")?;
            Ok(UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(msg, sig)
                .is_ok())
        }
        other => Err(JwtError::Algorithm(other.to_string())),
    }
}

/// Checks the token's signature against `keys`; returns its claims.
pub fn verify_signature(token: &str, keys: &JwkSet) -> Result<Claims, JwtError> {
    let mut parts = token.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "expected three dot-separated parts (JWS compact form)".into(),
        ));
    };
    let header: Header = serde_json::from_slice(&b64(h, "header")?)
        .map_err(|e| JwtError::Malformed(format!("header: {e}")))?;
    let (kty, crv) = key_type(&header.alg)?;
    let sig = b64(s, "signature")?;
    let msg = &token.trim().as_bytes()[..h.len() + 1 + p.len()];
    let candidates = keys.keys.iter().filter(|k| {
        k.kty == kty
            && (crv.is_none() || k.crv.as_deref() == crv)
            && k.use_.as_deref().is_none_or(|u| u == "sig")
            && k.alg.as_deref().is_none_or(|a| a == header.alg)
            && match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }
    });
    let mut tried = false;
    for k in candidates {
        tried = true;
        if verify_with(&header.alg, k, msg, &sig)? {
            let payload = b64(p, "payload")?;
            return serde_json::from_slice::<Claims>(&payload)
                .map_err(|e| JwtError::Malformed(format!("payload: {e}")));
        }
    }
    if tried {
        Err(JwtError::Signature)
    } else {
        Err(JwtError::UnknownKey(header.kid.unwrap_or_default()))
    }
}

/// What an ID token must say for this login attempt.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// Unix seconds.
    pub now: i64,
    /// Allowed clock skew, seconds.
    pub leeway: i64,
}

fn int(claims: &Claims, name: &str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| JwtError::Claims(format!("{name} is not a number"))),
    }
}

/// The ID token checks of OpenID Connect Core §3.1.3.7, strict: one
/// audience only (ours), the issuer exactly, unexpired, the nonce of this
/// attempt, and a subject.
pub fn check_id_token(claims: &Claims, want: &Expected) -> Result<(), JwtError> {
    let bad = |m: String| Err(JwtError::Claims(m));
    match claims.get("iss").and_then(Value::as_str) {
        Some(iss) if iss == want.issuer => {}
        other => return bad(format!("issuer {other:?} is not {:?}", want.issuer)),
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => return bad("no audience (aud)".into()),
    };
    if !audiences.contains(&want.client_id) {
        return bad(format!(
            "it was issued for {audiences:?}, not for this cluster's client id {:?}",
            want.client_id
        ));
    }
    if audiences.len() > 1 {
        return bad(format!(
            "its audience is broader than this cluster ({audiences:?}); only tokens for client id {:?} alone are accepted",
            want.client_id
        ));
    }
    if let Some(azp) = claims.get("azp") {
        if azp.as_str() != Some(want.client_id) {
            return bad(format!(
                "authorized party {azp} is not {:?}",
                want.client_id
            ));
        }
    }
    let Some(exp) = int(claims, "exp")? else {
        return bad("no expiry (exp)".into());
    };
    if want.now > exp.saturating_add(want.leeway) {
        return bad(format!("it expired {} s ago", want.now.saturating_sub(exp)));
    }
    if let Some(iat) = int(claims, "iat")? {
        if iat > want.now.saturating_add(want.leeway) {
            return bad("it was issued in the future; check the clocks".into());
        }
    }
    if let Some(nbf) = int(claims, "nbf")? {
        if nbf > want.now.saturating_add(want.leeway) {
            return bad("it is not valid yet (nbf); check the clocks".into());
        }
    }
    let nonce_ok = claims
        .get("nonce")
        .and_then(Value::as_str)
        .is_some_and(|n| bool::from(n.as_bytes().ct_eq(want.nonce.as_bytes())));
    if !nonce_ok {
        return bad("its nonce does not belong to this login (replayed or forged)".into());
    }
    match claims.get("sub").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(()),
        _ => bad("it names no subject (sub)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};
    use serde_json::json;

    fn enc(v: &Value) -> String {
        BASE64URL_NOPAD.encode(v.to_string().as_bytes())
    }

    fn es256() -> (EcdsaKeyPair, Jwk) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let kp = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        let pt = kp.public_key().as_ref();
        let jwk = Jwk {
            kty: "EC".into(),
            kid: Some("k1".into()),
            crv: Some("P-256".into()),
            x: Some(BASE64URL_NOPAD.encode(&pt[1..33])),
            y: Some(BASE64URL_NOPAD.encode(&pt[33..])),
            ..Default::default()
        };
        (kp, jwk)
    }

    fn sign_es256(kp: &EcdsaKeyPair, header: &Value, claims: &Value) -> String {
        let msg = format!("{}.{}", enc(header), enc(claims));
        let sig = kp.sign(&SystemRandom::new(), msg.as_bytes()).unwrap();
        format!("{msg}.{}", BASE64URL_NOPAD.encode(sig.as_ref()))
    }

    fn claims() -> Value {
        json!({"iss": "https://idp", "aud": "warden", "sub": "u1", "exp": 2000, "iat": 1000, "nonce": "n1"})
    }

    fn want(now: i64) -> Expected<'static> {
        Expected {
            issuer: "https://idp",
            client_id: "warden",
            nonce: "n1",
            now,
            leeway: 60,
        }
    }

    #[test]
    fn es256_round_trip_and_tampering() {
        let (kp, jwk) = es256();
        let set = JwkSet { keys: vec![jwk] };
        let t = sign_es256(&kp, &json!({"alg": "ES256", "kid": "k1"}), &claims());
        let c = verify_signature(&t, &set).unwrap();
        check_id_token(&c, &want(1500)).unwrap();
        // A changed payload fails the signature.
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        let mut forged = claims();
        forged["sub"] = json!("admin");
        parts[1] = enc(&forged);
        assert_eq!(
            verify_signature(&parts.join("."), &set),
            Err(JwtError::Signature)
        );
        // Unknown kid: the caller refreshes the key set.
        let t2 = sign_es256(&kp, &json!({"alg": "ES256", "kid": "other"}), &claims());
        assert!(matches!(
            verify_signature(&t2, &set),
            Err(JwtError::UnknownKey(_))
        ));
    }

    #[test]
    fn none_and_hmac_are_refused() {
        let set = JwkSet::default();
        for alg in ["none", "HS256"] {
            let t = format!("{}.{}.", enc(&json!({"alg": alg})), enc(&claims()));
            assert_eq!(
                verify_signature(&t, &set),
                Err(JwtError::Algorithm(alg.into()))
            );
        }
        assert!(matches!(
            verify_signature("a.b", &set),
            Err(JwtError::Malformed(_))
        ));
    }

    #[test]
    fn eddsa_verifies() {
        let rng = SystemRandom::new();
        let kp = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref())
            .unwrap();
        let jwk = Jwk {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(BASE64URL_NOPAD.encode(kp.public_key().as_ref())),
            ..Default::default()
        };
        let msg = format!("{}.{}", enc(&json!({"alg": "EdDSA"})), enc(&claims()));
        let t = format!(
            "{msg}.{}",
            BASE64URL_NOPAD.encode(kp.sign(msg.as_bytes()).as_ref())
        );
        assert!(verify_signature(&t, &JwkSet { keys: vec![jwk] }).is_ok());
    }

    #[test]
    fn claim_checks() {
        let check = |f: &dyn Fn(&mut Value), now: i64| {
            let mut c = claims();
            f(&mut c);
            check_id_token(c.as_object().unwrap(), &want(now))
        };
        assert!(check(&|_| {}, 1500).is_ok());
        assert!(check(&|c| c["aud"] = json!(["warden"]), 1500).is_ok());
        let err = |f: &dyn Fn(&mut Value), now: i64| match check(f, now) {
            Err(JwtError::Claims(m)) => m,
            other => panic!("expected a claims error, got {other:?}"),
        };
        assert!(err(&|c| c["aud"] = json!("another-app"), 1500).contains("issued for"));
        assert!(err(&|c| c["aud"] = json!(["warden", "x"]), 1500).contains("broader"));
        assert!(err(&|c| c["azp"] = json!("x"), 1500).contains("authorized party"));
        assert!(err(&|c| c["iss"] = json!("https://evil"), 1500).contains("issuer"));
        assert!(err(&|_| {}, 2100).contains("expired"));
        assert!(err(&|c| c["iat"] = json!(5000), 1500).contains("future"));
        assert!(err(&|c| c["nonce"] = json!("n2"), 1500).contains("nonce"));
        assert!(err(
            &|c| {
                c.as_object_mut().unwrap().remove("nonce");
            },
            1500
        )
        .contains("nonce"));
        assert!(err(&|c| c["sub"] = json!(""), 1500).contains("subject"));
        assert!(err(
            &|c| {
                c.as_object_mut().unwrap().remove("exp");
            },
            1500
        )
        .contains("expiry"));
    }
}
