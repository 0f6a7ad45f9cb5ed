//! Admin-set cluster configuration beyond roles: access-request approval
//! rules, webhooks, connectors and the cluster's settings (login rate,
//! lockouts, default certificate lifetime). Each is a resource document,
//! applied as YAML.

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::resources::{self, APPROVAL_RULES, CLUSTER_CONFIG, CONNECTORS, WEBHOOKS};
use crate::routes::Serve;
use crate::server::AuthServer;
use axum::extract::{Path, State};
use axum::{Extension, Json, Router};
use serde_json::Value;
use warden_types::api::{Change, ChangeResponse};
use warden_types::audit::{codes, AuditEvent};
use warden_types::endpoints;
use warden_types::resource::{kind, resources as res, validate_name, verbs, V1};
use warden_types::{ApprovalRuleSpec, ClusterConfigSpec, Document, OidcConnectorSpec, WebhookSpec};

pub fn routes() -> Router<AuthServer> {
    Router::new()
        .serve(&endpoints::CONFIGS, list)
        .serve(&endpoints::CONFIG, show)
        .serve(&endpoints::PUT_CONFIG, put)
        .serve(&endpoints::DELETE_CONFIG, delete)
}

/// The kinds this API manages, and where they live.
fn prefix(k: &str) -> Result<&'static str> {
    match k {
        kind::APPROVAL_RULE => Ok(APPROVAL_RULES),
        kind::WEBHOOK => Ok(WEBHOOKS),
        kind::OIDC => Ok(CONNECTORS),
        kind::CLUSTER_CONFIG => Ok(CLUSTER_CONFIG),
        other => Err(AuthError::NotFound(format!(
            "no configuration kind {other:?}; use approval_rule, webhook, oidc or cluster_config (roles: 'warden admin roles')"
        ))),
    }
}

/// The one cluster configuration document's name.
const CLUSTER_CONFIG_NAME: &str = "cluster-config";

/// Where document `name` of kind `k` lives.
fn key(k: &str, name: &str) -> Result<String> {
    let p = prefix(k)?;
    if k != kind::CLUSTER_CONFIG {
        return Ok(format!("{p}{name}"));
    }
    if name != CLUSTER_CONFIG_NAME {
        return Err(AuthError::NotFound(format!(
            "the cluster configuration is one document, named {CLUSTER_CONFIG_NAME}"
        )));
    }
    Ok(p.to_string())
}

/// Checks the cluster's settings: bounds that keep the cluster usable and
/// its defences on.
fn check_cluster_config(spec: &ClusterConfigSpec) -> std::result::Result<(), String> {
    let mut bad = Vec::new();
    if !(1..=100).contains(&spec.lockout_attempts) {
        bad.push("lockout_attempts: between 1 and 100".to_string());
    }
    let lockout = spec.lockout_duration.0.as_secs();
    if !(60..=24 * 3600).contains(&lockout) {
        bad.push("lockout_duration: between 1m and 24h".to_string());
    }
    if !(1..=100_000).contains(&spec.login_rate_per_minute) {
        bad.push("login_rate_per_minute: between 1 and 100000".to_string());
    }
    let ttl = spec.default_session_ttl.0;
    if ttl < std::time::Duration::from_secs(60) || ttl > warden_policy::MAX_SESSION_TTL {
        bad.push(format!(
            "default_session_ttl: between 1m and {}",
            humantime::format_duration(warden_policy::MAX_SESSION_TTL)
        ));
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}

/// A stored document as returned by the API: webhook secrets never leave.
fn redact(k: &str, mut doc: Document<Value>) -> Document<Value> {
    if let Some(spec) = doc.spec.as_object_mut() {
        match k {
            kind::WEBHOOK => spec.remove("secret"),
            kind::OIDC => spec.remove("client_secret"),
            _ => None,
        };
    }
    doc
}

/// Checks a document of kind `k`; returns it re-encoded in canonical form.
fn validate(k: &str, doc: &Document<Value>) -> Result<Value> {
    let bad = |e: String| AuthError::BadRequest(format!("{k} {} is invalid: {e}", doc.name()));
    match k {
        kind::APPROVAL_RULE => {
            let spec: ApprovalRuleSpec =
                serde_json::from_value(doc.spec.clone()).map_err(|e| bad(e.to_string()))?;
            warden_policy::validate_approval_rule(&spec).map_err(|e| bad(e.join("; ")))?;
            Ok(serde_json::to_value(spec).map_err(|e| bad(e.to_string()))?)
        }
        kind::CLUSTER_CONFIG => {
            let spec: ClusterConfigSpec =
                serde_json::from_value(doc.spec.clone()).map_err(|e| bad(e.to_string()))?;
            check_cluster_config(&spec).map_err(bad)?;
            Ok(serde_json::to_value(spec).map_err(|e| bad(e.to_string()))?)
        }
        kind::OIDC => {
            let spec: OidcConnectorSpec =
                serde_json::from_value(doc.spec.clone()).map_err(|e| bad(e.to_string()))?;
            crate::oidc::validate(&spec).map_err(bad)?;
            Ok(serde_json::to_value(spec).map_err(|e| bad(e.to_string()))?)
        }
        _ => {
            let spec: WebhookSpec =
                serde_json::from_value(doc.spec.clone()).map_err(|e| bad(e.to_string()))?;
            crate::webhook::parse_url(&spec.url).map_err(bad)?;
            if spec.events.is_empty() {
                return Err(bad(
                    "events: list the event types to send, e.g. access_request.*".into(),
                ));
            }
            if spec.secret.expose().len() < 16 {
                return Err(bad(
                    "secret: give an HMAC key of at least 16 characters (receivers check X-Warden-Signature with it)"
                        .into(),
                ));
            }
            Ok(serde_json::to_value(spec).map_err(|e| bad(e.to_string()))?)
        }
    }
}

/// The roles a document hands out: those a connector maps claims to, or
/// those an approval rule approves. Writing it takes the right to grant them.
fn granted_roles(k: &str, spec: &Value) -> Vec<String> {
    match k {
        kind::OIDC => serde_json::from_value::<OidcConnectorSpec>(spec.clone())
            .map(|s| {
                s.claims_to_roles
                    .into_iter()
                    .flat_map(|m| m.roles)
                    .collect()
            })
            .unwrap_or_default(),
        kind::APPROVAL_RULE => serde_json::from_value::<ApprovalRuleSpec>(spec.clone())
            .map(|s| s.roles)
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

async fn list(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path(k): Path<String>,
) -> Result<Json<Vec<Document<Value>>>> {
    let p = prefix(&k)?;
    s.authorize(&c, res::CLUSTER_CONFIG, verbs::LIST).await?;
    let docs: Vec<Document<Value>> = resources::list(s.backend(), p).await?;
    Ok(Json(docs.into_iter().map(|d| redact(&k, d)).collect()))
}

async fn show(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path((k, name)): Path<(String, String)>,
) -> Result<Json<Document<Value>>> {
    let key = key(&k, &name)?;
    s.authorize(&c, res::CLUSTER_CONFIG, verbs::READ).await?;
    let doc = resources::get::<Value>(s.backend(), &key)
        .await?
        .ok_or_else(|| AuthError::NotFound(format!("{k} {name} not found")))?;
    Ok(Json(redact(&k, doc)))
}

async fn put(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path((k, name)): Path<(String, String)>,
    Json(mut doc): Json<Document<Value>>,
) -> Result<Json<ChangeResponse>> {
    let key = key(&k, &name)?;
    if doc.kind != k || doc.version != V1 {
        return Err(AuthError::BadRequest(format!(
            "expected kind: {k}, version: v1; got kind: {}, version: {}",
            doc.kind, doc.version
        )));
    }
    if doc.name() != name {
        return Err(AuthError::BadRequest(format!(
            "name {:?} does not match the URL ({name:?})",
            doc.name()
        )));
    }
    validate_name(&name).map_err(AuthError::BadRequest)?;
    doc.metadata.expires = None;
    let existing = resources::get::<Value>(s.backend(), &key).await?;
    if k == kind::CLUSTER_CONFIG {
        // Settings left out keep their value (not the default), and the
        // name may be left out but not changed.
        let stored = existing
            .as_ref()
            .map(|e| e.spec.clone())
            .unwrap_or_default();
        let stored_name = stored.get("cluster_name").cloned().unwrap_or_default();
        if let Some(given) = doc.spec.get("cluster_name") {
            if *given != stored_name {
                return Err(AuthError::BadRequest(format!(
                    "cluster_name cannot change (it is {stored_name}): certificates and nodes carry it; start a new cluster to rename"
                )));
            }
        }
        let mut merged = stored;
        if let (Some(m), Some(given)) = (merged.as_object_mut(), doc.spec.as_object()) {
            for (field, value) in given {
                m.insert(field.clone(), value.clone());
            }
        }
        doc.spec = merged;
    }
    doc.spec = validate(&k, &doc)?;
    let verb = if existing.is_some() {
        verbs::UPDATE
    } else {
        verbs::CREATE
    };
    s.authorize(&c, res::CLUSTER_CONFIG, verb).await?;
    // A connector mapping claims to a role, or a rule approving it, grants
    // that role: only for roles the caller may grant (a mapping with `$1`
    // needs a pattern that covers it, such as `*`).
    let mut involved = granted_roles(&k, &doc.spec);
    if let Some(old) = &existing {
        involved.extend(granted_roles(&k, &old.spec));
    }
    s.authorize_grant(&c, &format!("{verb} {k} {name}"), &involved)
        .await?;
    let (change, revision) = match existing {
        Some(old) if old.spec == doc.spec && old.metadata.labels == doc.metadata.labels => {
            (Change::Unchanged, old.metadata.revision)
        }
        Some(old) => {
            let rev = s
                .backend()
                .compare_and_swap(
                    &key,
                    old.metadata.revision.unwrap_or(0),
                    resources::encode(&doc),
                    None,
                )
                .await?;
            (Change::Updated, Some(rev))
        }
        None => {
            let rev = s
                .backend()
                .create(&key, resources::encode(&doc), None)
                .await?;
            (Change::Created, Some(rev))
        }
    };
    if change != Change::Unchanged {
        s.audit(
            AuditEvent::new(
                codes::CONFIG_UPDATE,
                s.cluster(),
                &c.identity.username,
                format!("{change:?} {k} {name}").to_lowercase(),
            )
            .with("kind", k.clone())
            .with("target", name.clone()),
        )
        .await;
    }
    Ok(Json(ChangeResponse {
        name,
        change,
        revision,
    }))
}

async fn delete(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path((k, name)): Path<(String, String)>,
) -> Result<Json<ChangeResponse>> {
    let key = key(&k, &name)?;
    s.authorize(&c, res::CLUSTER_CONFIG, verbs::DELETE).await?;
    if k == kind::CLUSTER_CONFIG {
        return Err(AuthError::BadRequest(
            "the cluster configuration cannot be deleted; edit it: 'warden admin get cluster_config > c.yaml', then 'warden admin create -f c.yaml'".into(),
        ));
    }
    if let Some(old) = resources::get::<Value>(s.backend(), &key).await? {
        s.authorize_grant(
            &c,
            &format!("delete {k} {name}"),
            &granted_roles(&k, &old.spec),
        )
        .await?;
    }
    if !s.backend().delete(&key).await? {
        return Err(AuthError::NotFound(format!("{k} {name} not found")));
    }
    s.audit(
        AuditEvent::new(
            codes::CONFIG_DELETE,
            s.cluster(),
            &c.identity.username,
            format!("deleted {k} {name}"),
        )
        .with("kind", k.clone())
        .with("target", name.clone()),
    )
    .await;
    Ok(Json(ChangeResponse {
        name,
        change: Change::Deleted,
        revision: None,
    }))
}
