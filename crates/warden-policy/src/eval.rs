//! Access decisions over a set of roles.

use crate::labels::{compile, label_matches};
use crate::predicate::{Context, Predicate};
use crate::template::expand;
use crate::Traits;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use warden_types::resource::{resources, verbs};
use warden_types::{Document, RecordMode, RoleConditions, RoleMode, RoleSpec};

/// An access decision and the reasons behind it, one line per role consulted.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Decision {
    pub allowed: bool,
    /// The role that decided: the denying role, or the first allowing one.
    pub role: Option<String>,
    pub reasons: Vec<String>,
    /// Deny rules of roles in audit mode that matched: they did not
    /// refuse, and would have.
    pub would_deny: Vec<String>,
}

impl Decision {
    pub(crate) fn deny(reasons: Vec<String>, role: Option<String>) -> Self {
        Decision {
            allowed: false,
            role,
            reasons,
            would_deny: Vec::new(),
        }
    }

    /// One-line summary for error messages and audit events.
    pub fn summary(&self) -> String {
        match (&self.role, self.allowed) {
            (Some(r), true) => format!("allowed by role {r}"),
            (Some(r), false) => format!("denied by role {r}"),
            (None, _) => self
                .reasons
                .last()
                .cloned()
                .unwrap_or_else(|| "denied".into()),
        }
    }
}

fn expand_logins(values: &[String], traits: &Traits) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| expand(v, traits).unwrap_or_default())
        .filter(|l| valid_login(l))
        .collect()
}

/// Unix login names as OpenSSH principals: no spaces, commas or wildcards,
/// whatever a trait might contain.
fn valid_login(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 64
        && l.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | '$'))
        && !l.starts_with('-')
}

/// May a user with `roles` and `traits` log in as `login` on a node with
/// `node_labels`?
pub fn check_node_access(
    roles: &[Document<RoleSpec>],
    traits: &Traits,
    login: &str,
    node_labels: &BTreeMap<String, String>,
) -> Decision {
    if roles.is_empty() {
        return Decision::deny(vec!["user has no roles".into()], None);
    }
    let mut reasons = Vec::new();
    let ctx = Context {
        traits,
        login,
        labels: node_labels,
    };
    // Deny first: any matching deny ends the evaluation, except that of a
    // role in audit mode, which is recorded instead.
    let mut would_deny = Vec::new();
    for role in roles {
        let deny = &role.spec.deny;
        let audit = role.spec.options.mode == RoleMode::Audit;
        let mut refuse = |why: String| -> Option<Decision> {
            if audit {
                let line = format!("role {} (audit mode) would deny: {why}", role.name());
                reasons.push(line.clone());
                would_deny.push(line);
                return None;
            }
            reasons.push(format!("role {}: {why}", role.name()));
            Some(Decision::deny(
                std::mem::take(&mut reasons),
                Some(role.name().to_string()),
            ))
        };
        let login_listed = expand_logins(&deny.logins, traits)
            .iter()
            .any(|l| l == login);
        let Some(condition) = deny.where_.as_deref() else {
            // Without a condition, listed logins and matching labels each
            // deny on their own.
            if login_listed {
                match refuse(format!("denies login {login:?}")) {
                    Some(d) => return d,
                    None => continue,
                }
            }
            if !deny.node_labels.is_empty() {
                let (hit, why) = label_matches(&deny.node_labels, node_labels, traits);
                if hit {
                    if let Some(d) = refuse(format!("deny rule: {why}")) {
                        return d;
                    }
                }
            }
            continue;
        };
        // With one, the whole rule is scoped by it: it denies where the
        // condition holds, for its logins (if any) on nodes matching its
        // labels (if any).
        let (held, w) = holds(condition, &ctx, true);
        if !held || (!deny.logins.is_empty() && !login_listed) {
            continue;
        }
        let mut why = vec![w];
        if login_listed {
            why.insert(0, format!("login {login:?}"));
        }
        if !deny.node_labels.is_empty() {
            let (hit, l) = label_matches(&deny.node_labels, node_labels, traits);
            if !hit {
                continue;
            }
            why.push(l);
        }
        if let Some(d) = refuse(format!("deny rule: {}", why.join("; "))) {
            return d;
        }
    }
    let mut allowed_by = None;
    for role in roles {
        let allow = &role.spec.allow;
        let logins = expand_logins(&allow.logins, traits);
        if !logins.iter().any(|l| l == login) {
            reasons.push(format!(
                "role {}: login {login:?} not in allowed logins {logins:?}",
                role.name()
            ));
            continue;
        }
        let (hit, why) = label_matches(&allow.node_labels, node_labels, traits);
        if !hit {
            reasons.push(format!("role {}: {why}", role.name()));
            continue;
        }
        let why = match allow.where_.as_deref().map(|w| holds(w, &ctx, false)) {
            Some((false, w)) => {
                reasons.push(format!("role {}: {w}", role.name()));
                continue;
            }
            Some((true, w)) => format!("{why}; {w}"),
            None => why,
        };
        reasons.push(format!(
            "role {}: allows login {login:?}; {why}",
            role.name()
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
            reasons.push("no role allows this access".into());
            Decision::deny(reasons, None)
        }
    }
}

/// May holders of `roles` request each of `wanted` just in time? A role
/// listed (or `*`) in some role's `allow.request.roles` and in none's
/// `deny.request.roles`; one line per role consulted.
pub fn check_request_roles(roles: &[Document<RoleSpec>], wanted: &[String]) -> Decision {
    let listed = |list: &[String], r: &str| list.iter().any(|x| x == r || x == "*");
    let mut reasons = Vec::new();
    let mut allowed_by = None;
    for want in wanted {
        if let Some(deny) = roles
            .iter()
            .find(|x| listed(&x.spec.deny.request.roles, want))
        {
            reasons.push(format!("role {}: denies requesting {want:?}", deny.name()));
            return Decision::deny(reasons, Some(deny.name().to_string()));
        }
        match roles
            .iter()
            .find(|x| listed(&x.spec.allow.request.roles, want))
        {
            Some(by) => {
                reasons.push(format!("role {}: allows requesting {want:?}", by.name()));
                allowed_by.get_or_insert_with(|| by.name().to_string());
            }
            None => {
                reasons.push(format!("no role lists {want:?} in allow.request.roles"));
                return Decision::deny(reasons, None);
            }
        }
    }
    Decision {
        allowed: allowed_by.is_some(),
        role: allowed_by,
        reasons,
        ..Default::default()
    }
}

/// Whether a role's `where` holds, with the reason. One that does not
/// compile (stored before it was checked, or by hand) fails closed: it
/// grants nothing on an allow rule and denies on a deny rule.
fn holds(source: &str, ctx: &Context<'_>, deny: bool) -> (bool, String) {
    match Predicate::cached(source) {
        Ok(p) => {
            let v = p.eval(ctx);
            let what = if v { "holds" } else { "does not hold" };
            (v, format!("where {source:?} {what}"))
        }
        Err(e) => (deny, format!("where {source:?} is invalid ({e})")),
    }
}

/// The logins (certificate principals) the roles grant: every allowed login
/// that no role denies, sorted.
pub fn allowed_logins(roles: &[Document<RoleSpec>], traits: &Traits) -> Vec<String> {
    // A role in audit mode denies nothing, and a deny rule with a `where`
    // only somewhere: their logins stay principals (nodes decide).
    let denied: BTreeSet<String> = roles
        .iter()
        .filter(|r| r.spec.options.mode != RoleMode::Audit && r.spec.deny.where_.is_none())
        .flat_map(|r| expand_logins(&r.spec.deny.logins, traits))
        .collect();
    let allowed: BTreeSet<String> = roles
        .iter()
        .flat_map(|r| expand_logins(&r.spec.allow.logins, traits))
        .filter(|l| !denied.contains(l))
        .collect();
    allowed.into_iter().collect()
}

/// Longest certificate lifetime any role may grant.
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Certificate options derived from the roles in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionOptions {
    /// The smallest `max_session_ttl` of the roles.
    pub max_ttl: Duration,
    pub permit_pty: bool,
    pub permit_port_forwarding: bool,
    pub permit_agent_forwarding: bool,
    pub permit_x11_forwarding: bool,
    pub record_session: RecordMode,
    /// Some role requires an MFA check per session.
    pub session_mfa: bool,
}

/// A permission holds only if some role grants it and no role forbids it.
fn combine(values: impl Iterator<Item = Option<bool>>) -> bool {
    let mut granted = false;
    for v in values {
        match v {
            Some(false) => return false,
            Some(true) => granted = true,
            None => {}
        }
    }
    granted
}

pub fn session_options(roles: &[Document<RoleSpec>]) -> SessionOptions {
    let opts = || roles.iter().map(|r| &r.spec.options);
    SessionOptions {
        max_ttl: opts()
            .map(|o| o.max_session_ttl.0)
            .min()
            .unwrap_or(Duration::ZERO)
            .min(MAX_SESSION_TTL),
        permit_pty: combine(opts().map(|o| o.permit_pty)),
        permit_port_forwarding: combine(opts().map(|o| o.permit_port_forwarding)),
        permit_agent_forwarding: combine(opts().map(|o| o.permit_agent_forwarding)),
        permit_x11_forwarding: combine(opts().map(|o| o.permit_x11_forwarding)),
        // Unset counts as `on`: recording is off only if every role says so.
        record_session: opts()
            .map(|o| o.record_session.unwrap_or_default())
            .max()
            .unwrap_or_default(),
        session_mfa: opts().any(|o| o.require_mfa == warden_types::RequireMfa::Session),
    }
}

fn rule_matches(cond: &RoleConditions, resource: &str, verb: &str) -> bool {
    cond.rules.iter().any(|r| {
        r.resources.iter().any(|x| x == "*" || x == resource)
            && r.verbs.iter().any(|v| v == "*" || v == verb)
    })
}

/// May the roles perform `verb` on `resource` (`user`, `role`, ...)?
pub fn check_rule(roles: &[Document<RoleSpec>], resource: &str, verb: &str) -> Decision {
    for role in roles {
        if rule_matches(&role.spec.deny, resource, verb) {
            return Decision::deny(
                vec![format!("role {}: denies {verb} on {resource}", role.name())],
                Some(role.name().to_string()),
            );
        }
    }
    match roles
        .iter()
        .find(|r| rule_matches(&r.spec.allow, resource, verb))
    {
        Some(role) => Decision {
            allowed: true,
            role: Some(role.name().to_string()),
            reasons: vec![format!("role {}: allows {verb} on {resource}", role.name())],
            ..Default::default()
        },
        None => Decision::deny(
            vec![format!(
                "no role allows {verb} on {resource} (roles: {})",
                roles
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )],
            None,
        ),
    }
}

/// Checks a role before it is stored: templates parse, regexes compile,
/// rules name known resources and verbs, the TTL is positive.
pub fn validate_role(role: &Document<RoleSpec>) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let ttl = role.spec.options.max_session_ttl.0;
    if ttl < Duration::from_secs(60) || ttl > MAX_SESSION_TTL {
        errors.push("options.max_session_ttl must be between 1m and 30days".to_string());
    }
    for (side, cond) in [("allow", &role.spec.allow), ("deny", &role.spec.deny)] {
        for login in &cond.logins {
            if let Err(e) = expand(login, &Traits::new()) {
                errors.push(format!("{side}.logins: {e}"));
            } else if !login.contains("{{") && !valid_login(login) {
                errors.push(format!(
                    "{side}.logins: {login:?} is not a valid login name"
                ));
            }
        }
        for (key, values) in &cond.node_labels {
            for v in &values.0 {
                if let Err(e) = expand(v, &Traits::new()) {
                    errors.push(format!("{side}.node_labels.{key}: {e}"));
                }
                if let Some(Err(e)) = compile(v) {
                    errors.push(format!(
                        "{side}.node_labels.{key}: invalid regex {v:?}: {e}"
                    ));
                }
            }
            if key == "*" && values.0.iter().any(|v| v != "*") {
                errors.push(format!(
                    "{side}.node_labels: the key '*' only takes the value '*'"
                ));
            }
        }
        if let Some(w) = &cond.where_ {
            if let Err(e) = Predicate::compile(w) {
                errors.push(format!("{side}.where: {e}: {w}"));
            }
        }
        for (key, values) in &cond.db_labels {
            for v in &values.0 {
                if let Err(e) = expand(v, &Traits::new()) {
                    errors.push(format!("{side}.db_labels.{key}: {e}"));
                }
                if let Some(Err(e)) = compile(v) {
                    errors.push(format!("{side}.db_labels.{key}: invalid regex {v:?}: {e}"));
                }
            }
        }
        for (field, list) in [("db_users", &cond.db_users), ("db_names", &cond.db_names)] {
            for v in list {
                if let Err(e) = expand(v, &Traits::new()) {
                    errors.push(format!("{side}.{field}: {e}"));
                } else if v != "*" && !v.contains("{{") && !crate::db::valid_db_identifier(v) {
                    errors.push(format!("{side}.{field}: {v:?} is not a plain identifier"));
                }
            }
        }
        for g in &cond.grant_roles {
            if let Err(e) = expand(g, &Traits::new()) {
                errors.push(format!("{side}.grant_roles: {e}"));
            } else if let Some(Err(e)) = compile(g) {
                errors.push(format!("{side}.grant_roles: invalid regex {g:?}: {e}"));
            }
        }
        for rule in &cond.rules {
            for r in &rule.resources {
                if r != "*" && !resources::ALL.contains(&r.as_str()) {
                    errors.push(format!(
                        "{side}.rules: unknown resource {r:?} (known: {}, *)",
                        resources::ALL.join(", ")
                    ));
                }
            }
            for v in &rule.verbs {
                if v != "*" && !verbs::ALL.contains(&v.as_str()) {
                    errors.push(format!(
                        "{side}.rules: unknown verb {v:?} (known: {}, *)",
                        verbs::ALL.join(", ")
                    ));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_types::resource::kind;
    use warden_types::{LabelValues, Rule};

    fn role(name: &str, f: impl FnOnce(&mut RoleSpec)) -> Document<RoleSpec> {
        let mut spec = RoleSpec::default();
        f(&mut spec);
        Document::new(kind::ROLE, name, spec)
    }

    fn all_nodes() -> BTreeMap<String, LabelValues> {
        [("*".to_string(), LabelValues(vec!["*".into()]))].into()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn traits(logins: &[&str]) -> Traits {
        [(
            "logins".to_string(),
            logins.iter().map(|s| s.to_string()).collect(),
        )]
        .into()
    }

    #[test]
    fn no_roles_no_access() {
        let d = check_node_access(&[], &traits(&["root"]), "root", &labels(&[]));
        assert!(!d.allowed);
        assert_eq!(d.summary(), "user has no roles");
        assert!(allowed_logins(&[], &traits(&["root"])).is_empty());
    }

    #[test]
    fn allow_by_login_and_labels() {
        let r = role("access", |s| {
            s.allow.logins = vec!["{{internal.logins}}".into()];
            s.allow.node_labels = all_nodes();
        });
        let d = check_node_access(
            std::slice::from_ref(&r),
            &traits(&["alice"]),
            "alice",
            &labels(&[]),
        );
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.role.as_deref(), Some("access"));
        let d = check_node_access(&[r], &traits(&["alice"]), "root", &labels(&[]));
        assert!(!d.allowed);
    }

    #[test]
    fn deny_beats_allow() {
        let allow = role("access", |s| {
            s.allow.logins = vec!["root".into()];
            s.allow.node_labels = all_nodes();
        });
        let deny_login = role("no-root", |s| s.deny.logins = vec!["root".into()]);
        let d = check_node_access(
            &[allow.clone(), deny_login.clone()],
            &Traits::new(),
            "root",
            &labels(&[]),
        );
        assert!(!d.allowed);
        assert_eq!(d.summary(), "denied by role no-root");
        // Deny also removes the principal from certificates.
        assert!(allowed_logins(&[allow.clone(), deny_login], &Traits::new()).is_empty());

        let deny_prod = role("no-prod", |s| {
            s.deny.node_labels = [("env".to_string(), LabelValues(vec!["prod".into()]))].into()
        });
        let roles = [allow, deny_prod];
        assert!(
            !check_node_access(&roles, &Traits::new(), "root", &labels(&[("env", "prod")])).allowed
        );
        assert!(
            check_node_access(&roles, &Traits::new(), "root", &labels(&[("env", "dev")])).allowed
        );
    }

    #[test]
    fn audit_mode_records_what_its_deny_rules_would_refuse() {
        let allow = role("access", |s| {
            s.allow.logins = vec!["root".into()];
            s.allow.node_labels = all_nodes();
        });
        let watch = role("no-prod-root", |s| {
            s.options.mode = RoleMode::Audit;
            s.deny.logins = vec!["root".into()];
            s.deny.where_ = Some(r#"node.labels.env == "prod""#.into());
        });
        let roles = [allow.clone(), watch.clone()];
        let d = check_node_access(&roles, &Traits::new(), "root", &labels(&[("env", "prod")]));
        assert!(d.allowed, "audit mode does not refuse: {d:?}");
        assert_eq!(d.would_deny.len(), 1, "one line per role: {d:?}");
        assert!(d.would_deny[0].contains("role no-prod-root (audit mode) would deny"));
        // The where scopes the rule's logins: root elsewhere is not noted.
        let d = check_node_access(&roles, &Traits::new(), "root", &labels(&[("env", "dev")]));
        assert!(d.allowed && d.would_deny.is_empty(), "{d:?}");
        // Its logins stay certificate principals.
        assert_eq!(allowed_logins(&roles, &Traits::new()), vec!["root"]);
        // Nothing to record where the deny rules do not match.
        let d = check_node_access(
            std::slice::from_ref(&allow),
            &Traits::new(),
            "root",
            &labels(&[]),
        );
        assert!(d.allowed && d.would_deny.is_empty());
        // Enforced, the same role refuses root on prod only, and root stays
        // a certificate principal (the node decides where).
        let mut enforced = watch;
        enforced.spec.options.mode = RoleMode::Enforce;
        let roles = [allow, enforced];
        assert!(
            check_node_access(&roles, &Traits::new(), "root", &labels(&[("env", "dev")])).allowed
        );
        assert_eq!(allowed_logins(&roles, &Traits::new()), vec!["root"]);
        let d = check_node_access(&roles, &Traits::new(), "root", &labels(&[("env", "prod")]));
        assert!(!d.allowed && d.would_deny.is_empty());
        assert_eq!(d.summary(), "denied by role no-prod-root");
    }

    #[test]
    fn request_roles_deny_wins() {
        let asker = role("dev", |s| {
            s.allow.request.roles = vec!["dba".into(), "ops".into()]
        });
        let wild = role("any", |s| s.allow.request.roles = vec!["*".into()]);
        let no_ops = role("no-ops", |s| s.deny.request.roles = vec!["ops".into()]);
        let d = check_request_roles(std::slice::from_ref(&asker), &["dba".into()]);
        assert!(d.allowed && d.role.as_deref() == Some("dev"), "{d:?}");
        let d = check_request_roles(
            &[asker.clone(), no_ops.clone()],
            &["dba".into(), "ops".into()],
        );
        assert!(
            !d.allowed && d.summary() == "denied by role no-ops",
            "{d:?}"
        );
        let d = check_request_roles(&[wild, no_ops], &["root-ish".into()]);
        assert!(d.allowed, "{d:?}");
        let d = check_request_roles(&[asker], &["editor".into()]);
        assert!(
            !d.allowed && d.summary().contains("no role lists \"editor\""),
            "{d:?}"
        );
    }

    #[test]
    fn missing_trait_grants_nothing() {
        let r = role("access", |s| {
            s.allow.logins = vec!["{{internal.logins}}".into()];
            s.allow.node_labels = all_nodes();
        });
        assert!(allowed_logins(std::slice::from_ref(&r), &Traits::new()).is_empty());
        assert!(!check_node_access(&[r], &Traits::new(), "", &labels(&[])).allowed);
    }

    #[test]
    fn hostile_trait_values_are_not_principals() {
        let r = role("access", |s| {
            s.allow.logins = vec!["{{internal.logins}}".into()]
        });
        let t = traits(&["ok", "root,admin", "*", "a b", "-oProxyCommand"]);
        assert_eq!(allowed_logins(&[r], &t), vec!["ok"]);
    }

    #[test]
    fn options_combine_strictly() {
        let a = role("a", |s| {
            s.options.max_session_ttl = "8h".parse().unwrap();
            s.options.permit_port_forwarding = Some(true);
            s.options.permit_agent_forwarding = Some(true);
        });
        let b = role("b", |s| {
            s.options.max_session_ttl = "1h".parse().unwrap();
            s.options.permit_agent_forwarding = Some(false);
        });
        let o = session_options(&[a, b]);
        assert_eq!(o.max_ttl, Duration::from_secs(3600));
        assert!(o.permit_port_forwarding);
        assert!(!o.permit_agent_forwarding);
        assert!(!o.permit_x11_forwarding);
    }

    #[test]
    fn rules_deny_wins_and_wildcards() {
        let editor = role("editor", |s| {
            s.allow.rules = vec![Rule {
                resources: vec!["*".into()],
                verbs: vec!["*".into()],
            }]
        });
        let no_delete = role("nd", |s| {
            s.deny.rules = vec![Rule {
                resources: vec!["user".into()],
                verbs: vec!["delete".into()],
            }]
        });
        assert!(check_rule(std::slice::from_ref(&editor), "user", "delete").allowed);
        assert!(!check_rule(&[editor.clone(), no_delete], "user", "delete").allowed);
        assert!(!check_rule(&[], "user", "list").allowed);
    }

    #[test]
    fn validation_reports_each_problem() {
        let r = role("bad", |s| {
            s.allow.logins = vec!["{{internal.logins".into(), "a b".into()];
            s.allow.node_labels = [("env".to_string(), LabelValues(vec!["^(x$".into()]))].into();
            s.allow.rules = vec![Rule {
                resources: vec!["nodez".into()],
                verbs: vec!["read".into()],
            }];
        });
        let errs = validate_role(&r).unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        for d in crate::defaults::roles() {
            validate_role(&d).unwrap();
        }
    }
}
