//! `warden admin access suggest`: what a role (or a user's roles) was
//! actually used for, from the audit log's SSH sessions, against what it
//! allows, and the narrower role that still allows every session seen
//! (the analysis is `warden_policy::suggest`; this gathers its inputs).

use crate::admin::Admin;
use anyhow::bail;
use std::collections::BTreeMap;
use warden_policy::suggest::{suggest, Suggestion, Use};
use warden_types::api::{AuditEvents, AuditQuery};
use warden_types::audit::codes;
use warden_types::{endpoints, Document, NodeSpec, RoleSpec, UserSpec};

/// Sessions read from the audit log at most (the newest).
const MAX_SESSIONS: u32 = 10_000;

/// Who to look at and over how long.
pub struct Ask {
    pub role: Option<String>,
    pub user: Option<String>,
    pub since_secs: u64,
}

pub async fn run(admin: &Admin, ask: Ask) -> anyhow::Result<()> {
    let api = &admin.api;
    let since = crate::output::now() - ask.since_secs as i64;
    let events: AuditEvents = api
        .call(
            &endpoints::AUDIT_EVENTS,
            &AuditQuery {
                event_type: Some(codes::SESSION_START.0.to_string()),
                user: ask.user.clone(),
                since: Some(since),
                limit: Some(MAX_SESSIONS),
                ..Default::default()
            },
        )
        .await?;
    let users: BTreeMap<String, Document<UserSpec>> = api
        .call(&endpoints::USERS, &())
        .await?
        .into_iter()
        .map(|u: Document<UserSpec>| (u.name().to_string(), u))
        .collect();
    let roles: BTreeMap<String, Document<RoleSpec>> = api
        .call(&endpoints::ROLES, &())
        .await?
        .into_iter()
        .map(|r: Document<RoleSpec>| (r.name().to_string(), r))
        .collect();
    let nodes: BTreeMap<String, Document<NodeSpec>> = api
        .call(&endpoints::NODES, &())
        .await?
        .into_iter()
        .map(|n: Document<NodeSpec>| (n.name().to_string(), n))
        .collect();
    let window = warden_types::duration::HumanDuration::from_secs(ask.since_secs);
    let mut skipped = 0;
    // Each session with the roles its certificate carried.
    let mut sessions: Vec<(Vec<String>, Use)> = Vec::new();
    for e in &events.events {
        let (Some(user), Some(node), Some(login)) = (
            users.get(&e.user),
            e.node.as_ref().and_then(|n| nodes.get(n)),
            &e.login,
        ) else {
            // A user or node since deleted: its sessions say nothing about
            // what today's roles need.
            skipped += 1;
            continue;
        };
        let held: Vec<String> = e
            .fields
            .get("roles")
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default();
        sessions.push((
            held,
            Use {
                user: e.user.clone(),
                traits: user.spec.traits.clone(),
                login: login.clone(),
                node: node.spec.hostname.clone(),
                labels: node.metadata.labels.clone(),
            },
        ));
    }
    let mut header = vec![format!(
        "{} SSH session(s) in the last {window} from the audit log{}",
        sessions.len(),
        if skipped > 0 {
            format!(" ({skipped} more of deleted users or nodes left out)")
        } else {
            String::new()
        }
    )];
    if events.total.is_some_and(|t| t > u64::from(MAX_SESSIONS)) {
        header.push(format!(
            "only the newest {MAX_SESSIONS} sessions were read: narrow --since"
        ));
    }
    match (&ask.role, &ask.user) {
        (Some(name), _) => {
            let Some(role) = roles.get(name) else {
                bail!("no role {name:?}; 'warden admin roles ls' lists them");
            };
            let uses: Vec<Use> = sessions
                .into_iter()
                .filter(|(held, _)| held.contains(name))
                .map(|(_, u)| u)
                .collect();
            let s = suggest(role, &uses);
            for line in header {
                println!("# {line}");
            }
            for line in report(name, &s) {
                println!("# {line}");
            }
            println!("# The role with only what was used (every session above still allowed):");
            print!("{}", crate::admin::yaml(&s.proposed)?);
        }
        (None, Some(user)) => {
            let Some(u) = users.get(user) else {
                bail!("no user {user:?}");
            };
            for line in header {
                println!("{line}");
            }
            let uses: Vec<Use> = sessions.into_iter().map(|(_, u)| u).collect();
            let mut keep = Vec::new();
            let mut unused = Vec::new();
            for name in &u.spec.roles {
                let Some(role) = roles.get(name) else {
                    continue;
                };
                let s = suggest(role, &uses);
                let grants_nodes = !role.spec.allow.logins.is_empty();
                if s.sessions == 0 && grants_nodes && !has_other_powers(role) {
                    unused.push(name.clone());
                } else {
                    keep.push(name.clone());
                }
                for line in report(name, &s) {
                    println!("{line}");
                }
            }
            if unused.is_empty() {
                println!("Every role of {user} was used (or grants more than node access).");
            } else {
                println!(
                    "Unused: {}. To take them away:\n  warden admin users update {user} --roles {}",
                    unused.join(", "),
                    if keep.is_empty() {
                        "''".to_string()
                    } else {
                        keep.join(",")
                    }
                );
            }
        }
        (None, None) => bail!("pass --role ROLE or --user USER"),
    }
    Ok(())
}

/// Permissions other than node access, which sessions do not show.
fn has_other_powers(role: &Document<RoleSpec>) -> bool {
    let a = &role.spec.allow;
    !a.rules.is_empty()
        || !a.grant_roles.is_empty()
        || !a.request.is_empty()
        || !a.review_requests.is_empty()
}

/// A suggestion in lines.
fn report(role: &str, s: &Suggestion) -> Vec<String> {
    let mut out = vec![format!(
        "role {role}: {} session(s) by {} user(s) on {} node(s)",
        s.sessions,
        s.users.len(),
        s.nodes.len()
    )];
    let list = |v: &[String]| v.join(", ");
    if !s.unused_logins.is_empty() {
        out.push(format!("  unused logins: {}", list(&s.unused_logins)));
    }
    if !s.unused_labels.is_empty() {
        out.push(format!("  unused node labels: {}", list(&s.unused_labels)));
    }
    for n in &s.narrowed {
        out.push(format!("  narrowed: {n}"));
    }
    for n in &s.notes {
        out.push(format!("  note: {n}"));
    }
    out
}
