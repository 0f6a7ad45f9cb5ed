//! `warden request`: ask for extra roles just in time, review requests,
//! and pick up approved access without logging in again.

use crate::output::{self, Format};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::time::Duration;
use warden_client::ProfileStore;
use warden_types::api::{
    CreateRequestRequest, LoginResponse, RenewRequest, ResourceRef, ReviewRequest,
};
use warden_types::duration::{relative, HumanDuration};
use warden_types::endpoints;
use warden_types::{AccessRequestSpec, Document, RequestState};

#[derive(Subcommand)]
pub enum RequestCommand {
    /// Ask for roles, or for a login on given nodes; waits for a decision,
    /// then renews your certificate.
    Create {
        /// Roles to request, comma-separated.
        #[arg(long, value_delimiter = ',', required_unless_present = "resource")]
        roles: Vec<String>,
        /// Instead of roles: a node (name or id) to get access to; repeat
        /// or comma-separate for several. Allowed by your roles'
        /// `allow.request.search_as_roles`; grants these nodes only.
        #[arg(
            long,
            value_delimiter = ',',
            conflicts_with = "roles",
            requires = "login"
        )]
        resource: Vec<String>,
        /// The login wanted on the --resource nodes.
        #[arg(long, requires = "resource")]
        login: Option<String>,
        /// Why (a ticket, an incident): reviewers see it; it is audited.
        #[arg(long, required = true)]
        reason: String,
        /// How long the access should last once approved [default: 4h].
        #[arg(long)]
        ttl: Option<HumanDuration>,
        /// Print the request id and return without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Your requests, and those you may review.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// One request.
    Show {
        id: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Stop using an approved request of yours: its access ends now, and
    /// your certificate is renewed without it.
    Drop { id: String },
    /// Approve or deny a request.
    Review {
        id: String,
        #[arg(long, conflicts_with = "deny", required_unless_present = "deny")]
        approve: bool,
        #[arg(long)]
        deny: bool,
        #[arg(long, required = true)]
        reason: String,
    },
}

#[derive(Args)]
pub struct RenewArgs {}

fn store() -> anyhow::Result<(ProfileStore, warden_client::Profile)> {
    let store = ProfileStore::new(ProfileStore::default_home()?);
    let Some(p) = store.current()? else {
        bail!("not logged in; run 'warden login'");
    };
    Ok((store, p))
}

/// An exclusive lock on the profile's key directory, held while a
/// renewal reads and rewrites its files, so parallel `warden` commands
/// renew one at a time. Released when dropped (the file closes).
pub struct RenewLock(#[allow(dead_code)] std::fs::File);

impl RenewLock {
    pub fn take(store: &ProfileStore, p: &warden_client::Profile) -> anyhow::Result<RenewLock> {
        use std::os::unix::io::AsRawFd;
        let path = store.key_dir(p).join(".renew.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            anyhow::bail!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(RenewLock(file))
    }
}

/// A request id given in full or by a unique prefix.
async fn request_id(api: &warden_client::ApiClient, given: &str) -> anyhow::Result<String> {
    if uuid::Uuid::parse_str(given).is_ok() {
        return Ok(given.to_string());
    }
    let list: Vec<Document<AccessRequestSpec>> = api.call(&endpoints::REQUESTS, &()).await?;
    output::unique_prefix(
        given,
        list.iter().map(|r| r.name()),
        "request",
        "warden request ls",
    )
}

/// Fresh certificates for the profile's own key, with the roles in force.
pub async fn renew_certificates() -> anyhow::Result<LoginResponse> {
    let (store, p) = store()?;
    let _lock = RenewLock::take(&store, &p)?;
    renew_locked(&store, &p).await
}

/// Renews while the caller holds the profile's [`RenewLock`].
pub async fn renew_locked(
    store: &ProfileStore,
    p: &warden_client::Profile,
) -> anyhow::Result<LoginResponse> {
    let api = warden_client::login::auth_client(store, p)?;
    let key = warden_ca::ClientKey::from_openssh(
        &std::fs::read_to_string(store.private_key_path(p)).context("cannot read your key")?,
    )?;
    let resp: LoginResponse = api
        .call(
            &endpoints::RENEW,
            &RenewRequest {
                ssh_public_key: key.ssh_public_key().to_openssh()?,
                tls_csr_pem: key.csr_pem(&p.user)?,
            },
        )
        .await?;
    store.save_login(&p.proxy, &p.ca_pin, &key, &resp)?;
    Ok(resp)
}

fn row(r: &Document<AccessRequestSpec>) -> Vec<String> {
    let until = if r.spec.state == RequestState::Approved {
        relative(r.spec.access_until - output::now())
    } else {
        String::new()
    };
    vec![
        r.name().to_string(),
        r.spec.user.clone(),
        r.spec.describe(),
        r.spec.state.to_string(),
        until,
        r.spec.reason.clone(),
    ]
}

pub async fn run(c: RequestCommand) -> anyhow::Result<()> {
    let (store, p) = store()?;
    let api = warden_client::login::auth_client(&store, &p)?;
    match c {
        RequestCommand::Create {
            roles,
            resource,
            login,
            reason,
            ttl,
            no_wait,
        } => {
            let r: Document<AccessRequestSpec> = api
                .call(
                    &endpoints::CREATE_REQUEST,
                    &CreateRequestRequest {
                        roles,
                        resources: resource
                            .into_iter()
                            .map(|node| ResourceRef {
                                node,
                                login: login.clone().unwrap_or_default(),
                            })
                            .collect(),
                        reason,
                        ttl_secs: ttl.map(|t| t.0.as_secs()),
                    },
                )
                .await?;
            let id = r.name().to_string();
            if no_wait {
                println!("{id}");
                return Ok(());
            }
            eprint!("Request {id} is waiting for a reviewer ");
            let spinner = ['|', '/', '-', '\\'];
            let mut i = 0;
            let decided = loop {
                let r: Document<AccessRequestSpec> = api
                    .call_at(&endpoints::REQUEST, &endpoints::REQUEST.at(&[&id]), &())
                    .await?;
                if r.spec.state != RequestState::Pending {
                    break r;
                }
                if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                    eprint!("\u{8}{}", spinner[i % 4]);
                }
                i += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            };
            eprintln!();
            let why = decided
                .spec
                .reviews
                .last()
                .map(|r| format!(" ({}: {})", r.reviewer, r.reason))
                .unwrap_or_default();
            if decided.spec.state == RequestState::Denied {
                bail!("request {id} was denied{why}");
            }
            let resp = renew_certificates().await?;
            println!(
                "Request {id} approved{why}. Your certificate now carries {} until {}.",
                if decided.spec.resources.is_empty() {
                    format!("roles {}", resp.identity.roles.join(", "))
                } else {
                    decided.spec.describe()
                },
                output::time(resp.identity.expires)
            );
        }
        RequestCommand::Ls { format } => {
            let list: Vec<Document<AccessRequestSpec>> =
                api.call(&endpoints::REQUESTS, &()).await?;
            match format {
                Format::Json => println!("{}", output::json(&list)?),
                Format::Text => println!(
                    "{}",
                    output::table(
                        &["id", "user", "asks for", "state", "access ends", "reason"],
                        list.iter().map(row).collect()
                    )
                ),
            }
        }
        RequestCommand::Show { id, format } => {
            let id = request_id(&api, &id).await?;
            let r: Document<AccessRequestSpec> = api
                .call_at(&endpoints::REQUEST, &endpoints::REQUEST.at(&[&id]), &())
                .await?;
            match format {
                Format::Json => println!("{}", output::json(&r)?),
                Format::Text => {
                    println!(
                        "{}",
                        output::table(
                            &["id", "user", "asks for", "state", "access ends", "reason"],
                            vec![row(&r)]
                        )
                    );
                    for rv in &r.spec.reviews {
                        println!(
                            "  {} by {} at {}: {}",
                            if rv.approve { "approved" } else { "denied" },
                            rv.reviewer,
                            output::time(rv.time),
                            rv.reason
                        );
                    }
                }
            }
        }
        RequestCommand::Drop { id } => {
            let id = request_id(&api, &id).await?;
            let r: Document<AccessRequestSpec> = api
                .call_at(
                    &endpoints::DROP_REQUEST,
                    &endpoints::DROP_REQUEST.at(&[&id]),
                    &(),
                )
                .await?;
            let resp = renew_certificates().await?;
            println!(
                "Request {id} dropped ({}). Your certificate now carries roles {}.",
                r.spec.describe(),
                resp.identity.roles.join(", ")
            );
        }
        RequestCommand::Review {
            id,
            approve,
            deny: _,
            reason,
        } => {
            let id = request_id(&api, &id).await?;
            let r: Document<AccessRequestSpec> = api
                .call_at(
                    &endpoints::REVIEW_REQUEST,
                    &endpoints::REVIEW_REQUEST.at(&[&id]),
                    &ReviewRequest { approve, reason },
                )
                .await?;
            println!("Request {id} of {} is now {}.", r.spec.user, r.spec.state);
        }
    }
    Ok(())
}
