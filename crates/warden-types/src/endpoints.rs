//! Every endpoint of the auth API, declared once: its method, its path and
//! the types of its request and answer. Auth routes by these declarations
//! and clients call through them (`ApiClient::call`), so a path, a method
//! or a type cannot differ between the two sides.
//!
//! Paths name their parameters in braces (`/v1/users/{name}`), as axum
//! routes them; [`Endpoint::at`] fills them in. A `GET` endpoint's request
//! type is its query string; `()` means none.

use crate::api::*;
use crate::audit::AuditEvent;
use crate::{AccessRequestSpec, Document, LockSpec, NodeSpec, RoleSpec, UserSpec};
use std::marker::PhantomData;

/// An HTTP method of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// A request body that is raw bytes (a recording), not JSON.
#[derive(Debug)]
pub struct Raw;

/// The `{}` some calls answer with.
pub type Ack = serde_json::Value;

/// One endpoint: `Req` is sent (JSON body, or query string for `GET`),
/// `Resp` comes back.
pub struct Endpoint<Req: ?Sized, Resp> {
    pub method: Method,
    pub path: &'static str,
    types: PhantomData<fn(&Req) -> Resp>,
}

impl<Req: ?Sized, Resp> Clone for Endpoint<Req, Resp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req: ?Sized, Resp> Copy for Endpoint<Req, Resp> {}

impl<Req: ?Sized, Resp> std::fmt::Debug for Endpoint<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method.as_str(), self.path)
    }
}

impl<Req: ?Sized, Resp> Endpoint<Req, Resp> {
    const fn new(method: Method, path: &'static str) -> Self {
        Endpoint {
            method,
            path,
            types: PhantomData,
        }
    }

    /// The path with its `{parameters}` replaced, in order, by `params`
    /// (percent-encoded, so a value never adds a path segment).
    pub fn at(&self, params: &[&(dyn std::fmt::Display + Sync)]) -> String {
        let mut out = String::with_capacity(self.path.len() + 32);
        let mut rest = self.path;
        let mut params = params.iter();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
            let value = params.next().map(|v| v.to_string()).unwrap_or_default();
            out.push_str(&encode(&value));
            rest = &rest[close..];
        }
        out.push_str(rest);
        debug_assert!(
            params.next().is_none(),
            "too many parameters for {}",
            self.path
        );
        out
    }
}

/// Percent-encodes a path segment: unreserved characters stay.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

use Method::*;

macro_rules! endpoints {
    ($($(#[$doc:meta])* $name:ident: $method:ident $path:literal, $req:ty => $resp:ty;)*) => {
        $($(#[$doc])* pub const $name: Endpoint<$req, $resp> = Endpoint::new($method, $path);)*
        /// Every endpoint's method and path, for checks over the table.
        pub const ALL: &[(Method, &str)] = &[$(($method, $path)),*];
    };
}

endpoints! {
    // Public: through the proxy, without a client certificate.
    PING: Get "/v1/ping", () => PingResponse;
    LOGIN: Post "/v1/login", LoginRequest => LoginResponse;
    LOGIN_CHALLENGE: Post "/v1/login/challenge", LoginChallengeRequest => MfaChallengeResponse;
    SIGNUP_INFO: Post "/v1/signup/info", SignupInfoRequest => SignupInfo;
    SIGNUP: Post "/v1/signup", SignupRequest => SignupResponse;
    JOIN: Post "/v1/join", JoinRequest => NodeCerts;
    SSO_START: Post "/v1/sso/start", SsoStartRequest => SsoStartResponse;
    SSO_RESULT: Post "/v1/sso/result", SsoResultRequest => SsoResult;
    /// The names of the identity provider connectors (for login buttons).
    SSO_CONNECTORS: Get "/v1/sso/connectors", () => Vec<String>;
    // Users.
    WHOAMI: Get "/v1/whoami", () => WhoAmI;
    RENEW: Post "/v1/certs/renew", RenewRequest => LoginResponse;
    USERS: Get "/v1/users", () => Vec<Document<UserSpec>>;
    CREATE_USER: Post "/v1/users", CreateUserRequest => CreateUserResponse;
    USER: Get "/v1/users/{name}", () => Document<UserSpec>;
    UPDATE_USER: Patch "/v1/users/{name}", UpdateUserRequest => Document<UserSpec>;
    DELETE_USER: Delete "/v1/users/{name}", () => ChangeResponse;
    UNLOCK_USER: Post "/v1/users/{name}/unlock", () => ChangeResponse;
    RESET_USER: Post "/v1/users/{name}/reset", ResetUserRequest => CreateUserResponse;
    ROLES: Get "/v1/roles", () => Vec<Document<RoleSpec>>;
    ROLE: Get "/v1/roles/{name}", () => Document<RoleSpec>;
    PUT_ROLE: Put "/v1/roles/{name}", Document<RoleSpec> => ChangeResponse;
    DELETE_ROLE: Delete "/v1/roles/{name}", () => ChangeResponse;
    TOKENS: Get "/v1/tokens", () => Vec<TokenSummary>;
    CREATE_TOKEN: Post "/v1/tokens", CreateTokenRequest => CreateTokenResponse;
    DELETE_TOKEN: Delete "/v1/tokens/{id}", () => ChangeResponse;
    // Audit and recordings.
    AUDIT_EVENTS: Get "/v1/audit/events", AuditQuery => AuditEvents;
    AUDIT_VERIFY: Get "/v1/audit/verify", () => AuditVerifyResponse;
    BACKUP: Post "/v1/admin/backup", BackupRequest => Backup;
    CAS: Get "/v1/cas", () => Vec<CaKeyInfo>;
    ACCESS_EXPLAIN: Post "/v1/access/check", AccessExplainRequest => AccessExplainResponse;
    POLICY_SYNC: Post "/v1/policy/sync", PolicySyncReport => Ack;
    CA_ROTATE: Post "/v1/cas/rotate", RotateRequest => Vec<CaKeyInfo>;
    ACTIVE_SESSIONS: Get "/v1/sessions/active", () => Vec<ActiveSession>;
    RECORDINGS: Get "/v1/recordings", RecordingQuery => Vec<RecordingInfo>;
    RECORDING: Get "/v1/recordings/{id}", () => Raw;
    UPLOAD_RECORDING: Put "/v1/recordings/{id}", Raw => RecordingInfo;
    // Configuration documents (approval rules, webhooks, connectors, the
    // cluster's settings).
    CONFIGS: Get "/v1/config/{kind}", () => Vec<Document<serde_json::Value>>;
    CONFIG: Get "/v1/config/{kind}/{name}", () => Document<serde_json::Value>;
    PUT_CONFIG: Put "/v1/config/{kind}/{name}", Document<serde_json::Value> => ChangeResponse;
    DELETE_CONFIG: Delete "/v1/config/{kind}/{name}", () => ChangeResponse;
    // Locks.
    LOCKS: Get "/v1/locks", () => Vec<Document<LockSpec>>;
    CREATE_LOCK: Post "/v1/locks", CreateLockRequest => Document<LockSpec>;
    /// A long poll: answered when the locks change after `after`.
    LOCKS_WATCH: Get "/v1/locks/watch", WatchQuery => LockWatch;
    DELETE_LOCK: Delete "/v1/locks/{id}", () => ChangeResponse;
    // Second factors.
    MFA_REQUIRED: Post "/v1/mfa/required", MfaRequiredRequest => MfaRequiredResponse;
    MFA_SESSION: Post "/v1/mfa/session", MfaSessionRequest => MfaSessionResponse;
    MFA_CHALLENGE: Post "/v1/mfa/challenge", MfaChallengeRequest => MfaChallengeResponse;
    MFA_DEVICES: Get "/v1/mfa/devices", () => Vec<MfaDevice>;
    MFA_REGISTER: Post "/v1/mfa/devices/register", MfaRegisterRequest => WebauthnChallenge;
    MFA_REGISTER_FINISH: Post "/v1/mfa/devices/register/finish", MfaRegisterFinish => MfaDevice;
    MFA_REMOVE: Post "/v1/mfa/devices/remove", MfaRemoveRequest => Ack;
    // Access requests.
    REQUESTS: Get "/v1/requests", () => Vec<Document<AccessRequestSpec>>;
    CREATE_REQUEST: Post "/v1/requests", CreateRequestRequest => Document<AccessRequestSpec>;
    REQUEST: Get "/v1/requests/{id}", () => Document<AccessRequestSpec>;
    REVIEW_REQUEST: Post "/v1/requests/{id}/review", ReviewRequest => Document<AccessRequestSpec>;
    DROP_REQUEST: Post "/v1/requests/{id}/drop", () => Document<AccessRequestSpec>;
    // Nodes and proxies.
    NODES: Get "/v1/nodes", () => Vec<Document<NodeSpec>>;
    REMOVE_NODE: Delete "/v1/nodes/{id}", () => ChangeResponse;
    NODE_CERTS: Post "/v1/nodes/certs", RenewNodeRequest => NodeCerts;
    NODE_HEARTBEAT: Put "/v1/nodes/heartbeat", Heartbeat => HeartbeatAck;
    NODE_LEAVE: Delete "/v1/nodes/heartbeat", () => Ack;
    NODE_ACCESS: Post "/v1/nodes/access", AccessCheckRequest => AccessCheckResponse;
    /// A long poll: answered when users, roles, requests or locks change
    /// after `version`.
    NODE_POLICY: Get "/v1/nodes/policy", PolicyQuery => NodePolicy;
    EVENT: Post "/v1/events", AuditEvent => Ack;
    EVENTS: Post "/v1/events/batch", [AuditEvent] => Ack;
    PROXIES: Get "/v1/proxies", () => Vec<ProxyInfo>;
    PROXY_HEARTBEAT: Put "/v1/proxies/heartbeat", ProxyHeartbeat => Ack;
    PROXY_CERTS: Post "/v1/proxies/certs", RenewNodeRequest => NodeCerts;
    // Databases.
    DATABASES: Get "/v1/databases", () => Vec<DatabaseInfo>;
    DB_CERT: Post "/v1/db/certs", DbCertRequest => DbCertResponse;
    DB_SERVER_CERT: Post "/v1/db/server-certs", DbServerCertRequest => DbCertResponse;
    DB_CA: Get "/v1/db/ca", () => DbCa;
    // Single sign-on, called by the proxy for the browser.
    SSO_CALLBACK: Post "/v1/sso/callback", SsoCallback => SsoCallbackResponse;
    SSO_DEVICE: Post "/v1/sso/device", SsoDeviceRequest => SsoDeviceResponse;
    SSO_DEVICE_INFO: Post "/v1/sso/device/info", SsoDeviceRequest => SsoDeviceInfo;
}

/// The page an identity provider sends the browser back to: served by the
/// proxy to browsers, not part of the auth API.
pub const OIDC_CALLBACK_PATH: &str = "/v1/oidc/callback";

/// Where a web UI single sign-on returns the browser, on the proxy.
pub const WEB_SSO_DONE_PATH: &str = "/web/sso/done";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_and_path_is_declared_once() {
        let mut seen = std::collections::BTreeSet::new();
        for (m, p) in ALL {
            assert!(seen.insert((m.as_str(), *p)), "{} {p} twice", m.as_str());
            assert!(p.starts_with("/v1/"), "{p}");
        }
    }

    #[test]
    fn parameters_are_filled_and_encoded() {
        assert_eq!(USER.at(&[&"alice"]), "/v1/users/alice");
        let kind = String::from("oidc");
        assert_eq!(CONFIG.at(&[&kind, &"okta"]), "/v1/config/oidc/okta");
        assert_eq!(USER.at(&[&"a/b?c"]), "/v1/users/a%2Fb%3Fc");
        assert_eq!(USERS.at(&[]), "/v1/users");
    }
}
