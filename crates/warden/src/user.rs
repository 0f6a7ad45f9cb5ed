//! `warden signup`, `login`, `status`, `logout`.

use crate::output::{self, Format};
use crate::prompt;
use anyhow::{bail, Context};
use clap::Args;
use warden_ca::otp;
use warden_client::login::{self as client, LoginInput};
use warden_client::tls::Trust;
use warden_client::{ClientError, ProfileStore};
use warden_types::api::SignupRequest;
use warden_types::duration::{relative, HumanDuration};
use warden_types::endpoints;
use warden_types::Secret;

#[derive(Args)]
pub struct SignupArgs {
    /// The one-time signup token from your admin. Prefer --token-file (or
    /// typing it when asked): a token on the command line shows in `ps`.
    token: Option<String>,
    /// Read the signup token from FILE (`-`: the first line of stdin,
    /// before the password when --password-stdin is given too).
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    /// The cluster's proxy, HOST:PORT.
    #[arg(long, env = "WARDEN_PROXY", value_parser = crate::output::proxy_addr)]
    proxy: String,
    /// The cluster's CA pin (sha256:...), from your admin.
    #[arg(long)]
    ca_pin: Option<String>,
    /// Read the new password from the first line of stdin.
    #[arg(long)]
    password_stdin: bool,
    /// Use this base32 TOTP secret instead of generating one (automation).
    #[arg(
        long,
        value_name = "BASE32",
        env = "WARDEN_TOTP_SECRET",
        hide_env_values = true
    )]
    totp_secret: Option<String>,
    /// The current 6-digit code, instead of asking.
    #[arg(long)]
    otp: Option<String>,
}

#[derive(Args)]
pub struct LoginArgs {
    /// The cluster's proxy, HOST:PORT.
    #[arg(long, env = "WARDEN_PROXY", value_parser = crate::output::proxy_addr)]
    proxy: String,
    /// Your user name (local users).
    #[arg(long, env = "WARDEN_USER", required_unless_present = "auth")]
    user: Option<String>,
    /// Log in through this identity provider connector (single sign-on)
    /// instead of a local password: opens a browser ($BROWSER, else
    /// xdg-open) and always prints the URL.
    #[arg(long, value_name = "CONNECTOR", conflicts_with_all = ["password_stdin", "otp"])]
    auth: Option<String>,
    /// With --auth: no local browser (a remote shell). Prints a URL and a
    /// code to enter in a browser anywhere, then waits.
    #[arg(long, requires = "auth")]
    headless: bool,
    /// The cluster's CA pin (sha256:...), needed on first contact.
    #[arg(long)]
    ca_pin: Option<String>,
    /// Read the password from the first line of stdin.
    #[arg(long)]
    password_stdin: bool,
    /// The current 6-digit TOTP code, instead of asking.
    #[arg(long)]
    otp: Option<String>,
    /// Certificate lifetime to ask for (capped by your roles), e.g. 1h.
    #[arg(long)]
    ttl: Option<HumanDuration>,
    /// Make sure the certificate carries this approved access request
    /// (approved requests are always included; this fails if it is not).
    #[arg(long)]
    request: Option<String>,
}

#[derive(Args)]
pub struct StatusArgs {
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

fn store() -> anyhow::Result<ProfileStore> {
    Ok(ProfileStore::new(ProfileStore::default_home()?))
}

/// How to trust `proxy`: the given pin, the saved CA, or (on a terminal)
/// the user's confirmation of the fingerprint the cluster shows.
async fn resolve_trust(
    store: &ProfileStore,
    proxy: &str,
    pin: Option<String>,
) -> anyhow::Result<(Trust, String)> {
    if let Some(pin) = pin {
        if !pin.starts_with("sha256:") || pin.len() != 71 {
            bail!("invalid --ca-pin {pin:?}: expected sha256: followed by 64 hex digits");
        }
        return Ok((Trust::Pin(pin.clone()), pin));
    }
    if let Some(saved) = store.saved_trust(proxy)? {
        return Ok(saved);
    }
    match client::ping(proxy, Trust::Discover).await {
        Err(ClientError::UntrustedCluster { presented, .. }) if !presented.is_empty() => {
            eprintln!("The cluster at {proxy} presents CA {presented}.");
            if prompt::confirm("Is this the pin your admin gave you? Trust it?") {
                Ok((Trust::Pin(presented.clone()), presented))
            } else {
                bail!(
                    "not trusting {proxy}; pass --ca-pin with the pin from your admin ('warden start' prints it)"
                )
            }
        }
        Err(e) => Err(e.into()),
        Ok(_) => bail!("{proxy} was trusted without a CA; refusing"),
    }
}

pub async fn signup(mut a: SignupArgs) -> anyhow::Result<()> {
    let token = match prompt::token_from(a.token.take(), a.token_file.as_deref(), "signup token")? {
        Some(t) => t,
        None => prompt::secret("Signup token: ", "--token-file FILE (or - for stdin)")?
            .expose()
            .trim()
            .to_string(),
    };
    let store = store()?;
    let (trust, pin) = resolve_trust(&store, &a.proxy, a.ca_pin).await?;
    let ping = client::ping(&a.proxy, trust.clone()).await?;
    let info = client::signup_info(&a.proxy, trust.clone(), &token).await?;
    eprintln!(
        "Signing up {} on cluster {} (token expires {}).",
        info.user,
        info.cluster,
        relative(info.expires - output::now())
    );
    // The policy is checked before the password is typed again (auth
    // checks it once more).
    let password = if a.password_stdin {
        let p = prompt::line_from_stdin("password")?;
        if let Err(why) = warden_policy::password_strength(p.expose(), &info.user) {
            bail!("{why}");
        }
        p
    } else {
        let mut tries = 0;
        let p1 = loop {
            let p = prompt::secret(
                &format!(
                    "Choose a password ({}+ characters, not easy to guess): ",
                    warden_policy::MIN_PASSWORD
                ),
                "--password-stdin",
            )?;
            match warden_policy::password_strength(p.expose(), &info.user) {
                Ok(()) => break p,
                Err(why) if tries < 2 => {
                    tries += 1;
                    eprintln!("{why}.");
                }
                Err(why) => bail!("{why}"),
            }
        };
        let p2 = prompt::secret("Repeat it: ", "--password-stdin")?;
        if p1 != p2 {
            bail!("the passwords do not match; run the command again");
        }
        p1
    };
    let (secret, chosen) = match a.totp_secret {
        Some(s) => {
            if otp::decode_secret(&s).map(|b| b.len()).unwrap_or(0) < otp::MIN_SECRET {
                bail!("--totp-secret must be base32 of at least 20 bytes (32 characters)");
            }
            (s, true)
        }
        None => (otp::generate_secret(), false),
    };
    let uri = otp::uri(&secret, &info.user, &info.cluster);
    if chosen {
        // The secret came with the command: the authenticator has it
        // already, so no code to scan.
        eprintln!("\nUsing the TOTP secret from --totp-secret:\n  {uri}\n");
    } else {
        eprintln!(
            "\nAdd this account to your authenticator app (scan the code or enter the secret):\n"
        );
        if let Some(qr) = prompt::qr(&uri) {
            eprintln!("{qr}");
        }
        eprintln!("  {uri}\n  secret: {secret}\n");
    }
    let code = match a.otp {
        Some(c) => Secret::new(c),
        None => prompt::secret("Enter the 6-digit code it shows: ", "--otp")?,
    };
    let resp = client::signup(
        &a.proxy,
        trust,
        &SignupRequest {
            token: Secret::new(token),
            password,
            totp_secret: Secret::new(secret),
            otp: code,
        },
    )
    .await?;
    store.remember_cluster(&a.proxy, &pin, &ping.tls_ca_pems)?;
    println!(
        "Signed up {}. Log in with:\n  warden login --proxy {} --user {}",
        resp.user, a.proxy, resp.user
    );
    Ok(())
}

pub async fn login(a: LoginArgs) -> anyhow::Result<()> {
    let store = store()?;
    let (trust, pin) = resolve_trust(&store, &a.proxy, a.ca_pin.clone()).await?;
    // Fail fast (unreachable proxy, wrong pin) before asking for secrets.
    client::ping(&a.proxy, trust.clone()).await?;
    let ttl_secs = a.ttl.map(|t| t.0.as_secs());
    let (key, resp) = match (&a.auth, &a.user) {
        (Some(connector), _) => {
            crate::sso::login(&a.proxy, trust, connector, a.headless, ttl_secs).await?
        }
        (None, Some(user)) => local_login(&a, user, trust, ttl_secs).await?,
        (None, None) => {
            bail!("pass --user NAME (local users) or --auth CONNECTOR (single sign-on)")
        }
    };
    let profile = store.save_login(&a.proxy, &pin, &key, &resp)?;
    let profile = learn_proxies(&store, profile).await;
    println!("Logged in to {} as {}.", profile.cluster, profile.user);
    if let Some(id) = a.request {
        if !resp.identity.requests.contains(&id) {
            let api = warden_client::login::auth_client(&store, &profile)?;
            let r: warden_types::Document<warden_types::AccessRequestSpec> = api
                .call_at(&endpoints::REQUEST, &endpoints::REQUEST.at(&[&id]), &())
                .await?;
            bail!(
                "request {id} is {}{}; the certificate does not carry it ('warden request show {id}')",
                r.spec.state,
                if r.spec.state == warden_types::RequestState::Approved {
                    " but over"
                } else {
                    ""
                }
            );
        }
    }
    print_status(&store, Format::Text)
}

/// Notes the cluster's other proxies in the profile, so that commands go
/// to one of them when this one does not answer. Best effort: a login
/// stands without them.
async fn learn_proxies(
    store: &ProfileStore,
    profile: warden_client::Profile,
) -> warden_client::Profile {
    let Ok(api) = client::auth_client(store, &profile) else {
        return profile;
    };
    let list: Vec<warden_types::api::ProxyInfo> = match api.call(&endpoints::PROXIES, &()).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "cannot list the cluster's proxies");
            return profile;
        }
    };
    // A proxy without a public address advertises its listening one
    // (loopback, 0.0.0.0): useless, even harmful, from another machine.
    let local = |addr: &str| {
        let host = warden_client::http::host_of(addr).trim_matches(|c| c == '[' || c == ']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
    };
    let same_machine = local(&profile.proxy);
    let fallbacks: Vec<String> = list
        .into_iter()
        .filter(|p| !p.addrs.iter().any(|a| a == &profile.proxy))
        .filter_map(|p| p.addrs.into_iter().find(|a| same_machine || !local(a)))
        .take(8)
        .collect();
    store
        .set_fallbacks(&profile, fallbacks)
        .unwrap_or_else(|e| {
            tracing::debug!(error = %e, "cannot note the cluster's proxies");
            profile
        })
}

async fn local_login(
    a: &LoginArgs,
    user: &str,
    trust: Trust,
    ttl_secs: Option<u64>,
) -> anyhow::Result<(warden_ca::ClientKey, warden_types::api::LoginResponse)> {
    let password = if a.password_stdin {
        prompt::line_from_stdin("password")?
    } else {
        prompt::secret(&format!("Password for {user}: "), "--password-stdin")?
    };
    // With --otp, one call; else the password first, then the user's
    // security key if they have one, else a one-time code.
    let proof = match &a.otp {
        Some(c) => warden_types::api::MfaProof::otp(c.clone()),
        None => {
            let challenge =
                client::login_challenge(&a.proxy, trust.clone(), user, &password).await?;
            crate::mfa::prove(&challenge, &a.proxy, None).await?
        }
    };
    Ok(client::login(
        &a.proxy,
        trust,
        LoginInput {
            user: user.to_string(),
            password,
            otp: proof.otp.unwrap_or_default(),
            webauthn: proof.webauthn,
            ttl_secs,
        },
    )
    .await?)
}

pub async fn status(a: StatusArgs) -> anyhow::Result<()> {
    print_status(&store()?, a.format)
}

#[derive(serde::Serialize)]
struct Status {
    profile: String,
    proxy: String,
    cluster: String,
    user: String,
    roles: Vec<String>,
    logins: Vec<String>,
    traits: std::collections::BTreeMap<String, Vec<String>>,
    valid_until: i64,
    expired: bool,
    extensions: Vec<String>,
    ssh_cert: String,
    private_key: String,
}

fn print_status(store: &ProfileStore, format: Format) -> anyhow::Result<()> {
    let Some(p) = store.current()? else {
        bail!("not logged in; run 'warden login --proxy HOST:3080 --user NAME'");
    };
    let cert_path = store.ssh_cert_path(&p);
    let text = std::fs::read_to_string(&cert_path)
        .with_context(|| format!("cannot read {}; run 'warden login'", cert_path.display()))?;
    let cert = ssh_key::Certificate::from_openssh(text.trim()).with_context(|| {
        format!(
            "{} is not a valid certificate; run 'warden login'",
            cert_path.display()
        )
    })?;
    let roles: Vec<String> = cert
        .extensions()
        .get("roles@warden")
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default();
    let valid_until = cert.valid_before() as i64;
    let s = Status {
        profile: p.name.clone(),
        proxy: p.proxy.clone(),
        cluster: p.cluster.clone(),
        user: p.user.clone(),
        roles,
        traits: cert
            .extensions()
            .get("traits@warden")
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_default(),
        logins: cert_logins(&cert),
        valid_until,
        expired: valid_until <= output::now(),
        extensions: cert
            .extensions()
            .keys()
            .filter(|k| k.starts_with("permit-"))
            .cloned()
            .collect(),
        ssh_cert: cert_path.display().to_string(),
        private_key: store.private_key_path(&p).display().to_string(),
    };
    match format {
        Format::Json => println!("{}", output::json(&s)?),
        Format::Text => {
            // Traits come from identity providers: shown, never interpreted.
            let none = |v: &[String]| {
                if v.is_empty() {
                    "(none)".to_string()
                } else {
                    output::safe(&v.join(", ")).into_owned()
                }
            };
            println!("  Proxy:        {}", s.proxy);
            println!("  Cluster:      {}", s.cluster);
            println!("  User:         {}", output::safe(&s.user));
            println!("  Roles:        {}", none(&s.roles));
            println!("  Logins:       {}", none(&s.logins));
            for (k, v) in &s.traits {
                println!(
                    "  Trait {:<7} {}",
                    output::safe(&format!("{k}:")),
                    output::safe(&v.join(", "))
                );
            }
            println!(
                "  Valid until:  {} ({})",
                output::time(valid_until),
                relative(valid_until - output::now())
            );
            println!("  Extensions:   {}", none(&s.extensions));
            println!("  Certificate:  {}", s.ssh_cert);
        }
    }
    if s.expired {
        bail!(
            "certificate expired {}; run 'warden login'",
            relative(valid_until - output::now())
        );
    }
    Ok(())
}

pub async fn logout() -> anyhow::Result<()> {
    let store = store()?;
    match store.current()? {
        Some(p) => {
            store.remove(&p)?;
            println!("Logged out {} from {} (keys deleted).", p.user, p.proxy);
        }
        None => println!("Not logged in."),
    }
    Ok(())
}

/// The logins a certificate allows (not the no-login placeholder).
pub(crate) fn cert_logins(cert: &ssh_key::Certificate) -> Vec<String> {
    cert.valid_principals()
        .iter()
        .filter(|l| l.as_str() != warden_ca::ssh::NO_LOGIN_PRINCIPAL)
        .cloned()
        .collect()
}
