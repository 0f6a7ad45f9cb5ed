//! Who may grant which role. A caller may give a role to a user, take it
//! away, or take over (reset, delete) the account of a user who holds it
//! only if some role of the caller lists it in `allow.grant_roles` and no
//! role lists it in `deny.grant_roles`. Holding a role does not by itself
//! let you grant it, and the rule permissions (`user: update`) only let a
//! caller reach the handlers: what they may hand out is decided here.

use crate::eval::Decision;
use crate::labels::value_matches;
use crate::template::expand;
use crate::Traits;
use warden_types::{Document, RoleSpec};

/// Does some pattern name `role`? Written patterns may be `*` or regexes;
/// values a template brings in from traits are literal names, so a trait
/// value of `*` or `^.*$` grants nothing more than a role of that name.
fn listed(patterns: &[String], traits: &Traits, role: &str) -> bool {
    patterns.iter().any(|p| {
        if p.contains("{{") {
            // Never "every role" through a trait.
            role != ANY_ROLE
                && expand(p, traits)
                    .unwrap_or_default()
                    .iter()
                    .any(|v| v == role)
        } else {
            value_matches(p, role)
        }
    })
}

/// What a role editor must be able to grant: a role's contents decide
/// what every holder may do (and grant), so writing roles is for callers
/// who may grant every role.
pub const ANY_ROLE: &str = "*";

/// May a caller with `roles` and `traits` grant `role`?
pub fn check_grant(roles: &[Document<RoleSpec>], traits: &Traits, role: &str) -> Decision {
    for r in roles {
        if listed(&r.spec.deny.grant_roles, traits, role) {
            return Decision {
                allowed: false,
                role: Some(r.name().to_string()),
                reasons: vec![format!("role {}: denies granting role {role}", r.name())],
                ..Default::default()
            };
        }
    }
    match roles
        .iter()
        .find(|r| listed(&r.spec.allow.grant_roles, traits, role))
    {
        Some(r) => Decision {
            allowed: true,
            role: Some(r.name().to_string()),
            reasons: vec![format!("role {}: may grant role {role}", r.name())],
            ..Default::default()
        },
        None => Decision {
            allowed: false,
            role: None,
            reasons: vec![format!(
                "no role of yours lists {role:?} in allow.grant_roles"
            )],
            ..Default::default()
        },
    }
}

/// May the caller manage a user who holds (or will hold) all of `target`?
/// Every role involved must be grantable; the answer names the first that
/// is not.
pub fn check_grant_all<'a>(
    roles: &[Document<RoleSpec>],
    traits: &Traits,
    target: impl IntoIterator<Item = &'a String>,
) -> Result<(), (String, Decision)> {
    for role in target {
        let d = check_grant(roles, traits, role);
        if !d.allowed {
            return Err((role.clone(), d));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_types::resource::kind;

    fn role(name: &str, allow: &[&str], deny: &[&str]) -> Document<RoleSpec> {
        let mut spec = RoleSpec::default();
        spec.allow.grant_roles = allow.iter().map(|s| s.to_string()).collect();
        spec.deny.grant_roles = deny.iter().map(|s| s.to_string()).collect();
        Document::new(kind::ROLE, name, spec)
    }

    #[test]
    fn only_listed_roles_are_grantable_and_deny_wins() {
        let t = Traits::new();
        let admin = [role("user-admin", &["access", "^team-.*$"], &[])];
        assert!(check_grant(&admin, &t, "access").allowed);
        assert!(check_grant(&admin, &t, "team-db").allowed);
        let d = check_grant(&admin, &t, "editor");
        assert!(!d.allowed);
        assert!(d.summary().contains("grant_roles"), "{}", d.summary());
        let both = [
            role("all", &["*"], &[]),
            role("no-editor", &[], &["editor"]),
        ];
        assert!(check_grant(&both, &t, "access").allowed);
        let d = check_grant(&both, &t, "editor");
        assert!(!d.allowed);
        assert_eq!(d.role.as_deref(), Some("no-editor"));
        assert!(!check_grant(&[], &t, "access").allowed, "no role, no grant");
    }

    #[test]
    fn trait_values_are_literal_names() {
        let r = [role("lead", &["{{internal.grantable}}"], &[])];
        for hostile in ["*", "^.*$", "^edit.*$"] {
            let t: Traits = [("grantable".to_string(), vec![hostile.to_string()])].into();
            assert!(!check_grant(&r, &t, "editor").allowed, "{hostile}");
            assert!(!check_grant(&r, &t, ANY_ROLE).allowed, "{hostile}");
        }
        // Only a written '*' (or a regex matching it) grants any role.
        assert!(check_grant(&[role("admin", &["*"], &[])], &Traits::new(), ANY_ROLE).allowed);
        assert!(!check_grant(&[role("ua", &["^team-.*$"], &[])], &Traits::new(), ANY_ROLE).allowed);
    }

    #[test]
    fn templates_expand_from_the_callers_traits() {
        let t: Traits = [("grantable".to_string(), vec!["dba".to_string()])].into();
        let r = [role("lead", &["{{internal.grantable}}"], &[])];
        assert!(check_grant(&r, &t, "dba").allowed);
        assert!(!check_grant(&r, &t, "editor").allowed);
        assert!(!check_grant(&r, &Traits::new(), "dba").allowed);
    }

    #[test]
    fn all_roles_must_be_grantable() {
        let t = Traits::new();
        let r = [role("user-admin", &["access", "dba"], &[])];
        let ok = ["access".to_string(), "dba".to_string()];
        assert!(check_grant_all(&r, &t, &ok).is_ok());
        let bad = ["access".to_string(), "editor".to_string()];
        let (which, _) = check_grant_all(&r, &t, &bad).unwrap_err();
        assert_eq!(which, "editor");
    }
}
