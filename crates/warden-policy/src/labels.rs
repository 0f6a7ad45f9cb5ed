//! Node label selectors: exact values, `*`, and anchored `^regex$`.

use crate::template::expand;
use crate::Traits;
use std::collections::BTreeMap;
use warden_types::LabelValues;

/// Upper bound on a compiled selector regex, so a role cannot make the
/// evaluator allocate without limit.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a selector value if it is a regex (`^...$`).
pub(crate) fn compile(pattern: &str) -> Option<Result<regex::Regex, regex::Error>> {
    if pattern.len() >= 2 && pattern.starts_with('^') && pattern.ends_with('$') {
        // Re-anchor the whole pattern so an alternation cannot escape the
        // anchors (`^a|b$` must not match "xb-and-more").
        let inner = &pattern[1..pattern.len() - 1];
        // Checked alone first: `^a)|(b$` must not compile into something
        // the anchors no longer hold.
        if let Err(e) = regex::RegexBuilder::new(inner)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            return Some(Err(e));
        }
        Some(
            regex::RegexBuilder::new(&format!("^(?:{inner})$"))
                .size_limit(REGEX_SIZE_LIMIT)
                .build(),
        )
    } else {
        None
    }
}

/// Does one selector value match a label value? An invalid regex matches
/// nothing here; [`crate::validate_role`] rejects it before it is stored.
pub fn value_matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match compile(pattern) {
        Some(Ok(re)) => re.is_match(value),
        Some(Err(_)) => false,
        None => pattern == value,
    }
}

/// Does a node with `labels` match `selector`? Every selector key must match
/// (AND); within a key any value may match (OR). `'*': '*'` matches every
/// node. An empty selector matches nothing. Returns a reason either way.
pub fn label_matches(
    selector: &BTreeMap<String, LabelValues>,
    labels: &BTreeMap<String, String>,
    traits: &Traits,
) -> (bool, String) {
    if selector.is_empty() {
        return (false, "no node_labels".into());
    }
    for (key, values) in selector {
        // (pattern, literal): values that came from traits match literally,
        // so a trait value of "*" or "^.*$" cannot widen a selector.
        let mut patterns: Vec<(String, bool)> = Vec::new();
        for v in &values.0 {
            match expand(v, traits) {
                Ok(expanded) => {
                    let literal = v.contains("{{");
                    patterns.extend(expanded.into_iter().map(|p| (p, literal)));
                }
                Err(e) => return (false, e.to_string()),
            }
        }
        if key == "*" {
            if patterns.iter().any(|(p, literal)| p == "*" && !literal) {
                continue;
            }
            return (false, "label key '*' only supports the value '*'".into());
        }
        let Some(value) = labels.get(key) else {
            return (false, format!("node has no label {key:?}"));
        };
        if patterns.is_empty() {
            return (
                false,
                format!("selector {key:?} has no values (missing trait?)"),
            );
        }
        let hit = patterns.iter().any(|(p, literal)| {
            if *literal {
                p == value
            } else {
                value_matches(p, value)
            }
        });
        if !hit {
            let shown: Vec<&str> = patterns.iter().map(|(p, _)| p.as_str()).collect();
            return (
                false,
                format!("label {key}={value} does not match {shown:?}"),
            );
        }
    }
    (true, format!("node labels match {}", describe(selector)))
}

fn describe(selector: &BTreeMap<String, LabelValues>) -> String {
    let parts: Vec<String> = selector
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.0.join("|")))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(pairs: &[(&str, &[&str])]) -> BTreeMap<String, LabelValues> {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    LabelValues(v.iter().map(|s| s.to_string()).collect()),
                )
            })
            .collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn wildcard_matches_every_node_even_unlabelled() {
        let s = sel(&[("*", &["*"])]);
        assert!(label_matches(&s, &labels(&[]), &Traits::new()).0);
        assert!(label_matches(&s, &labels(&[("env", "prod")]), &Traits::new()).0);
    }

    #[test]
    fn value_wildcard_needs_the_key() {
        let s = sel(&[("env", &["*"])]);
        assert!(label_matches(&s, &labels(&[("env", "x")]), &Traits::new()).0);
        assert!(!label_matches(&s, &labels(&[("team", "x")]), &Traits::new()).0);
    }

    #[test]
    fn regex_is_anchored() {
        assert!(value_matches("^prod-[0-9]+$", "prod-12"));
        assert!(!value_matches("^prod-[0-9]+$", "prod-12-evil"));
        assert!(!value_matches("^prod-[0-9]+$", "xprod-12"));
        // Without both anchors a value is literal, not a regex.
        assert!(!value_matches("prod.*", "production"));
        assert!(value_matches("prod.*", "prod.*"));
        // An alternation must not escape the anchors.
        assert!(!value_matches("^a|b$", "xxb"));
        assert!(!value_matches("^a|b$", "ab"));
        assert!(value_matches("^a|b$", "b"));
        // Nor can a pattern that closes the group itself.
        assert!(!value_matches("^a)|(.*$", "anything"));
    }

    #[test]
    fn invalid_regex_matches_nothing() {
        assert!(!value_matches("^(unclosed$", "(unclosed"));
    }

    #[test]
    fn all_keys_must_match() {
        let s = sel(&[("env", &["prod"]), ("team", &["db", "web"])]);
        assert!(
            label_matches(
                &s,
                &labels(&[("env", "prod"), ("team", "web")]),
                &Traits::new()
            )
            .0
        );
        assert!(!label_matches(&s, &labels(&[("env", "prod")]), &Traits::new()).0);
        assert!(
            !label_matches(
                &s,
                &labels(&[("env", "dev"), ("team", "db")]),
                &Traits::new()
            )
            .0
        );
    }

    #[test]
    fn empty_selector_matches_nothing() {
        assert!(!label_matches(&BTreeMap::new(), &labels(&[("a", "b")]), &Traits::new()).0);
    }

    #[test]
    fn templated_values_with_missing_trait_match_nothing() {
        let s = sel(&[("team", &["{{external.team}}"])]);
        let l = labels(&[("team", "db")]);
        assert!(!label_matches(&s, &l, &Traits::new()).0);
        let mut t = Traits::new();
        t.insert("external.team".into(), vec!["db".into()]);
        assert!(label_matches(&s, &l, &t).0);
        // Trait values are literal: they cannot smuggle in wildcards.
        for hostile in ["*", "^.*$"] {
            t.insert("external.team".into(), vec![hostile.into()]);
            assert!(!label_matches(&s, &l, &t).0, "{hostile}");
            let any = sel(&[("*", &["{{external.team}}"])]);
            assert!(!label_matches(&any, &l, &t).0, "{hostile}");
        }
    }
}
