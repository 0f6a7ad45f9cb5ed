//! Proving the audit log intact: the hash chain catches altered, removed
//! or reordered events; a chain head signed periodically by the CA key
//! catches events cut off the end, which a chain alone cannot.

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::routes::Serve;
use crate::server::AuthServer;
use axum::extract::State;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use warden_ca::CaType;
use warden_types::api::AuditVerifyResponse;
use warden_types::endpoints;
use warden_types::resource::{resources as res, verbs};

pub(crate) const HEAD_KEY: &str = "/audit/head";
/// How often a new chain head is signed.
pub const SIGN_EVERY: Duration = Duration::from_secs(10);

/// A chain head signed by the cluster's TLS CA key.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SignedHead {
    index: u64,
    hash: String,
    time: i64,
    /// Hex Ed25519 signature over [`message`].
    signature: String,
}

pub(crate) fn message(index: u64, hash: &str, time: i64) -> Vec<u8> {
    let mut m = b"warden-audit-head\0".to_vec();
    m.extend_from_slice(&index.to_be_bytes());
    m.extend_from_slice(&time.to_be_bytes());
    m.extend_from_slice(hash.as_bytes());
    m
}

pub fn routes() -> Router<AuthServer> {
    Router::new().serve(&endpoints::AUDIT_VERIFY, verify)
}

impl AuthServer {
    /// Signs the current chain head if it moved forward since the last
    /// signature. The signed head never moves back: after events are cut
    /// off the end, the old signature stays, and verify reports the cut.
    pub async fn sign_audit_head(&self) -> Result<()> {
        let Some((index, hash)) = self.inner.audit.head().await? else {
            return Ok(());
        };
        let last = self.backend().get(HEAD_KEY).await?;
        if let Some(item) = &last {
            match serde_json::from_slice::<SignedHead>(&item.value) {
                Ok(h) if h.index >= index => {
                    if h.index > index {
                        tracing::warn!(
                            signed = h.index,
                            head = index,
                            "audit log is shorter than its signed head; not signing (run 'warden admin audit verify')"
                        );
                    }
                    return Ok(());
                }
                Ok(h) => {
                    // Only a chain that still holds the signed event is
                    // extended: after a cut, new events must not paper
                    // over it with a fresh signature.
                    let kept = self.inner.audit.at(h.index).await?;
                    if kept.is_none_or(|e| e.hash != h.hash) {
                        tracing::warn!(
                            signed = h.index,
                            "audit log no longer holds its signed head; not signing (run 'warden admin audit verify')"
                        );
                        return Ok(());
                    }
                }
                // A head that does not parse is never replaced silently.
                Err(e) => {
                    return Err(AuthError::Internal(format!(
                        "corrupt signed audit head: {e}"
                    )))
                }
            }
        }
        let (signer, _) = self.signer(CaType::Tls).await?;
        let time = time::OffsetDateTime::now_utc().unix_timestamp();
        let head = SignedHead {
            signature: data_encoding::HEXLOWER.encode(&signer.sign(&message(index, &hash, time))?),
            index,
            hash,
            time,
        };
        let value = serde_json::to_vec(&head).map_err(|e| AuthError::Internal(e.to_string()))?;
        match last {
            Some(item) => {
                self.backend()
                    .compare_and_swap(HEAD_KEY, item.revision, value, None)
                    .await?;
            }
            None => {
                self.backend().create(HEAD_KEY, value, None).await?;
            }
        }
        Ok(())
    }

    /// Keeps signing chain heads while the service runs.
    pub fn spawn_audit_signer(&self) {
        let s = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = s.sign_audit_head().await {
                    tracing::debug!(error = %e, "audit head not signed this round");
                }
                tokio::time::sleep(SIGN_EVERY).await;
            }
        });
    }
}

async fn verify(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
) -> Result<Json<AuditVerifyResponse>> {
    s.authorize(&c, res::EVENT, verbs::READ).await?;
    let report = s.inner.audit.verify().await?;
    let mut out = AuditVerifyResponse {
        events: report.events,
        ..Default::default()
    };
    if let Some((index, why)) = report.first_broken {
        let id = s
            .inner
            .audit
            .at(index)
            .await
            .ok()
            .flatten()
            .map(|e| e.id)
            .unwrap_or_default();
        out.first_broken = Some((index, id, why));
    }
    if let Some(item) = s.backend().get(HEAD_KEY).await? {
        let head: SignedHead = serde_json::from_slice(&item.value)
            .map_err(|e| AuthError::Internal(format!("corrupt signed audit head: {e}")))?;
        // Any trusted tls key: the head may predate a rotation's switch.
        let tls = s.authority(CaType::Tls).await?;
        let sig = data_encoding::HEXLOWER
            .decode(head.signature.as_bytes())
            .unwrap_or_default();
        let signed_ok = tls.verifies(&message(head.index, &head.hash, head.time), &sig);
        out.signed_head = Some((head.index, head.time));
        if out.first_broken.is_none() {
            let stored = s.inner.audit.at(head.index).await?;
            let why = if !signed_ok {
                Some("the signed chain head's signature does not verify".to_string())
            } else {
                match stored {
                    None => Some(format!(
                        "event {} (signed as the chain head) and all after it are missing: events were removed from the end",
                        head.index
                    )),
                    Some(e) if e.hash != head.hash => {
                        Some("event differs from the signed chain head".to_string())
                    }
                    Some(_) => None,
                }
            };
            if let Some(why) = why {
                out.first_broken = Some((head.index, String::new(), why));
            }
        }
    }
    Ok(Json(out))
}
