//! `warden policy test`: the example RBAC repository passes as shipped;
//! a role change that breaks an expected decision fails the run (exit 1)
//! with the case, the decision and each role's reasons; bad input is an
//! error that names the file.

mod common;

use common::*;
use std::path::Path;

fn policy_test(dir: &Path) -> Out {
    run_program(
        WARDEN,
        &["policy".into(), "test".into(), dir.display().to_string()],
        None,
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

#[test]
fn the_example_repository_passes_and_a_breaking_change_fails() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policy");
    let readme = include_str!("../../../README.md");
    assert!(
        readme.contains("warden policy test examples/policy"),
        "README.md no longer shows the policy test"
    );
    let out = policy_test(&example).expect_ok();
    assert!(out.stdout.contains("5 passed, 0 failed"), "{}", out.all());

    // Someone drops the contractors' deny rule: production opens up.
    let dir = temp_dir("policy");
    copy_dir(&example, &dir);
    let contractor = dir.join("roles/contractor.yaml");
    let text = std::fs::read_to_string(&contractor).unwrap();
    let cut = text.find("  deny:").unwrap();
    std::fs::write(&contractor, &text[..cut]).unwrap();
    let out = policy_test(&dir);
    assert!(!out.ok, "{}", out.all());
    assert!(
        out.stdout
            .contains("FAIL  a contractor who is also a dba stays out of production")
            && out
                .stdout
                .contains("expected deny by role contractor, got Allow")
            && out.stdout.contains("role dba: allows login \"postgres\"")
            && out.stdout.contains("4 passed, 1 failed"),
        "{}",
        out.all()
    );

    // Cases naming a role nobody defined, or malformed, are errors.
    std::fs::write(
        dir.join("tests/more.yaml"),
        "- name: typo\n  user: {roles: [dbaa]}\n  login: x\n  expect: allow\n",
    )
    .unwrap();
    let out = policy_test(&dir);
    assert!(out.stdout.contains("no role \"dbaa\""), "{}", out.all());
    std::fs::write(dir.join("tests/more.yaml"), "- name: x\n  expect: maybe\n").unwrap();
    let out = policy_test(&dir).expect_err("more.yaml");
    assert!(out.stderr.contains("more.yaml"), "{}", out.all());
}

/// `apply --prune`: the directory becomes the whole truth for the kinds it
/// holds; the plan shows the deletions first, and the built-in roles stay.
#[test]
fn apply_prune_makes_the_directory_the_whole_truth() {
    assert!(
        include_str!("../../../README.md").contains("warden admin apply -f roles/ --prune"),
        "README.md no longer shows apply --prune"
    );
    let dir = temp_dir("prune");
    let c = Cluster::start(&dir);
    let repo = dir.join("roles");
    std::fs::create_dir_all(&repo).unwrap();
    for name in ["team-a", "team-b"] {
        std::fs::write(
            repo.join(format!("{name}.yaml")),
            format!("kind: role\nversion: v1\nmetadata:\n  name: {name}\nspec:\n  allow:\n    logins: [{name}]\n"),
        )
        .unwrap();
    }
    let repo = repo.to_str().unwrap();
    c.admin(&["apply", "-f", repo]).expect_ok();
    std::fs::remove_file(dir.join("roles/team-b.yaml")).unwrap();

    let plan = c
        .admin(&["apply", "-f", repo, "--prune", "--dry-run"])
        .expect_ok();
    assert!(
        plan.stdout.contains("- delete role team-b")
            && plan.stdout.contains("= role team-a unchanged")
            && !plan.stdout.contains("delete role access")
            && plan.stdout.contains("1 change(s) planned"),
        "{}",
        plan.all()
    );
    let roles = c.admin(&["roles", "ls"]).expect_ok().stdout;
    assert!(roles.contains("team-b"), "a dry run changes nothing");

    c.admin(&["apply", "-f", repo, "--prune"]).expect_ok();
    let roles = c.admin(&["roles", "ls"]).expect_ok().stdout;
    assert!(!roles.contains("team-b"), "{roles}");
    for kept in ["team-a", "access", "editor", "auditor"] {
        assert!(roles.contains(kept), "{kept} missing:\n{roles}");
    }
    // Without --prune, nothing is deleted.
    std::fs::remove_file(dir.join("roles/team-a.yaml")).unwrap();
    std::fs::write(
        dir.join("roles/team-c.yaml"),
        "kind: role\nversion: v1\nmetadata:\n  name: team-c\nspec: {}\n",
    )
    .unwrap();
    c.admin(&["apply", "-f", repo]).expect_ok();
    assert!(c
        .admin(&["roles", "ls"])
        .expect_ok()
        .stdout
        .contains("team-a"));
}
