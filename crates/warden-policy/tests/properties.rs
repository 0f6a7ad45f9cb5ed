//! Property tests of the evaluator over many random roles, labels and
//! traits: it never panics, deny always wins, and no role means no access.
//! A small deterministic PRNG keeps the cases reproducible without extra
//! dependencies; set WARDEN_PROP_CASES for longer runs.

use std::collections::BTreeMap;
use warden_policy::{allowed_logins, check_node_access, validate_role, Traits};
use warden_types::resource::kind;
use warden_types::{Document, LabelValues, RoleConditions, RoleSpec};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const LOGINS: &[&str] = &[
    "root",
    "alice",
    "ubuntu",
    "{{internal.logins}}",
    "{{external.team}}",
    "svc-{{internal.logins}}",
    "{{bad",
    "*",
    "",
];
const KEYS: &[&str] = &["env", "team", "*", "region"];
const VALUES: &[&str] = &[
    "prod",
    "dev",
    "*",
    "^prod-[0-9]+$",
    "^(a|b)$",
    "^(unclosed$",
    "{{external.team}}",
    "db",
    "",
];

const WHERES: &[&str] = &[
    r#"contains(user.traits["team"], node.labels["team"])"#,
    r#"node.labels.env == "prod""#,
    r#"login != "root" && !regexp.match(node.labels.env, "dev|prod-[0-9]+")"#,
    r#"has_prefix(login, "svc-") || contains_any(user.traits.team, user.traits.logins)"#,
    "true",
    "false",
    "contains(login)",
    "((",
];

fn conditions(r: &mut Rng) -> RoleConditions {
    let mut c = RoleConditions::default();
    if r.below(3) == 0 {
        c.where_ = Some(r.pick(WHERES).to_string());
    }
    for _ in 0..r.below(3) {
        c.logins.push(r.pick(LOGINS).to_string());
    }
    for _ in 0..r.below(3) {
        let values = (0..1 + r.below(2))
            .map(|_| r.pick(VALUES).to_string())
            .collect();
        c.node_labels
            .insert(r.pick(KEYS).to_string(), LabelValues(values));
    }
    c
}

fn role(r: &mut Rng, i: usize) -> Document<RoleSpec> {
    let mut spec = RoleSpec {
        allow: conditions(r),
        ..Default::default()
    };
    if r.below(3) == 0 {
        spec.deny = conditions(r);
    }
    Document::new(kind::ROLE, format!("r{i}"), spec)
}

fn labels(r: &mut Rng) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    for _ in 0..r.below(3) {
        l.insert(
            r.pick(&["env", "team", "region"]).to_string(),
            r.pick(&["prod", "dev", "prod-12", "db", "a", "*"])
                .to_string(),
        );
    }
    l
}

fn traits(r: &mut Rng) -> Traits {
    let mut t = Traits::new();
    if r.below(2) == 0 {
        t.insert(
            "logins".into(),
            vec![r.pick(&["alice", "root", "*", "a b"]).to_string()],
        );
    }
    if r.below(2) == 0 {
        t.insert(
            "team".into(),
            vec![r.pick(&["db", "*", "^.*$"]).to_string()],
        );
    }
    t
}

#[test]
fn deny_always_wins_and_nothing_panics() {
    let cases: usize = std::env::var("WARDEN_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut r = Rng(0x5eed_1234_abcd_ef01);
    for case in 0..cases {
        let roles: Vec<_> = (0..r.below(4)).map(|i| role(&mut r, i)).collect();
        let t = traits(&mut r);
        let l = labels(&mut r);
        let login = r.pick(&["root", "alice", "ubuntu", "svc-alice", "db"]);
        // Never panics, whatever the input (validation is separate).
        let _ = roles.iter().map(validate_role).count();
        let d = check_node_access(&roles, &t, login, &l);
        let principals = allowed_logins(&roles, &t);

        // No role, no access.
        if roles.is_empty() {
            assert!(!d.allowed, "case {case}: access without roles");
        }
        // A role that denies this login literally always wins.
        let denied_literally = roles
            .iter()
            .any(|x| x.spec.deny.where_.is_none() && x.spec.deny.logins.iter().any(|v| v == login));
        if denied_literally {
            assert!(!d.allowed, "case {case}: deny of {login} ignored: {d:?}");
            assert!(
                !principals.iter().any(|p| p == login),
                "case {case}: denied login in certificate"
            );
        }
        // A deny rule whose condition holds (and that names no labels)
        // wins; an invalid one denies too (fail closed).
        let ctx = warden_policy::predicate::Context {
            traits: &t,
            login,
            labels: &l,
        };
        let deny_holds = roles.iter().any(|x| {
            x.spec.deny.node_labels.is_empty()
                && x.spec.deny.logins.is_empty()
                && x.spec.deny.where_.as_deref().is_some_and(|w| {
                    warden_policy::Predicate::compile(w).map_or(true, |p| p.eval(&ctx))
                })
        });
        if deny_holds {
            assert!(
                !d.allowed,
                "case {case}: a holding deny condition ignored: {d:?}"
            );
        }
        // Allowed means some allowing role's condition holds (or it has
        // none).
        if d.allowed {
            let by = roles
                .iter()
                .find(|x| Some(x.name()) == d.role.as_deref())
                .unwrap();
            if let Some(w) = &by.spec.allow.where_ {
                let p =
                    warden_policy::Predicate::compile(w).expect("an invalid where never allows");
                assert!(
                    p.eval(&ctx),
                    "case {case}: allowed where {w:?} does not hold"
                );
            }
        }
        // Deny by labels: removing the denying role can only widen access,
        // never the reverse (monotonicity of deny).
        if d.allowed {
            for i in 0..roles.len() {
                let mut fewer = roles.clone();
                let removed = fewer.remove(i);
                let without = check_node_access(&fewer, &t, login, &l);
                if !without.allowed {
                    // The removed role must have been the only one allowing.
                    assert!(
                        !removed.spec.allow.logins.is_empty(),
                        "case {case}: removing a role without allows revoked access"
                    );
                }
            }
        }
        // Allowed means some role lists this login (after templating) and
        // it is a certificate principal.
        if d.allowed {
            assert!(
                principals.iter().any(|p| p == login),
                "case {case}: allowed login {login} not a principal"
            );
        }
        // Principals are always safe Unix names.
        for p in &principals {
            assert!(
                !p.is_empty() && !p.contains([' ', ',', '*', '{', '}']),
                "case {case}: bad principal {p:?}"
            );
        }
    }
}

/// The predicate compiler on random input: token soups and byte strings
/// never panic, and whatever compiles evaluates.
#[test]
fn predicates_never_panic() {
    let cases: usize = std::env::var("WARDEN_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    const PIECES: &[&str] = &[
        "(",
        ")",
        "[",
        "]",
        ",",
        ".",
        "!",
        "&&",
        "||",
        "==",
        "!=",
        "\"",
        "\"x\"",
        "\"(\"",
        "login",
        "node",
        "labels",
        "user",
        "traits",
        "contains",
        "contains_any",
        "has_prefix",
        "regexp",
        "match",
        "true",
        "false",
        " ",
        "\\",
        "é",
        "\"env\"",
        "#",
        "=",
    ];
    let mut r = Rng(0xfeed_5eed_0bad_cafe);
    let traits: Traits = [("team".to_string(), vec!["db".to_string()])].into();
    let labels: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
    let ctx = warden_policy::predicate::Context {
        traits: &traits,
        login: "root",
        labels: &labels,
    };
    let mut compiled = 0;
    for _ in 0..cases {
        let src: String = if r.below(4) == 0 {
            (0..r.below(40))
                .map(|_| char::from_u32(r.below(0x250) as u32).unwrap_or('?'))
                .collect()
        } else {
            (0..r.below(16)).map(|_| r.pick(PIECES)).collect()
        };
        if let Ok(p) = warden_policy::Predicate::compile(&src) {
            let _ = p.eval(&ctx);
            compiled += 1;
        }
    }
    assert!(compiled > 0, "the soup never produced a valid expression");
}

/// Least privilege from random histories: the proposed role allows every
/// session the role allowed (nothing used is taken away), never allows
/// what the role did not (it only narrows), and the unused logins it names
/// were used by no session.
#[test]
fn suggestions_keep_every_used_grant_and_only_narrow() {
    use warden_policy::suggest::{suggest, Use};
    let cases: usize = std::env::var("WARDEN_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let mut r = Rng(0xabad_1dea_5eed_0001);
    let (mut kept, mut narrowed) = (0, 0);
    for case in 0..cases {
        // Roles that grant something, and histories that use some of it.
        let mut spec = RoleSpec::default();
        for _ in 0..1 + r.below(3) {
            spec.allow.logins.push(
                r.pick(&["root", "alice", "{{internal.logins}}", "ubuntu"])
                    .to_string(),
            );
        }
        if r.below(4) == 0 {
            spec.allow
                .node_labels
                .insert("*".into(), LabelValues(vec!["*".into()]));
        } else {
            for key in ["env", "team"] {
                if r.below(2) == 0 {
                    let values = (0..1 + r.below(3))
                        .map(|_| {
                            r.pick(&[
                                "prod",
                                "dev",
                                "*",
                                "^prod-[0-9]+$",
                                "db",
                                "{{external.team}}",
                            ])
                            .to_string()
                        })
                        .collect();
                    spec.allow
                        .node_labels
                        .insert(key.into(), LabelValues(values));
                }
            }
        }
        if r.below(4) == 0 {
            spec.allow.where_ = Some(r.pick(WHERES).to_string());
        }
        if r.below(4) == 0 {
            spec.deny = conditions(&mut r);
        }
        let role = Document::new(kind::ROLE, "r", spec);
        if validate_role(&role).is_err() {
            continue;
        }
        let logins = ["root", "alice", "ubuntu", "svc-alice", "db"];
        let uses: Vec<Use> = (0..r.below(12))
            .map(|i| {
                let mut labels = BTreeMap::new();
                for key in ["env", "team"] {
                    if r.below(4) != 0 {
                        let v = match key {
                            "env" => r.pick(&["prod", "dev", "prod-12", "prod-7"]),
                            _ => r.pick(&["db", "web"]),
                        };
                        labels.insert(key.to_string(), v.to_string());
                    }
                }
                Use {
                    user: format!("u{}", i % 3),
                    traits: traits(&mut r),
                    login: r.pick(&logins).to_string(),
                    node: format!("n{i}"),
                    labels,
                }
            })
            .collect();
        let s = suggest(&role, &uses);
        if s.proposed != role {
            narrowed += 1;
        }
        let allows = |x: &warden_types::Document<RoleSpec>,
                      t: &Traits,
                      login: &str,
                      l: &BTreeMap<String, String>| {
            check_node_access(std::slice::from_ref(x), t, login, l).allowed
        };
        for u in &uses {
            if allows(&role, &u.traits, &u.login, &u.labels) {
                kept += 1;
                assert!(
                    allows(&s.proposed, &u.traits, &u.login, &u.labels),
                    "case {case}: a used grant was taken away: {u:?}\nrole {:?}\nproposed {:?}",
                    role.spec,
                    s.proposed.spec
                );
                for unused in &s.unused_logins {
                    let expanded = warden_policy::expand(unused, &u.traits).unwrap_or_default();
                    assert!(
                        !expanded.contains(&u.login),
                        "case {case}: login entry {unused:?} called unused, but {u:?} used it"
                    );
                }
            }
        }
        for _ in 0..20 {
            let (t, l) = (traits(&mut r), labels(&mut r));
            let login = r.pick(&logins);
            if allows(&s.proposed, &t, login, &l) {
                assert!(
                    allows(&role, &t, login, &l),
                    "case {case}: the proposal widened access: {login} {l:?} {t:?}\nrole {:?}\nproposed {:?}",
                    role.spec,
                    s.proposed.spec
                );
            }
        }
    }
    assert!(
        kept > 100 && narrowed > 100,
        "the histories exercised too little: {kept} used grants, {narrowed} narrowed roles"
    );
}

/// Database access over random roles: never panics, no role means no
/// access, a literal deny of the user or the name always wins, and an
/// allowed connection is one that its deciding role lists in full.
#[test]
fn database_access_deny_always_wins() {
    use warden_policy::{check_db_access, DbRequest};
    let cases: usize = std::env::var("WARDEN_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    const USERS: &[&str] = &["app", "postgres", "*", "{{internal.db_users}}", "a b", ""];
    const NAMES: &[&str] = &["app", "billing", "*", "{{external.team}}", "x;y"];
    let db_conditions = |r: &mut Rng| {
        let mut c = RoleConditions::default();
        for _ in 0..r.below(3) {
            c.db_users.push(r.pick(USERS).to_string());
        }
        for _ in 0..r.below(3) {
            c.db_names.push(r.pick(NAMES).to_string());
        }
        for _ in 0..r.below(3) {
            let values = (0..1 + r.below(2))
                .map(|_| r.pick(VALUES).to_string())
                .collect();
            c.db_labels
                .insert(r.pick(KEYS).to_string(), LabelValues(values));
        }
        c
    };
    let mut r = Rng(0xdb5e_ed00_1234_5678);
    for case in 0..cases {
        let roles: Vec<_> = (0..r.below(4))
            .map(|i| {
                let mut spec = RoleSpec {
                    allow: db_conditions(&mut r),
                    ..Default::default()
                };
                if r.below(3) == 0 {
                    spec.deny = db_conditions(&mut r);
                }
                Document::new(kind::ROLE, format!("r{i}"), spec)
            })
            .collect();
        let mut t = traits(&mut r);
        if r.below(2) == 0 {
            t.insert(
                "db_users".into(),
                vec![r.pick(&["app", "*", "postgres"]).to_string()],
            );
        }
        let l = labels(&mut r);
        let user = r.pick(&["app", "postgres", "reader"]);
        let name = r.pick(&["app", "billing", "db"]);
        let _ = roles.iter().map(validate_role).count();
        let d = check_db_access(
            &roles,
            &t,
            DbRequest {
                labels: &l,
                db_user: user,
                db_name: name,
            },
        );
        if roles.is_empty() {
            assert!(!d.allowed, "case {case}: access without roles");
        }
        let literally = |list: &[String], v: &str| list.iter().any(|x| x == v || x == "*");
        if roles.iter().any(|x| {
            literally(&x.spec.deny.db_users, user) || literally(&x.spec.deny.db_names, name)
        }) {
            assert!(!d.allowed, "case {case}: a literal deny ignored: {d:?}");
        }
        if d.allowed {
            let by = roles
                .iter()
                .find(|x| Some(x.name()) == d.role.as_deref())
                .unwrap();
            assert!(!by.spec.allow.db_labels.is_empty(), "case {case}");
            assert!(
                !by.spec.allow.db_users.is_empty() && !by.spec.allow.db_names.is_empty(),
                "case {case}: allowed by a role that lists no users or names: {d:?}"
            );
            // A wildcard user is granted only by a `*` in the role itself.
            if !by.spec.allow.db_users.iter().any(|v| v == "*" || v == user) {
                assert!(
                    by.spec.allow.db_users.iter().any(|v| v.contains("{{"))
                        && t.get("db_users")
                            .is_some_and(|v| v.iter().any(|x| x == user)),
                    "case {case}: user {user} allowed from nowhere: {d:?}"
                );
            }
        }
    }
}
