//! `warden mfa`: second-factor devices (the TOTP app from signup, and
//! FIDO2/WebAuthn security keys), and answering MFA challenges with them.
//!
//! Security keys are reached over USB HID. For tests and CI, the variable
//! `WARDEN_SOFT_TOKEN=<file>` selects a software authenticator kept in that
//! file instead: it is not a security key (its private keys sit in the file).

use crate::output::{self, Format};
use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use warden_client::http::ApiClient;
use warden_types::api::{
    MfaChallengeRequest, MfaChallengeResponse, MfaDevice, MfaProof, MfaPurpose, MfaRegisterFinish,
    MfaRegisterRequest, MfaRemoveRequest, WebauthnAnswer, WebauthnChallenge,
};
use warden_types::endpoints;
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url, WebauthnAuthenticator,
};
use webauthn_authenticator_rs::AuthenticatorBackend;

/// Selects a software authenticator file instead of USB security keys.
pub const SOFT_TOKEN_ENV: &str = "WARDEN_SOFT_TOKEN";

#[derive(Subcommand)]
pub enum MfaCommand {
    /// Enrol a security key (FIDO2/WebAuthn, e.g. a YubiKey) as a second factor.
    Add(AddArgs),
    /// List your MFA devices.
    Ls(LsArgs),
    /// Remove a security key.
    Rm(RmArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DeviceType {
    /// A FIDO2/WebAuthn security key (the TOTP app is enrolled at signup).
    Webauthn,
}

#[derive(Args)]
pub struct AddArgs {
    /// Device type.
    #[arg(long = "type", value_enum, default_value = "webauthn")]
    kind: DeviceType,
    /// A name to tell your devices apart (e.g. yubikey).
    #[arg(long)]
    name: String,
    /// Prove it is you with a one-time code instead of an enrolled key.
    #[arg(long, value_name = "CODE")]
    otp: Option<String>,
}

#[derive(Args)]
pub struct LsArgs {
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Args)]
pub struct RmArgs {
    /// The device name ('warden mfa ls').
    name: String,
    /// Prove it is you with a one-time code instead of an enrolled key.
    #[arg(long, value_name = "CODE")]
    otp: Option<String>,
}

pub async fn run(cmd: MfaCommand) -> anyhow::Result<()> {
    let (store, p) = crate::nodes::profile()?;
    let api = warden_client::login::auth_client(&store, &p)?;
    match cmd {
        MfaCommand::Add(a) => {
            let DeviceType::Webauthn = a.kind;
            let proof = manage_proof(&api, &p.proxy, a.otp).await?;
            let challenge: WebauthnChallenge = api
                .call(
                    &endpoints::MFA_REGISTER,
                    &MfaRegisterRequest {
                        name: a.name.clone(),
                        proof,
                    },
                )
                .await?;
            let request: CreationChallengeResponse = serde_json::from_value(challenge.request)
                .context("the auth service sent a malformed enrolment challenge")?;
            let origin = origin(&p.proxy, &request.public_key.rp.id)?;
            eprintln!("Touch the security key to enrol it as {}.", a.name);
            let credential = ceremony(origin, Ceremony::Register(request)).await?;
            let device: MfaDevice = api
                .call(
                    &endpoints::MFA_REGISTER_FINISH,
                    &MfaRegisterFinish {
                        answer: WebauthnAnswer {
                            challenge_id: challenge.id,
                            credential,
                        },
                    },
                )
                .await?;
            println!(
                "Security key {} enrolled: 'warden login' and per-session MFA can use it.",
                device.name
            );
        }
        MfaCommand::Ls(a) => {
            let devices: Vec<MfaDevice> = api.call(&endpoints::MFA_DEVICES, &()).await?;
            if a.format == Format::Json {
                println!("{}", output::json(&devices)?);
                return Ok(());
            }
            if devices.is_empty() {
                println!(
                    "No MFA devices: single sign-on users get MFA from their identity provider."
                );
                return Ok(());
            }
            let when = |t: i64| {
                if t > 0 {
                    output::time(t)
                } else {
                    "-".into()
                }
            };
            let rows = devices
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        d.kind.clone(),
                        when(d.added),
                        when(d.last_used),
                    ]
                })
                .collect();
            println!(
                "{}",
                output::table(&["name", "type", "added", "last used"], rows)
            );
        }
        MfaCommand::Rm(a) => {
            let proof = manage_proof(&api, &p.proxy, a.otp).await?;
            let _: serde_json::Value = api
                .call(
                    &endpoints::MFA_REMOVE,
                    &MfaRemoveRequest {
                        name: a.name.clone(),
                        proof,
                    },
                )
                .await?;
            println!("Security key {} removed.", a.name);
        }
    }
    Ok(())
}

/// A fresh check with an existing device, for adding or removing devices.
async fn manage_proof(
    api: &ApiClient,
    proxy: &str,
    otp: Option<String>,
) -> anyhow::Result<MfaProof> {
    let challenge: MfaChallengeResponse = api
        .call(
            &endpoints::MFA_CHALLENGE,
            &MfaChallengeRequest {
                purpose: MfaPurpose::Manage,
            },
        )
        .await?;
    if !challenge.totp && challenge.webauthn.is_none() {
        bail!("you have no MFA devices: single sign-on users get MFA from their identity provider");
    }
    eprintln!("Confirm with an MFA device you already have.");
    prove(&challenge, proxy, otp).await
}

/// Answers an MFA challenge: with `otp` when given, else with a security
/// key when the user has one, else by asking for a one-time code.
pub async fn prove(
    challenge: &MfaChallengeResponse,
    proxy: &str,
    otp: Option<String>,
) -> anyhow::Result<MfaProof> {
    if let Some(code) = otp {
        return Ok(MfaProof::otp(code));
    }
    if !challenge.totp && challenge.webauthn.is_none() {
        bail!("you have no MFA devices: single sign-on users get MFA from their identity provider; ask an admin about require_mfa");
    }
    let Some(w) = &challenge.webauthn else {
        let code = crate::prompt::secret("One-time code: ", "--otp")?;
        return Ok(MfaProof::otp(code.expose().clone()));
    };
    // The login step offers every user a security-key challenge (a decoy
    // for users without keys, so it reveals nothing): the user picks.
    let code = if std::env::var_os(SOFT_TOKEN_ENV).is_some() {
        String::new()
    } else {
        crate::prompt::secret(
            "One-time code (or press Enter to use your security key): ",
            "--otp",
        )?
        .expose()
        .trim()
        .to_string()
    };
    if !code.is_empty() {
        return Ok(MfaProof::otp(code));
    }
    Ok(MfaProof {
        otp: None,
        webauthn: Some(answer_with_key(w, proxy).await?),
    })
}

/// Signs a security-key challenge.
pub async fn answer_with_key(
    challenge: &WebauthnChallenge,
    proxy: &str,
) -> anyhow::Result<WebauthnAnswer> {
    let request: RequestChallengeResponse = serde_json::from_value(challenge.request.clone())
        .context("the auth service sent a malformed security-key challenge")?;
    let origin = origin(proxy, &request.public_key.rp_id)?;
    eprintln!("Touch your security key (or pass --otp CODE to use the authenticator app).");
    let credential = ceremony(origin, Ceremony::Authenticate(request)).await?;
    Ok(WebauthnAnswer {
        challenge_id: challenge.id.clone(),
        credential,
    })
}

/// The WebAuthn origin: the proxy's host when it lies under the relying
/// party ID, else the RP ID itself (proxies addressed by IP). The client
/// picks its origin, so this does not stop a relaying look-alike proxy:
/// the cluster CA pinned in the profile does (TLS to a proxy without a
/// certificate of that CA fails before any challenge is asked for).
fn origin(proxy: &str, rp_id: &str) -> anyhow::Result<Url> {
    let host = proxy_host(proxy).to_ascii_lowercase();
    let rp = rp_id.to_ascii_lowercase();
    let host = if host == rp || host.ends_with(&format!(".{rp}")) {
        host
    } else {
        rp
    };
    Url::parse(&format!("https://{host}"))
        .map_err(|e| anyhow!("invalid relying party {rp_id:?}: {e}"))
}

fn proxy_host(proxy: &str) -> &str {
    if let Some(rest) = proxy.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match proxy.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => proxy,
    }
}

enum Ceremony {
    Register(CreationChallengeResponse),
    Authenticate(RequestChallengeResponse),
}

/// Runs a ceremony on the software authenticator or a USB security key;
/// returns the credential as JSON for the auth service.
async fn ceremony(origin: Url, c: Ceremony) -> anyhow::Result<serde_json::Value> {
    if let Some(path) = std::env::var_os(SOFT_TOKEN_ENV) {
        return soft_token(std::path::Path::new(&path), origin, c);
    }
    usb(origin, c).await
}

fn perform<T: AuthenticatorBackend>(
    mut a: T,
    origin: Url,
    c: Ceremony,
) -> anyhow::Result<serde_json::Value> {
    let v = match c {
        Ceremony::Register(r) => serde_json::to_value(
            a.do_registration(origin, r)
                .map_err(|e| anyhow!("the security key refused to enrol: {e:?}"))?,
        ),
        Ceremony::Authenticate(r) => {
            serde_json::to_value(a.do_authentication(origin, r).map_err(|e| {
                anyhow!("the security key did not answer: {e:?} (is it enrolled? 'warden mfa ls')")
            })?)
        }
    };
    Ok(v?)
}

fn soft_token(
    path: &std::path::Path,
    origin: Url,
    c: Ceremony,
) -> anyhow::Result<serde_json::Value> {
    use std::os::unix::fs::OpenOptionsExt;
    use webauthn_authenticator_rs::softtoken::{SoftToken, SoftTokenFile};
    eprintln!(
        "warning: using the software authenticator in {} ({SOFT_TOKEN_ENV}); it is for tests, not a security key",
        path.display()
    );
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let empty = file.metadata().map(|m| m.len() == 0).unwrap_or(true);
    // The token saves itself (signature counter, new credentials) on drop.
    let token = if empty {
        let (token, _ca) = SoftToken::new(false)
            .map_err(|e| anyhow!("cannot create a software authenticator: {e:?}"))?;
        SoftTokenFile::new(token, file)
    } else {
        SoftTokenFile::open(file)
            .map_err(|e| anyhow!("{} is not a software authenticator: {e:?}", path.display()))?
    };
    perform(token, origin, c)
}

#[cfg(feature = "usb")]
async fn usb(origin: Url, c: Ceremony) -> anyhow::Result<serde_json::Value> {
    use webauthn_authenticator_rs::ctap2::select_one_device;
    use webauthn_authenticator_rs::transport::Transport;
    use webauthn_authenticator_rs::ui::Cli;
    use webauthn_authenticator_rs::usb::USBTransport;
    let ui = Cli {};
    let transport = USBTransport::new()
        .await
        .map_err(|e| anyhow!("cannot look for USB security keys: {e:?}"))?;
    let devices = transport
        .watch()
        .await
        .map_err(|e| anyhow!("cannot look for USB security keys: {e:?}"))?;
    let found = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        select_one_device(devices, &ui),
    )
    .await;
    let Ok(Some(device)) = found else {
        bail!("no security key answered within 60 s: insert one and touch it when it blinks (or pass --otp CODE)");
    };
    // The CTAP calls block; keep the runtime's other workers free.
    tokio::task::block_in_place(|| perform(device, origin, c))
}

#[cfg(not(feature = "usb"))]
async fn usb(_origin: Url, _c: Ceremony) -> anyhow::Result<serde_json::Value> {
    bail!("this warden was built without USB security-key support; rebuild with `cargo build --release --features usb` (needs libudev-dev, libclang-dev), or pass --otp CODE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_uses_the_proxy_host_under_the_rp_id() {
        let o = |p, rp| origin(p, rp).unwrap().to_string();
        assert_eq!(
            o("proxy.example.com:3080", "example.com"),
            "https://proxy.example.com/"
        );
        assert_eq!(o("example.com:443", "example.com"), "https://example.com/");
        assert_eq!(o("127.0.0.1:3080", "warden"), "https://warden/");
        assert_eq!(o("[::1]:3080", "warden"), "https://warden/");
        assert_eq!(
            o("evilexample.com:3080", "example.com"),
            "https://example.com/"
        );
    }
}
