//! The cluster's certificate authorities as operators see them: every
//! key, the store that holds it (software or an HSM) and its state.

use crate::api::Caller;
use crate::error::Result;
use crate::routes::Serve;
use crate::server::AuthServer;
use axum::extract::State;
use axum::{Extension, Json, Router};
use warden_types::api::CaKeyInfo;
use warden_types::endpoints;
use warden_types::resource::{resources as res, verbs};

pub fn routes() -> Router<AuthServer> {
    Router::new().serve(&endpoints::CAS, cas)
}

/// Every CA key, where it lives, and whether it signs: what an operator
/// checks before a backup (HSM keys are referenced in it, not copied).
async fn cas(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
) -> Result<Json<Vec<CaKeyInfo>>> {
    s.authorize(&c, res::CLUSTER_CONFIG, verbs::READ).await?;
    Ok(Json(s.ca_keys().await?))
}

impl AuthServer {
    /// Every CA key, as `ca ls` shows it.
    pub(crate) async fn ca_keys(&self) -> Result<Vec<CaKeyInfo>> {
        let mut out = Vec::new();
        for ca in warden_ca::CaType::ALL {
            let authority = self.authority(ca).await?;
            let rotation = authority.rotation.as_ref().map_or(String::new(), |r| {
                format!(
                    "{}{}{}",
                    if r.join { "join " } else { "" },
                    r.phase.as_str(),
                    if r.grace.is_some() { " (auto)" } else { "" }
                )
            });
            // Several keys sign where auth servers hold their own (HSM);
            // pending ones are trusted and sign after the switch.
            let keys = authority
                .active
                .iter()
                .map(|k| (k, "signing"))
                .chain(authority.pending.iter().map(|k| (k, "pending")))
                .chain(authority.trusted.iter().map(|k| (k, "trusted")));
            for (key, state) in keys {
                let fingerprint = key
                    .handle
                    .public_bytes()
                    .and_then(|p| warden_ca::ssh::fingerprint(key.handle.alg, &p))
                    .unwrap_or_else(|_| key.handle.public_key.clone());
                out.push(CaKeyInfo {
                    ca: ca.as_str().to_string(),
                    store: key.handle.store.clone(),
                    location: match key.handle.store.as_str() {
                        warden_ca::pkcs11::STORE => key.handle.data.clone(),
                        _ => String::new(),
                    },
                    fingerprint,
                    created: key.created,
                    state: state.to_string(),
                    alg: key.handle.alg.as_str().to_string(),
                    rotation: rotation.clone(),
                    pin: key
                        .tls_cert_pem
                        .as_deref()
                        .and_then(|pem| warden_ca::tls::pem_to_der(pem).ok())
                        .and_then(|ders| {
                            ders.first().and_then(|d| warden_ca::tls::spki_pin(d).ok())
                        })
                        .unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }
}
