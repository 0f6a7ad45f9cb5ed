//! Backing up and restoring the cluster state: every lasting document of
//! the backend, its secrets encrypted to a passphrase, and the audit chain
//! head the backup saw. Restore fills an empty backend (before any auth
//! server starts on it) and marks the audit log, so a restored cluster
//! never hides the gap between the backup and the disaster.

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::routes::Serve;
use crate::server::{AuthServer, StoreConfig};
use axum::extract::State;
use axum::{Extension, Json, Router};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use warden_store::Item;
use warden_types::api::{Backup, BackupRequest, SealedSecrets};
use warden_types::audit::{codes, AuditEvent};
use warden_types::{endpoints, IdentityKind};
use zeroize::Zeroizing;

/// The format written today.
pub const VERSION: u32 = 1;
/// Shortest passphrase accepted.
pub const MIN_PASSPHRASE: usize = 12;

/// Never backed up: short-lived state (challenges, logins in progress),
/// the inventory (nodes and proxies heartbeat back into it), rotation
/// bookkeeping, and the signed audit head (a restore records it instead).
const EPHEMERAL: &[&str] = &[
    crate::webauthn::CHALLENGES,
    "/sso_pending/",
    "/sso_codes/",
    crate::resources::NODES,
    crate::resources::PROXIES,
    "/ca_trust/",
    "/audit/head",
    RESTORING,
];

/// Present while a restore fills the backend: auth servers refuse to
/// start on it, and the same restore may run again to finish.
pub(crate) const RESTORING: &str = "/restore/in_progress";

/// Documents that carry secrets: only in the encrypted part.
const SECRET: &[&str] = &[
    crate::resources::CREDENTIALS,
    crate::resources::CONNECTORS,
    crate::resources::WEBHOOKS,
    crate::resources::TOKENS,
    "/secrets/",
];

/// What the passphrase protects.
#[derive(Default, Serialize, Deserialize)]
struct Secrets {
    /// The key-encryption key (base64): it seals the CA keys and the TOTP
    /// secrets in the documents, so they restore as they are.
    kek: String,
    documents: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    raw: BTreeMap<String, String>,
    /// Unix seconds at which items of this part expire (join tokens).
    #[serde(default)]
    expires: BTreeMap<String, i64>,
}

pub fn routes() -> axum::Router<AuthServer> {
    Router::new().serve(&endpoints::BACKUP, backup)
}

fn is_under(key: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| key.starts_with(p))
}

/// Puts `item` in `documents` (JSON) or `raw` (anything else), and its
/// expiry in `expires`.
fn keep(
    item: Item,
    documents: &mut BTreeMap<String, serde_json::Value>,
    raw: &mut BTreeMap<String, String>,
    expires: &mut BTreeMap<String, i64>,
) {
    if let Some(at) = item.expires {
        let at = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        expires.insert(item.key.clone(), at);
    }
    match serde_json::from_slice(&item.value) {
        Ok(v) => {
            documents.insert(item.key, v);
        }
        Err(_) => {
            raw.insert(item.key, data_encoding::BASE64.encode(&item.value));
        }
    }
}

/// The local admin identity only: a backup holds every secret of the
/// cluster.
async fn backup(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Json(req): Json<BackupRequest>,
) -> Result<Json<Backup>> {
    if c.identity.kind != IdentityKind::Admin {
        return Err(AuthError::AccessDenied(
            "backups hold every secret of the cluster: take them with the auth host's admin identity ('warden admin backup' on the auth host)".into(),
        ));
    }
    if req.passphrase.chars().count() < MIN_PASSPHRASE {
        return Err(AuthError::BadRequest(format!(
            "the passphrase must be at least {MIN_PASSPHRASE} characters"
        )));
    }
    let mut out = Backup {
        warden_backup: VERSION,
        cluster: s.cluster().to_string(),
        created: time::OffsetDateTime::now_utc().unix_timestamp(),
        warden_version: warden_types::VERSION.to_string(),
        ..Default::default()
    };
    let mut secrets = Secrets {
        kek: data_encoding::BASE64.encode(&s.inner.keys.software.export_kek()),
        ..Default::default()
    };
    for item in s.backend().range("/").await? {
        if is_under(&item.key, EPHEMERAL) {
            continue;
        }
        // Items that expire (time-limited locks, requests, join tokens)
        // go with their expiry, and restore only while it is ahead.
        if is_under(&item.key, SECRET) {
            keep(
                item,
                &mut secrets.documents,
                &mut secrets.raw,
                &mut secrets.expires,
            );
        } else {
            keep(item, &mut out.documents, &mut out.raw, &mut out.expires);
        }
    }
    // Signed now, so the backup names the chain as it stands.
    if let Err(e) = s.sign_audit_head().await {
        tracing::warn!(error = %e, "the audit head was not signed for the backup; it names the last one signed");
    }
    if let Some(head) = s.backend().get(crate::audit_chain::HEAD_KEY).await? {
        out.audit_head = serde_json::from_slice(&head.value).ok();
    }
    let plain = Zeroizing::new(
        serde_json::to_vec(&secrets).map_err(|e| AuthError::Internal(e.to_string()))?,
    );
    let passphrase = Zeroizing::new(req.passphrase);
    let aad = aad(&out);
    out.secrets = tokio::task::spawn_blocking(move || seal(&passphrase, &aad, &plain))
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))??;
    let (clear, secret) = (
        out.documents.len() + out.raw.len(),
        secrets.documents.len() + secrets.raw.len(),
    );
    s.audit(
        AuditEvent::new(
            codes::CLUSTER_BACKUP,
            s.cluster(),
            &c.identity.username,
            format!("backed up {clear} documents and {secret} secret ones"),
        )
        .with("documents", clear)
        .with("secret_documents", secret),
    )
    .await;
    Ok(Json(out))
}

/// Binds the ciphertext to the backup it belongs to, cleartext documents
/// included: an edited document fails the restore like a wrong
/// passphrase would, so a backup cannot be doctored to grant access.
fn aad(b: &Backup) -> Vec<u8> {
    let clear = serde_json::to_vec(&(&b.documents, &b.raw, &b.expires, &b.audit_head))
        .expect("JSON values serialize");
    let digest = ring::digest::digest(&ring::digest::SHA256, &clear);
    let mut out = format!(
        "warden backup v{}\0{}\0{}\0",
        b.warden_backup, b.cluster, b.created
    )
    .into_bytes();
    out.extend_from_slice(digest.as_ref());
    out
}

const M_KIB: u32 = 64 * 1024;
const T: u32 = 3;
const P: u32 = 1;

fn derive(passphrase: &str, salt: &[u8], m: u32, t: u32, p: u32) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(m, t, p, Some(32))
        .map_err(|e| AuthError::BadRequest(format!("backup KDF parameters: {e}")))?;
    let mut key = Zeroizing::new([0u8; 32]);
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, &mut *key)
        .map_err(|e| AuthError::Internal(format!("backup KDF: {e}")))?;
    Ok(key)
}

fn cipher(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte key"))
}

fn seal(passphrase: &str, aad: &[u8], plain: &[u8]) -> Result<SealedSecrets> {
    let salt = warden_ca::random_bytes::<16>();
    let key = derive(passphrase, &salt, M_KIB, T, P)?;
    let nonce = warden_ca::random_bytes::<NONCE_LEN>();
    let mut buf = plain.to_vec();
    cipher(&key)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| AuthError::Internal("cannot encrypt the backup".into()))?;
    let mut data = nonce.to_vec();
    data.extend_from_slice(&buf);
    Ok(SealedSecrets {
        kdf: "argon2id".into(),
        m_kib: M_KIB,
        t: T,
        p: P,
        salt: data_encoding::BASE64.encode(&salt),
        cipher: "aes-256-gcm".into(),
        data: data_encoding::BASE64.encode(&data),
    })
}

fn open(backup: &Backup, passphrase: &str) -> anyhow::Result<Secrets> {
    let s = &backup.secrets;
    anyhow::ensure!(
        s.kdf == "argon2id" && s.cipher == "aes-256-gcm",
        "the backup's secrets use {} and {}, which this version cannot read",
        s.kdf,
        s.cipher
    );
    // Bounds, so a doctored file cannot ask for much memory or time.
    anyhow::ensure!(
        s.m_kib <= 1 << 20 && s.t <= 64 && s.p <= 16,
        "the backup's KDF parameters are out of range"
    );
    let damaged = || anyhow::anyhow!("the backup's secrets are damaged (bad base64)");
    let salt = data_encoding::BASE64
        .decode(s.salt.as_bytes())
        .map_err(|_| damaged())?;
    let data = data_encoding::BASE64
        .decode(s.data.as_bytes())
        .map_err(|_| damaged())?;
    anyhow::ensure!(data.len() > NONCE_LEN, "the backup's secrets are cut short");
    let key = derive(passphrase, &salt, s.m_kib, s.t, s.p).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (nonce, ct) = data.split_at(NONCE_LEN);
    let mut buf = Zeroizing::new(ct.to_vec());
    let plain = cipher(&key)
        .open_in_place(
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| damaged())?,
            Aad::from(aad(backup)),
            &mut buf,
        )
        .map_err(|_| {
            anyhow::anyhow!(
                "cannot decrypt the backup's secrets: wrong passphrase, or the file was changed since it was written"
            )
        })?;
    Ok(serde_json::from_slice(plain)?)
}

/// Does the backup's audit head carry a valid signature of the cluster's
/// tls CA (as restored)? A head doctored in the backup file would already
/// fail decryption; this says the head is the one the cluster signed.
fn head_signed(backup: &Backup, head: &serde_json::Value) -> bool {
    let (Some(index), Some(hash), Some(time), Some(sig)) = (
        head.get("index").and_then(|v| v.as_u64()),
        head.get("hash").and_then(|v| v.as_str()),
        head.get("time").and_then(|v| v.as_i64()),
        head.get("signature").and_then(|v| v.as_str()),
    ) else {
        return false;
    };
    let Ok(sig) = data_encoding::HEXLOWER.decode(sig.as_bytes()) else {
        return false;
    };
    let key = format!(
        "{}{}",
        crate::resources::AUTHORITIES,
        warden_ca::CaType::Tls.as_str()
    );
    let Some(Ok(tls)) = backup
        .documents
        .get(&key)
        .map(|v| serde_json::from_value::<warden_ca::CertAuthority>(v.clone()))
    else {
        return false;
    };
    let message = crate::audit_chain::message(index, hash, time);
    tls.verifies(&message, &sig)
}

/// What [`restore`] did.
#[derive(Debug)]
pub struct Restored {
    pub documents: usize,
    /// The audit event that marks the restore: its index in the log.
    pub audit_index: u64,
    /// The log was empty: the restore starts a new chain.
    pub new_chain: bool,
}

/// Restores `backup` into the stores `stores` name, which must hold no
/// cluster yet: the key-encryption key (written to the KEK path, or
/// checked against the one there), every document, and an audit event
/// that names the chain head the backup saw.
pub async fn restore(
    backup: &Backup,
    passphrase: &str,
    data_dir: &Path,
    stores: &StoreConfig,
) -> anyhow::Result<Restored> {
    use anyhow::Context;
    anyhow::ensure!(
        backup.warden_backup == VERSION,
        "this is a version {} backup; this Warden ({}) reads version {VERSION}",
        backup.warden_backup,
        warden_types::VERSION
    );
    let secrets = {
        let (b, p) = (backup.clone(), Zeroizing::new(passphrase.to_string()));
        tokio::task::spawn_blocking(move || open(&b, &p)).await??
    };
    crate::server::create_private_dir(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let (backend, audit) = crate::server::open_state(data_dir, stores).await?;
    let marker = serde_json::to_vec(&(&backup.cluster, backup.created))?;
    let resuming = backend
        .get(RESTORING)
        .await?
        .is_some_and(|m| m.value == marker);
    let present = backend.range("/").await?;
    if !resuming {
        if let Some(first) = present.first() {
            anyhow::bail!(
                "the backend already holds a cluster ({} documents, e.g. {}); restore goes into an empty backend: point --backend at a new one (and start no auth server on it before the restore)",
                present.len(),
                first.key
            );
        }
        backend.create(RESTORING, marker, None).await?;
    }
    let kek = Zeroizing::new(
        data_encoding::BASE64
            .decode(secrets.kek.as_bytes())
            .context("the backup's key-encryption key is damaged")?,
    );
    anyhow::ensure!(
        kek.len() == 32,
        "the backup's key-encryption key is {} bytes, not 32",
        kek.len()
    );
    let kek_path = crate::server::kek_path(data_dir, stores);
    match std::fs::read(&kek_path) {
        Ok(existing) if existing[..] == kek[..] => {}
        Ok(_) => anyhow::bail!(
            "{} holds another key-encryption key than the backup's; move it away (the backup's is written in its place), or give --kek-file for a new path",
            kek_path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warden_ca::keystore::write_private_file(&kek_path, &kek)
                .with_context(|| format!("cannot write {}", kek_path.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", kek_path.display())),
    }
    let at = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut items: Vec<(String, Vec<u8>, Option<i64>)> = Vec::new();
    for (docs, raw, expires) in [
        (&backup.documents, &backup.raw, &backup.expires),
        (&secrets.documents, &secrets.raw, &secrets.expires),
    ] {
        for (key, value) in docs {
            items.push((
                key.clone(),
                serde_json::to_vec(value)?,
                expires.get(key).copied(),
            ));
        }
        for (key, b64) in raw {
            let value = data_encoding::BASE64
                .decode(b64.as_bytes())
                .with_context(|| format!("{key}: bad base64"))?;
            items.push((key.clone(), value, expires.get(key).copied()));
        }
    }
    let mut written = 0;
    for (key, mut value, expires) in items {
        if expires.is_some_and(|t| t <= at) {
            continue; // ran out since the backup
        }
        if key == crate::resources::SSH_SERIAL {
            // Serials issued after the backup must not come again.
            let n: u64 = std::str::from_utf8(&value)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let since = (at - backup.created).max(0) as u64;
            value = (n + 1_000_000 + since * 1_000).to_string().into_bytes();
        }
        let expiry =
            expires.map(|t| std::time::UNIX_EPOCH + std::time::Duration::from_secs(t as u64));
        match backend.create(&key, value.clone(), expiry).await {
            Ok(_) => written += 1,
            // A rerun of an interrupted restore: what it wrote stands.
            Err(warden_store::StoreError::AlreadyExists(_)) if resuming => {
                let same = backend.get(&key).await?.is_some_and(|i| i.value == value);
                anyhow::ensure!(
                    same || key == crate::resources::SSH_SERIAL,
                    "{key} changed since the interrupted restore; restore into a new, empty backend"
                );
                written += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let new_chain = audit.head().await?.is_none();
    let head = backup.audit_head.as_ref();
    let field = |name: &str| head.and_then(|h| h.get(name)).cloned();
    let created = backup.created_rfc3339();
    let message = match (new_chain, field("index")) {
        (true, Some(i)) => format!(
            "restored from the backup of {created}; this log starts here: the previous log's chain stood at event {i} when the backup was taken, and events after that are not in this log"
        ),
        (true, None) => format!("restored from the backup of {created}; this log starts here"),
        (false, _) => format!(
            "restored from the backup of {created} into a new backend; this log continues: cluster state written after the backup was lost"
        ),
    };
    let mut event = AuditEvent::new(codes::CLUSTER_RESTORE, &backup.cluster, "admin", message)
        .with("backup_created", backup.created)
        .with("documents", written)
        .with("new_chain", new_chain);
    for name in ["index", "hash", "time", "signature"] {
        if let Some(v) = field(name) {
            event = event.with(&format!("previous_head_{name}"), v);
        }
    }
    if let Some(head) = head {
        event = event.with("previous_head_signed", head_signed(backup, head));
    }
    let stored = audit.append(event).await?;
    backend.delete(RESTORING).await?;
    Ok(Restored {
        documents: written,
        audit_index: stored.index,
        new_chain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Backup {
        let mut b = Backup {
            warden_backup: VERSION,
            cluster: "c1".into(),
            created: 1_800_000_000,
            ..Default::default()
        };
        b.documents.insert(
            "/roles/dba".into(),
            serde_json::json!({"kind": "role", "n": 1}),
        );
        let secrets = Secrets {
            kek: data_encoding::BASE64.encode(&[7; 32]),
            ..Default::default()
        };
        b.secrets = seal(
            "a long passphrase",
            &aad(&b),
            &serde_json::to_vec(&secrets).unwrap(),
        )
        .unwrap();
        b
    }

    /// Secrets open with the passphrase only, and only while the cleartext
    /// documents are as written; the file survives a YAML round trip.
    #[test]
    fn secrets_open_only_with_the_passphrase_and_untouched_documents() {
        let b = sample();
        let yaml = serde_norway::to_string(&b).unwrap();
        let back: Backup = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(back, b);
        assert_eq!(
            open(&back, "a long passphrase").unwrap().kek,
            data_encoding::BASE64.encode(&[7; 32])
        );
        let wrong = open(&b, "another passphrase").err().unwrap().to_string();
        assert!(wrong.contains("wrong passphrase"), "{wrong}");
        let mut doctored = b.clone();
        doctored.documents.insert(
            "/roles/dba".into(),
            serde_json::json!({"kind": "role", "n": 2}),
        );
        assert!(open(&doctored, "a long passphrase").is_err());
        // Expiries are bound too: a time-limited lock cannot be made to
        // lapse by editing the file.
        let mut lapsed = b.clone();
        lapsed.expires.insert("/locks/l1".into(), 1);
        assert!(open(&lapsed, "a long passphrase").is_err());
        let mut later = b.clone();
        later.created += 1;
        assert!(open(&later, "a long passphrase").is_err());
        let mut greedy = b;
        greedy.secrets.m_kib = u32::MAX;
        let e = open(&greedy, "a long passphrase")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("out of range"), "{e}");
    }
}
