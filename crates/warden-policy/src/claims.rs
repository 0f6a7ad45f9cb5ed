//! Identity-provider claims to traits and roles (`claims_to_roles`).

use crate::Traits;
use regex::Regex;
use serde_json::{Map, Value};
use warden_types::ClaimMapping;

/// Protocol claims of an ID token: they describe the token, not the person,
/// and never become traits.
const PROTOCOL_CLAIMS: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "at_hash",
    "c_hash",
    "azp",
    "auth_time",
    "sid",
    "jti",
    "acr",
    "amr",
];

/// Traits Warden sets itself (`{{internal.logins}}` of the default
/// `access` role): an identity provider must not choose Unix logins.
const INTERNAL_TRAITS: &[&str] = &["logins"];

/// Claims as traits: strings, numbers and booleans become one value; arrays
/// of those become lists. Nested objects are skipped.
pub fn claims_to_traits(claims: &Map<String, Value>) -> Traits {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let mut out = Traits::new();
    for (k, v) in claims {
        if PROTOCOL_CLAIMS.contains(&k.as_str()) || INTERNAL_TRAITS.contains(&k.as_str()) {
            continue;
        }
        let vals: Vec<String> = match v {
            Value::Array(a) => a.iter().filter_map(scalar).collect(),
            other => scalar(other).into_iter().collect(),
        };
        if !vals.is_empty() {
            out.insert(k.clone(), vals);
        }
    }
    out
}

fn compile(m: &ClaimMapping) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{})$", m.value)).map_err(|e| {
        format!(
            "claims_to_roles: value {:?} is not a valid regex: {e}",
            m.value
        )
    })
}

/// Checks every mapping; returns all problems at once.
pub fn validate_claim_mappings(mappings: &[ClaimMapping]) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    for m in mappings {
        if m.claim.is_empty() {
            errs.push("claims_to_roles: claim must name a claim, e.g. groups".into());
        }
        if m.roles.is_empty() {
            errs.push(format!(
                "claims_to_roles: the rule for {}={:?} grants no roles",
                m.claim, m.value
            ));
        }
        if let Err(e) = compile(m) {
            errs.push(e);
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// The roles `traits` map to: each value of a rule's claim that matches its
/// (whole-value) regex grants the rule's roles, with `$1`/`${name}` taken
/// from the match. Sorted, without duplicates or empty names.
pub fn map_roles(mappings: &[ClaimMapping], traits: &Traits) -> Vec<String> {
    let mut roles = Vec::new();
    for m in mappings {
        let Ok(re) = compile(m) else { continue };
        for v in traits.get(&m.claim).into_iter().flatten() {
            let Some(caps) = re.captures(v) else { continue };
            for r in &m.roles {
                let mut out = String::new();
                caps.expand(r, &mut out);
                if !out.is_empty() {
                    roles.push(out);
                }
            }
        }
    }
    roles.sort();
    roles.dedup();
    roles
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(claim: &str, value: &str, roles: &[&str]) -> ClaimMapping {
        ClaimMapping {
            claim: claim.into(),
            value: value.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn traits_from_claims() {
        let c = json!({"sub": "u1", "email": "a@x", "groups": ["g1", "g2"], "email_verified": true,
                       "aud": "warden", "exp": 1, "address": {"x": 1}, "logins": ["root"]});
        let t = claims_to_traits(c.as_object().unwrap());
        assert_eq!(t["groups"], vec!["g1", "g2"]);
        assert_eq!(t["email"], vec!["a@x"]);
        assert_eq!(t["email_verified"], vec!["true"]);
        assert!(!t.contains_key("aud") && !t.contains_key("exp") && !t.contains_key("address"));
        assert!(
            !t.contains_key("logins"),
            "an IdP must not pick Unix logins"
        );
    }

    #[test]
    fn regex_capture_substitution() {
        let mut t = Traits::new();
        t.insert(
            "groups".into(),
            vec!["db-admins".into(), "dev".into(), "xdb-y".into()],
        );
        let rules = vec![
            rule("groups", "^db-(.*)$", &["db-$1"]),
            rule("groups", "dev", &["access", "developer"]),
            rule("groups", "d", &["never"]),
            rule("teams", ".*", &["nope"]),
        ];
        assert_eq!(
            map_roles(&rules, &t),
            vec!["access", "db-admins", "developer"]
        );
        // Unanchored patterns still match whole values only.
        assert!(map_roles(&[rule("groups", "db", &["x"])], &t).is_empty());
        assert!(
            map_roles(&[rule("groups", "(?P<g>.*)-admins", &["${g}-root"])], &t)
                .contains(&"db-root".to_string())
        );
    }

    #[test]
    fn validation() {
        assert!(validate_claim_mappings(&[rule("groups", "a", &["r"])]).is_ok());
        let errs = validate_claim_mappings(&[rule("", "(", &[])]).unwrap_err();
        assert_eq!(errs.len(), 3);
    }
}
