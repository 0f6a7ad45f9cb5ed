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
