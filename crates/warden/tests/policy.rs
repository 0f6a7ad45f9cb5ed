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
    assert!(out.stdout.contains("9 passed, 0 failed"), "{}", out.all());

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
            && out.stdout.contains("8 passed, 1 failed"),
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

/// A user made with extra traits (`users add --traits`), signed up.
fn add_user_with_traits(c: &Cluster, name: &str, roles: &str, traits: &[&str]) -> String {
    let extra: Vec<&str> = traits.iter().flat_map(|t| ["--traits", t]).collect();
    c.add_user_with(name, roles, "root", &extra)
}

/// `where` conditions in a cluster: auth refuses a role whose condition
/// does not compile and says where; the node lets a user in only where
/// the condition holds (the node's team label among the user's teams),
/// for `warden ssh` and stock ssh alike; `access check` explains both.
#[test]
fn where_conditions_decide_logins_on_the_node() {
    let dir = temp_dir("where");
    let c = Cluster::start_with(
        &dir,
        &["--name", "search-1", "--labels", "env=staging,team=search"],
    );
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "kind: role\nversion: v1\nmetadata:\n  name: bad\nspec:\n  allow:\n    logins: [root]\n    where: 'contains(user.traits.teams)'\n",
    )
    .unwrap();
    c.admin(&["roles", "apply", "-f", bad.to_str().unwrap()])
        .expect_err("allow.where: at 0: contains takes two arguments");
    let role =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policy/roles/team-access.yaml");
    c.admin(&["roles", "apply", "-f", role.to_str().unwrap()])
        .expect_ok();
    let tess = add_user_with_traits(&c, "tess", "team-access", &["teams=web", "teams=search"]);
    let walt = add_user_with_traits(&c, "walt", "team-access", &["teams=web"]);
    c.login("tess", "tess", &totp(&tess, 30)).expect_ok();
    c.login("walt", "walt", &totp(&walt, 30)).expect_ok();
    c.wait_reachable("tess", "root", "search-1");
    c.ssh("tess", "tess", "root", &[], "true", None).expect_ok();
    c.ssh("walt", "walt", "root", &[], "true", None)
        .expect_err("access to this node as root denied");
    let out = c.run_as("walt", &["ssh", "root@search-1", "--", "true"], None);
    assert!(!out.ok, "{}", out.all());

    let check = |user: &str| {
        c.admin(&[
            "access", "check", "--user", user, "--node", "search-1", "--login", "root",
        ])
    };
    let out = check("tess").expect_ok();
    assert!(
        out.stdout.contains("allowed by role team-access") && out.stdout.contains("holds"),
        "{}",
        out.all()
    );
    let out = check("walt");
    assert!(
        !out.ok && out.stdout.contains("does not hold") && out.stdout.contains("where"),
        "{}",
        out.all()
    );
}

/// Runs `git` in `dir` (a test identity for commits).
fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit_all(repo: &Path, message: &str) -> String {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

/// `warden policy sync` keeps the cluster's roles equal to a git
/// repository: a commit whose tests pass is applied with prune (a role
/// made by hand goes, the built-ins stay); one whose tests fail changes
/// nothing, is audited with its commit id, and /readyz says why until a
/// fixed commit lands, which the running service then applies by itself.
#[test]
fn policy_sync_follows_a_git_repository() {
    let readme = include_str!("../../../README.md");
    assert!(
        readme.contains("warden policy sync https://git.example.com/infra/rbac.git"),
        "README.md no longer shows the policy sync"
    );
    let dir = temp_dir("sync");
    let c = Cluster::start(&dir);
    let data = dir.join("data");
    let repo = dir.join("rbac");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policy"),
        &repo,
    );
    let first = commit_all(&repo, "roles");
    // A role made by hand, which the repository does not have.
    let stale = dir.join("stale.yaml");
    std::fs::write(
        &stale,
        "kind: role\nversion: v1\nmetadata:\n  name: stale\nspec:\n  allow:\n    logins: [root]\n",
    )
    .unwrap();
    c.admin(&["roles", "apply", "-f", stale.to_str().unwrap()])
        .expect_ok();
    let sync = |extra: &[&str]| {
        let mut args: Vec<String> = ["policy", "sync", repo.to_str().unwrap(), "--data-dir"]
            .map(String::from)
            .to_vec();
        args.push(data.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let roles = || -> Vec<String> {
        let out = c.admin(&["roles", "ls", "--format", "json"]).expect_ok();
        let v: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
        v.iter()
            .map(|r| r["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    run_program(WARDEN, &sync(&["--once"]), None).expect_ok();
    let names = roles();
    for want in [
        "dba",
        "contractor",
        "team-access",
        "access",
        "editor",
        "auditor",
    ] {
        assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
    }
    assert!(!names.iter().any(|n| n == "stale"), "pruned: {names:?}");
    let applied = c
        .events()
        .into_iter()
        .find(|e| e["type"] == "policy.sync")
        .expect("the sync is audited");
    assert_eq!(applied["fields"]["commit"], first.as_str());
    assert!(
        applied["fields"]["deleted"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "role stale"),
        "{applied}"
    );

    // A commit that breaks a tested decision is refused: nothing changes.
    let contractor = repo.join("roles/contractor.yaml");
    let good = std::fs::read_to_string(&contractor).unwrap();
    std::fs::write(&contractor, &good[..good.find("  deny:").unwrap()]).unwrap();
    let bad = commit_all(&repo, "open production to contractors");
    let out = run_program(WARDEN, &sync(&["--once"]), None);
    assert!(
        !out.ok && out.stderr.contains("refused") && out.stderr.contains("test case(s) failed"),
        "{}",
        out.all()
    );
    let role = c.admin(&["roles", "get", "contractor"]).expect_ok().stdout;
    assert!(
        role.contains("deny"),
        "the cluster kept the last good role:\n{role}"
    );
    let refused = c
        .events()
        .into_iter()
        .find(|e| e["type"] == "policy.sync_failed")
        .expect("the refusal is audited");
    assert_eq!(refused["fields"]["commit"], bad.as_str());
    assert_eq!(refused["fields"]["outcome"], "refused");

    // As a service: /readyz says why it is behind, then a fixed commit
    // lands and is applied by itself.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut service = std::process::Command::new(WARDEN)
        .args(sync(&[
            "--every",
            "1s",
            "--diag-addr",
            &format!("127.0.0.1:{port}"),
        ]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = |want: &str| {
        for _ in 0..100 {
            let got = std::net::TcpStream::connect(("127.0.0.1", port))
                .map(|_| http_get(port, "/readyz"))
                .unwrap_or_default();
            if got.contains(want) {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!("/readyz never said {want:?}");
    };
    let behind = ready("not in sync");
    assert!(
        behind.contains("503")
            && behind.contains(&bad)
            && behind.contains("a contractor who is also a dba stays out of production")
            && behind.contains(&first),
        "{behind}"
    );
    std::fs::write(&contractor, &good).unwrap();
    std::fs::write(
        repo.join("roles/ops.yaml"),
        "kind: role\nversion: v1\nmetadata:\n  name: ops\nspec:\n  allow:\n    logins: [ops]\n    node_labels: {'*': '*'}\n",
    )
    .unwrap();
    let fixed = commit_all(&repo, "fix, and an ops role");
    let in_sync = ready("in sync with");
    assert!(in_sync.contains(&fixed), "{in_sync}");
    assert!(roles().iter().any(|n| n == "ops"));
    let _ = service.kill();
    let _ = service.wait();
}

/// `warden admin access suggest` over a real audit log: the grants a role
/// gave that no session used are named, and the narrower role it prints
/// applies as is and still lets the user in; for a user, the roles that
/// went unused and the command that takes them away.
#[test]
fn access_suggest_learns_least_privilege_from_the_audit_log() {
    let dir = temp_dir("suggest");
    let c = Cluster::start_with(&dir, &["--name", "box", "--labels", "env=staging,team=db"]);
    let roles = dir.join("roles.yaml");
    std::fs::write(
        &roles,
        "kind: role\nversion: v1\nmetadata:\n  name: deploy\nspec:\n  allow:\n    logins: [root, ubuntu]\n    node_labels:\n      env: '*'\n      team: [db, web]\n---\nkind: role\nversion: v1\nmetadata:\n  name: prod-only\nspec:\n  allow:\n    logins: [root]\n    node_labels:\n      env: prod\n",
    )
    .unwrap();
    c.admin(&["roles", "apply", "-f", roles.to_str().unwrap()])
        .expect_ok();
    let dana = c.add_user("dana", "deploy,prod-only", "root");
    c.login("dana", "dana", &totp(&dana, 30)).expect_ok();
    c.wait_reachable("dana", "root", "box");
    c.ssh("dana", "dana", "root", &[], "true", None).expect_ok();

    let suggest = |args: &[&str]| {
        let mut full = vec!["access", "suggest"];
        full.extend_from_slice(args);
        c.admin(&full).expect_ok().stdout
    };
    let mut out = String::new();
    for _ in 0..50 {
        out = suggest(&["--role", "deploy", "--since", "1h"]);
        if out.contains("role deploy: 2 session(s)") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        out.contains("role deploy: 2 session(s) by 1 user(s) on 1 node(s)")
            && out.contains("unused logins: ubuntu")
            && out.contains("unused node labels: team: web")
            && out.contains("narrowed: env: * -> [staging]"),
        "{out}"
    );
    // The output is YAML: the narrower role, applied as printed.
    let proposed = dir.join("deploy.yaml");
    std::fs::write(&proposed, &out).unwrap();
    c.admin(&["roles", "apply", "-f", proposed.to_str().unwrap()])
        .expect_ok();
    let role = c.admin(&["roles", "get", "deploy"]).expect_ok().stdout;
    assert!(
        !role.contains("ubuntu") && !role.contains("web") && role.contains("staging"),
        "{role}"
    );
    c.ssh("dana", "dana", "root", &[], "true", None).expect_ok();

    let out = suggest(&["--user", "dana", "--since", "1h"]);
    assert!(
        out.contains("Unused: prod-only")
            && out.contains("warden admin users update dana --roles deploy"),
        "{out}"
    );
}

/// A role in audit mode: its deny rules let the login through and the
/// node records `access.would_deny` with the reason; enforced, the same
/// rules refuse.
#[test]
fn audit_mode_records_what_a_narrowing_would_refuse() {
    let dir = temp_dir("audit-mode");
    let c = Cluster::start_with(&dir, &["--name", "box", "--labels", "env=staging"]);
    let role = |mode: &str| {
        let file = dir.join(format!("watch-{mode}.yaml"));
        std::fs::write(
            &file,
            format!(
                "kind: role\nversion: v1\nmetadata:\n  name: no-staging\nspec:\n  options:\n    mode: {mode}\n  deny:\n    node_labels:\n      env: staging\n"
            ),
        )
        .unwrap();
        c.admin(&["roles", "apply", "-f", file.to_str().unwrap()])
            .expect_ok();
    };
    role("audit");
    let sam = c.add_user("sam", "access,no-staging", "root");
    c.login("sam", "sam", &totp(&sam, 30)).expect_ok();
    c.wait_reachable("sam", "root", "box");
    c.ssh("sam", "sam", "root", &[], "true", None).expect_ok();
    let mut seen = None;
    for _ in 0..50 {
        seen = c
            .events()
            .into_iter()
            .find(|e| e["type"] == "access.would_deny");
        if seen.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let ev = seen.expect("access.would_deny recorded");
    assert_eq!(ev["user"], "sam");
    assert_eq!(ev["login"], "root");
    assert!(
        ev["fields"]["explanation"][0]
            .as_str()
            .unwrap()
            .contains("role no-staging (audit mode) would deny: deny rule"),
        "{ev}"
    );
    // Enforced: refused (once the node has the new policy).
    role("enforce");
    let mut refused = false;
    for _ in 0..50 {
        if !c.ssh("sam", "sam", "root", &[], "true", None).ok {
            refused = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(refused, "the enforced role refuses");
}

/// `access check --request-roles`: whether a user (or a hypothetical
/// one) may request roles just in time, which role says so (a deny wins),
/// and the terms a request would get.
#[test]
fn access_check_explains_requests() {
    let dir = temp_dir("check-requests");
    let c = Cluster::start(&dir);
    let roles = dir.join("roles.yaml");
    std::fs::write(
        &roles,
        "kind: role\nversion: v1\nmetadata:\n  name: dev\nspec:\n  allow:\n    request:\n      roles: [dba, ops]\n      approvals: 2\n      max_duration: 2h\n---\nkind: role\nversion: v1\nmetadata:\n  name: no-ops\nspec:\n  deny:\n    request:\n      roles: [ops]\n---\nkind: role\nversion: v1\nmetadata:\n  name: dba\nspec:\n  allow:\n    logins: [postgres]\n---\nkind: role\nversion: v1\nmetadata:\n  name: ops\nspec:\n  allow:\n    logins: [root]\n",
    )
    .unwrap();
    c.admin(&["roles", "apply", "-f", roles.to_str().unwrap()])
        .expect_ok();
    c.add_user("dora", "dev,no-ops", "dora");
    let check = |args: &[&str]| {
        let mut full = vec!["access", "check"];
        full.extend_from_slice(args);
        c.admin(&full)
    };
    let out = check(&["--user", "dora", "--request-roles", "dba"]).expect_ok();
    assert!(
        out.stdout
            .contains("allowed: dora may request dba: allowed by role dev")
            && out.stdout.contains("2 approval(s) and grant at most 2h"),
        "{}",
        out.all()
    );
    let out = check(&["--user", "dora", "--request-roles", "dba,ops"]);
    assert!(
        !out.ok && out.stdout.contains("denied by role no-ops"),
        "{}",
        out.all()
    );
    let out = check(&["--roles", "dev", "--request-roles", "ops"]).expect_ok();
    assert!(out.stdout.contains("may request ops"), "{}", out.all());
    check(&["--roles", "dev", "--request-roles", "nope"]).expect_err("no role \"nope\"");
    check(&["--user", "dora"]).expect_err("--node");
}
