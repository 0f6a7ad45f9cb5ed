//! Issuing user certificates from the roles in force.

use crate::error::{AuthError, Result};
use crate::resources::SSH_SERIAL;
use crate::server::AuthServer;
use std::time::Duration as StdDuration;
use time::{Duration, OffsetDateTime};
use warden_ca::ssh::{sign_user_cert, UserCert};
use warden_ca::tls::{self, CertRequest, Usage};
use warden_ca::CaType;
use warden_store::StoreError;
use warden_types::api::LoginResponse;
use warden_types::{Document, Identity, IdentityKind, UserSpec};

/// Shortest certificate a client may ask for.
const MIN_TTL: StdDuration = StdDuration::from_secs(60);

impl AuthServer {
    /// Next SSH certificate serial: monotonic, so revoked serials cluster
    /// and KRLs stay small.
    async fn next_serial(&self) -> Result<u64> {
        for _ in 0..100 {
            let current = self.backend().get(SSH_SERIAL).await?;
            let (n, res) = match current {
                None => (
                    1u64,
                    self.backend().create(SSH_SERIAL, b"1".to_vec(), None).await,
                ),
                Some(item) => {
                    let n: u64 = std::str::from_utf8(&item.value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| AuthError::Internal("corrupt serial counter".into()))?;
                    (
                        n + 1,
                        self.backend()
                            .compare_and_swap(
                                SSH_SERIAL,
                                item.revision,
                                (n + 1).to_string().into_bytes(),
                                None,
                            )
                            .await,
                    )
                }
            };
            match res {
                Ok(_) => return Ok(n),
                Err(StoreError::Conflict { .. }) | Err(StoreError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Internal(
            "serial counter is too contended".into(),
        ))
    }

    /// Certificates for `user`'s public keys, with the user's current roles.
    pub(crate) async fn issue_user_certs(
        &self,
        user: &Document<UserSpec>,
        ssh_public_key: &str,
        tls_csr_pem: &str,
        ttl_secs: Option<u64>,
        login_deadline: Option<i64>,
    ) -> Result<LoginResponse> {
        self.issue_certs(
            user,
            ssh_public_key,
            Some(tls_csr_pem),
            ttl_secs,
            None,
            login_deadline,
        )
        .await
    }

    /// Like `issue_user_certs`; `tls_csr_pem: None` issues SSH only, and
    /// `mfa_node` marks a per-session MFA certificate for that node.
    /// `login_deadline` (Unix seconds) is the end of the login a renewal
    /// continues: the certificates never outlive it. `None` starts a login.
    pub(crate) async fn issue_certs(
        &self,
        user: &Document<UserSpec>,
        ssh_public_key: &str,
        tls_csr_pem: Option<&str>,
        ttl_secs: Option<u64>,
        mfa_node: Option<&str>,
        login_deadline: Option<i64>,
    ) -> Result<LoginResponse> {
        let public_key = ssh_key::PublicKey::from_openssh(ssh_public_key.trim())
            .map_err(|e| AuthError::BadRequest(format!("invalid SSH public key: {e}")))?;
        let effective = self.effective(user);
        let (requests, access_until) = (effective.requests, effective.until);
        let roles = self.roles(&effective.roles);
        let traits = user.spec.traits.clone();
        let mut logins = warden_policy::allowed_logins(&roles, &traits);
        // Logins of resource requests: the node still decides per node.
        for (node, _) in &effective.resources {
            if !logins.contains(&node.login) {
                logins.push(node.login.clone());
            }
        }
        logins.sort();
        let options = warden_policy::session_options(&roles);
        let default_ttl = self.config().await?.default_session_ttl.0;
        let requested = ttl_secs.map(StdDuration::from_secs).unwrap_or(default_ttl);
        let max = if roles.is_empty() {
            default_ttl
        } else {
            options.max_ttl
        };
        let mut ttl = requested
            .min(max)
            .min(warden_policy::MAX_SESSION_TTL)
            .max(MIN_TTL);
        // Never past the end of an access request it carries.
        if let Some(until) = access_until {
            let left = (until - OffsetDateTime::now_utc().unix_timestamp()).max(1) as u64;
            ttl = ttl.min(StdDuration::from_secs(left));
        }
        let now = OffsetDateTime::now_utc();
        if let Some(deadline) = login_deadline {
            let left = deadline - now.unix_timestamp();
            if left < MIN_TTL.as_secs() as i64 {
                return Err(AuthError::Unauthenticated(format!(
                    "your login ends in {}s, too soon to renew; run 'warden login'",
                    left.max(0)
                )));
            }
            ttl = ttl.min(StdDuration::from_secs(left as u64));
        }
        let valid_before = now + Duration::seconds(ttl.as_secs() as i64);
        let role_names: Vec<String> = roles.iter().map(|r| r.name().to_string()).collect();
        let identity = Identity {
            kind: IdentityKind::User,
            username: user.name().to_string(),
            cluster: self.cluster().to_string(),
            roles: role_names.clone(),
            logins: logins.clone(),
            traits: traits.clone(),
            requests: requests.clone(),
            expires: valid_before.unix_timestamp(),
            login_expires: login_deadline.unwrap_or(valid_before.unix_timestamp()),
            user_id: user.spec.uid.clone(),
        };
        let (user_ca, _) = self.signer(CaType::User).await?;
        let cert = sign_user_cert(
            &*user_ca,
            &UserCert {
                public_key,
                username: user.name().to_string(),
                logins,
                valid_after: (now - Duration::minutes(1)).unix_timestamp() as u64,
                valid_before: valid_before.unix_timestamp() as u64,
                serial: self.next_serial().await?,
                permit_pty: options.permit_pty,
                permit_port_forwarding: options.permit_port_forwarding,
                permit_agent_forwarding: options.permit_agent_forwarding,
                permit_x11_forwarding: options.permit_x11_forwarding,
                roles: role_names,
                traits,
                requests,
                cluster: self.cluster().to_string(),
                mfa_node: mfa_node.map(str::to_string),
                user_id: user.spec.uid.clone(),
            },
        )?;
        let ssh_cert = cert
            .to_openssh()
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let (tls_ca, tls_authority) = self.signer(CaType::Tls).await?;
        let tls_ca_pems = tls_authority.tls_cert_pems();
        let Some(tls_csr_pem) = tls_csr_pem else {
            return Ok(LoginResponse {
                identity,
                ssh_cert,
                tls_cert_pem: String::new(),
                tls_ca_pems,
                ssh_host_ca_keys: vec![],
            });
        };
        let tls_cert_pem = tls::issue_from_csr(
            &*tls_ca,
            &tls_ca_pems[0],
            tls_csr_pem,
            &CertRequest {
                common_name: user.name().to_string(),
                dns_names: vec![],
                ips: vec![],
                identity: Some(identity.clone()),
                not_before: now - Duration::minutes(1),
                not_after: valid_before,
                usage: Usage::Client,
            },
        )
        .map_err(|e| AuthError::BadRequest(e.to_string()))?;
        Ok(LoginResponse {
            identity,
            ssh_cert,
            tls_cert_pem,
            tls_ca_pems,
            ssh_host_ca_keys: self.authority(CaType::Host).await?.ssh_public_keys(),
        })
    }
}
