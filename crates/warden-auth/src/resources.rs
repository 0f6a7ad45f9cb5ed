//! Typed access to resources in the backend.

use crate::error::{AuthError, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use warden_store::Backend;
use warden_types::Document;

pub const USERS: &str = "/users/";
pub const ROLES: &str = "/roles/";
pub const TOKENS: &str = "/tokens/";
pub const NODES: &str = "/nodes/";
pub const PROXIES: &str = "/proxies/";
pub const LOCKS: &str = "/locks/";
pub const REQUESTS: &str = "/requests/";
pub const CREDENTIALS: &str = "/credentials/";
pub const AUTHORITIES: &str = "/authorities/";
pub const CLUSTER_CONFIG: &str = "/cluster_config";
pub const APPROVAL_RULES: &str = "/approval_rules/";
pub const WEBHOOKS: &str = "/webhooks/";
pub const CONNECTORS: &str = "/connectors/";
pub const SSH_SERIAL: &str = "/counters/ssh_serial";

pub async fn get<S: DeserializeOwned>(b: &dyn Backend, key: &str) -> Result<Option<Document<S>>> {
    let Some(item) = b.get(key).await? else {
        return Ok(None);
    };
    let mut doc: Document<S> = serde_json::from_slice(&item.value)
        .map_err(|e| AuthError::Internal(format!("corrupt document at {key}: {e}")))?;
    doc.metadata.revision = Some(item.revision);
    Ok(Some(doc))
}

pub async fn list<S: DeserializeOwned>(b: &dyn Backend, prefix: &str) -> Result<Vec<Document<S>>> {
    let mut out = Vec::new();
    for item in b.range(prefix).await? {
        match serde_json::from_slice::<Document<S>>(&item.value) {
            Ok(mut doc) => {
                doc.metadata.revision = Some(item.revision);
                out.push(doc);
            }
            Err(e) => tracing::warn!(key = %item.key, error = %e, "skipping corrupt document"),
        }
    }
    Ok(out)
}

/// Unix seconds now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// JSON for a stored value that is not a document.
pub fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| AuthError::Internal(e.to_string()))
}

/// Serializes without the revision (the store owns it).
pub fn encode<S: Serialize + Clone>(doc: &Document<S>) -> Vec<u8> {
    let mut doc = doc.clone();
    doc.metadata.revision = None;
    serde_json::to_vec(&doc).expect("resources always serialize")
}

/// A local user's secrets. Never leaves the auth service.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Credentials {
    /// Argon2id PHC string.
    pub password_hash: String,
    /// TOTP secret sealed under the key-encryption key.
    pub totp_sealed: String,
    /// Last TOTP step accepted: a code is never accepted twice.
    pub last_otp_step: u64,
    pub failed_attempts: u32,
    /// Unix seconds; 0 when not locked.
    pub locked_until: i64,
    /// The user handle security keys are registered under.
    #[serde(default)]
    pub webauthn_user: Option<uuid::Uuid>,
    /// Enrolled security keys.
    #[serde(default)]
    pub webauthn: Vec<crate::webauthn::SecurityKeyDevice>,
}

/// Reads a JSON value (not a document) and its revision.
pub async fn get_raw<T: DeserializeOwned>(b: &dyn Backend, key: &str) -> Result<Option<(T, i64)>> {
    let Some(item) = b.get(key).await? else {
        return Ok(None);
    };
    let v = serde_json::from_slice(&item.value)
        .map_err(|e| AuthError::Internal(format!("corrupt value at {key}: {e}")))?;
    Ok(Some((v, item.revision)))
}
