//! `warden admin apply/get/rm`: configuration documents (roles, approval
//! rules, webhooks) as YAML, one command for every kind.

use crate::output::{self, Format};
use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;
use warden_client::ApiClient;
use warden_types::api::ChangeResponse;
use warden_types::resource::kind;
use warden_types::Document;

/// Kinds `get`/`rm` manage here (roles: `warden admin roles`).
const KINDS: &[&str] = &[kind::APPROVAL_RULE, kind::WEBHOOK, kind::OIDC];

fn check_kind(k: &str) -> anyhow::Result<()> {
    if KINDS.contains(&k) {
        Ok(())
    } else {
        bail!("unknown kind {k:?}: use one of {KINDS:?} (roles: 'warden admin roles')")
    }
}

/// Every YAML document in `path` (a file, or a directory of .yaml files).
fn load(path: &Path) -> anyhow::Result<Vec<(String, Document<Value>)>> {
    let files = crate::admin::yaml_files(path)?;
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        for de in serde_norway::Deserializer::from_str(&text) {
            let value =
                Value::deserialize(de).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            if value.is_null() {
                continue;
            }
            let doc: Document<Value> = serde_json::from_value(value)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            out.push((file.display().to_string(), doc));
        }
    }
    if out.is_empty() {
        bail!("{} contains no documents", path.display());
    }
    Ok(out)
}

/// Webhooks and connectors may name their secret in a file (`secret_file`,
/// `client_secret_file`), kept out of git.
fn resolve_secret_file(origin: &str, doc: &mut Document<Value>) -> anyhow::Result<()> {
    let Some(spec) = doc.spec.as_object_mut() else {
        return Ok(());
    };
    for field in ["secret", "client_secret"] {
        let file_field = format!("{field}_file");
        if let Some(path) = spec.remove(&file_field) {
            let path = path
                .as_str()
                .with_context(|| format!("{origin}: {file_field} must be a path"))?;
            let secret = std::fs::read_to_string(path)
                .with_context(|| format!("{origin}: cannot read {file_field} {path}"))?;
            spec.insert(field.into(), Value::String(secret.trim().to_string()));
        }
    }
    Ok(())
}

/// Applies every document in `path`; with `only`, refuses other kinds.
pub async fn apply(api: &ApiClient, path: &Path, only: Option<&str>) -> anyhow::Result<()> {
    let docs = load(path)?;
    if let Some(k) = only {
        if let Some((origin, d)) = docs.iter().find(|(_, d)| d.kind != k) {
            bail!(
                "{origin}: {} {} is not a {k} document ('warden admin apply -f' takes every kind)",
                d.kind,
                d.name()
            );
        }
    }
    // Check everything first, so a bad document changes nothing.
    for (origin, doc) in &docs {
        if doc.kind == kind::ROLE {
            let role: Document<warden_types::RoleSpec> =
                serde_json::from_value(serde_json::to_value(doc)?)
                    .map_err(|e| anyhow::anyhow!("{origin}: role {}: {e}", doc.name()))?;
            if let Err(errs) = warden_policy::validate_role(&role) {
                bail!(
                    "{origin}: role {} is invalid:\n  {}",
                    doc.name(),
                    errs.join("\n  ")
                );
            }
        } else {
            check_kind(&doc.kind).with_context(|| origin.clone())?;
        }
        warden_types::resource::validate_name(doc.name())
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    }
    let mut changes = 0;
    for (origin, mut doc) in docs {
        resolve_secret_file(&origin, &mut doc)?;
        doc.metadata.revision = None;
        let url = if doc.kind == kind::ROLE {
            // Roles keep their revision-checked update path.
            let existing: Option<Document<Value>> =
                match api.get(&format!("/v1/roles/{}", doc.name())).await {
                    Ok(d) => Some(d),
                    Err(warden_client::ClientError::Api { status: 404, .. }) => None,
                    Err(e) => return Err(e.into()),
                };
            doc.metadata.revision = existing.and_then(|e| e.metadata.revision);
            format!("/v1/roles/{}", doc.name())
        } else {
            format!("/v1/config/{}/{}", doc.kind, doc.name())
        };
        let r: ChangeResponse = api
            .put(&url, &doc)
            .await
            .with_context(|| format!("{origin}: {} {}", doc.kind, doc.name()))?;
        if !matches!(r.change, warden_types::api::Change::Unchanged) {
            changes += 1;
        }
        println!("{} {}: {:?}", doc.kind, doc.name(), r.change);
    }
    println!("Applied: {changes} change(s).");
    Ok(())
}

pub async fn get(
    api: &ApiClient,
    k: &str,
    name: Option<&str>,
    format: Format,
) -> anyhow::Result<()> {
    check_kind(k)?;
    let docs: Vec<Document<Value>> = match name {
        Some(n) => vec![api.get(&format!("/v1/config/{k}/{n}")).await?],
        None => api.get(&format!("/v1/config/{k}")).await?,
    };
    match format {
        Format::Json => println!("{}", output::json(&docs)?),
        Format::Text => {
            for mut d in docs {
                d.metadata.revision = None;
                print!("---\n{}", serde_norway::to_string(&d)?);
            }
        }
    }
    Ok(())
}

pub async fn rm(api: &ApiClient, k: &str, name: &str) -> anyhow::Result<()> {
    check_kind(k)?;
    let _: ChangeResponse = api.delete(&format!("/v1/config/{k}/{name}")).await?;
    println!("{k} {name} deleted.");
    Ok(())
}
