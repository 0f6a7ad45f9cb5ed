//! `warden`: one binary for the cluster's services, its users and its
//! administrators.

mod access;
mod admin;
mod admin_config;
mod backup;
mod config_file;
mod datadir;
mod db;
mod handover;
mod mfa;
mod nodes;
mod output;
mod play;
mod policy_sync;
mod policy_test;
mod prompt;
mod requests;
mod sso;
mod start;
mod suggest;
mod user;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Warden: short-lived certificates and an identity-aware proxy for SSH.
///
/// Start a cluster on this machine:   warden start
/// Add a user (on the auth host):     warden admin users add alice --roles access --logins alice
/// Log in (anywhere):                 warden login --proxy HOST:3080 --user alice
#[derive(Parser)]
#[command(
    name = "warden",
    version,
    propagate_version = true,
    verbatim_doc_comment,
    arg_required_else_help = true
)]
struct Cli {
    /// Log verbosely to stderr (or set RUST_LOG).
    #[arg(long, global = true)]
    debug: bool,
    /// Log format: text for people, json (one object per line) for log
    /// shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "WARDEN_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run cluster services: auth, proxy and a node, on an embedded SQLite store.
    Start(start::StartArgs),
    /// Complete a signup: choose a password and enrol a TOTP authenticator.
    Signup(user::SignupArgs),
    /// Log in and receive short-lived SSH and X.509 certificates.
    Login(user::LoginArgs),
    /// Show the current login: user, roles, logins, expiry, cluster.
    Status(user::StatusArgs),
    /// Forget the current login and delete its keys.
    Logout,
    /// List the nodes you may access (filter with key=value labels).
    Ls(nodes::LsArgs),
    /// SSH to a node (LOGIN@NODE) with OpenSSH and your certificate.
    Ssh(nodes::SshArgs),
    /// Copy files to or from a node (LOGIN@NODE:PATH) with scp.
    Scp(nodes::ScpArgs),
    /// Open an SFTP session with a node (LOGIN@NODE).
    Sftp(nodes::SftpArgs),
    /// Just-in-time access: request roles, review requests.
    #[command(subcommand)]
    Request(requests::RequestCommand),
    /// Recorded sessions (auditors): ls.
    #[command(subcommand)]
    Recordings(play::RecordingsCommand),
    /// Replay a recorded session: in the terminal (space pauses, arrows
    /// seek, q quits), or as asciicast or plain text.
    Play(play::PlayArgs),
    /// Renew your certificate with the roles in force now (no password).
    Renew(requests::RenewArgs),
    /// Print an OpenSSH config block: then `ssh LOGIN@NODE.CLUSTER` works.
    Config(nodes::ConfigArgs),
    /// Databases through the proxy: ls, login, connect.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Local tunnels: `ssh` for OpenSSH's ProxyCommand, `db` for database
    /// tools.
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// Your MFA devices: enrol a security key (add), list (ls), remove (rm).
    #[command(subcommand)]
    Mfa(mfa::MfaCommand),
    /// Manage users, roles, tokens and the audit log.
    Admin(admin::AdminArgs),
    /// Policy as code: `test DIR` checks the roles in DIR/roles against
    /// the expected decisions in DIR/tests, offline (exit 1 on a failure);
    /// `sync REPO` keeps the cluster's roles equal to a git repository's.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print a shell completion script:
    /// `warden completion bash > /etc/bash_completion.d/warden`.
    Completion { shell: clap_complete::Shell },
    /// Write man pages (warden.1 and one per subcommand) into a directory.
    Man {
        /// Where to write them, e.g. /usr/share/man/man1.
        #[arg(long, default_value = ".")]
        out_dir: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run the cases in DIR/tests against the roles in DIR/roles (plus the
    /// built-in ones), without a cluster. Each case: `name`, `user: {roles,
    /// traits}`, `node: {labels}`, `login`, `expect: allow|deny`, and
    /// optionally `decided_by: ROLE`.
    Test(policy_test::TestArgs),
    /// Keep the cluster's roles equal to an RBAC repository's roles/: each
    /// round (--every) fetch the branch, run its tests/ and only if they
    /// pass apply roles/ with prune (built-in roles stay). A commit whose
    /// tests fail, or that cannot be applied, changes nothing; each is
    /// audited (policy.sync, policy.sync_failed) with its commit id, and
    /// /readyz on --diag-addr says why. Runs on an auth host with its
    /// local admin identity.
    Sync(policy_sync::SyncArgs),
}

#[derive(Subcommand)]
enum ProxyCommand {
    /// Connect stdin/stdout to a node through the proxy:
    /// ProxyCommand warden proxy ssh %r@%h:%p
    Ssh(nodes::ProxySshArgs),
    /// Serve a database on a loopback port for GUI tools and drivers
    /// (plain connections there; TLS with your certificate beyond).
    Db(db::DbProxyArgs),
}

/// The default data directory (ARCHITECTURE.md §1).
pub fn default_data_dir() -> PathBuf {
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/lib/warden");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("warden");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/share/warden")
}

/// Man pages generated from the same definitions as `--help`: `warden.1`
/// and `warden-SUBCOMMAND[-SUB].1` for every subcommand.
fn write_man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    let mut written = 0;
    let mut stack = vec![(String::from("warden"), cmd)];
    while let Some((name, cmd)) = stack.pop() {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            stack.push((format!("{name}-{}", sub.get_name()), sub.clone()));
        }
        let page = cmd
            .clone()
            .name(name.clone())
            .display_name(name.replace('-', " "));
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
        written += 1;
    }
    eprintln!("Wrote {written} man pages to {}.", dir.display());
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(debug: bool, format: LogFormat, default: &str) {
    let filter = if debug {
        tracing_subscriber::EnvFilter::new("debug")
    } else {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        // No colour codes in files and pipes (journald, log shippers).
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn main() -> ExitCode {
    // `warden ls | head` closes stdout early: leave quietly like other Unix
    // tools, without turning SIGPIPE back on (sockets must still get EPIPE).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let args = match config_file::merge(
        <Cli as clap::CommandFactory>::command(),
        std::env::args_os().collect(),
    ) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let from_file = args.len() > std::env::args_os().count();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            if from_file && e.use_stderr() {
                eprintln!(
                    "note: the settings of --config are given to 'warden start' as these flags"
                );
            }
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    if let Command::Start(a) = &cli.command {
        if a.print_config {
            return match config_file::effective(<Cli as clap::CommandFactory>::command(), &args) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    let is_start = matches!(cli.command, Command::Start(_));
    init_logging(
        cli.debug,
        cli.log_format,
        if is_start { "info" } else { "warn" },
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Start(a) => start::run(a).await,
            Command::Signup(a) => user::signup(a).await,
            Command::Login(a) => user::login(a).await,
            Command::Status(a) => user::status(a).await,
            Command::Logout => user::logout().await,
            Command::Ls(a) => nodes::ls(a).await,
            Command::Ssh(a) => nodes::ssh(a).await,
            Command::Scp(a) => nodes::scp(a).await,
            Command::Sftp(a) => nodes::sftp(a).await,
            Command::Config(a) => nodes::config(a).await,
            Command::Request(c) => requests::run(c).await,
            Command::Recordings(c) => play::recordings(c).await,
            Command::Play(a) => play::play(a).await,
            Command::Renew(_) => {
                let resp = requests::renew_certificates().await?;
                println!(
                    "Certificate renewed: roles {}; valid until {}.",
                    resp.identity.roles.join(", "),
                    output::time(resp.identity.expires)
                );
                Ok(())
            }
            Command::Proxy(ProxyCommand::Ssh(a)) => nodes::proxy_ssh(a).await,
            Command::Proxy(ProxyCommand::Db(a)) => db::proxy(a).await,
            Command::Db(c) => db::run(c).await,
            Command::Mfa(c) => mfa::run(c).await,
            Command::Admin(a) => admin::run(a).await,
            Command::Policy(PolicyCommand::Sync(a)) => policy_sync::run(a).await,
            Command::Policy(PolicyCommand::Test(t)) => match policy_test::run(&t) {
                Ok(true) => Ok(()),
                Ok(false) => std::process::exit(1),
                Err(e) => Err(e),
            },
            Command::Completion { shell } => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut cmd, "warden", &mut script);
                match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                    _ => Ok(()),
                }
            }
            Command::Man { out_dir } => write_man_pages(&out_dir),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Server and peer messages are untrusted text.
            eprintln!("error: {}", output::safe_lines(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
