//! Talking to a cluster through its proxy: ping, signup, login, and the
//! authenticated API client for admin and user commands.

use crate::http::ApiClient;
use crate::profile::{Profile, ProfileStore};
use crate::tls::{ClientCert, Trust};
use crate::{ClientError, Result};
use warden_ca::ClientKey;
use warden_types::api::{
    LoginChallengeRequest, LoginRequest, LoginResponse, MfaChallengeResponse, PingResponse,
    SignupInfo, SignupRequest, SignupResponse, SsoResult, SsoResultRequest, SsoStartRequest,
    SsoStartResponse, WebauthnAnswer,
};
use warden_types::endpoints;
use warden_types::{Secret, ALPN_AUTH, AUTH_SERVER_NAME};

/// A client for the proxy's public (login) API.
pub fn public_client(proxy: &str, trust: Trust) -> Result<ApiClient> {
    ApiClient::new(proxy, None, trust, b"http/1.1", None)
}

/// Public facts about the cluster; verifies the proxy by `trust`. With a
/// pin, also checks that the CA the cluster advertises has that pin.
pub async fn ping(proxy: &str, trust: Trust) -> Result<PingResponse> {
    let pin = match &trust {
        Trust::Pin(p) => Some(p.clone()),
        _ => None,
    };
    let resp: PingResponse = match public_client(proxy, trust)?
        .call(&endpoints::PING, &())
        .await
    {
        Ok(r) => r,
        Err(
            e @ (ClientError::Tls { .. }
            | ClientError::Protocol { .. }
            | ClientError::UntrustedCluster { .. }),
        ) => {
            return Err(match crate::probe::not_a_proxy(proxy).await {
                Some(what) => ClientError::WrongPort {
                    addr: proxy.to_string(),
                    what,
                },
                None => e,
            })
        }
        Err(e) => return Err(e),
    };
    if let Some(pin) = pin {
        let ok = resp
            .tls_ca_pems
            .iter()
            .any(|pem| warden_ca::tls::ca_pin(pem).ok().as_deref() == Some(pin.as_str()));
        if !ok {
            return Err(ClientError::PinMismatch {
                addr: proxy.to_string(),
                expected: pin,
                presented: "a CA list without it".into(),
            });
        }
    }
    Ok(resp)
}

pub async fn signup_info(proxy: &str, trust: Trust, token: &str) -> Result<SignupInfo> {
    let req = warden_types::api::SignupInfoRequest {
        token: warden_types::Secret::new(token.to_string()),
    };
    public_client(proxy, trust)?
        .call(&endpoints::SIGNUP_INFO, &req)
        .await
}

pub async fn signup(proxy: &str, trust: Trust, req: &SignupRequest) -> Result<SignupResponse> {
    public_client(proxy, trust)?
        .call(&endpoints::SIGNUP, req)
        .await
}

/// Inputs of a password login.
pub struct LoginInput {
    pub user: String,
    pub password: Secret<String>,
    pub otp: Secret<String>,
    /// A security key's answer, instead of `otp`.
    pub webauthn: Option<WebauthnAnswer>,
    pub ttl_secs: Option<u64>,
}

/// Checks the password and returns the second factors the user can answer
/// with (a security-key challenge when they have keys).
pub async fn login_challenge(
    proxy: &str,
    trust: Trust,
    user: &str,
    password: &Secret<String>,
) -> Result<MfaChallengeResponse> {
    let req = LoginChallengeRequest {
        user: user.to_string(),
        password: password.clone(),
    };
    public_client(proxy, trust)?
        .call(&endpoints::LOGIN_CHALLENGE, &req)
        .await
}

/// Logs in with a fresh key; the private key never leaves this machine.
pub async fn login(
    proxy: &str,
    trust: Trust,
    input: LoginInput,
) -> Result<(ClientKey, LoginResponse)> {
    let key = ClientKey::generate();
    let req = LoginRequest {
        user: input.user.clone(),
        password: input.password,
        otp: input.otp,
        webauthn: input.webauthn,
        ssh_public_key: key
            .ssh_public_key()
            .to_openssh()
            .map_err(|e| ClientError::Local(e.to_string()))?,
        tls_csr_pem: key.csr_pem(&input.user)?,
        ttl_secs: input.ttl_secs,
    };
    let resp = public_client(proxy, trust)?
        .call(&endpoints::LOGIN, &req)
        .await?;
    Ok((key, resp))
}

/// Starts a single sign-on login with a fresh key; the caller sends the
/// user to the returned URL and polls [`sso_result`].
pub async fn sso_start(
    proxy: &str,
    trust: Trust,
    connector: &str,
    ttl_secs: Option<u64>,
    client_redirect: Option<String>,
) -> Result<(ClientKey, SsoStartResponse)> {
    let key = ClientKey::generate();
    let req = SsoStartRequest {
        connector: connector.to_string(),
        ssh_public_key: key
            .ssh_public_key()
            .to_openssh()
            .map_err(|e| ClientError::Local(e.to_string()))?,
        tls_csr_pem: key.csr_pem("sso")?,
        ttl_secs,
        client_redirect,
        client_host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty()),
        web: false,
    };
    let resp = public_client(proxy, trust)?
        .call(&endpoints::SSO_START, &req)
        .await?;
    Ok((key, resp))
}

/// The state of a started single sign-on login.
pub async fn sso_result(proxy: &str, trust: Trust, req: &SsoResultRequest) -> Result<SsoResult> {
    public_client(proxy, trust)?
        .call(&endpoints::SSO_RESULT, req)
        .await
}

/// A client of the auth API through the proxy (ALPN `warden-auth`), mTLS
/// end to end with the profile's certificate.
pub fn auth_client(store: &ProfileStore, profile: &Profile) -> Result<ApiClient> {
    let cert = store.client_cert(profile)?;
    // An expired certificate is refused in the TLS handshake with no
    // useful message; say it here instead.
    let der = warden_ca::tls::pem_to_der(&cert.cert_pem)?;
    if let Some(first) = der.first() {
        let left =
            warden_ca::tls::not_after(first)? - time::OffsetDateTime::now_utc().unix_timestamp();
        if left <= 0 {
            return Err(ClientError::Local(format!(
                "certificate expired {}; run 'warden login'",
                warden_types::duration::relative(left)
            )));
        }
    }
    // The other proxies too: a dead proxy costs a refused connect.
    ApiClient::new(
        &profile.proxies(),
        Some(AUTH_SERVER_NAME),
        store.trust(profile)?,
        ALPN_AUTH,
        Some(&cert),
    )
}

/// A client of the auth API at `addr` directly, with a given identity.
pub fn direct_auth_client(
    addr: &str,
    ca_pems: Vec<String>,
    cert: &ClientCert,
) -> Result<ApiClient> {
    ApiClient::new(
        addr,
        Some(AUTH_SERVER_NAME),
        Trust::Roots(ca_pems),
        ALPN_AUTH,
        Some(cert),
    )
}
