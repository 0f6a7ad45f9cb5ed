//! `warden policy sync`: keeps the cluster's roles equal to an RBAC
//! repository (laid out as `warden policy test` takes it: `roles/` and
//! `tests/`), pulled with `git` or read from a plain directory.
//!
//! Each round: bring the branch up to date, run the repository's tests,
//! and only if they pass apply `roles/` with prune (roles the repository
//! no longer has are deleted; the built-in ones stay). A commit whose tests
//! fail, or that cannot be applied, leaves the cluster as it was. Every
//! new commit, and every round that changed something, is audited
//! (`policy.sync`, `policy.sync_failed`) with the commit id; `/readyz` on
//! `--diag-addr` says whether the cluster is in sync and, if not, why.

use crate::admin_config::Changes;
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use warden_types::api::PolicySyncReport;
use warden_types::duration::HumanDuration;
use warden_types::endpoints;

/// What to follow and how.
#[derive(clap::Args)]
pub struct SyncArgs {
    /// The RBAC repository: a git URL or path (cloned, then fetched each
    /// round with `git`), or a plain directory (read as it is).
    repo: String,
    /// The branch to follow (git only).
    #[arg(long, default_value = "main")]
    branch: String,
    /// The directory inside the repository that holds roles/ and tests/.
    #[arg(long, default_value = ".")]
    path: PathBuf,
    /// How often to look for a new commit (and undo changes made by hand).
    #[arg(long, default_value = "60s")]
    every: HumanDuration,
    /// One round, then exit: 0 when the cluster matches the repository,
    /// 1 when the commit was refused or could not be applied.
    #[arg(long)]
    once: bool,
    /// Serve /readyz (in sync, or why not) and /healthz here, e.g.
    /// 127.0.0.1:9101.
    #[arg(long, value_name = "ADDR")]
    diag_addr: Option<SocketAddr>,
    /// Where the clone lives [default: DATA_DIR/policy-sync].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Data dir of the auth service whose admin identity applies the roles
    /// (as for 'warden admin').
    #[arg(long, env = "WARDEN_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

/// Where the sync stands, for /readyz.
#[derive(Clone, Debug)]
enum Status {
    Starting,
    InSync {
        commit: String,
    },
    Behind {
        commit: String,
        why: String,
        good: Option<String>,
    },
}

/// What one round did.
enum Round {
    InSync,
    Behind,
}

/// What the service remembers between rounds (and across restarts: the
/// last commit applied is kept in the state dir).
struct Memory {
    state_dir: PathBuf,
    applied: Option<String>,
    /// The last failure audited, so a broken commit is reported once.
    reported: Option<(String, String)>,
}

impl Memory {
    fn load(state_dir: &Path) -> Self {
        Memory {
            state_dir: state_dir.to_path_buf(),
            applied: std::fs::read_to_string(state_dir.join("applied"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            reported: None,
        }
    }

    fn applied(&mut self, commit: &str) -> anyhow::Result<()> {
        warden_ca::keystore::write_private_file(
            &self.state_dir.join("applied"),
            commit.as_bytes(),
        )?;
        self.applied = Some(commit.to_string());
        self.reported = None;
        Ok(())
    }
}

pub async fn run(a: SyncArgs) -> anyhow::Result<()> {
    let data_dir = a.data_dir.clone().unwrap_or_else(crate::default_data_dir);
    let state_dir = a
        .state_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("policy-sync"));
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let status = Arc::new(Mutex::new(Status::Starting));
    if let Some(addr) = a.diag_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --diag-addr {addr}"))?;
        tokio::spawn(serve_status(listener, status.clone()));
    }
    let mut memory = Memory::load(&state_dir);
    loop {
        let round = round(&a, &state_dir, &mut memory).await;
        let now = match &round {
            Ok((Round::InSync, commit)) => Status::InSync {
                commit: commit.clone(),
            },
            Ok((Round::Behind, _)) | Err(_) => {
                let (commit, why) = match &round {
                    Ok((_, c)) => (
                        c.clone(),
                        memory.reported.clone().map(|r| r.1).unwrap_or_default(),
                    ),
                    Err(e) => (String::new(), format!("{e:#}")),
                };
                if let Err(e) = &round {
                    eprintln!("error: policy sync: {e:#}");
                }
                Status::Behind {
                    commit,
                    why,
                    good: memory.applied.clone(),
                }
            }
        };
        let in_sync = matches!(now, Status::InSync { .. });
        *status.lock().unwrap_or_else(|p| p.into_inner()) = now;
        if a.once {
            if in_sync {
                return Ok(());
            }
            std::process::exit(1);
        }
        tokio::time::sleep(a.every.0).await;
    }
}

/// One round: fetch, test, apply. Returns the commit looked at.
async fn round(a: &SyncArgs, state_dir: &Path, m: &mut Memory) -> anyhow::Result<(Round, String)> {
    let (commit, tree) = checkout(a, state_dir).await?;
    let dir = tree.join(&a.path);
    let short: String = commit.chars().take(12).collect();
    let report = |outcome: &str, changes: Changes, reason: String| PolicySyncReport {
        repo: a.repo.clone(),
        branch: a.branch.clone(),
        commit: commit.clone(),
        outcome: outcome.to_string(),
        created: changes.created,
        updated: changes.updated,
        deleted: changes.deleted,
        reason,
    };
    // The tests gate the apply (a repository without tests/ is refused:
    // an untested role set is what this service exists to prevent).
    let tested = crate::policy_test::evaluate(&dir);
    let failure = match &tested {
        Ok(r) if r.failed.is_empty() => None,
        Ok(r) => Some(format!(
            "{} of {} test case(s) failed: {}",
            r.failed.len(),
            r.failed.len() + r.passed,
            r.failed.join("; ")
        )),
        Err(e) => Some(format!("{e:#}")),
    };
    let admin = crate::admin::connect_local(a.data_dir.clone())?;
    if let Some(why) = failure {
        if let Ok(r) = &tested {
            for line in &r.lines {
                println!("{line}");
            }
        }
        eprintln!("policy sync: commit {short} refused: {why}");
        report_once(
            &admin.api,
            m,
            &commit,
            report("refused", Changes::default(), why),
        )
        .await;
        return Ok((Round::Behind, commit));
    }
    let roles = dir.join("roles");
    if !roles.is_dir() {
        let why = format!("{} has no roles/ directory", dir.display());
        report_once(
            &admin.api,
            m,
            &commit,
            report("failed", Changes::default(), why),
        )
        .await;
        return Ok((Round::Behind, commit));
    }
    match crate::admin_config::apply_pruning(
        &admin,
        &roles,
        Some(warden_types::resource::kind::ROLE),
        false,
        true,
    )
    .await
    {
        Ok(changes) => {
            let changed = !(changes.created.is_empty()
                && changes.updated.is_empty()
                && changes.deleted.is_empty());
            let new = m.applied.as_deref() != Some(commit.as_str());
            if changed || new {
                admin
                    .api
                    .call(
                        &endpoints::POLICY_SYNC,
                        &report("applied", changes, String::new()),
                    )
                    .await
                    .context("cannot audit the sync")?;
                println!("policy sync: {short} applied");
            }
            m.applied(&commit)?;
            Ok((Round::InSync, commit))
        }
        Err(e) => {
            let why = format!("{e:#}");
            eprintln!("policy sync: commit {short} not applied: {why}");
            report_once(
                &admin.api,
                m,
                &commit,
                report("failed", Changes::default(), why),
            )
            .await;
            Ok((Round::Behind, commit))
        }
    }
}

/// Audits a refused or failed commit once (the same failure every round
/// is not news); remembers it for /readyz.
async fn report_once(
    api: &warden_client::ApiClient,
    m: &mut Memory,
    commit: &str,
    r: PolicySyncReport,
) {
    let key = (commit.to_string(), r.reason.clone());
    if m.reported.as_ref() == Some(&key) {
        return;
    }
    if let Err(e) = api.call(&endpoints::POLICY_SYNC, &r).await {
        eprintln!("warning: cannot audit the failed sync: {e}");
    }
    m.reported = Some(key);
}

/// Brings the followed branch (or directory) up to date; returns its
/// commit id and where its files are.
async fn checkout(a: &SyncArgs, state_dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    let src = Path::new(&a.repo);
    let is_git = |p: &Path| {
        p.join(".git").exists() || (p.join("HEAD").is_file() && p.join("objects").is_dir())
    };
    if src.is_dir() && !is_git(src) {
        return Ok((format!("dir:{}", digest(src)?), src.to_path_buf()));
    }
    let tree = state_dir.join("checkout");
    if tree.join(".git").exists() {
        let origin = git(&tree, &["remote", "get-url", "origin"]).await?;
        if origin.trim() != a.repo {
            // Another repository than last time: start over.
            std::fs::remove_dir_all(&tree)?;
        }
    }
    if !tree.join(".git").exists() {
        let parent = tree.parent().unwrap_or(state_dir);
        git(
            parent,
            &[
                // Symbolic links check out as plain files holding their
                // target: a repository cannot make us read files of this
                // host (the admin identity, /dev/zero).
                "-c",
                "core.symlinks=false",
                "clone",
                "--quiet",
                "--no-tags",
                "--single-branch",
                "--branch",
                &a.branch,
                "--",
                &a.repo,
                &tree.display().to_string(),
            ],
        )
        .await
        .with_context(|| format!("cannot clone branch {} of {}", a.branch, a.repo))?;
    } else {
        git(
            &tree,
            &["fetch", "--quiet", "--no-tags", "origin", &a.branch],
        )
        .await
        .with_context(|| format!("cannot fetch branch {} of {}", a.branch, a.repo))?;
        git(
            &tree,
            &[
                "-c",
                "core.symlinks=false",
                "reset",
                "--quiet",
                "--hard",
                "FETCH_HEAD",
            ],
        )
        .await?;
        git(&tree, &["clean", "--quiet", "-fdx"]).await?;
    }
    let commit = git(&tree, &["rev-parse", "HEAD"]).await?;
    Ok((commit.trim().to_string(), tree))
}

/// How long one git command may take (a fetch from a stalled server).
const GIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs `git` in `dir`; its stdout, or an error with its stderr.
async fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.args(args)
        .current_dir(dir)
        // Never prompt: a service has no one to answer.
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if std::env::var_os("GIT_SSH_COMMAND").is_none() {
        cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    let out = tokio::time::timeout(GIT_TIMEOUT, cmd.output())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "git {} took longer than {}s",
                args.first().unwrap_or(&""),
                GIT_TIMEOUT.as_secs()
            )
        })?
        .context("cannot run git (is it installed and on PATH?)")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A digest of a directory's files (names and contents), as its "commit".
fn digest(dir: &Path) -> anyhow::Result<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let entry = entry?;
            // Links are not followed (a loop, or a file elsewhere).
            if entry.file_type()?.is_symlink() {
                continue;
            }
            let p = entry.path();
            if p.is_dir() {
                walk(root, &p, out)?;
            } else {
                let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
                out.push((rel, std::fs::read(&p)?));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (name, data) in files {
        ctx.update(name.as_bytes());
        ctx.update(&[0]);
        ctx.update(&(data.len() as u64).to_be_bytes());
        ctx.update(&data);
    }
    Ok(data_encoding::HEXLOWER.encode(&ctx.finish().as_ref()[..8]))
}

/// /readyz and /healthz for the sync service.
async fn serve_status(listener: tokio::net::TcpListener, status: Arc<Mutex<Status>>) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let now = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                async move {
                    match now {
                        Status::Starting => {
                            (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_string())
                        }
                        Status::InSync { commit } => {
                            (StatusCode::OK, format!("ready; in sync with {commit}\n"))
                        }
                        Status::Behind { commit, why, good } => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!(
                                "not in sync: {} {why}; the cluster keeps {}\n",
                                if commit.is_empty() {
                                    "the repository could not be read:".to_string()
                                } else {
                                    format!("commit {commit} was not applied:")
                                },
                                good.map_or("what it had".to_string(), |g| format!("commit {g}"))
                            ),
                        ),
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("error: the diagnostics server failed: {e}");
    }
}
