//! `warden policy test DIR`: a role set checked against expected
//! decisions, offline, with the evaluator every node uses; for a CI job in
//! the repository that holds the roles.
//!
//! DIR holds `roles/` (role documents, as `roles apply` takes them) and
//! `tests/` (YAML lists of cases). The built-in roles are there unless
//! `roles/` redefines them.

use crate::admin::{load_roles, yaml_files};
use anyhow::{bail, Context};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use warden_types::{Document, RoleSpec};

/// Where the roles and the cases are.
#[derive(clap::Args)]
pub struct TestArgs {
    /// A directory with roles/ and tests/.
    dir: PathBuf,
}

/// One expected decision.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    user: CaseUser,
    #[serde(default)]
    node: CaseNode,
    login: String,
    expect: Expect,
    /// The role expected to decide (the denying one, or the first that
    /// allows).
    #[serde(default)]
    decided_by: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseUser {
    roles: Vec<String>,
    /// `logins` feeds `{{internal.logins}}`, as a user's logins do.
    #[serde(default)]
    traits: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseNode {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

/// What a run of the cases found.
pub struct Report {
    pub passed: usize,
    /// Names of the failed cases.
    pub failed: Vec<String>,
    /// The report as `warden policy test` prints it.
    pub lines: Vec<String>,
}

/// Runs the cases; `Ok(false)` when one failed (the report says which).
pub fn run(a: &TestArgs) -> anyhow::Result<bool> {
    let report = evaluate(&a.dir)?;
    for line in &report.lines {
        println!("{line}");
    }
    Ok(report.failed.is_empty())
}

/// Runs the cases in `dir/tests` against `dir/roles` and the built-ins.
pub fn evaluate(dir: &Path) -> anyhow::Result<Report> {
    let roles = roles(&dir.join("roles"))?;
    let tests = dir.join("tests");
    if !tests.is_dir() {
        bail!("{} has no tests/ directory of cases", dir.display());
    }
    let mut r = Report {
        passed: 0,
        failed: Vec::new(),
        lines: Vec::new(),
    };
    for file in yaml_files(&tests)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let cases: Vec<Case> = serde_norway::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        for case in cases {
            match check(&roles, &case) {
                Ok(()) => {
                    r.passed += 1;
                    r.lines.push(format!("ok    {}", case.name));
                }
                Err(report) => {
                    r.lines
                        .push(format!("FAIL  {} ({})", case.name, file.display()));
                    r.lines
                        .extend(report.into_iter().map(|l| format!("        {l}")));
                    r.failed.push(case.name);
                }
            }
        }
    }
    if r.passed + r.failed.len() == 0 {
        bail!("{} holds no cases", tests.display());
    }
    r.lines.push(format!(
        "{} passed, {} failed, against {} roles",
        r.passed,
        r.failed.len(),
        roles.len()
    ));
    Ok(r)
}

/// The built-in roles, with those of `dir` in their place or beside them.
fn roles(dir: &Path) -> anyhow::Result<BTreeMap<String, Document<RoleSpec>>> {
    let mut out: BTreeMap<String, Document<RoleSpec>> = warden_policy::defaults::roles()
        .into_iter()
        .map(|r| (r.name().to_string(), r))
        .collect();
    if dir.is_dir() {
        for role in load_roles(dir)? {
            out.insert(role.name().to_string(), role);
        }
    }
    Ok(out)
}

/// The case's decision as a node would make it; the lines to show when it
/// is not the expected one.
fn check(roles: &BTreeMap<String, Document<RoleSpec>>, case: &Case) -> Result<(), Vec<String>> {
    let mut held = Vec::new();
    for name in &case.user.roles {
        match roles.get(name) {
            Some(r) => held.push(r.clone()),
            None => return Err(vec![format!("no role {name:?} in roles/ or the built-ins")]),
        }
    }
    let d =
        warden_policy::check_node_access(&held, &case.user.traits, &case.login, &case.node.labels);
    let got = if d.allowed {
        Expect::Allow
    } else {
        Expect::Deny
    };
    let wrong_role = case
        .decided_by
        .as_ref()
        .is_some_and(|r| d.role.as_deref() != Some(r.as_str()));
    if got == case.expect && !wrong_role {
        return Ok(());
    }
    let mut report = vec![format!(
        "expected {}{}, got {:?}: {}",
        match case.expect {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
        },
        case.decided_by
            .as_ref()
            .map_or(String::new(), |r| format!(" by role {r}")),
        got,
        d.summary()
    )];
    report.extend(d.reasons);
    Err(report)
}
