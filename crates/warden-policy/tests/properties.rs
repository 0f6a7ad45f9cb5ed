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

fn conditions(r: &mut Rng) -> RoleConditions {
    let mut c = RoleConditions::default();
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
            .any(|x| x.spec.deny.logins.iter().any(|v| v == login));
        if denied_literally {
            assert!(!d.allowed, "case {case}: deny of {login} ignored: {d:?}");
            assert!(
                !principals.iter().any(|p| p == login),
                "case {case}: denied login in certificate"
            );
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
