//! `warden ls`, `ssh`, `scp`, `sftp`: the inventory, and OpenSSH's own
//! clients pointed at a node with the user's certificate and the cluster's
//! host CA (no trust on first use).

use crate::output::{self, Format};
use anyhow::{bail, Context};
use clap::Args;
use std::os::unix::process::CommandExt;
use std::process::Command;
use warden_client::{Profile, ProfileStore};
use warden_types::api::{
    MfaChallengeRequest, MfaChallengeResponse, MfaProof, MfaPurpose, MfaRequiredRequest,
    MfaRequiredResponse, MfaSessionRequest, MfaSessionResponse,
};
use warden_types::duration::relative;
use warden_types::endpoints;
use warden_types::{Document, NodeSpec};

#[derive(Args)]
pub struct LsArgs {
    /// Only nodes with these labels, e.g. env=prod team=db.
    selectors: Vec<String>,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Args)]
pub struct SshArgs {
    /// The login, when DESTINATION has none (as ssh -l).
    #[arg(short = 'l', value_name = "LOGIN")]
    login: Option<String>,
    /// The node's SSH port, as ssh -p (nodes reached by name need none).
    #[arg(short = 'p', value_name = "PORT")]
    port: Option<u16>,
    /// An OpenSSH option, as ssh -o (repeatable), e.g. -o ServerAliveInterval=30.
    #[arg(short = 'o', value_name = "OPTION")]
    options: Vec<String>,
    /// Local port forward, [bind:]port:host:hostport (repeatable).
    #[arg(short = 'L')]
    local: Vec<String>,
    /// Remote port forward (repeatable).
    #[arg(short = 'R')]
    remote: Vec<String>,
    /// Dynamic (SOCKS) port forward, [bind:]port (repeatable).
    #[arg(short = 'D')]
    dynamic: Vec<String>,
    /// Force a terminal.
    #[arg(short = 't')]
    tty: bool,
    /// No terminal.
    #[arg(short = 'T')]
    no_tty: bool,
    /// No command (forwarding only).
    #[arg(short = 'N')]
    no_command: bool,
    /// Forward your SSH agent.
    #[arg(short = 'A')]
    agent: bool,
    /// Forward X11.
    #[arg(short = 'X')]
    x11: bool,
    /// The current one-time code, when a role requires an MFA check per
    /// session (asked on the terminal otherwise).
    #[arg(long)]
    otp: Option<String>,
    /// [LOGIN@]NODE: a node name or id, or labels (env=prod,team=db) to run
    /// COMMAND on every matching node, each line of output prefixed with
    /// the node's name; the exit code is the worst. Without a login: -l,
    /// else your own user name if it is one of your logins, else your only
    /// login.
    destination: String,
    /// Command to run instead of a shell.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Args)]
pub struct ScpArgs {
    /// Copy directories recursively.
    #[arg(short = 'r')]
    recursive: bool,
    /// Keep times and modes.
    #[arg(short = 'p')]
    preserve: bool,
    /// The current one-time code, when a role requires an MFA check per
    /// session (asked on the terminal otherwise).
    #[arg(long)]
    otp: Option<String>,
    /// Sources and destination; remote ones as LOGIN@NODE:PATH.
    #[arg(required = true, num_args = 2..)]
    paths: Vec<String>,
}

#[derive(Args)]
pub struct SftpArgs {
    /// Batch file of sftp commands ('-' for stdin).
    #[arg(short = 'b')]
    batch: Option<String>,
    /// The current one-time code, when a role requires an MFA check per
    /// session (asked on the terminal otherwise).
    #[arg(long)]
    otp: Option<String>,
    /// LOGIN@NODE.
    destination: String,
}

pub(crate) fn profile() -> anyhow::Result<(ProfileStore, Profile)> {
    let store = ProfileStore::new(ProfileStore::default_home()?);
    let Some(p) = store.current()? else {
        bail!("not logged in; run 'warden login --proxy HOST:3080 --user NAME'");
    };
    Ok((store, p))
}

/// Seconds after issuance past which a command first refreshes the
/// certificate, so roles granted since login apply without a new login.
const REFRESH_AFTER: i64 = 30;

/// Refreshes the certificate (same key, same end, current roles) when it
/// is half a minute old. Best effort: a failure leaves it as it is.
async fn refresh_roles(store: &ProfileStore, p: &Profile) {
    let due = || {
        let Ok(text) = std::fs::read_to_string(store.ssh_cert_path(p)) else {
            return false;
        };
        let Ok(cert) = ssh_key::Certificate::from_openssh(text.trim()) else {
            return false;
        };
        let now = output::now();
        // valid_after is set a minute before issuance.
        now - cert.valid_after() as i64 - 60 >= REFRESH_AFTER && (cert.valid_before() as i64) > now
    };
    if !due() {
        return;
    }
    // Parallel commands renew one at a time; the later ones find the
    // certificate fresh and leave it.
    let Ok(_lock) = crate::requests::RenewLock::take(store, p) else {
        return;
    };
    if !due() {
        return;
    }
    if let Err(e) = crate::requests::renew_locked(store, p).await {
        tracing::debug!(error = %format!("{e:#}"), "certificate refresh failed");
    }
}

async fn inventory(store: &ProfileStore, p: &Profile) -> anyhow::Result<Vec<Document<NodeSpec>>> {
    refresh_roles(store, p).await;
    Ok(warden_client::login::auth_client(store, p)?
        .call(&endpoints::NODES, &())
        .await?)
}

fn online(n: &Document<NodeSpec>) -> bool {
    n.spec.online(output::now())
}

/// Label selectors (`env=prod`), for `ls` and label targets.
struct Selectors(Vec<(String, String)>);

impl Selectors {
    fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> anyhow::Result<Self> {
        let mut want = Vec::new();
        for s in items {
            let Some((k, v)) = s.split_once('=') else {
                bail!("invalid selector {s:?}: use key=value, e.g. env=prod");
            };
            want.push((k.to_string(), v.to_string()));
        }
        Ok(Selectors(want))
    }

    fn matches(&self, n: &Document<NodeSpec>) -> bool {
        self.0
            .iter()
            .all(|(k, v)| n.metadata.labels.get(k) == Some(v))
    }
}

pub async fn ls(a: LsArgs) -> anyhow::Result<()> {
    let (store, p) = profile()?;
    let want = Selectors::parse(a.selectors.iter().map(String::as_str))?;
    let mut nodes = inventory(&store, &p).await?;
    nodes.retain(|n| want.matches(n));
    print_nodes(nodes, a.format)
}

/// Prints an inventory as a table or JSON.
pub fn print_nodes(mut nodes: Vec<Document<NodeSpec>>, format: Format) -> anyhow::Result<()> {
    nodes.sort_by(|a, b| a.spec.hostname.cmp(&b.spec.hostname));
    match format {
        Format::Json => println!("{}", output::json(&nodes)?),
        Format::Text => println!(
            "{}",
            output::table(
                &["node", "id", "address", "labels", "status"],
                nodes
                    .iter()
                    .map(|n| vec![
                        n.spec.hostname.clone(),
                        n.name().to_string(),
                        // A node with no address listens nowhere: it is
                        // reached through its reverse tunnel.
                        n.spec
                            .addrs
                            .first()
                            .cloned()
                            .unwrap_or_else(|| "(tunnel)".into()),
                        n.metadata
                            .labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                        if online(n) {
                            "online".to_string()
                        } else {
                            format!(
                                "offline (seen {})",
                                relative(n.spec.heartbeat - output::now())
                            )
                        },
                    ])
                    .collect()
            )
        ),
    }
    Ok(())
}

/// A node to connect to (through the proxy, by id).
struct Target {
    node_id: String,
    /// The node's name, for what OpenSSH prints ("Connection to db-1
    /// closed."); the ProxyCommand and the host key check use the id.
    name: String,
}

impl Target {
    /// `LOGIN@NAME`: OpenSSH names the node as the user did.
    fn destination(&self, login: &str) -> [String; 1] {
        [format!("{login}@{}", self.name)]
    }
}

async fn resolve(store: &ProfileStore, p: &Profile, node: &str) -> anyhow::Result<Target> {
    let nodes = inventory(store, p).await?;
    let matches: Vec<&Document<NodeSpec>> = nodes
        .iter()
        .filter(|n| n.name() == node || n.spec.hostname == node)
        .collect();
    // A name left behind by a node that was replaced: the live one wins.
    let live: Vec<&Document<NodeSpec>> = matches.iter().copied().filter(|n| online(n)).collect();
    let matches = if live.len() == 1 { live } else { matches };
    let n = match matches.as_slice() {
        [] => {
            bail!("no node {node:?} that you may access; 'warden ls' lists the ones you can reach")
        }
        [one] => *one,
        many => bail!(
            "{} nodes are named {node:?}; use an id: {}",
            many.len(),
            many.iter().map(|n| n.name()).collect::<Vec<_>>().join(", ")
        ),
    };
    if !online(n) {
        bail!(
            "node {} is offline since {} (last heartbeat {}); 'warden ls' shows which nodes are online",
            output::safe(&n.spec.hostname),
            output::time(n.spec.heartbeat),
            relative(n.spec.heartbeat - output::now())
        );
    }
    // A name OpenSSH could read as something else (or that has a block
    // of its own in ~/.ssh/config, fine either way) stays the id.
    let name = if n
        .spec
        .hostname
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !n.spec.hostname.is_empty()
    {
        n.spec.hostname.clone()
    } else {
        n.name().to_string()
    };
    Ok(Target {
        node_id: n.name().to_string(),
        name,
    })
}

/// OpenSSH options that use the profile's key and certificate and trust
/// only the cluster's host CA, for node `node_id`.
fn openssh_options(
    store: &ProfileStore,
    p: &Profile,
    node_id: &str,
) -> anyhow::Result<Vec<String>> {
    let cert = store.ssh_cert_path(p);
    let text = std::fs::read_to_string(&cert)
        .with_context(|| format!("cannot read {}; run 'warden login'", cert.display()))?;
    let parsed = ssh_key::Certificate::from_openssh(text.trim()).with_context(|| {
        format!(
            "{} is not a certificate; run 'warden login'",
            cert.display()
        )
    })?;
    let left = parsed.valid_before() as i64 - output::now();
    if left <= 0 {
        bail!("certificate expired {}; run 'warden login'", relative(left));
    }
    let opt = |k: &str, v: String| vec!["-o".to_string(), format!("{k}={v}")];
    let mut o = Vec::new();
    o.extend(opt("CertificateFile", cert.display().to_string()));
    o.extend(vec![
        "-i".to_string(),
        store.private_key_path(p).display().to_string(),
    ]);
    o.extend(opt("IdentitiesOnly", "yes".into()));
    o.extend(opt(
        "UserKnownHostsFile",
        store.known_hosts_path(p).display().to_string(),
    ));
    o.extend(opt("GlobalKnownHostsFile", "/dev/null".into()));
    o.extend(opt("StrictHostKeyChecking", "yes".into()));
    // The host certificate must name this node's id.
    o.extend(opt("HostKeyAlias", node_id.to_string()));
    o.extend(opt("PasswordAuthentication", "no".into()));
    o.extend(opt("KbdInteractiveAuthentication", "no".into()));
    // The node by id, whatever name OpenSSH shows. OpenSSH runs the
    // ProxyCommand through a shell: only plain ids go into it.
    if node_id.is_empty()
        || !node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        bail!("the cluster named a node {node_id:?}, which is not a valid node id");
    }
    o.extend(opt(
        "ProxyCommand",
        format!("{} proxy ssh --node-id {node_id} %r@%h:%p", self_exe()?),
    ));
    Ok(o)
}

/// This binary, for ProxyCommand lines.
fn self_exe() -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find the warden binary")?;
    let s = exe.display().to_string();
    Ok(if s.contains(' ') {
        format!("\"{s}\"")
    } else {
        s
    })
}

fn split_destination(dest: &str) -> anyhow::Result<(&str, &str)> {
    dest.split_once('@')
        .filter(|(l, n)| !l.is_empty() && !n.is_empty())
        .with_context(|| format!("{dest:?}: use LOGIN@NODE, e.g. root@db-1"))
}

fn exec(program: &str, args: Vec<String>) -> anyhow::Result<()> {
    let err = Command::new(program).args(&args).exec();
    if err.kind() == std::io::ErrorKind::NotFound {
        bail!("{program} not found: install the OpenSSH client (Debian: apt-get install openssh-client)");
    }
    Err(err).with_context(|| format!("cannot run {program}"))
}

/// [`openssh_options`] for a session on `node_id`, with a per-session MFA
/// certificate in place of the login one when a role asks for it.
async fn session_options(
    store: &ProfileStore,
    p: &Profile,
    node_id: &str,
    otp: Option<String>,
) -> anyhow::Result<Vec<String>> {
    let mut args = openssh_options(store, p, node_id)?;
    if let Some(cert) = session_mfa_cert(store, p, node_id, otp).await? {
        let i = args
            .iter()
            .position(|o| o.starts_with("CertificateFile="))
            .context("no CertificateFile option")?;
        args[i] = format!("CertificateFile={}", cert.display());
    }
    Ok(args)
}

pub async fn ssh(a: SshArgs) -> anyhow::Result<()> {
    let (store, p) = profile()?;
    let (login, node) = match a.destination.split_once('@') {
        Some((l, n)) if !l.is_empty() && !n.is_empty() => (l.to_string(), n.to_string()),
        Some(_) => bail!("{:?}: use [LOGIN@]NODE, e.g. root@db-1", a.destination),
        None => (
            default_login(&store, &p, a.login.as_deref())?,
            a.destination.clone(),
        ),
    };
    let mut opts = Vec::new();
    for o in &a.options {
        opts.extend(["-o".to_string(), o.clone()]);
    }
    if let Some(port) = a.port {
        opts.extend(["-p".to_string(), port.to_string()]);
    }
    for (flag, values) in [("-L", &a.local), ("-R", &a.remote), ("-D", &a.dynamic)] {
        for v in values {
            opts.extend([flag.to_string(), v.clone()]);
        }
    }
    for (on, flag) in [
        (a.tty, "-t"),
        (a.no_tty, "-T"),
        (a.no_command, "-N"),
        (a.agent, "-A"),
        (a.x11, "-X"),
    ] {
        if on {
            opts.push(flag.to_string());
        }
    }
    if node.contains('=') {
        return ssh_many(&store, &p, &login, &node, opts, a.command, a.otp).await;
    }
    let t = resolve(&store, &p, &node).await?;
    let mut args = session_options(&store, &p, &t.node_id, a.otp).await?;
    args.extend(opts);
    args.extend(t.destination(&login));
    if !a.command.is_empty() {
        args.push("--".to_string());
        args.extend(a.command);
    }
    exec("ssh", args)
}

/// The login for a destination without one: `-l`, else the local user name
/// if the certificate allows it (as ssh does), else the only login.
fn default_login(store: &ProfileStore, p: &Profile, flag: Option<&str>) -> anyhow::Result<String> {
    if let Some(l) = flag {
        return Ok(l.to_string());
    }
    let text = std::fs::read_to_string(store.ssh_cert_path(p))
        .context("cannot read your certificate; run 'warden login'")?;
    let cert = ssh_key::Certificate::from_openssh(text.trim())
        .context("your certificate is unreadable; run 'warden login'")?;
    let logins = crate::user::cert_logins(&cert);
    let me = std::env::var("USER").unwrap_or_default();
    if logins.contains(&me) {
        return Ok(me);
    }
    match logins.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("your certificate allows no login; ask an admin for one"),
        many => bail!(
            "which login? pass LOGIN@NODE or -l LOGIN (yours: {})",
            many.join(", ")
        ),
    }
}

/// At most this many nodes run a command at once.
const PARALLEL_NODES: usize = 16;

/// `warden ssh root@env=prod -- uptime`: the command on every online node
/// you may access whose labels match, output prefixed with the node's name;
/// the exit code is the worst (255 when ssh itself failed).
async fn ssh_many(
    store: &ProfileStore,
    p: &Profile,
    login: &str,
    selectors: &str,
    opts: Vec<String>,
    command: Vec<String>,
    otp: Option<String>,
) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    if command.is_empty() {
        bail!("a label target runs a command on every matching node: warden ssh {login}@{selectors} -- COMMAND");
    }
    let want = Selectors::parse(selectors.split(','))?;
    let mut nodes: Vec<Document<NodeSpec>> = inventory(store, p)
        .await?
        .into_iter()
        .filter(|n| online(n) && want.matches(n))
        .collect();
    nodes.sort_by(|a, b| a.spec.hostname.cmp(&b.spec.hostname));
    if nodes.is_empty() {
        bail!(
            "no online node you may access has the labels {selectors}; 'warden ls {}' lists them",
            selectors.replace(',', " ")
        );
    }
    let width = nodes
        .iter()
        .map(|n| n.spec.hostname.len())
        .max()
        .unwrap_or(0);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(PARALLEL_NODES));
    let mut tasks = Vec::new();
    for n in &nodes {
        let mut args = session_options(store, p, n.name(), otp.clone()).await?;
        args.extend(opts.iter().cloned());
        args.extend(["-o".into(), "BatchMode=yes".into(), "-T".into()]);
        args.push(format!("{login}@{}", n.name()));
        args.push("--".into());
        args.extend(command.iter().cloned());
        let name = format!("{:width$}", output::safe(&n.spec.hostname));
        let slots = slots.clone();
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await;
            let child = tokio::process::Command::new("ssh")
                .args(&args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("[{name}] cannot run ssh: {e}");
                    return 255;
                }
            };
            let prefix = |stream: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>,
                          err: bool| {
                let name = name.clone();
                async move {
                    let Some(stream) = stream else { return };
                    // Bytes, not UTF-8 lines: any output goes through.
                    let mut reader = tokio::io::BufReader::new(stream);
                    let mut line = Vec::new();
                    while matches!(reader.read_until(b'\n', &mut line).await, Ok(n) if n > 0) {
                        let text = String::from_utf8_lossy(&line);
                        let text = text.trim_end_matches(['\n', '\r']);
                        if err {
                            eprintln!("[{name}] {text}");
                        } else {
                            println!("[{name}] {text}");
                        }
                        line.clear();
                    }
                }
            };
            let out = child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
            let err = child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
            tokio::join!(prefix(out, false), prefix(err, true));
            match child.wait().await {
                Ok(s) => s.code().unwrap_or(255),
                Err(_) => 255,
            }
        }));
    }
    let mut worst = 0;
    for t in tasks {
        worst = worst.max(t.await.unwrap_or(255));
    }
    if worst != 0 {
        std::process::exit(worst);
    }
    Ok(())
}

/// When a role requires an MFA check per session: asks for a one-time code
/// and gets a one-minute certificate good for `node_id` only; returns its
/// path (the login certificate is used otherwise).
async fn session_mfa_cert(
    store: &ProfileStore,
    p: &Profile,
    node_id: &str,
    otp: Option<String>,
) -> anyhow::Result<Option<std::path::PathBuf>> {
    let api = warden_client::login::auth_client(store, p)?;
    let need: MfaRequiredResponse = api
        .call(
            &endpoints::MFA_REQUIRED,
            &MfaRequiredRequest {
                node: node_id.to_string(),
            },
        )
        .await?;
    if !need.required {
        return Ok(None);
    }
    let proof = match otp {
        Some(code) => MfaProof::otp(code),
        None => {
            eprintln!(
                "Role {} requires an MFA check for this session.",
                need.roles.join(", ")
            );
            let challenge: MfaChallengeResponse = api
                .call(
                    &endpoints::MFA_CHALLENGE,
                    &MfaChallengeRequest {
                        purpose: MfaPurpose::Session,
                    },
                )
                .await?;
            crate::mfa::prove(&challenge, &p.proxy, None).await?
        }
    };
    let key = store.private_key_path(p);
    let public = std::fs::read_to_string(format!("{}.pub", key.display()))
        .context("cannot read your public key; run 'warden login'")?;
    let resp: MfaSessionResponse = api
        .call(
            &endpoints::MFA_SESSION,
            &MfaSessionRequest {
                node: node_id.to_string(),
                ssh_public_key: public.trim().to_string(),
                proof,
            },
        )
        .await?;
    let path = store
        .ssh_cert_path(p)
        .with_file_name(format!("{}-mfa-{node_id}-cert.pub", p.user));
    std::fs::write(&path, format!("{}\n", resp.ssh_cert.trim()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(path))
}

pub async fn scp(a: ScpArgs) -> anyhow::Result<()> {
    let (store, p) = profile()?;
    let mut target: Option<Target> = None;
    let mut paths = Vec::new();
    for path in &a.paths {
        let remote = path
            .split_once(':')
            .filter(|(dest, _)| dest.contains('@') && !dest.contains('/'));
        let Some((dest, file)) = remote else {
            paths.push(path.clone());
            continue;
        };
        let (login, node) = split_destination(dest)?;
        let t = resolve(&store, &p, node).await?;
        if let Some(prev) = &target {
            if prev.node_id != t.node_id {
                bail!("copy between two nodes is not supported; copy through this machine");
            }
        }
        paths.push(format!("{login}@{}:{file}", t.node_id));
        target = Some(t);
    }
    let Some(t) = target else {
        bail!("no remote path: name one as LOGIN@NODE:PATH");
    };
    let mut args = session_options(&store, &p, &t.node_id, a.otp).await?;
    if a.recursive {
        args.push("-r".into());
    }
    if a.preserve {
        args.push("-p".into());
    }
    args.extend(paths);
    exec("scp", args)
}

pub async fn sftp(a: SftpArgs) -> anyhow::Result<()> {
    let (store, p) = profile()?;
    let (login, node) = split_destination(&a.destination)?;
    let t = resolve(&store, &p, node).await?;
    let mut args = session_options(&store, &p, &t.node_id, a.otp).await?;
    if let Some(b) = a.batch {
        args.extend(["-b".to_string(), b]);
    }
    args.extend(t.destination(login));
    exec("sftp", args)
}

#[derive(Args)]
pub struct ProxySshArgs {
    /// Profile directory (default: $WARDEN_HOME, else ~/.warden).
    #[arg(long, value_name = "DIR")]
    home: Option<std::path::PathBuf>,
    /// The node's id, overriding HOST (warden ssh passes it, so that
    /// OpenSSH can show the node's name).
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// LOGIN@HOST:PORT, as OpenSSH's %r@%h:%p; HOST is a node name, id, or
    /// NAME.CLUSTER.
    target: String,
}

/// `warden proxy ssh`: a ProxyCommand. Connects stdin/stdout to a node
/// through the proxy's SSH jump host (OpenSSH's own `-W`), with the user's
/// certificate, trusting only the cluster's host CA.
pub async fn proxy_ssh(a: ProxySshArgs) -> anyhow::Result<()> {
    let (store, p) = match &a.home {
        Some(home) => {
            let store = ProfileStore::new(home.clone());
            let Some(p) = store.current()? else {
                bail!(
                    "not logged in (profile {}); run 'warden login'",
                    home.display()
                );
            };
            (store, p)
        }
        None => profile()?,
    };
    let target = a
        .target
        .rsplit_once('@')
        .map(|(_, t)| t)
        .unwrap_or(&a.target);
    let (host, port) = target
        .rsplit_once(':')
        .with_context(|| format!("{:?}: expected LOGIN@HOST:PORT (%r@%h:%p)", a.target))?;
    let suffix = format!(".{}", p.cluster);
    let host = match &a.node_id {
        Some(id) => id.as_str(),
        None => host.strip_suffix(&suffix).unwrap_or(host),
    };
    // The profile's proxy, or the first other proxy of the cluster that
    // answers when it does not.
    let mut p = p;
    p.proxy = reachable_proxy(&p).await;
    let mut args = jump_options(&store, &p)?;
    args.extend(["-W".to_string(), format!("{host}:{port}")]);
    args.push(proxy_destination(&p));
    exec("ssh", args)
}

/// The first of the profile's proxies that accepts a connection, the
/// profile's own first: a dead proxy costs one refused connect.
async fn reachable_proxy(p: &Profile) -> String {
    if p.fallbacks.is_empty() {
        return p.proxy.clone();
    }
    for addr in std::iter::once(&p.proxy).chain(&p.fallbacks) {
        let connect = tokio::net::TcpStream::connect(addr.as_str());
        if let Ok(Ok(_)) = tokio::time::timeout(std::time::Duration::from_secs(2), connect).await {
            return addr.clone();
        }
        tracing::debug!(proxy = %addr, "proxy does not answer; trying the next");
    }
    p.proxy.clone()
}

/// OpenSSH options for the jump host itself.
fn jump_options(store: &ProfileStore, p: &Profile) -> anyhow::Result<Vec<String>> {
    let mut o = openssh_options(store, p, "proxy")?;
    // Drop the node's HostKeyAlias and our own ProxyCommand.
    let mut out = Vec::new();
    let mut i = 0;
    while i < o.len() {
        if o[i] == "-o"
            && (o[i + 1].starts_with("HostKeyAlias=") || o[i + 1].starts_with("ProxyCommand="))
        {
            i += 2;
            continue;
        }
        out.push(std::mem::take(&mut o[i]));
        i += 1;
    }
    let (_, port) = p
        .proxy
        .rsplit_once(':')
        .with_context(|| format!("proxy address {:?} has no port", p.proxy))?;
    out.extend([
        "-p".to_string(),
        port.to_string(),
        "-l".to_string(),
        p.user.clone(),
    ]);
    Ok(out)
}

fn proxy_destination(p: &Profile) -> String {
    warden_client::http::host_of(&p.proxy).to_string()
}

#[derive(Args)]
pub struct ConfigArgs {}

/// `warden config`: an OpenSSH config block so plain ssh, scp, sftp and
/// rsync reach nodes as NAME.CLUSTER through the proxy.
pub async fn config(_a: ConfigArgs) -> anyhow::Result<()> {
    let (store, p) = profile()?;
    let q = |path: std::path::PathBuf| format!("\"{}\"", path.display());
    println!(
        "# Warden cluster {} through proxy {} (user {})",
        p.cluster, p.proxy, p.user
    );
    println!("# Generated by 'warden config'; re-run after 'warden login' to another proxy.");
    println!("Host *.{}", p.cluster);
    println!("    UserKnownHostsFile {}", q(store.known_hosts_path(&p)));
    println!("    GlobalKnownHostsFile /dev/null");
    println!("    StrictHostKeyChecking yes");
    println!("    IdentityFile {}", q(store.private_key_path(&p)));
    println!("    CertificateFile {}", q(store.ssh_cert_path(&p)));
    println!("    IdentitiesOnly yes");
    println!("    PasswordAuthentication no");
    // Name the profile directory when it is not the default one, since
    // ssh runs the ProxyCommand with its own environment.
    let home = match std::env::var_os("WARDEN_HOME") {
        Some(_) => format!(" --home {}", q(store.home().to_path_buf())),
        None => String::new(),
    };
    println!("    ProxyCommand {} proxy ssh{home} %r@%h:%p", self_exe()?);
    // The proxy itself, so `ssh -J USER@PROXY` verifies it and presents
    // the certificate too. Host patterns cannot name a port, and a bare
    // `Host 127.0.0.1` would take over every other ssh to that address.
    let host = proxy_destination(&p);
    let port = p.proxy.rsplit_once(':').map_or("3080", |(_, port)| port);
    println!();
    println!("Match host {host} exec \"test %p = {port}\"");
    println!("    UserKnownHostsFile {}", q(store.known_hosts_path(&p)));
    println!("    GlobalKnownHostsFile /dev/null");
    println!("    StrictHostKeyChecking yes");
    println!("    IdentityFile {}", q(store.private_key_path(&p)));
    println!("    CertificateFile {}", q(store.ssh_cert_path(&p)));
    println!("    IdentitiesOnly yes");
    Ok(())
}
