//! `warden admin apply/get/rm`: configuration documents (roles, approval
//! rules, webhooks) as YAML, one command for every kind.

use crate::output::{self, Format};
use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;
use warden_client::ApiClient;
use warden_types::endpoints;
use warden_types::resource::kind;
use warden_types::Document;

/// Every kind `get`, `create -f`/`apply -f` and `rm` know, as in tctl.
pub const KINDS: &[&str] = &[
    kind::USER,
    kind::ROLE,
    kind::TOKEN,
    kind::LOCK,
    kind::NODE,
    kind::OIDC,
    kind::APPROVAL_RULE,
    kind::WEBHOOK,
    kind::CLUSTER_CONFIG,
];

/// Kinds kept as cluster configuration documents (`/v1/config/KIND`).
const CONFIG_KINDS: &[&str] = &[
    kind::OIDC,
    kind::APPROVAL_RULE,
    kind::WEBHOOK,
    kind::CLUSTER_CONFIG,
];

fn check_kind(k: &str) -> anyhow::Result<()> {
    if KINDS.contains(&k) {
        Ok(())
    } else {
        bail!("unknown kind {k:?}: use one of {}", KINDS.join(", "))
    }
}

/// Whether documents of kind `k` have their own URL (and are fetched
/// by name rather than picked from a listing).
fn has_own_url(k: &str) -> bool {
    matches!(k, kind::USER | kind::ROLE) || CONFIG_KINDS.contains(&k)
}

/// The documents of kind `k` (tokens as documents too: id, kind, user,
/// expiry; never the secret).
async fn list(api: &ApiClient, k: &str) -> anyhow::Result<Vec<Document<Value>>> {
    if k == kind::TOKEN {
        let tokens = api.call(&endpoints::TOKENS, &()).await?;
        return tokens
            .into_iter()
            .map(|t| {
                let mut doc = Document::new(
                    kind::TOKEN,
                    &t.id,
                    serde_json::json!({"kind": t.kind, "user": t.user, "created_by": t.created_by}),
                );
                doc.metadata.expires = time::OffsetDateTime::from_unix_timestamp(t.expires).ok();
                Ok(doc)
            })
            .collect();
    }
    Ok(match k {
        kind::USER => {
            api.call_as(&endpoints::USERS, endpoints::USERS.path, &())
                .await?
        }
        kind::ROLE => {
            api.call_as(&endpoints::ROLES, endpoints::ROLES.path, &())
                .await?
        }
        kind::LOCK => {
            api.call_as(&endpoints::LOCKS, endpoints::LOCKS.path, &())
                .await?
        }
        kind::NODE => {
            api.call_as(&endpoints::NODES, endpoints::NODES.path, &())
                .await?
        }
        _ => {
            let path = endpoints::CONFIGS.at(&[&k]);
            api.call_as(&endpoints::CONFIGS, &path, &()).await?
        }
    })
}

/// The document of a kind with its own URL (user, role, configuration),
/// if it exists.
async fn fetch(api: &ApiClient, k: &str, name: &str) -> anyhow::Result<Option<Document<Value>>> {
    let fetched = match k {
        kind::USER => {
            api.call_as(&endpoints::USER, &endpoints::USER.at(&[&name]), &())
                .await
        }
        kind::ROLE => {
            api.call_as(&endpoints::ROLE, &endpoints::ROLE.at(&[&name]), &())
                .await
        }
        k if CONFIG_KINDS.contains(&k) => {
            let path = endpoints::CONFIG.at(&[&k, &name]);
            api.call_as(&endpoints::CONFIG, &path, &()).await
        }
        _ => return Ok(None),
    };
    match fetched {
        Ok(d) => Ok(Some(d)),
        Err(warden_client::ClientError::Api { status: 404, .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// One document for `get`/`rm`: by name, a node also by its inventory
/// name, and ids by a unique prefix.
async fn pick(api: &ApiClient, k: &str, name: &str) -> anyhow::Result<Document<Value>> {
    if name.is_empty() {
        bail!("a {k} name or id cannot be empty");
    }
    let listing = format!("warden admin get {k}");
    if has_own_url(k) {
        return fetch(api, k, name)
            .await?
            .with_context(|| format!("no {k} {name:?}; '{listing}' lists them"));
    }
    let docs = list(api, k).await?;
    let by_hostname: Vec<&Document<Value>> = docs
        .iter()
        .filter(|d| k == kind::NODE && d.spec.get("hostname").and_then(Value::as_str) == Some(name))
        .collect();
    let id = match by_hostname.as_slice() {
        [one] => one.name().to_string(),
        _ => output::unique_prefix(name, docs.iter().map(|d| d.name()), k, &listing)?,
    };
    docs.into_iter()
        .find(|d| d.name() == id)
        .with_context(|| format!("no {k} {name:?}; '{listing}' lists them"))
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

/// Secret fields the API never shows: left out of comparisons.
const SECRET_FIELDS: &[&str] = &[
    "secret",
    "client_secret",
    "secret_file",
    "client_secret_file",
];

/// `spec` read as `S` and written back: defaults filled in, as auth
/// stores it.
fn normalized<S: serde::de::DeserializeOwned + serde::Serialize>(spec: &Value) -> Value {
    serde_json::from_value::<S>(spec.clone())
        .ok()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_else(|| spec.clone())
}

/// A document as compared for a plan: no revision or expiry, no secrets,
/// typed kinds with their defaults.
fn comparable(doc: &Document<Value>) -> Document<Value> {
    let mut d = doc.clone();
    d.metadata.revision = None;
    d.metadata.expires = None;
    d.spec = match d.kind.as_str() {
        kind::ROLE => normalized::<warden_types::RoleSpec>(&d.spec),
        kind::USER => normalized::<warden_types::UserSpec>(&d.spec),
        kind::LOCK => normalized::<warden_types::LockSpec>(&d.spec),
        _ => d.spec,
    };
    if let Some(spec) = d.spec.as_object_mut() {
        for f in SECRET_FIELDS {
            spec.remove(*f);
        }
        // Set by auth, not by the document.
        for f in ["created_by", "uid"] {
            spec.remove(f);
        }
    }
    d
}

/// Creates or updates every document in `path` (`apply -f`, `create -f`,
/// `roles apply -f`, `connectors apply -f`). First the plan, one line per
/// document (`+` create, `~` update with the changed lines, `=` unchanged);
/// with `dry_run` nothing more. With `only`, other kinds are refused.
pub async fn apply(
    admin: &crate::admin::Admin,
    path: &Path,
    only: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<()> {
    apply_pruning(admin, path, only, dry_run, false)
        .await
        .map(|_| ())
}

/// What an apply changed (or would change), as `KIND NAME`.
#[derive(Debug, Default)]
pub struct Changes {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
}

/// The built-in roles: never pruned (a cluster needs them, and its next
/// start would bring them back).
fn protected(k: &str, name: &str) -> bool {
    k == kind::CLUSTER_CONFIG
        || (k == kind::ROLE
            && warden_policy::defaults::roles()
                .iter()
                .any(|r| r.name() == name))
}

/// What `--prune` deletes: documents of the kinds in `docs` that `docs`
/// no longer has (locks compared by content, as auth names them itself).
async fn prunable(
    api: &ApiClient,
    docs: &[(String, Document<Value>)],
) -> anyhow::Result<Vec<Document<Value>>> {
    let kinds: std::collections::BTreeSet<&str> =
        docs.iter().map(|(_, d)| d.kind.as_str()).collect();
    let mut out = Vec::new();
    for k in kinds {
        for existing in list(api, k).await? {
            let kept = docs.iter().any(|(_, d)| {
                d.kind == k
                    && match k {
                        kind::LOCK => comparable(d).spec == comparable(&existing).spec,
                        _ => d.name() == existing.name(),
                    }
            });
            if !kept && !protected(k, existing.name()) {
                out.push(existing);
            }
        }
    }
    Ok(out)
}

/// `apply`, and with `prune`, also deletes what [`prunable`] finds (shown
/// in the plan first).
pub async fn apply_pruning(
    admin: &crate::admin::Admin,
    path: &Path,
    only: Option<&str>,
    dry_run: bool,
    prune: bool,
) -> anyhow::Result<Changes> {
    let api = &admin.api;
    let mut changed = Changes::default();
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
        check_kind(&doc.kind).with_context(|| origin.clone())?;
        match doc.kind.as_str() {
            kind::ROLE => {
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
            }
            kind::USER => {
                serde_json::from_value::<warden_types::UserSpec>(doc.spec.clone())
                    .map_err(|e| anyhow::anyhow!("{origin}: user {}: {e}", doc.name()))?;
            }
            kind::LOCK => {
                serde_json::from_value::<warden_types::LockSpec>(doc.spec.clone())
                    .map_err(|e| anyhow::anyhow!("{origin}: lock {}: {e}", doc.name()))?;
            }
            kind::TOKEN => bail!(
                "{origin}: tokens are not written as documents: 'warden admin tokens add' makes one (its secret is shown once)"
            ),
            kind::NODE => bail!(
                "{origin}: nodes are not written as documents: a node joins with a token and reports itself"
            ),
            _ => {}
        }
        warden_types::resource::validate_name(doc.name())
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    }
    let pruned = match prune {
        true => prunable(api, &docs).await?,
        false => Vec::new(),
    };
    // The plan.
    let mut planned = Vec::new();
    for (origin, doc) in docs {
        let existing = if doc.kind == kind::LOCK {
            // Auth names locks itself: the same lock is the same target
            // and reason, whatever the file calls it.
            let new = comparable(&doc).spec;
            list(api, kind::LOCK)
                .await?
                .into_iter()
                .find(|l| comparable(l).spec == new)
        } else {
            fetch(api, &doc.kind, doc.name())
                .await
                .with_context(|| format!("{origin}: {} {}", doc.kind, doc.name()))?
        };
        let (old, new) = match (doc.kind.as_str(), &existing) {
            // Found by content: the same lock under auth's name for it.
            (kind::LOCK, Some(_)) => (Some(comparable(&doc)), comparable(&doc)),
            _ => (existing.as_ref().map(comparable), comparable(&doc)),
        };
        if let (kind::USER, Some(old)) = (doc.kind.as_str(), &old) {
            // Only roles and logins of an existing user are written here.
            let others = |d: &Document<Value>| {
                let mut t = d.spec.get("traits").cloned().unwrap_or_default();
                if let Some(t) = t.as_object_mut() {
                    t.remove("logins");
                }
                t
            };
            if others(old) != others(&new) {
                bail!(
                    "{origin}: user {}: only roles and the logins trait of an existing user can be changed (other traits come from its identity provider or its creation)",
                    doc.name()
                );
            }
        }
        let named = format!("{} {}", doc.kind, doc.name());
        match &old {
            None => {
                println!("+ create {named}");
                changed.created.push(named);
            }
            Some(old) if *old == new => println!("= {named} unchanged"),
            Some(old) => {
                println!("~ update {named}");
                changed.updated.push(named);
                for line in
                    crate::admin::diff(&crate::admin::yaml(old)?, &crate::admin::yaml(&new)?)
                {
                    println!("{line}");
                }
            }
        }
        let change = old.as_ref() != Some(&new);
        planned.push((origin, doc, existing, change));
    }
    for doc in &pruned {
        println!("- delete {} {}", doc.kind, doc.name());
        changed.deleted.push(format!("{} {}", doc.kind, doc.name()));
    }
    let changes = planned.iter().filter(|p| p.3).count() + pruned.len();
    if dry_run {
        println!("Dry run: {changes} change(s) planned, none made.");
        return Ok(changed);
    }
    for (origin, mut doc, existing, change) in planned {
        let what = format!("{origin}: {} {}", doc.kind, doc.name());
        resolve_secret_file(&origin, &mut doc)?;
        let has_secret = doc
            .spec
            .as_object()
            .is_some_and(|s| SECRET_FIELDS.iter().any(|f| s.contains_key(*f)));
        // Unchanged documents are left alone, unless they carry a secret
        // (which no read shows, so it may differ).
        if !change && !has_secret {
            continue;
        }
        match doc.kind.as_str() {
            kind::USER => write_user(admin, &doc, existing.is_some()).await,
            kind::LOCK => {
                let spec: warden_types::LockSpec = serde_json::from_value(doc.spec.clone())?;
                let lock: Document<warden_types::LockSpec> = api
                    .call(
                        &endpoints::CREATE_LOCK,
                        &warden_types::api::CreateLockRequest {
                            target: spec.target,
                            reason: spec.reason,
                            ttl_secs: doc
                                .metadata
                                .expires
                                .map(|e| (e.unix_timestamp() - output::now()).max(1) as u64),
                        },
                    )
                    .await?;
                println!("lock {} created (as {}).", doc.name(), lock.name());
                Ok(())
            }
            k => {
                doc.metadata.revision = existing.and_then(|e| e.metadata.revision);
                if k == kind::ROLE {
                    let role: Document<warden_types::RoleSpec> =
                        serde_json::from_value(serde_json::to_value(&doc)?)?;
                    let path = endpoints::PUT_ROLE.at(&[&doc.name()]);
                    api.call_at(&endpoints::PUT_ROLE, &path, &role).await?;
                } else {
                    let path = endpoints::PUT_CONFIG.at(&[&k, &doc.name()]);
                    api.call_at(&endpoints::PUT_CONFIG, &path, &doc).await?;
                }
                Ok(())
            }
        }
        .with_context(|| what.clone())?;
    }
    for doc in &pruned {
        rm(api, &doc.kind, doc.name())
            .await
            .with_context(|| format!("pruning {} {}", doc.kind, doc.name()))?;
    }
    println!("Applied: {changes} change(s).");
    Ok(changed)
}

/// A user document: an existing user gets its roles and logins; a new one
/// is created with a signup token, printed as for `users add`.
async fn write_user(
    admin: &crate::admin::Admin,
    doc: &Document<Value>,
    exists: bool,
) -> anyhow::Result<()> {
    let spec: warden_types::UserSpec = serde_json::from_value(doc.spec.clone())?;
    let logins = spec.traits.get("logins").cloned().unwrap_or_default();
    if exists {
        let _: Document<warden_types::UserSpec> = admin
            .api
            .call_at(
                &endpoints::UPDATE_USER,
                &endpoints::UPDATE_USER.at(&[&doc.name()]),
                &warden_types::api::UpdateUserRequest {
                    roles: Some(spec.roles),
                    logins: Some(logins),
                },
            )
            .await?;
        return Ok(());
    }
    let mut traits = spec.traits.clone();
    traits.remove("logins");
    let resp: warden_types::api::CreateUserResponse = admin
        .api
        .call(
            &endpoints::CREATE_USER,
            &warden_types::api::CreateUserRequest {
                name: doc.name().to_string(),
                roles: spec.roles,
                logins,
                traits,
                token_ttl_secs: 3600,
            },
        )
        .await?;
    let command = crate::admin::signup_command(admin, &resp);
    println!("user {} created.", doc.name());
    crate::admin::print_signup(doc.name(), &command, &resp);
    Ok(())
}

/// `get KIND [NAME]`: documents as YAML that `create -f` takes back.
pub async fn get(
    api: &ApiClient,
    k: &str,
    name: Option<&str>,
    format: Format,
) -> anyhow::Result<()> {
    check_kind(k)?;
    let docs = match name {
        Some(n) => vec![pick(api, k, n).await?],
        None => list(api, k).await?,
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

/// `rm KIND NAME`.
pub async fn rm(api: &ApiClient, k: &str, name: &str) -> anyhow::Result<()> {
    check_kind(k)?;
    let doc = pick(api, k, name).await?;
    let name = doc.name();
    let e = match k {
        kind::TOKEN => endpoints::DELETE_TOKEN,
        kind::LOCK => endpoints::DELETE_LOCK,
        kind::NODE => endpoints::REMOVE_NODE,
        kind::USER => endpoints::DELETE_USER,
        kind::ROLE => endpoints::DELETE_ROLE,
        _ => endpoints::DELETE_CONFIG,
    };
    let path = match k {
        k if CONFIG_KINDS.contains(&k) => e.at(&[&k, &name]),
        _ => e.at(&[&name]),
    };
    api.call_at(&e, &path, &()).await?;
    match k {
        kind::NODE => println!(
            "node {} removed from the inventory (a running node comes back with its next heartbeat; lock it to keep it out).",
            doc.name()
        ),
        _ => println!("{k} {} deleted.", doc.name()),
    }
    Ok(())
}
