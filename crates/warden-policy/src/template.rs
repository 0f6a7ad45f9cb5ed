//! Trait templates: `{{internal.logins}}`, `{{external.groups}}`, with an
//! optional literal prefix and suffix (`db-{{external.team}}`).

use crate::Traits;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unterminated template in {0:?}: expected '}}}}'")]
    Unterminated(String),
    #[error("invalid template {0:?}: use {{{{internal.<trait>}}}} or {{{{external.<trait>}}}}")]
    Invalid(String),
    #[error("more than one template in {0:?}: only one {{{{...}}}} per value is supported")]
    Multiple(String),
}

/// Where identity-provider claims live in a user's traits: `external.<claim>`.
/// Traits set in Warden never carry this prefix (see [`is_internal_trait`]),
/// so `{{internal.X}}` reads only what Warden set and `{{external.X}}` only
/// what the identity provider said.
pub const EXTERNAL_PREFIX: &str = "external.";

/// May an admin set a trait of this name in Warden? Not one that would
/// pass for an identity-provider claim.
pub fn is_internal_trait(name: &str) -> bool {
    !name.is_empty() && !name.starts_with(EXTERNAL_PREFIX)
}

/// Claims as traits stored on a user: each under [`EXTERNAL_PREFIX`].
pub fn external_traits(claims: Traits) -> Traits {
    claims
        .into_iter()
        .map(|(k, v)| (format!("{EXTERNAL_PREFIX}{k}"), v))
        .collect()
}

/// Expands `value` against `traits`. A value without a template expands to
/// itself; a template whose trait is missing expands to nothing, so a role
/// never grants something because a trait was absent. `internal.X` reads
/// the trait `X` set in Warden, `external.X` the claim `X` (stored as
/// `external.X`); neither reads the other.
pub fn expand(value: &str, traits: &Traits) -> Result<Vec<String>, TemplateError> {
    let Some(start) = value.find("{{") else {
        if value.contains("}}") {
            return Err(TemplateError::Invalid(value.to_string()));
        }
        return Ok(vec![value.to_string()]);
    };
    let rest = &value[start + 2..];
    let end = rest
        .find("}}")
        .ok_or_else(|| TemplateError::Unterminated(value.to_string()))?;
    let (prefix, inner, suffix) = (&value[..start], rest[..end].trim(), &rest[end + 2..]);
    if suffix.contains("{{") || suffix.contains("}}") {
        return Err(TemplateError::Multiple(value.to_string()));
    }
    let (ns, name) = inner
        .split_once('.')
        .ok_or_else(|| TemplateError::Invalid(value.to_string()))?;
    if !matches!(ns, "internal" | "external")
        || name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'))
    {
        return Err(TemplateError::Invalid(value.to_string()));
    }
    let stored = match ns {
        "internal" if is_internal_trait(name) => name.to_string(),
        "internal" => return Ok(Vec::new()),
        _ => format!("{EXTERNAL_PREFIX}{name}"),
    };
    Ok(traits
        .get(&stored)
        .map(|vals| {
            vals.iter()
                .filter(|v| !v.is_empty())
                .map(|v| format!("{prefix}{v}{suffix}"))
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traits() -> Traits {
        let mut t = Traits::new();
        t.insert("logins".into(), vec!["alice".into(), "root".into()]);
        t.insert("external.team".into(), vec!["db".into()]);
        t
    }

    #[test]
    fn namespaces_do_not_read_each_other() {
        let mut t = Traits::new();
        t.insert("logins".into(), vec!["set-in-warden".into()]);
        t.insert("external.logins".into(), vec!["from-idp".into()]);
        assert_eq!(
            expand("{{internal.logins}}", &t).unwrap(),
            vec!["set-in-warden"]
        );
        assert_eq!(expand("{{external.logins}}", &t).unwrap(), vec!["from-idp"]);
        // A claim never passes for a Warden trait, nor the other way round.
        let idp_only = external_traits([("team".to_string(), vec!["db".to_string()])].into());
        assert!(expand("{{internal.team}}", &idp_only).unwrap().is_empty());
        assert_eq!(expand("{{external.team}}", &idp_only).unwrap(), vec!["db"]);
        let warden_only: Traits = [("team".to_string(), vec!["db".to_string()])].into();
        assert!(expand("{{external.team}}", &warden_only)
            .unwrap()
            .is_empty());
        assert!(expand("{{internal.external.team}}", &idp_only)
            .unwrap()
            .is_empty());
        assert!(!is_internal_trait("external.groups") && is_internal_trait("logins"));
    }

    #[test]
    fn literal_passes_through() {
        assert_eq!(expand("ubuntu", &traits()).unwrap(), vec!["ubuntu"]);
    }

    #[test]
    fn internal_and_external() {
        assert_eq!(
            expand("{{internal.logins}}", &traits()).unwrap(),
            vec!["alice", "root"]
        );
        assert_eq!(
            expand("svc-{{ external.team }}-rw", &traits()).unwrap(),
            vec!["svc-db-rw"]
        );
    }

    #[test]
    fn missing_trait_expands_to_nothing() {
        assert!(expand("{{external.groups}}", &traits()).unwrap().is_empty());
        assert!(expand("{{internal.logins}}", &Traits::new())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn malformed_templates_are_errors() {
        assert!(matches!(
            expand("{{internal.logins", &traits()),
            Err(TemplateError::Unterminated(_))
        ));
        assert!(matches!(
            expand("{{logins}}", &traits()),
            Err(TemplateError::Invalid(_))
        ));
        assert!(matches!(
            expand("{{secret.x}}", &traits()),
            Err(TemplateError::Invalid(_))
        ));
        assert!(matches!(
            expand("{{internal.a}}{{internal.b}}", &traits()),
            Err(TemplateError::Multiple(_))
        ));
        assert!(matches!(
            expand("x}}", &traits()),
            Err(TemplateError::Invalid(_))
        ));
    }
}
