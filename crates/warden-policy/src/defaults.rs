//! The roles a new cluster starts with.

use warden_types::resource::kind;
use warden_types::{Document, LabelValues, RoleSpec, Rule};

fn rule(resources: &[&str], verbs: &[&str]) -> Rule {
    Rule {
        resources: resources.iter().map(|s| s.to_string()).collect(),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
    }
}

fn role(name: &str, description: &str, spec: RoleSpec) -> Document<RoleSpec> {
    let mut doc = Document::new(kind::ROLE, name, spec);
    doc.metadata.description = Some(description.to_string());
    doc
}

/// `access`, `editor` and `auditor`.
pub fn roles() -> Vec<Document<RoleSpec>> {
    let mut access = RoleSpec::default();
    access.allow.logins = vec!["{{internal.logins}}".into()];
    access.allow.node_labels = [("*".to_string(), LabelValues(vec!["*".into()]))].into();
    access.options.permit_pty = Some(true);
    access.options.permit_port_forwarding = Some(true);
    access.options.permit_agent_forwarding = Some(true);

    let mut editor = RoleSpec::default();
    editor.allow.rules = vec![rule(
        &["user", "role", "token", "cluster_config", "node", "lock"],
        &["list", "read", "create", "update", "delete"],
    )];
    editor.allow.rules.push(rule(&["event"], &["list", "read"]));
    editor.allow.grant_roles = vec!["*".into()];

    let mut auditor = RoleSpec::default();
    auditor.allow.rules = vec![rule(&["event", "session"], &["list", "read"])];

    vec![
        role(
            "access",
            "SSH to every node as the logins in the user's `logins` trait",
            access,
        ),
        role(
            "editor",
            "Manage users, roles, tokens and cluster settings",
            editor,
        ),
        role(
            "auditor",
            "Read the audit log and session recordings",
            auditor,
        ),
    ]
}
