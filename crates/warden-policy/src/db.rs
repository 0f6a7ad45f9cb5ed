//! Database access decisions: may a user connect to a database (by its
//! labels) as a database user, to a logical database? The same shape as
//! node access: deny rules first and they win, then some role must allow
//! all three; one explanation line per role consulted.

use crate::eval::Decision;
use crate::labels::label_matches;
use crate::template::expand;
use crate::Traits;
use std::collections::BTreeMap;
use warden_types::{Document, RoleMode, RoleSpec};

/// What a database connection asks for.
#[derive(Clone, Copy, Debug)]
pub struct DbRequest<'a> {
    /// The database's labels (from its registration).
    pub labels: &'a BTreeMap<String, String>,
    /// The database user to connect as.
    pub db_user: &'a str,
    /// The logical database.
    pub db_name: &'a str,
}

/// A database user or name as Warden passes it on: printable, no spaces or
/// quotes, at most 63 bytes (PostgreSQL's limit; MySQL's is lower for
/// users, and the server refuses longer ones itself).
pub fn valid_db_identifier(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | '$'))
}

/// `values` with trait templates expanded. Only a `*` written in the role
/// means "any": one that comes from a trait (an identity provider's
/// claim, say) grants nothing, nor does any value that is not a plain
/// identifier.
fn expand_all(values: &[String], traits: &Traits) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| match v.as_str() {
            "*" => vec![v.clone()],
            _ => expand(v, traits)
                .unwrap_or_default()
                .into_iter()
                .filter(|x| valid_db_identifier(x))
                .collect(),
        })
        .collect()
}

fn listed(values: &[String], wanted: &str) -> bool {
    values.iter().any(|v| v == "*" || v == wanted)
}

/// May a user with `roles` and `traits` make the connection `req`?
pub fn check_db_access(
    roles: &[Document<RoleSpec>],
    traits: &Traits,
    req: DbRequest<'_>,
) -> Decision {
    if roles.is_empty() {
        return Decision::deny(vec!["user has no roles".into()], None);
    }
    if !valid_db_identifier(req.db_user) || !valid_db_identifier(req.db_name) {
        return Decision::deny(
            vec![format!(
                "database user {:?} or name {:?} is not a plain identifier",
                req.db_user, req.db_name
            )],
            None,
        );
    }
    let mut reasons = Vec::new();
    let mut would_deny = Vec::new();
    // Deny first: each of a deny rule's lists refuses on its own (labels:
    // every connection to those databases; users and names: anywhere).
    for role in roles {
        let deny = &role.spec.deny;
        let mut hits = Vec::new();
        if !deny.db_labels.is_empty() {
            let (hit, why) = label_matches(&deny.db_labels, req.labels, traits);
            if hit {
                hits.push(why);
            }
        }
        if listed(&expand_all(&deny.db_users, traits), req.db_user) {
            hits.push(format!("denies database user {:?}", req.db_user));
        }
        if listed(&expand_all(&deny.db_names, traits), req.db_name) {
            hits.push(format!("denies database name {:?}", req.db_name));
        }
        if hits.is_empty() {
            continue;
        }
        let why = hits.join("; ");
        if role.spec.options.mode == RoleMode::Audit {
            let line = format!("role {} (audit mode) would deny: {why}", role.name());
            reasons.push(line.clone());
            would_deny.push(line);
            continue;
        }
        reasons.push(format!("role {}: deny rule: {why}", role.name()));
        return Decision::deny(reasons, Some(role.name().to_string()));
    }
    let mut allowed_by = None;
    for role in roles {
        let allow = &role.spec.allow;
        if allow.db_labels.is_empty() {
            reasons.push(format!("role {}: no db_labels", role.name()));
            continue;
        }
        let (hit, why) = label_matches(&allow.db_labels, req.labels, traits);
        if !hit {
            reasons.push(format!("role {}: {why}", role.name()));
            continue;
        }
        let users = expand_all(&allow.db_users, traits);
        if !listed(&users, req.db_user) {
            reasons.push(format!(
                "role {}: database user {:?} not in allowed db_users {users:?}",
                role.name(),
                req.db_user
            ));
            continue;
        }
        let names = expand_all(&allow.db_names, traits);
        if !listed(&names, req.db_name) {
            reasons.push(format!(
                "role {}: database name {:?} not in allowed db_names {names:?}",
                role.name(),
                req.db_name
            ));
            continue;
        }
        reasons.push(format!(
            "role {}: allows database user {:?} on {:?}; {why}",
            role.name(),
            req.db_user,
            req.db_name
        ));
        allowed_by.get_or_insert_with(|| role.name().to_string());
    }
    match allowed_by {
        Some(role) => Decision {
            allowed: true,
            role: Some(role),
            reasons,
            would_deny,
        },
        None => {
            reasons.push("no role allows this database access".into());
            let mut d = Decision::deny(reasons, None);
            d.would_deny = would_deny;
            d
        }
    }
}

/// Whether `warden db ls` shows a database with `labels`: some role's
/// `db_labels` allow it and no enforcing role's deny `db_labels` covers
/// it (users and names are decided at connection time).
pub fn database_visible(
    roles: &[Document<RoleSpec>],
    traits: &Traits,
    labels: &BTreeMap<String, String>,
) -> bool {
    let denied = roles.iter().any(|r| {
        r.spec.options.mode != RoleMode::Audit
            && !r.spec.deny.db_labels.is_empty()
            && label_matches(&r.spec.deny.db_labels, labels, traits).0
    });
    !denied
        && roles.iter().any(|r| {
            !r.spec.allow.db_labels.is_empty()
                && label_matches(&r.spec.allow.db_labels, labels, traits).0
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_types::resource::kind;
    use warden_types::{LabelValues, RoleConditions};

    fn role(name: &str, allow: RoleConditions, deny: RoleConditions) -> Document<RoleSpec> {
        Document::new(
            kind::ROLE,
            name,
            RoleSpec {
                allow,
                deny,
                ..Default::default()
            },
        )
    }

    fn cond(labels: &[(&str, &str)], users: &[&str], names: &[&str]) -> RoleConditions {
        RoleConditions {
            db_labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), LabelValues(vec![v.to_string()])))
                .collect(),
            db_users: users.iter().map(|s| s.to_string()).collect(),
            db_names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(
        roles: &[Document<RoleSpec>],
        t: &Traits,
        l: &[(&str, &str)],
        u: &str,
        n: &str,
    ) -> Decision {
        let l = labels(l);
        check_db_access(
            roles,
            t,
            DbRequest {
                labels: &l,
                db_user: u,
                db_name: n,
            },
        )
    }

    #[test]
    fn a_role_must_allow_labels_user_and_name() {
        let dev = role(
            "dev-db",
            cond(
                &[("env", "dev")],
                &["reader", "{{internal.db_users}}"],
                &["app", "*"],
            ),
            RoleConditions::default(),
        );
        let mut t = Traits::new();
        t.insert("db_users".into(), vec!["alice".into()]);
        let roles = [dev];
        assert!(check(&roles, &t, &[("env", "dev")], "reader", "app").allowed);
        assert!(
            check(&roles, &t, &[("env", "dev")], "alice", "other").allowed,
            "templates, and * for names"
        );
        let d = check(&roles, &t, &[("env", "prod")], "reader", "app");
        assert!(
            !d.allowed && d.summary().contains("no role allows"),
            "{d:?}"
        );
        let d = check(&roles, &t, &[("env", "dev")], "postgres", "app");
        assert!(!d.allowed);
        assert!(
            d.reasons
                .iter()
                .any(|r| r.contains("not in allowed db_users")),
            "{d:?}"
        );
    }

    #[test]
    fn deny_wins_for_users_names_and_labels() {
        let all = role(
            "all",
            cond(&[("*", "*")], &["*"], &["*"]),
            RoleConditions::default(),
        );
        let no_super = role(
            "no-super",
            RoleConditions::default(),
            cond(&[], &["postgres", "root"], &["secrets"]),
        );
        let no_prod = role(
            "no-prod",
            RoleConditions::default(),
            cond(&[("env", "prod")], &[], &[]),
        );
        let roles = [all, no_super, no_prod];
        let t = Traits::new();
        assert!(check(&roles, &t, &[("env", "dev")], "app", "app").allowed);
        let d = check(&roles, &t, &[("env", "dev")], "postgres", "app");
        assert_eq!(
            (d.allowed, d.role.as_deref()),
            (false, Some("no-super")),
            "{d:?}"
        );
        assert!(!check(&roles, &t, &[("env", "dev")], "app", "secrets").allowed);
        let d = check(&roles, &t, &[("env", "prod")], "app", "app");
        assert_eq!(d.role.as_deref(), Some("no-prod"), "{d:?}");
    }

    #[test]
    fn an_audit_mode_deny_only_records() {
        let all = role(
            "all",
            cond(&[("*", "*")], &["*"], &["*"]),
            RoleConditions::default(),
        );
        let mut trial = role(
            "trial",
            RoleConditions::default(),
            cond(&[], &["postgres"], &[]),
        );
        trial.spec.options.mode = RoleMode::Audit;
        let d = check(
            &[all, trial],
            &Traits::new(),
            &[("env", "dev")],
            "postgres",
            "app",
        );
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.would_deny.len(), 1, "{d:?}");
    }

    #[test]
    fn odd_identifiers_and_no_roles_are_refused() {
        let all = role(
            "all",
            cond(&[("*", "*")], &["*"], &["*"]),
            RoleConditions::default(),
        );
        let t = Traits::new();
        for (u, n) in [("a b", "app"), ("app", "x;drop"), ("", "app"), ("app", "")] {
            assert!(
                !check(std::slice::from_ref(&all), &t, &[], u, n).allowed,
                "{u:?} {n:?}"
            );
        }
        assert!(!check(&[], &t, &[], "app", "app").allowed);
        // A trait value that is not an identifier grants nothing.
        let tmpl = role(
            "t",
            cond(&[("*", "*")], &["{{internal.db_users}}"], &["*"]),
            RoleConditions::default(),
        );
        let mut t = Traits::new();
        t.insert("db_users".into(), vec!["a b".into(), "*".into()]);
        assert!(
            !check(&[tmpl], &t, &[], "a", "app").allowed,
            "a * from a trait is no wildcard"
        );
    }
}
