//! Auto-approval rules for access requests: pure evaluation, so the auth
//! service only supplies the request, the requester and the clock.

use crate::labels::{compile, label_matches};
use crate::Traits;
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;
use warden_types::ApprovalRuleSpec;

/// Upper bound on a compiled reason regex.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A new access request as an approval rule sees it.
pub struct ApprovalInput<'a> {
    /// The requester's own roles (not those of other requests).
    pub requester_roles: &'a [String],
    pub traits: &'a Traits,
    /// Roles asked for (role request), or empty.
    pub roles: &'a [String],
    /// Labels of each node asked for (resource request), or empty.
    pub nodes: &'a [BTreeMap<String, String>],
    pub reason: &'a str,
    pub duration: Duration,
    pub now: OffsetDateTime,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Minutes since midnight of `HH:MM`.
fn minute_of(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

fn hours_range(hours: &str) -> Option<(u32, u32)> {
    let (a, b) = hours.split_once('-')?;
    let (a, b) = (minute_of(a)?, minute_of(b)?);
    (a < b).then_some((a, b))
}

fn reason_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// Problems with a rule, so it is refused before it is stored.
pub fn validate_approval_rule(rule: &ApprovalRuleSpec) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    if rule.roles.is_empty() && rule.node_labels.is_empty() {
        errs.push("a rule must name roles it approves, or node_labels of nodes it approves".into());
    }
    if rule.roles.iter().any(|r| r == "*") {
        errs.push("roles: list the roles; '*' is not allowed in an approval rule".into());
    }
    if !rule.reason.is_empty() {
        if let Err(e) = reason_regex(&rule.reason) {
            errs.push(format!("reason: invalid regex: {e}"));
        }
    }
    for (key, values) in &rule.node_labels {
        for v in &values.0 {
            if let Some(Err(e)) = compile(v) {
                errs.push(format!("node_labels.{key}: invalid regex {v:?}: {e}"));
            }
        }
    }
    if let Some(s) = &rule.schedule {
        for d in &s.days {
            if !DAYS.contains(&d.to_ascii_lowercase().as_str()) {
                errs.push(format!("schedule.days: {d:?} is not one of {DAYS:?}"));
            }
        }
        if !s.hours.is_empty() && hours_range(&s.hours).is_none() {
            errs.push(format!(
                "schedule.hours: {:?} is not HH:MM-HH:MM with start before end",
                s.hours
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// Does `rule` approve the request? `Err` says which condition failed.
pub fn rule_approves(rule: &ApprovalRuleSpec, r: &ApprovalInput) -> Result<(), String> {
    let who = &rule.requester;
    if !who.roles.is_empty() && !who.roles.iter().any(|x| r.requester_roles.contains(x)) {
        return Err(format!("requester has none of the roles {:?}", who.roles));
    }
    for (key, wanted) in &who.traits {
        let has = r.traits.get(key).map(Vec::as_slice).unwrap_or_default();
        if !wanted.iter().any(|w| has.contains(w)) {
            return Err(format!("requester's trait {key} is not one of {wanted:?}"));
        }
    }
    match (r.roles.is_empty(), r.nodes.is_empty()) {
        (false, true) => {
            if rule.roles.is_empty() {
                return Err("rule approves no role requests".into());
            }
            if let Some(missing) = r.roles.iter().find(|x| !rule.roles.contains(x)) {
                return Err(format!("role {missing} is not in the rule's roles"));
            }
        }
        (true, false) => {
            if rule.node_labels.is_empty() {
                return Err("rule approves no resource requests".into());
            }
            for labels in r.nodes {
                let (hit, why) = label_matches(&rule.node_labels, labels, r.traits);
                if !hit {
                    return Err(format!("a requested node does not match: {why}"));
                }
            }
        }
        _ => return Err("a request is for roles or for nodes".into()),
    }
    if !rule.reason.is_empty() {
        let re = reason_regex(&rule.reason).map_err(|e| format!("invalid reason regex: {e}"))?;
        if !re.is_match(r.reason) {
            return Err(format!("reason does not match {:?}", rule.reason));
        }
    }
    if let Some(max) = &rule.max_duration {
        if r.duration > max.0 {
            return Err(format!("asks for longer than {}", max));
        }
    }
    if let Some(s) = &rule.schedule {
        let now = r.now.to_offset(time::UtcOffset::UTC);
        let day = DAYS[now.weekday().number_days_from_monday() as usize];
        if !s.days.is_empty() && !s.days.iter().any(|d| d.eq_ignore_ascii_case(day)) {
            return Err(format!("not on {day} (UTC)"));
        }
        if !s.hours.is_empty() {
            let (from, to) =
                hours_range(&s.hours).ok_or_else(|| format!("invalid hours {:?}", s.hours))?;
            let minute = now.hour() as u32 * 60 + now.minute() as u32;
            if minute < from || minute >= to {
                return Err(format!("outside {} UTC", s.hours));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_types::{LabelValues, Requester, Schedule};

    fn rule() -> ApprovalRuleSpec {
        ApprovalRuleSpec {
            requester: Requester {
                roles: vec!["dev".into()],
                traits: [("team".to_string(), vec!["dba".to_string()])].into(),
            },
            roles: vec!["dba".into()],
            node_labels: [(
                "team".to_string(),
                LabelValues(vec!["{{internal.team}}".into()]),
            )]
            .into(),
            reason: "^INC-[0-9]+".into(),
            max_duration: Some(warden_types::duration::HumanDuration::from_secs(4 * 3600)),
            schedule: Some(Schedule {
                days: vec![
                    "mon".into(),
                    "tue".into(),
                    "wed".into(),
                    "thu".into(),
                    "fri".into(),
                ],
                hours: "09:00-17:00".into(),
            }),
        }
    }

    // 2026-11-18 was a Wednesday.
    fn at(h: u8) -> OffsetDateTime {
        time::macros::datetime!(2026-11-18 00:00 UTC)
            .replace_hour(h)
            .unwrap()
    }

    #[test]
    fn approves_only_when_every_condition_holds() {
        let r = rule();
        assert!(validate_approval_rule(&r).is_ok());
        let traits: Traits = [("team".to_string(), vec!["dba".to_string()])].into();
        let dev = vec!["dev".to_string()];
        let dba = vec!["dba".to_string()];
        let team_node: BTreeMap<String, String> = [("team".to_string(), "dba".to_string())].into();
        let other_node: BTreeMap<String, String> = [("team".to_string(), "web".to_string())].into();
        let base = ApprovalInput {
            requester_roles: &dev,
            traits: &traits,
            roles: &dba,
            nodes: &[],
            reason: "INC-1234 disk full",
            duration: Duration::from_secs(3600),
            now: at(10),
        };
        assert_eq!(rule_approves(&r, &base), Ok(()));
        let fails = |input: ApprovalInput| rule_approves(&r, &input).unwrap_err();
        assert!(fails(ApprovalInput {
            reason: "because",
            ..base_copy(&base)
        })
        .contains("reason"));
        assert!(fails(ApprovalInput {
            now: at(18),
            ..base_copy(&base)
        })
        .contains("outside"));
        let saturday = time::macros::datetime!(2026-11-21 10:00 UTC);
        assert!(fails(ApprovalInput {
            now: saturday,
            ..base_copy(&base)
        })
        .contains("sat"));
        assert!(fails(ApprovalInput {
            duration: Duration::from_secs(5 * 3600),
            ..base_copy(&base)
        })
        .contains("longer"));
        let other = vec!["editor".to_string()];
        assert!(fails(ApprovalInput {
            roles: &other,
            ..base_copy(&base)
        })
        .contains("editor"));
        let no_roles: Vec<String> = vec![];
        assert!(fails(ApprovalInput {
            requester_roles: &no_roles,
            ..base_copy(&base)
        })
        .contains("none of the roles"));
        let web: Traits = [("team".to_string(), vec!["web".to_string()])].into();
        assert!(fails(ApprovalInput {
            traits: &web,
            ..base_copy(&base)
        })
        .contains("trait team"));
        // Resource requests: nodes of the requester's own team only.
        let ok = [team_node.clone()];
        assert_eq!(
            rule_approves(
                &r,
                &ApprovalInput {
                    roles: &[],
                    nodes: &ok,
                    ..base_copy(&base)
                }
            ),
            Ok(())
        );
        let mixed = [team_node, other_node];
        assert!(fails(ApprovalInput {
            roles: &[],
            nodes: &mixed,
            ..base_copy(&base)
        })
        .contains("does not match"));
    }

    fn base_copy<'a>(b: &ApprovalInput<'a>) -> ApprovalInput<'a> {
        ApprovalInput {
            requester_roles: b.requester_roles,
            traits: b.traits,
            roles: b.roles,
            nodes: b.nodes,
            reason: b.reason,
            duration: b.duration,
            now: b.now,
        }
    }

    #[test]
    fn invalid_rules_are_refused() {
        let mut r = rule();
        r.reason = "(".into();
        r.schedule = Some(Schedule {
            days: vec!["funday".into()],
            hours: "17:00-09:00".into(),
        });
        let errs = validate_approval_rule(&r).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        let empty = ApprovalRuleSpec::default();
        assert!(validate_approval_rule(&empty).is_err());
    }
}
