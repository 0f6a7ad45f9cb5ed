//! Least privilege from what was used: given the SSH sessions a role made
//! possible over a window (from the audit log), which of its node grants
//! went unused, and the narrowest role that still allows every one of
//! them. Pure: the caller gathers sessions, users' traits and nodes.

use crate::labels::value_matches;
use crate::template::expand;
use crate::{check_node_access, Traits};
use std::collections::{BTreeMap, BTreeSet};
use warden_types::{Document, LabelValues, RoleSpec};

/// One session: who logged in as what, on a node with these labels.
#[derive(Clone, Debug)]
pub struct Use {
    pub user: String,
    /// The user's traits (templates in the role expand with them).
    pub traits: Traits,
    pub login: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
}

/// What a role's node grants were used for, and a narrower role.
#[derive(Clone, Debug)]
pub struct Suggestion {
    /// Sessions the role allows by itself.
    pub sessions: usize,
    pub users: BTreeSet<String>,
    pub nodes: BTreeSet<String>,
    /// Entries of `allow.logins` that no session used.
    pub unused_logins: Vec<String>,
    /// `allow.node_labels` entries no session used, as `key: value`.
    pub unused_labels: Vec<String>,
    /// Wildcards and patterns replaced by the values used, as
    /// `key: pattern -> values`.
    pub narrowed: Vec<String>,
    /// The role with only what was used: every session in the window is
    /// still allowed by it (checked).
    pub proposed: Document<RoleSpec>,
    pub notes: Vec<String>,
}

/// Values a selector entry may be replaced with: at most this many exact
/// values stand in for a wildcard or a pattern.
const MAX_EXACT: usize = 8;

/// Suggests a narrower `role` from `uses` (sessions of users who held it;
/// only those the role allows by itself count).
pub fn suggest(role: &Document<RoleSpec>, uses: &[Use]) -> Suggestion {
    let mine: Vec<&Use> = uses
        .iter()
        .filter(|u| {
            check_node_access(std::slice::from_ref(role), &u.traits, &u.login, &u.labels).allowed
        })
        .collect();
    let allow = &role.spec.allow;
    let mut s = Suggestion {
        sessions: mine.len(),
        users: mine.iter().map(|u| u.user.clone()).collect(),
        nodes: mine.iter().map(|u| u.node.clone()).collect(),
        unused_logins: Vec::new(),
        unused_labels: Vec::new(),
        narrowed: Vec::new(),
        proposed: role.clone(),
        notes: Vec::new(),
    };
    if mine.is_empty() {
        if !allow.logins.is_empty() || !allow.node_labels.is_empty() {
            s.unused_logins = allow.logins.clone();
            s.notes.push(
                "no session used this role's node access in the window: the proposal grants none (its other permissions stay)".into(),
            );
            s.proposed.spec.allow.logins.clear();
            s.proposed.spec.allow.node_labels.clear();
            s.proposed.spec.allow.where_ = None;
        }
        return s;
    }
    // Logins: keep the entries some session used.
    let mut logins = Vec::new();
    for entry in &allow.logins {
        let used = mine
            .iter()
            .any(|u| expand(entry, &u.traits).is_ok_and(|v| v.contains(&u.login)));
        if used {
            logins.push(entry.clone());
        } else {
            s.unused_logins.push(entry.clone());
        }
    }
    // Labels: keep the entries some session's node matched; wildcards and
    // patterns become the values they matched, when those are few.
    let mut labels: BTreeMap<String, LabelValues> = BTreeMap::new();
    for (key, values) in &allow.node_labels {
        if key == "*" {
            match common_keys(&mine) {
                Some(exact) => {
                    s.narrowed.push(format!(
                        "'*': '*' -> {}",
                        exact
                            .iter()
                            .map(|(k, v)| format!("{k}: [{}]", v.0.join(", ")))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                    labels.extend(exact);
                }
                None => {
                    s.notes.push(
                        "'*': '*' stays: the nodes used share no label with few values".into(),
                    );
                    labels.insert(key.clone(), values.clone());
                }
            }
            continue;
        }
        let mut kept = Vec::new();
        for v in &values.0 {
            let matched: BTreeSet<&str> = mine
                .iter()
                .filter_map(|u| u.labels.get(key).map(|x| (u, x)))
                .filter(|(u, x)| entry_matches(v, x, &u.traits))
                .map(|(_, x)| x.as_str())
                .collect();
            if matched.is_empty() {
                s.unused_labels.push(format!("{key}: {v}"));
                continue;
            }
            let wide = v == "*" || (v.starts_with('^') && v.ends_with('$'));
            if wide && !v.contains("{{") && matched.len() <= MAX_EXACT {
                let exact: Vec<String> = matched.iter().map(|x| x.to_string()).collect();
                s.narrowed
                    .push(format!("{key}: {v} -> [{}]", exact.join(", ")));
                kept.extend(exact);
            } else {
                kept.push(v.clone());
            }
        }
        kept.sort();
        kept.dedup();
        labels.insert(key.clone(), LabelValues(kept));
    }
    s.proposed.spec.allow.logins = logins;
    s.proposed.spec.allow.node_labels = labels;
    // The promise: nothing used is taken away. Should narrowing ever
    // break it, the role stays as it was.
    let broken = mine.iter().find(|u| {
        !check_node_access(
            std::slice::from_ref(&s.proposed),
            &u.traits,
            &u.login,
            &u.labels,
        )
        .allowed
    });
    if let Some(u) = broken {
        s.notes.push(format!(
            "kept as it was: narrowing would refuse {} as {} on {}",
            u.user, u.login, u.node
        ));
        s.proposed = role.clone();
        s.narrowed.clear();
    }
    s
}

/// Does a selector entry match a label value (templates expanded with the
/// user's traits, whose values match literally)?
fn entry_matches(entry: &str, value: &str, traits: &Traits) -> bool {
    if entry.contains("{{") {
        return expand(entry, traits).is_ok_and(|v| v.iter().any(|x| x == value));
    }
    value_matches(entry, value)
}

/// For `'*': '*'`: the label keys every node used has, each with the few
/// values seen; `None` if there are none.
fn common_keys(uses: &[&Use]) -> Option<BTreeMap<String, LabelValues>> {
    let first = uses.first()?;
    let mut out = BTreeMap::new();
    for key in first.labels.keys() {
        let values: BTreeSet<&String> = uses.iter().filter_map(|u| u.labels.get(key)).collect();
        let everywhere = uses.iter().all(|u| u.labels.contains_key(key));
        if everywhere && values.len() <= MAX_EXACT {
            out.insert(
                key.clone(),
                LabelValues(values.into_iter().cloned().collect()),
            );
        }
    }
    // One key is enough to narrow; the fewest values narrow most.
    let best = out.iter().min_by_key(|(_, v)| v.0.len())?;
    Some([(best.0.clone(), best.1.clone())].into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_types::resource::kind;

    fn role(yaml: &str) -> Document<RoleSpec> {
        let spec: RoleSpec = from_json(yaml);
        Document::new(kind::ROLE, "r", spec)
    }

    /// RoleSpec from JSON text (the crate has no YAML parser).
    fn from_json(json: &str) -> RoleSpec {
        serde_json::from_str(json).unwrap()
    }

    fn used(user: &str, login: &str, node: &str, labels: &[(&str, &str)]) -> Use {
        Use {
            user: user.into(),
            traits: [("logins".to_string(), vec![user.to_string()])].into(),
            login: login.into(),
            node: node.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn unused_grants_go_used_ones_stay() {
        let r = role(
            r#"{"allow": {"logins": ["{{internal.logins}}", "root", "postgres"],
                          "node_labels": {"env": ["*"], "team": ["db", "web"]}}}"#,
        );
        let uses = [
            used(
                "dana",
                "dana",
                "db-1",
                &[("env", "staging"), ("team", "db")],
            ),
            used(
                "dana",
                "postgres",
                "db-2",
                &[("env", "prod"), ("team", "db")],
            ),
            // Not this role's: no login it grants.
            used("dana", "ubuntu", "db-2", &[("env", "prod"), ("team", "db")]),
        ];
        let s = suggest(&r, &uses);
        assert_eq!(s.sessions, 2);
        assert_eq!(s.unused_logins, vec!["root"]);
        assert_eq!(s.unused_labels, vec!["team: web"]);
        let p = &s.proposed.spec.allow;
        assert_eq!(p.logins, vec!["{{internal.logins}}", "postgres"]);
        assert_eq!(p.node_labels["env"].0, vec!["prod", "staging"]);
        assert_eq!(p.node_labels["team"].0, vec!["db"]);
        for u in &uses[..2] {
            assert!(
                check_node_access(
                    std::slice::from_ref(&s.proposed),
                    &u.traits,
                    &u.login,
                    &u.labels
                )
                .allowed
            );
        }
    }

    #[test]
    fn a_wildcard_node_selector_narrows_to_a_shared_label() {
        let r = role(r#"{"allow": {"logins": ["root"], "node_labels": {"*": "*"}}}"#);
        let uses = [
            used("a", "root", "n1", &[("env", "staging"), ("host", "n1")]),
            used("b", "root", "n2", &[("env", "staging"), ("host", "n2")]),
        ];
        let s = suggest(&r, &uses);
        assert_eq!(
            s.proposed.spec.allow.node_labels,
            [("env".to_string(), LabelValues(vec!["staging".into()]))].into()
        );
        // Never used: the proposal grants no node access at all.
        let s = suggest(&r, &[]);
        assert!(s.proposed.spec.allow.logins.is_empty() && !s.notes.is_empty());
    }
}
