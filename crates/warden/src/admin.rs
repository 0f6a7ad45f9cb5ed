//! `warden admin`: users, roles, tokens and the audit log, over the auth
//! API. On the auth host it uses the admin identity in the data dir; else
//! the caller's own login.

use crate::output::{self, Format};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use warden_client::tls::ClientCert;
use warden_client::{ApiClient, ProfileStore};
use warden_types::api::*;
use warden_types::duration::{relative, HumanDuration};
use warden_types::endpoints;
use warden_types::resource::kind;
use warden_types::{Document, RoleSpec, TokenKind, UserSpec};

#[derive(Args)]
pub struct AdminArgs {
    /// Data dir of the auth service whose admin identity to use (default:
    /// the one the last 'warden start' of this OS user recorded in
    /// ~/.local/state/warden/data-dir, else the default data dir).
    #[arg(long, env = "WARDEN_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Act as your own login ('warden login'), even on the auth host.
    #[arg(long, global = true)]
    as_me: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
pub enum AdminDbCommand {
    /// Write a key (made here), its certificate from the database CA and
    /// the CA's certificates into a directory: server.key, server.crt and
    /// ca.crt, for PostgreSQL's ssl_key_file, ssl_cert_file and
    /// ssl_ca_file.
    Cert {
        /// DNS names and addresses the database is reached at
        /// (comma-separated): the host of each --db URI that names it.
        #[arg(long = "host", value_delimiter = ',', required = true)]
        hosts: Vec<String>,
        /// Where to write the files (created 0700).
        #[arg(long)]
        out_dir: PathBuf,
        /// The certificate's lifetime.
        #[arg(long, default_value = "90d")]
        ttl: HumanDuration,
    },
    /// The database CA.
    #[command(subcommand)]
    Ca(AdminDbCaCommand),
}

#[derive(Subcommand)]
pub enum AdminDbCaCommand {
    /// Print the database CA's certificates (PEM): what a database trusts
    /// in client certificates (PostgreSQL's ssl_ca_file).
    Export,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Users: add (with a signup token), ls, update, rm, unlock, reset.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Roles as YAML documents: apply, ls, get, rm.
    #[command(subcommand)]
    Roles(RolesCommand),
    /// Join tokens: add, ls, rm.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The node inventory.
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// The cluster's certificate authorities.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Database access: `cert` writes a database's server certificate from
    /// the database CA; `ca export` prints what databases trust.
    #[command(subcommand)]
    Db(AdminDbCommand),
    /// Lock a user, role, node or login: refuses new access at once and ends
    /// live sessions within seconds.
    Lock {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        role: Option<String>,
        /// Node name or id.
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        login: Option<String>,
        /// An access request id: ends what it granted.
        #[arg(long)]
        request: Option<String>,
        /// Shown to the people it blocks, and audited.
        #[arg(long, required = true)]
        reason: String,
        /// Lift the lock after this long (default: until removed).
        #[arg(long)]
        ttl: Option<HumanDuration>,
    },
    /// Locks in force: ls, rm.
    #[command(subcommand)]
    Locks(LocksCommand),
    /// Explain access decisions: `check` whether a user, or a
    /// hypothetical one, gets in, and which role's rule decided.
    #[command(subcommand)]
    Access(AccessCommand),
    /// Create or update documents from YAML (a file or a directory) of
    /// any kind: role, user, lock, oidc, approval_rule, webhook
    /// (`secret_file: PATH` keeps a secret out of the file). Prints the
    /// plan first: + create, ~ update (with the changed lines), = unchanged.
    #[command(visible_alias = "create")]
    Apply {
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// Show the plan without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Also delete documents of the kinds in FILE that it no longer
        /// has, so the directory is the whole truth (shown in the plan as
        /// `- delete`; the built-in roles and cluster_config are kept).
        #[arg(long)]
        prune: bool,
    },
    /// Identity provider connectors (kind: oidc) for single sign-on:
    /// apply, ls, rm.
    #[command(subcommand)]
    Connectors(ConnectorsCommand),
    /// Print documents as YAML that `create -f` takes back: `get KIND
    /// [NAME]`, KIND one of user, role, token, lock, node, oidc,
    /// approval_rule, webhook, cluster_config (ids may be shortened;
    /// secrets are never shown).
    Get {
        kind: String,
        name: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Delete a document: `rm KIND NAME` (any kind of `get`; a node is
    /// taken out of the inventory).
    Rm { kind: String, name: String },
    /// Back up the cluster state to one YAML file: CA keys (through the
    /// key-encryption key), configuration, connectors and every document,
    /// the secrets encrypted to a passphrase. Recordings and the audit log
    /// live in their own stores; back those up there.
    Backup {
        #[arg(short = 'o', long)]
        output: PathBuf,
        #[command(flatten)]
        passphrase: crate::backup::Passphrase,
    },
    /// Restore a backup into an empty backend, before any auth server
    /// starts on it (runs without one). Writes the key-encryption key,
    /// every document, and an audit event marking the restore.
    Restore(crate::backup::RestoreArgs),
    /// Write an OpenSSH KRL revoking the certificates of locked users (and
    /// of the users of locked roles), for plain sshd's RevokedKeys.
    Krl {
        /// Write here instead of stdout.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum LocksCommand {
    /// List locks in force.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove a lock by id.
    Rm { id: String },
}

#[derive(Subcommand)]
enum AccessCommand {
    /// May this user log in as LOGIN on NODE (or request roles just in
    /// time, with --request-roles)? Prints the decision, the role that
    /// made it and each role's verdict, as the node (or auth) would decide
    /// it now (approved requests and locks included); for a request, the
    /// approvals it would need and its longest duration. For someone who
    /// does not exist yet, give --roles (and --traits) instead of --user.
    /// Exits 1 when access is denied.
    Check {
        #[arg(long, required_unless_present = "roles", conflicts_with = "roles")]
        user: Option<String>,
        /// A hypothetical user's roles (comma-separated).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// A hypothetical user's trait, KEY=VALUE (repeatable; a key given
        /// twice has both values).
        #[arg(long = "traits", value_name = "KEY=VALUE", requires = "roles")]
        traits: Vec<String>,
        /// Node name or id.
        #[arg(long, required_unless_present = "request_roles", requires = "login")]
        node: Option<String>,
        #[arg(long, requires = "node")]
        login: Option<String>,
        /// Roles to request just in time (comma-separated), instead of a
        /// node login.
        #[arg(long, value_delimiter = ',', conflicts_with = "node")]
        request_roles: Vec<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// What a role (or a user's roles) was used for: the SSH sessions of
    /// the audit log against what it allows. With --role, prints the
    /// unused logins and node labels as comments, then the narrower role
    /// as YAML (every session seen is still allowed), ready for review and
    /// 'roles apply -f'. With --user, which of their roles went unused.
    Suggest {
        #[arg(long, required_unless_present = "user", conflicts_with = "user")]
        role: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// How far back to look.
        #[arg(long, default_value = "30d")]
        since: HumanDuration,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Every CA key: which CA, where it is held (software, sealed by the
    /// key-encryption key; or pkcs11, in an HSM), its fingerprint, and
    /// whether it signs or is only trusted.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Rotate a CA without dropping anyone: init (a new key is trusted
    /// everywhere; nodes and proxies renew at once), switch (the new key
    /// signs; nodes and proxies get certificates from it), drop (the old
    /// key is forgotten: what it signed is refused). Each CA paces itself:
    /// user switches once every node and proxy trusts the new key and
    /// drops after the grace period; host switches after the grace period
    /// (users pick up the new host CA at their next login) and drops once
    /// nodes and proxies hold new host certificates; tls waits the grace
    /// period on both sides (users pick up the new CA at their next login,
    /// then their old certificates run out). With --phase, move it by
    /// hand: init, switch, drop, or rollback (before the drop).
    Rotate {
        #[arg(long = "type", value_parser = ["user", "host", "tls", "db"])]
        kind: String,
        /// The grace period (see above); make it the longest certificate
        /// lifetime users get [default: the cluster's default session TTL].
        #[arg(long, conflicts_with = "phase")]
        grace: Option<HumanDuration>,
        #[arg(long, value_parser = ["init", "switch", "drop", "rollback"])]
        phase: Option<String>,
        /// With --type tls --phase switch|drop: go ahead although some
        /// node or proxy has not confirmed the previous step (it will no
        /// longer reach auth and must join again).
        #[arg(long, requires = "phase")]
        force: bool,
    },
    /// Print a CA's public keys: `user` for sshd's TrustedUserCAKeys,
    /// `host` for a known_hosts @cert-authority line, `tls` and `db` (what
    /// databases trust: PostgreSQL's ssl_ca_file) as PEM.
    Export {
        #[arg(long = "type", value_parser = ["user", "host", "tls", "db"])]
        kind: String,
    },
}

#[derive(Subcommand)]
enum NodesCommand {
    /// List every node, online or not.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create a user and print the signup command to give them.
    Add {
        name: String,
        /// Roles, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// Unix logins (the `logins` trait), comma-separated.
        #[arg(long, value_delimiter = ',')]
        logins: Vec<String>,
        /// Other traits, for role templates and `where` conditions
        /// (repeatable; a key given twice gets both values), e.g.
        /// --traits teams=web --traits teams=search.
        #[arg(long = "traits", value_name = "KEY=VALUE")]
        traits: Vec<String>,
        /// How long the signup token stays valid.
        #[arg(long, default_value = "1h")]
        token_ttl: HumanDuration,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List users.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Change a user's roles or logins (replaces the lists given).
    Update {
        name: String,
        #[arg(long, value_delimiter = ',')]
        roles: Option<Vec<String>>,
        #[arg(long, value_delimiter = ',')]
        logins: Option<Vec<String>>,
    },
    /// Delete a user, their credentials and pending signup tokens.
    Rm { name: String },
    /// Clear a lockout after failed logins.
    Unlock { name: String },
    /// Forget a user's password and TOTP; print a new signup command.
    Reset {
        name: String,
        #[arg(long, default_value = "1h")]
        token_ttl: HumanDuration,
    },
}

#[derive(Subcommand)]
enum RolesCommand {
    /// Create or update roles from YAML (a file with one or more documents,
    /// or a directory of .yaml files). Idempotent; prints what changed.
    Apply {
        #[arg(short = 'f', long = "file", required = true)]
        file: PathBuf,
        /// Show the plan without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// List roles.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Print a role as YAML (or JSON).
    Get {
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Delete a role that no user has.
    Rm { name: String },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Create a join token for a node or proxy.
    Add {
        #[arg(long = "type", value_parser = ["node", "proxy"])]
        kind: String,
        #[arg(long, default_value = "1h")]
        ttl: HumanDuration,
        /// Node: a host name or IP the node may have in its host
        /// certificate (repeat or comma-separate). Without it, the
        /// certificate names only the node's id and name.
        #[arg(long = "addr", value_delimiter = ',')]
        addrs: Vec<String>,
        /// Node: it may take the name of a node that is online now.
        #[arg(long)]
        replace: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List pending tokens (never their secrets).
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Delete a token by id.
    Rm { id: String },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Search events, newest first (by event time; events a node delivered
    /// late sit at the time they happened).
    Search {
        /// Event type, e.g. user.login.
        #[arg(long = "type")]
        event_type: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// Only events newer than this, e.g. 24h or 7d.
        #[arg(long)]
        since: Option<HumanDuration>,
        /// Node name or id (a name covers every node admitted under it).
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        session: Option<String>,
        /// At most this many events (up to 10000); the newest are shown.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Every event as JSON lines, oldest first, for a SIEM shipper; with
    /// --follow, keeps streaming new events as they are written.
    Export {
        #[arg(long)]
        follow: bool,
        /// Start after this event index (resume where a shipper stopped).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Output format (JSON lines).
        #[arg(long, value_enum, default_value_t)]
        format: ExportFormat,
    },
    /// Check the hash chain and the signed chain head: prints OK, or names
    /// the first altered, removed or reordered event (and exits 1).
    Verify,
}

/// An API client and what to print in instructions for users.
pub(crate) struct Admin {
    pub(crate) api: ApiClient,
    proxy: Option<String>,
    ca_pin: String,
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// CA keys as a table (or JSON).
/// `--traits KEY=VALUE` flags as a trait map (a key given twice gets
/// both values).
fn parse_traits(items: &[String]) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in items {
        let Some((k, v)) = t.split_once('=') else {
            bail!("--traits {t:?}: expected KEY=VALUE");
        };
        map.entry(k.to_string()).or_default().push(v.to_string());
    }
    Ok(map)
}

fn print_ca_keys(keys: &[CaKeyInfo], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", output::json(&keys)?),
        Format::Text => println!(
            "{}",
            output::table(
                &[
                    "ca",
                    "store",
                    "key",
                    "state",
                    "rotation",
                    "fingerprint",
                    "created",
                    "location"
                ],
                keys.iter()
                    .map(|k| vec![
                        k.ca.clone(),
                        k.store.clone(),
                        k.alg.clone(),
                        k.state.clone(),
                        k.rotation.clone(),
                        k.fingerprint.clone(),
                        output::time(k.created),
                        k.location.clone(),
                    ])
                    .collect()
            )
        ),
    }
    if format == Format::Text {
        // What users pass to 'warden login --ca-pin' (both, mid-rotation).
        for k in keys.iter().filter(|k| !k.pin.is_empty()) {
            println!("tls CA pin ({}): {}", k.state, k.pin);
        }
    }
    Ok(())
}

/// The admin identity's key and certificate. Auth replaces each file
/// atomically, but not the two as a set (after a CA rotation step): a read
/// in between pairs a new key with the old certificate, so read again.
fn read_identity(dir: &Path) -> anyhow::Result<(warden_ca::ClientKey, String)> {
    let mut tries = 0;
    loop {
        let key = warden_ca::ClientKey::from_openssh(&read(&dir.join("identity"))?)?;
        let cert_pem = read(&dir.join("identity.crt"))?;
        let paired = warden_ca::tls::pem_to_der(&cert_pem)
            .ok()
            .and_then(|d| warden_ca::tls::public_key_raw(d.first()?).ok())
            .is_some_and(|p| p[..] == key.public_raw()[..]);
        if paired || tries == 10 {
            return Ok((key, cert_pem));
        }
        tries += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The local admin identity of the auth service in `data_dir` (as
/// 'warden admin' finds it).
pub(crate) fn connect_local(data_dir: Option<PathBuf>) -> anyhow::Result<Admin> {
    connect(data_dir, false)
}

fn connect(data_dir: Option<PathBuf>, use_login: bool) -> anyhow::Result<Admin> {
    if use_login {
        return connect_as_login();
    }
    let explicit = data_dir.is_some();
    // The flag, else the data dir the running cluster recorded, else the
    // default one.
    let dir = data_dir
        .or_else(|| {
            crate::datadir::recorded()
                .filter(|d| d.join(warden_auth::ADMIN_DIR).join("config.json").exists())
        })
        .unwrap_or_else(crate::default_data_dir)
        .join(warden_auth::ADMIN_DIR);
    let config_path = dir.join("config.json");
    if config_path.exists() {
        let config: AdminConfig =
            serde_json::from_str(&read(&config_path)?).with_context(|| {
                format!(
                    "{} is corrupt; restart 'warden start'",
                    config_path.display()
                )
            })?;
        let (key, cert_pem) = read_identity(&dir)?;
        let cert = ClientCert {
            cert_pem,
            key_pkcs8: key.pkcs8_der().to_vec(),
        };
        let api = warden_client::login::direct_auth_client(
            &config.auth_addr,
            vec![read(&dir.join("ca.pem"))?],
            &cert,
        )?;
        return Ok(Admin {
            api,
            proxy: config.proxy_addr,
            ca_pin: config.ca_pin,
        });
    }
    if explicit {
        bail!(
            "no admin identity in {}: is this the data dir of a running 'warden start'?",
            dir.display()
        );
    }
    connect_as_login().map_err(|e| {
        anyhow::anyhow!(
            "{e:#}; no admin identity in {} either (on the auth host, pass --data-dir)",
            dir.display()
        )
    })
}

fn connect_as_login() -> anyhow::Result<Admin> {
    let store = ProfileStore::new(ProfileStore::default_home()?);
    let Some(profile) = store.current()? else {
        bail!("not logged in; run 'warden login' first");
    };
    Ok(Admin {
        api: warden_client::login::auth_client(&store, &profile)?,
        proxy: Some(profile.proxy.clone()),
        ca_pin: profile.ca_pin.clone(),
    })
}

pub async fn run(a: AdminArgs) -> anyhow::Result<()> {
    if let AdminCommand::Restore(r) = &a.command {
        let dir = a.data_dir.clone().unwrap_or_else(crate::default_data_dir);
        return crate::backup::restore(&dir, r).await;
    }
    let admin = connect(a.data_dir, a.as_me)?;
    match a.command {
        AdminCommand::Users(c) => users(&admin, c).await,
        AdminCommand::Backup { output, passphrase } => {
            crate::backup::backup(&admin, &output, &passphrase).await
        }
        AdminCommand::Restore(_) => unreachable!("handled before connecting"),
        AdminCommand::Roles(c) => roles(&admin, c).await,
        AdminCommand::Tokens(c) => tokens(&admin, c).await,
        AdminCommand::Audit(c) => audit(&admin, c).await,
        AdminCommand::Apply {
            file,
            dry_run,
            prune,
        } => crate::admin_config::apply_pruning(&admin, &file, None, dry_run, prune)
            .await
            .map(|_| ()),
        AdminCommand::Connectors(c) => connectors(&admin, c).await,
        AdminCommand::Get { kind, name, format } => {
            crate::admin_config::get(&admin.api, &kind, name.as_deref(), format).await
        }
        AdminCommand::Rm { kind, name } => crate::admin_config::rm(&admin.api, &kind, &name).await,
        AdminCommand::Lock {
            user,
            role,
            node,
            login,
            request,
            reason,
            ttl,
        } => {
            let target = warden_types::LockTarget {
                user,
                role,
                node,
                login,
                request,
            };
            let lock: Document<warden_types::LockSpec> = admin
                .api
                .call(
                    &endpoints::CREATE_LOCK,
                    &CreateLockRequest {
                        target: target.clone(),
                        reason,
                        ttl_secs: ttl.map(|t| t.0.as_secs()),
                    },
                )
                .await?;
            let until = lock
                .metadata
                .expires
                .map(|e| format!("until {}", output::time(e.unix_timestamp())))
                .unwrap_or_else(|| "until removed".into());
            println!(
                "Locked {} ({until}); lock id {}.",
                target.describe(),
                lock.name()
            );
            Ok(())
        }
        AdminCommand::Locks(LocksCommand::Ls { format }) => {
            let locks: Vec<Document<warden_types::LockSpec>> =
                admin.api.call(&endpoints::LOCKS, &()).await?;
            match format {
                Format::Json => println!("{}", output::json(&locks)?),
                Format::Text => println!(
                    "{}",
                    output::table(
                        &["id", "target", "reason", "until", "by"],
                        locks
                            .iter()
                            .map(|l| vec![
                                l.name().to_string(),
                                l.spec.target.describe(),
                                l.spec.reason.clone(),
                                l.metadata
                                    .expires
                                    .map(|e| output::time(e.unix_timestamp()))
                                    .unwrap_or_else(|| "until removed".into()),
                                l.spec.created_by.clone().unwrap_or_default(),
                            ])
                            .collect()
                    )
                ),
            }
            Ok(())
        }
        AdminCommand::Locks(LocksCommand::Rm { id }) => {
            let locks: Vec<Document<warden_types::LockSpec>> =
                admin.api.call(&endpoints::LOCKS, &()).await?;
            let id = output::unique_prefix(
                &id,
                locks.iter().map(|l| l.name()),
                "lock",
                "warden admin locks ls",
            )?;
            let _: ChangeResponse = admin
                .api
                .call_at(
                    &endpoints::DELETE_LOCK,
                    &endpoints::DELETE_LOCK.at(&[&id]),
                    &(),
                )
                .await?;
            println!("Lock {id} removed.");
            Ok(())
        }
        AdminCommand::Krl { output } => {
            let ping: PingResponse = admin.api.call(&endpoints::PING, &()).await?;
            let cas = ping
                .ssh_user_ca_keys
                .iter()
                .map(|k| ssh_key::PublicKey::from_openssh(k))
                .collect::<Result<Vec<_>, _>>()
                .context("the cluster sent an invalid user CA key")?;
            let locks: Vec<Document<warden_types::LockSpec>> =
                admin.api.call(&endpoints::LOCKS, &()).await?;
            let mut key_ids = Vec::new();
            let mut skipped = Vec::new();
            let mut users: Option<Vec<Document<UserSpec>>> = None;
            for l in &locks {
                let t = &l.spec.target;
                // A KRL revokes certificates outright; it cannot say "only
                // on node X" or "only as login Y".
                if t.node.is_some() || t.login.is_some() {
                    skipped.push(t.describe());
                    continue;
                }
                if let Some(u) = &t.user {
                    key_ids.push(u.clone());
                } else if let Some(r) = &t.role {
                    if users.is_none() {
                        users = Some(admin.api.call(&endpoints::USERS, &()).await?);
                    }
                    for u in users.iter().flatten() {
                        if u.spec.roles.contains(r) {
                            key_ids.push(u.name().to_string());
                        }
                    }
                }
            }
            key_ids.sort();
            key_ids.dedup();
            let now = output::now() as u64;
            let krl = warden_ca::krl::build(
                &cas,
                &warden_ca::krl::Revocations {
                    key_ids: key_ids.clone(),
                    serials: vec![],
                },
                now,
                now,
                &format!("warden cluster {}", ping.cluster),
            )?;
            match output {
                Some(path) => std::fs::write(&path, &krl)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&krl)?;
                }
            }
            eprintln!(
                "KRL revokes the certificates of {} user(s){}{}",
                key_ids.len(),
                if key_ids.is_empty() {
                    String::new()
                } else {
                    format!(": {}", key_ids.join(", "))
                },
                if skipped.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; locks a KRL cannot express were left out: {}",
                        skipped.join("; ")
                    )
                }
            );
            Ok(())
        }
        AdminCommand::Access(AccessCommand::Suggest { role, user, since }) => {
            crate::suggest::run(
                &admin,
                crate::suggest::Ask {
                    role,
                    user,
                    since_secs: since.0.as_secs(),
                },
            )
            .await
        }
        AdminCommand::Access(AccessCommand::Check {
            user,
            roles,
            traits,
            node,
            login,
            request_roles,
            format,
        }) => {
            let who = user
                .clone()
                .unwrap_or_else(|| format!("a user with roles {}", roles.join(",")));
            let req = AccessExplainRequest {
                user,
                roles,
                traits: parse_traits(&traits)?,
                node: node.unwrap_or_default(),
                login: login.unwrap_or_default(),
                request_roles,
            };
            let allowed = crate::access::check(&admin, &who, req, format).await?;
            if !allowed {
                std::process::exit(1);
            }
            Ok(())
        }
        AdminCommand::Ca(CaCommand::Rotate {
            kind,
            grace,
            phase,
            force,
        }) => {
            let keys: Vec<CaKeyInfo> = admin
                .api
                .call(
                    &endpoints::CA_ROTATE,
                    &RotateRequest {
                        ca: kind.clone(),
                        phase: phase.clone(),
                        grace_secs: grace.map(|g| g.0.as_secs()),
                        force,
                    },
                )
                .await?;
            let rotation = keys
                .iter()
                .find(|k| k.ca == kind)
                .map_or("", |k| k.rotation.as_str());
            match (phase.as_deref(), rotation) {
                (_, "") => println!("the {kind} CA's rotation ended; one key signs and is trusted"),
                (None, _) => println!(
                    "rotating the {kind} CA: its new key is trusted now; {}; 'warden admin ca ls' shows the phase",
                    match kind.as_str() {
                        "user" => "it signs once every node and proxy trusts it, and the old key is dropped after the grace period",
                        "host" => "it signs after the grace period (users get it at their next 'warden login'), and the old key is dropped once nodes and proxies hold new host certificates",
                        _ => "it signs after the grace period (users get it at their next 'warden login'), and the old key is dropped after another grace period",
                    }
                ),
                (Some(_), r) => println!("the {kind} CA's rotation is in phase {r}"),
            }
            print_ca_keys(&keys, Format::Text)
        }
        AdminCommand::Ca(CaCommand::Ls { format }) => {
            let keys: Vec<CaKeyInfo> = admin.api.call(&endpoints::CAS, &()).await?;
            print_ca_keys(&keys, format)
        }
        AdminCommand::Ca(CaCommand::Export { kind }) => {
            let ping: PingResponse = admin.api.call(&endpoints::PING, &()).await?;
            match kind.as_str() {
                "user" => ping.ssh_user_ca_keys.iter().for_each(|k| println!("{k}")),
                "host" => ping
                    .ssh_host_ca_keys
                    .iter()
                    .for_each(|k| println!("@cert-authority * {k}")),
                "db" => admin
                    .api
                    .call(&endpoints::DB_CA, &())
                    .await?
                    .ca_pems
                    .iter()
                    .for_each(|p| print!("{p}")),
                _ => ping.tls_ca_pems.iter().for_each(|p| print!("{p}")),
            }
            Ok(())
        }
        AdminCommand::Db(AdminDbCommand::Ca(AdminDbCaCommand::Export)) => {
            let ca = admin.api.call(&endpoints::DB_CA, &()).await?;
            ca.ca_pems.iter().for_each(|p| print!("{p}"));
            Ok(())
        }
        AdminCommand::Db(AdminDbCommand::Cert {
            hosts,
            out_dir,
            ttl,
        }) => db_server_cert(&admin, hosts, &out_dir, ttl.0).await,
        AdminCommand::Nodes(NodesCommand::Ls { format }) => {
            let nodes: Vec<Document<warden_types::NodeSpec>> =
                admin.api.call(&endpoints::NODES, &()).await?;
            crate::nodes::print_nodes(nodes, format)
        }
    }
}

fn logins_of(u: &Document<UserSpec>) -> String {
    u.spec
        .traits
        .get("logins")
        .map(|l| l.join(","))
        .unwrap_or_default()
}

async fn users(admin: &Admin, c: UsersCommand) -> anyhow::Result<()> {
    let api = &admin.api;
    match c {
        UsersCommand::Add {
            name,
            roles,
            logins,
            traits,
            token_ttl,
            format,
        } => {
            let resp: CreateUserResponse = api
                .call(
                    &endpoints::CREATE_USER,
                    &CreateUserRequest {
                        name: name.clone(),
                        roles,
                        logins,
                        traits: parse_traits(&traits)?,
                        token_ttl_secs: token_ttl.0.as_secs(),
                    },
                )
                .await?;
            let command = signup_command(admin, &resp);
            match format {
                Format::Json => println!(
                    "{}",
                    output::json(&serde_json::json!({
                        "user": resp.user,
                        "token": resp.token.expose(),
                        "token_expires": resp.token_expires,
                        "signup_command": command,
                    }))?
                ),
                Format::Text => {
                    println!(
                        "User {name} created (roles: {}; logins: {}).",
                        resp.user.spec.roles.join(", "),
                        logins_of(&resp.user)
                    );
                    print_signup(&name, &command, &resp);
                }
            }
        }
        UsersCommand::Ls { format } => {
            let users: Vec<Document<UserSpec>> = api.call(&endpoints::USERS, &()).await?;
            match format {
                Format::Json => println!("{}", output::json(&users)?),
                Format::Text => println!(
                    "{}",
                    output::table(
                        &["name", "roles", "logins", "created by"],
                        users
                            .iter()
                            .map(|u| vec![
                                u.name().to_string(),
                                u.spec.roles.join(","),
                                logins_of(u),
                                u.spec.created_by.clone().unwrap_or_default(),
                            ])
                            .collect()
                    )
                ),
            }
        }
        UsersCommand::Update {
            name,
            roles,
            logins,
        } => {
            if roles.is_none() && logins.is_none() {
                bail!("nothing to change: pass --roles and/or --logins");
            }
            let u: Document<UserSpec> = api
                .call_at(
                    &endpoints::UPDATE_USER,
                    &endpoints::UPDATE_USER.at(&[&name]),
                    &UpdateUserRequest { roles, logins },
                )
                .await?;
            println!(
                "User {name} updated (roles: {}; logins: {}).",
                u.spec.roles.join(", "),
                logins_of(&u)
            );
        }
        UsersCommand::Rm { name } => {
            let _: ChangeResponse = api
                .call_at(
                    &endpoints::DELETE_USER,
                    &endpoints::DELETE_USER.at(&[&name]),
                    &(),
                )
                .await?;
            println!("User {name} deleted.");
        }
        UsersCommand::Reset { name, token_ttl } => {
            let resp: CreateUserResponse = api
                .call_at(
                    &endpoints::RESET_USER,
                    &endpoints::RESET_USER.at(&[&name]),
                    &warden_types::api::ResetUserRequest {
                        token_ttl_secs: token_ttl.0.as_secs(),
                    },
                )
                .await?;
            println!("Password and second factor of {name} cleared.");
            print_signup(&name, &signup_command(admin, &resp), &resp);
        }
        UsersCommand::Unlock { name } => {
            let _: ChangeResponse = api
                .call_at(
                    &endpoints::UNLOCK_USER,
                    &endpoints::UNLOCK_USER.at(&[&name]),
                    &(),
                )
                .await?;
            println!("User {name} unlocked.");
        }
    }
    Ok(())
}

pub(crate) fn signup_command(admin: &Admin, resp: &CreateUserResponse) -> String {
    let proxy = admin.proxy.clone().unwrap_or_else(|| "PROXY:3080".into());
    format!(
        "warden signup {} --proxy {proxy} --ca-pin {}",
        resp.token.expose(),
        admin.ca_pin
    )
}

pub(crate) fn print_signup(name: &str, command: &str, resp: &CreateUserResponse) {
    println!(
        "Give {name} this one-time command; it expires {}:\n\n  {command}\n",
        relative(resp.token_expires - output::now())
    );
}

/// Role documents from a file or directory, with file/line context on
/// errors.
pub fn load_roles(path: &Path) -> anyhow::Result<Vec<Document<RoleSpec>>> {
    let mut out = Vec::new();
    for file in yaml_files(path)? {
        let text = read(&file)?;
        for (i, de) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let value = serde_norway::Value::deserialize(de)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            if value.is_null() {
                continue; // empty document, e.g. a trailing '---'
            }
            let doc: Document<RoleSpec> = {
                // Re-parse the document's own text so errors carry real
                // line and column numbers.
                let de = serde_norway::Deserializer::from_str(&text)
                    .nth(i)
                    .expect("same doc");
                Document::deserialize(de).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
            };
            if doc.kind != kind::ROLE {
                bail!(
                    "{}: document {} has kind {:?}; 'roles apply' takes kind: role",
                    file.display(),
                    i + 1,
                    doc.kind
                );
            }
            warden_types::resource::validate_name(doc.name())
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            if let Err(errs) = warden_policy::validate_role(&doc) {
                bail!(
                    "{}: role {} is invalid:\n  {}",
                    file.display(),
                    doc.name(),
                    errs.join("\n  ")
                );
            }
            out.push(doc);
        }
    }
    if out.is_empty() {
        bail!("{} contains no role documents", path.display());
    }
    Ok(out)
}

/// `path` itself, or the .yaml/.yml files of a directory, sorted.
pub(crate) fn yaml_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)
        .with_context(|| format!("cannot read directory {}", path.display()))?
    {
        let p = entry?.path();
        if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

pub(crate) fn yaml<T: serde::Serialize>(v: &T) -> anyhow::Result<String> {
    Ok(serde_norway::to_string(v)?)
}

/// A plain line diff of two YAML renderings (enough for role-sized texts).
pub(crate) fn diff(old: &str, new: &str) -> Vec<String> {
    let old_lines: Vec<&str> = old.lines().collect();
    let new_lines: Vec<&str> = new.lines().collect();
    let mut out = Vec::new();
    for l in &old_lines {
        if !new_lines.contains(l) {
            out.push(format!("    - {l}"));
        }
    }
    for l in &new_lines {
        if !old_lines.contains(l) {
            out.push(format!("    + {l}"));
        }
    }
    out
}

fn comparable(doc: &Document<RoleSpec>) -> Document<RoleSpec> {
    let mut d = doc.clone();
    d.metadata.revision = None;
    d.metadata.expires = None;
    d
}

async fn roles(admin: &Admin, c: RolesCommand) -> anyhow::Result<()> {
    let api = &admin.api;
    match c {
        RolesCommand::Apply { file, dry_run } => {
            // Read as roles first: errors then carry file, line and column.
            load_roles(&file)?;
            crate::admin_config::apply(admin, &file, Some(kind::ROLE), dry_run).await?;
        }
        RolesCommand::Ls { format } => {
            let roles: Vec<Document<RoleSpec>> = api.call(&endpoints::ROLES, &()).await?;
            match format {
                Format::Json => println!("{}", output::json(&roles)?),
                Format::Text => println!(
                    "{}",
                    output::table(
                        &["name", "logins", "node labels", "description"],
                        roles
                            .iter()
                            .map(|r| vec![
                                r.name().to_string(),
                                r.spec.allow.logins.join(","),
                                r.spec
                                    .allow
                                    .node_labels
                                    .iter()
                                    .map(|(k, v)| format!("{k}={}", v.0.join("|")))
                                    .collect::<Vec<_>>()
                                    .join(","),
                                r.metadata.description.clone().unwrap_or_default(),
                            ])
                            .collect()
                    )
                ),
            }
        }
        RolesCommand::Get { name, format } => {
            let role: Document<RoleSpec> = api
                .call_at(&endpoints::ROLE, &endpoints::ROLE.at(&[&name]), &())
                .await?;
            match format {
                Format::Json => println!("{}", output::json(&role)?),
                Format::Text => print!("{}", yaml(&comparable(&role))?),
            }
        }
        RolesCommand::Rm { name } => {
            let _: ChangeResponse = api
                .call_at(
                    &endpoints::DELETE_ROLE,
                    &endpoints::DELETE_ROLE.at(&[&name]),
                    &(),
                )
                .await?;
            println!("Role {name} deleted.");
        }
    }
    Ok(())
}

async fn tokens(admin: &Admin, c: TokensCommand) -> anyhow::Result<()> {
    let api = &admin.api;
    match c {
        TokensCommand::Add {
            kind,
            ttl,
            addrs,
            replace,
            format,
        } => {
            let kind: TokenKind = kind.parse().map_err(anyhow::Error::msg)?;
            let resp: CreateTokenResponse = api
                .call(
                    &endpoints::CREATE_TOKEN,
                    &CreateTokenRequest {
                        kind,
                        ttl_secs: ttl.0.as_secs(),
                        user: None,
                        addrs,
                        replace,
                    },
                )
                .await?;
            match format {
                Format::Json => println!(
                    "{}",
                    output::json(&serde_json::json!({
                        "id": resp.id, "token": resp.token.expose(), "kind": resp.kind,
                        "expires": resp.expires, "ca_pin": resp.ca_pin,
                    }))?
                ),
                Format::Text => {
                    let proxy = admin.proxy.clone().unwrap_or_else(|| "PROXY:3080".into());
                    println!(
                        "{kind} token {} (expires {}):\n  token:  {}\n  CA pin: {}\n\nStart the {kind} with:\n  warden start --roles {kind} --proxy {proxy} --token {} --ca-pin {}",
                        resp.id,
                        relative(resp.expires - output::now()),
                        resp.token.expose(),
                        resp.ca_pin,
                        resp.token.expose(),
                        resp.ca_pin
                    );
                }
            }
        }
        TokensCommand::Ls { format } => {
            let tokens: Vec<TokenSummary> = api.call(&endpoints::TOKENS, &()).await?;
            match format {
                Format::Json => println!("{}", output::json(&tokens)?),
                Format::Text => println!(
                    "{}",
                    output::table(
                        &["id", "type", "user", "expires"],
                        tokens
                            .iter()
                            .map(|t| vec![
                                t.id.clone(),
                                t.kind.to_string(),
                                t.user.clone().unwrap_or_default(),
                                format!(
                                    "{} ({})",
                                    output::time(t.expires),
                                    relative(t.expires - output::now())
                                ),
                            ])
                            .collect()
                    )
                ),
            }
        }
        TokensCommand::Rm { id } => {
            let tokens: Vec<TokenSummary> = api.call(&endpoints::TOKENS, &()).await?;
            let id = output::unique_prefix(
                &id,
                tokens.iter().map(|t| t.id.as_str()),
                "token",
                "warden admin tokens ls",
            )?;
            let _: ChangeResponse = api
                .call_at(
                    &endpoints::DELETE_TOKEN,
                    &endpoints::DELETE_TOKEN.at(&[&id]),
                    &(),
                )
                .await?;
            println!("Token {id} deleted.");
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
enum ExportFormat {
    #[default]
    Jsonl,
}

async fn audit(admin: &Admin, c: AuditCommand) -> anyhow::Result<()> {
    let (event_type, user, since, node, session, limit, format) = match c {
        AuditCommand::Search {
            event_type,
            user,
            since,
            node,
            session,
            limit,
            format,
        } => (event_type, user, since, node, session, limit, format),
        AuditCommand::Export {
            follow,
            after,
            format: _,
        } => return export(admin, follow, after).await,
        AuditCommand::Verify => return verify(admin).await,
    };
    let query = AuditQuery {
        event_type,
        user,
        since: since.map(|s| s.before(output::now())),
        limit: Some(limit),
        node,
        session_id: session,
        after: None,
    };
    let resp: AuditEvents = admin.api.call(&endpoints::AUDIT_EVENTS, &query).await?;
    match format {
        Format::Json => println!("{}", output::json(&resp.events)?),
        Format::Text => println!(
            "{}",
            output::table(
                &["time", "type", "code", "user", "source", "message"],
                resp.events
                    .iter()
                    .map(|e| vec![
                        e.time
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default(),
                        e.event_type.clone(),
                        e.code.clone(),
                        e.user.clone(),
                        e.source_addr.clone().unwrap_or_default(),
                        e.message.clone(),
                    ])
                    .collect()
            )
        ),
    }
    if let Some(total) = resp.total {
        eprintln!(
            "Showing the newest {} of {total} matching events ({} more): narrow with --since, --type, --user, --node or --session, raise --limit (up to 10000), or stream them all with 'warden admin audit export'.",
            resp.events.len(),
            total.saturating_sub(resp.events.len() as u64)
        );
    }
    Ok(())
}

async fn export(admin: &Admin, follow: bool, mut after: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    loop {
        let resp: AuditEvents = admin
            .api
            .call(
                &endpoints::AUDIT_EVENTS,
                &AuditQuery {
                    after: Some(after),
                    limit: Some(1000),
                    ..Default::default()
                },
            )
            .await?;
        for e in &resp.events {
            serde_json::to_writer(&mut out, e)?;
            out.write_all(b"\n")?;
            after = after.max(e.index);
        }
        out.flush()?;
        if resp.events.len() < 1000 {
            if !follow {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}

async fn verify(admin: &Admin) -> anyhow::Result<()> {
    let r: AuditVerifyResponse = admin.api.call(&endpoints::AUDIT_VERIFY, &()).await?;
    let head = r
        .signed_head
        .map(|(i, t)| format!("; chain head signed at event {i} ({})", output::time(t)))
        .unwrap_or_default();
    match r.first_broken {
        None => {
            println!("OK: {} events, hash chain intact{head}.", r.events);
            Ok(())
        }
        Some((index, id, why)) => {
            let id = if id.is_empty() {
                String::new()
            } else {
                format!(" (id {id})")
            };
            eprintln!("error: audit log tampered: event {index}{id}: {why}{head}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_yaml_names_line_and_column() {
        let dir = std::env::temp_dir().join(format!("warden-roles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("r.yaml");
        std::fs::write(
            &f,
            "kind: role\nversion: v1\nmetadata:\n  name: ok\nspec: {}\n---\nkind: role\nversion: v1\nmetadata:\n  name: bad\nspec:\n  allow:\n    login: [root]\n",
        )
        .unwrap();
        let err = load_roles(&f).unwrap_err().to_string();
        assert!(err.contains("unknown field `login`"), "{err}");
        assert!(err.contains("line 13 column 5"), "{err}");
        std::fs::write(&f, "kind: role\nversion: v1\nmetadata:\n  name: x\nspec:\n  allow:\n    node_labels:\n      env: '^(prod$'\n").unwrap();
        let err = load_roles(&f).unwrap_err().to_string();
        assert!(err.contains("invalid regex"), "{err}");
        std::fs::write(
            &f,
            "kind: role\nversion: v1\nmetadata:\n  name: x\nspec: {}\n---\n",
        )
        .unwrap();
        assert_eq!(load_roles(&f).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[derive(Subcommand)]
pub enum ConnectorsCommand {
    /// Create or update connectors from YAML: `kind: oidc`, spec
    /// issuer_url, client_id, client_secret (or client_secret_file),
    /// scopes, claims_to_roles, redirect_url (one per proxy).
    Apply {
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// List connectors (secrets are never shown).
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Delete a connector; its users keep access until their certificates
    /// expire (lock them to end it sooner).
    Rm { name: String },
}

async fn connectors(admin: &Admin, c: ConnectorsCommand) -> anyhow::Result<()> {
    match c {
        ConnectorsCommand::Apply { file } => {
            crate::admin_config::apply(admin, &file, Some(kind::OIDC), false).await
        }
        ConnectorsCommand::Ls { format } => {
            let docs: Vec<Document<warden_types::OidcConnectorSpec>> = admin
                .api
                .call_as(&endpoints::CONFIGS, &endpoints::CONFIGS.at(&[&"oidc"]), &())
                .await?;
            match format {
                Format::Json => println!("{}", output::json(&docs)?),
                Format::Text => {
                    let rows = docs
                        .iter()
                        .map(|d| {
                            vec![
                                d.name().to_string(),
                                d.spec.issuer_url.clone(),
                                d.spec.client_id.clone(),
                                d.spec.redirect_url.join("\n"),
                                d.spec.claims_to_roles.len().to_string(),
                            ]
                        })
                        .collect();
                    println!(
                        "{}",
                        output::table(
                            &["NAME", "ISSUER", "CLIENT ID", "REDIRECT URLS", "RULES"],
                            rows
                        )
                    );
                }
            }
            Ok(())
        }
        ConnectorsCommand::Rm { name } => {
            crate::admin_config::rm(&admin.api, kind::OIDC, &name).await
        }
    }
}

/// `warden admin db cert`: the key is made here and never leaves this
/// machine; auth signs its public half with the database CA.
async fn db_server_cert(
    admin: &Admin,
    hosts: Vec<String>,
    out_dir: &Path,
    ttl: std::time::Duration,
) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let key = warden_ca::ClientKey::generate();
    let signed = admin
        .api
        .call(
            &endpoints::DB_SERVER_CERT,
            &warden_types::api::DbServerCertRequest {
                hosts,
                public_key: data_encoding::BASE64.encode(&key.public_raw()),
                ttl_secs: Some(ttl.as_secs()),
            },
        )
        .await?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let pem = pem_block("PRIVATE KEY", &key.pkcs8_der());
    warden_ca::keystore::write_private_file(&out_dir.join("server.key"), pem.as_bytes())
        .context("cannot write server.key")?;
    std::fs::write(out_dir.join("server.crt"), &signed.cert_pem)?;
    std::fs::write(out_dir.join("ca.crt"), signed.ca_pems.concat())?;
    println!(
        "Wrote {dir}/server.key (0600), server.crt and ca.crt. In postgresql.conf:\n  ssl = on\n  ssl_cert_file = '{dir}/server.crt'\n  ssl_key_file = '{dir}/server.key'\n  ssl_ca_file = '{dir}/ca.crt'\nand in pg_hba.conf, for each database user Warden may use:\n  hostssl all all 0.0.0.0/0 cert",
        dir = out_dir.display()
    );
    Ok(())
}

/// `data` as a PEM block.
fn pem_block(label: &str, data: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(data);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
