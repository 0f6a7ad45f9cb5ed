//! JSON messages of the HTTP API.

use crate::audit::AuditEvent;
use crate::identity::Identity;
use crate::resource::{Document, TokenKind, UserSpec};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Header through which a proxy tells auth the client's address (honoured
/// only from proxy identities).
pub const CLIENT_ADDR_HEADER: &str = "x-warden-client-addr";
/// Header the proxy adds to SSO calls: its public addresses, comma-separated,
/// so auth picks the connector's redirect URL for that proxy.
pub const PROXY_ADDRS_HEADER: &str = "x-warden-proxy-addrs";

/// Public facts about a cluster, served by the proxy without authentication.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PingResponse {
    pub cluster: String,
    pub version: String,
    /// PEM certificates of the tls CA (all trusted keys).
    pub tls_ca_pems: Vec<String>,
    /// OpenSSH public keys of the host CA, for known_hosts `@cert-authority`.
    pub ssh_host_ca_keys: Vec<String>,
    /// OpenSSH public keys of the user CA, for `TrustedUserCAKeys`.
    pub ssh_user_ca_keys: Vec<String>,
    /// A digest of every CA's keys: it moves with each rotation step, and
    /// a service holding certificates issued under another renews them.
    #[serde(default)]
    pub ca_generation: String,
}

/// Password + TOTP login with the public keys to certify.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginRequest {
    pub user: String,
    pub password: Secret<String>,
    /// TOTP code; empty when a security key answers instead.
    #[serde(default)]
    pub otp: Secret<String>,
    /// A security key's answer to the challenge from `/v1/login/challenge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webauthn: Option<WebauthnAnswer>,
    /// OpenSSH public key line to certify.
    pub ssh_public_key: String,
    /// PEM certificate signing request for the X.509 client certificate.
    pub tls_csr_pem: String,
    /// Requested lifetime; clamped by the user's roles.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// Certificates issued at login.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginResponse {
    pub identity: Identity,
    /// OpenSSH certificate line (`ssh-ed25519-cert-v01@openssh.com ...`).
    pub ssh_cert: String,
    pub tls_cert_pem: String,
    pub tls_ca_pems: Vec<String>,
    pub ssh_host_ca_keys: Vec<String>,
}

/// What a signup token is for, shown before the user picks a password.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignupInfo {
    pub user: String,
    pub cluster: String,
    /// Unix seconds.
    pub expires: i64,
}

/// Completes a signup: password and TOTP enrolment in one step, so the token
/// is consumed atomically.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignupRequest {
    pub token: Secret<String>,
    pub password: Secret<String>,
    /// Base32 TOTP secret chosen by the client (at least 160 bits).
    pub totp_secret: Secret<String>,
    /// A current code for that secret, proving the authenticator works.
    pub otp: Secret<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignupResponse {
    pub user: String,
}

/// `warden admin users add`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateUserRequest {
    pub name: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub logins: Vec<String>,
    #[serde(default)]
    pub traits: BTreeMap<String, Vec<String>>,
    /// Lifetime of the signup token.
    pub token_ttl_secs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateUserResponse {
    pub user: Document<UserSpec>,
    pub token: Secret<String>,
    /// Unix seconds.
    pub token_expires: i64,
}

/// `warden admin users update`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UpdateUserRequest {
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub logins: Option<Vec<String>>,
}

/// `warden request create`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateRequestRequest {
    #[serde(default)]
    pub roles: Vec<String>,
    /// Resource request: nodes (name or id) with the login wanted on each.
    #[serde(default)]
    pub resources: Vec<ResourceRef>,
    pub reason: String,
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// A node and login in a resource request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResourceRef {
    pub node: String,
    pub login: String,
}

/// `warden request review`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReviewRequest {
    pub approve: bool,
    pub reason: String,
}

/// Fresh certificates for keys the caller holds (mTLS with its current
/// certificate): picks up roles granted since login and approved requests.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenewRequest {
    pub ssh_public_key: String,
    pub tls_csr_pem: String,
}

/// Answer of `GET /v1/locks/watch?after=REVISION`: the locks in force once
/// they changed after `after` (or the long poll's time ran out), and the
/// store revision they reflect, for the next call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LockWatch {
    pub revision: i64,
    pub locks: Vec<crate::Document<crate::LockSpec>>,
}

/// `GET /v1/nodes/policy`: the state a node decides logins from, pushed
/// as a long poll (answered when it changes after the node's version).
/// Users carry no credentials, labels or descriptions; requests are the
/// approved, unexpired ones (resource requests only for the asking node),
/// without their reasons and reviews; locks without their authors.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodePolicy {
    /// The auth server process that answered: versions compare only
    /// between answers of one process (another auth server's caches reach
    /// the same state at revisions of their own).
    pub epoch: String,
    /// The store revision of each kind held, in the order users, roles,
    /// requests, locks: each is fed by its own watch, so a copy is current
    /// only when all four are, and newer only when none went back.
    pub version: [i64; 4],
    /// Auth's clock when it answered (Unix seconds): the node judges the
    /// expiry of locks and requests by auth's clock, not its own.
    pub now: i64,
    /// Nothing changed after the node's version while auth waited: the
    /// lists are left out and the node's copy is current.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
    pub users: Vec<crate::Document<crate::UserSpec>>,
    pub roles: Vec<crate::Document<crate::RoleSpec>>,
    pub requests: Vec<crate::Document<crate::AccessRequestSpec>>,
    pub locks: Vec<crate::Document<crate::LockSpec>>,
}

/// Query of `GET /v1/nodes/policy`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PolicyQuery {
    /// The epoch of the auth server that answered the node last; from
    /// another one, the version is not compared and the answer comes at
    /// once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// The version the node holds, `U.R.Q.L`; without it, answer at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Seconds to wait for a change (at most 55; default 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
}

/// A policy version as a query value, `U.R.Q.L`.
pub fn format_policy_version(v: &[i64; 4]) -> String {
    format!("{}.{}.{}.{}", v[0], v[1], v[2], v[3])
}

/// Whether policy version `a` is at or past `b` in every kind: newer (or
/// the same) only when no kind went back.
pub fn policy_version_at_least(a: &[i64; 4], b: &[i64; 4]) -> bool {
    a.iter().zip(b).all(|(x, y)| x >= y)
}

/// Reads `U.R.Q.L` back.
pub fn parse_policy_version(s: &str) -> Option<[i64; 4]> {
    let mut out = [0i64; 4];
    let mut parts = s.split('.');
    for slot in &mut out {
        *slot = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Query of the long polls (`GET /v1/locks/watch`, `/v1/nodes/policy`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WatchQuery {
    /// The revision the caller has; without it, answer at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    /// Seconds to wait for a change (at most 55; default 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
}

/// `POST /v1/signup/info`: what a signup token is for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignupInfoRequest {
    pub token: crate::Secret<String>,
}

/// `POST /v1/users/{name}/reset`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResetUserRequest {
    pub token_ttl_secs: u64,
}

/// `warden admin lock`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateLockRequest {
    pub target: crate::LockTarget,
    pub reason: String,
    /// None: until removed.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// `warden admin tokens add`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateTokenRequest {
    pub kind: TokenKind,
    pub ttl_secs: u64,
    #[serde(default)]
    pub user: Option<String>,
    /// Node tokens: host names and IPs allowed in the host certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<String>,
    /// Node tokens: may take the name of a live node.
    #[serde(default)]
    pub replace: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateTokenResponse {
    pub id: String,
    pub token: Secret<String>,
    pub kind: TokenKind,
    /// Unix seconds.
    pub expires: i64,
    pub ca_pin: String,
}

/// A token as listed: never the secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenSummary {
    pub id: String,
    pub kind: TokenKind,
    pub user: Option<String>,
    /// Unix seconds.
    pub expires: i64,
    pub created_by: Option<String>,
}

/// The caller as the auth service sees it now.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WhoAmI {
    pub identity: Identity,
    /// Roles in force now (may differ from the certificate's).
    pub current_roles: Vec<String>,
}

/// Outcome of a role upsert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Created,
    Updated,
    Unchanged,
    Deleted,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangeResponse {
    pub name: String,
    pub change: Change,
    pub revision: Option<i64>,
}

/// Query of `GET /v1/audit/events`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AuditQuery {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Node id (or name: auth resolves it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Events after this index, oldest first (export); otherwise newest
    /// first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
}

/// `GET /v1/audit/verify`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AuditVerifyResponse {
    pub events: u64,
    /// Index, id (when readable) and what is wrong with the first bad event.
    pub first_broken: Option<(u64, String, String)>,
    /// The newest chain head signed by the auth CA: (index, unix time).
    pub signed_head: Option<(u64, i64)>,
}

/// `POST /v1/access/check`: would this user (or a hypothetical one with
/// these roles and traits) get in as `login` on `node`, and why?
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AccessExplainRequest {
    /// A real user: their roles, traits, approved requests and the locks
    /// in force count, as at a login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A hypothetical user with these roles (instead of `user`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The hypothetical user's traits.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub traits: std::collections::BTreeMap<String, Vec<String>>,
    /// Node name or id (with `login`), or empty with `request_roles`.
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub login: String,
    /// Instead of a node login: may the user request these roles just in
    /// time, and on what terms?
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_roles: Vec<String>,
}

/// The answer to [`AccessExplainRequest`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AccessExplainResponse {
    /// The node's name and id, as found.
    pub node: String,
    pub node_id: String,
    /// The decision as the node would make it.
    pub decision: AccessCheckResponse,
    /// For `request_roles`: whether the user may ask, and on what terms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestExplain>,
}

/// May a user request roles, and what would a request get?
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RequestExplain {
    pub allowed: bool,
    pub reason: String,
    /// Each role's verdict.
    pub explanation: Vec<String>,
    /// Distinct approvals a request would need.
    pub approvals_needed: u32,
    /// The longest access it could grant, in seconds.
    pub max_duration_secs: u64,
}

/// One key of a certificate authority (`warden admin ca ls`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CaKeyInfo {
    /// `user`, `host` or `tls`.
    pub ca: String,
    /// `software` (sealed by the key-encryption key, in the backend) or
    /// `pkcs11` (in an HSM).
    pub store: String,
    /// For an HSM key, its token and object id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub location: String,
    /// SHA256 fingerprint of the public key, as OpenSSH shows it.
    pub fingerprint: String,
    /// Unix seconds.
    pub created: i64,
    /// `signing` (signs new certificates) or `trusted` (only trusted).
    pub state: String,
    /// `ed25519` or `ecdsa-p256` (HSMs without Ed25519).
    #[serde(default)]
    pub alg: String,
    /// The phase of the CA's rotation under way (`init`, `switched`),
    /// with `(auto)` for an automatic one; empty without one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rotation: String,
    /// For a tls CA key, the pin clients pass to `warden login --ca-pin`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pin: String,
}

/// `POST /v1/admin/backup`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BackupRequest {
    /// Encrypts the backup's secrets (at least 12 characters).
    pub passphrase: String,
}

/// A backup of the cluster state (`warden admin backup`): documents
/// without secrets in the clear, for review and diffs; everything secret
/// (the key-encryption key that seals the CA keys and TOTP secrets,
/// password hashes, connector and webhook secrets, join tokens)
/// encrypted to a passphrase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Backup {
    /// Format version: 1.
    pub warden_backup: u32,
    pub cluster: String,
    /// Unix seconds.
    pub created: i64,
    /// The Warden version that wrote it.
    pub warden_version: String,
    /// Backend key → JSON document, for every document without secrets.
    pub documents: std::collections::BTreeMap<String, serde_json::Value>,
    /// Backend key → base64, for values that are not JSON.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub raw: std::collections::BTreeMap<String, String>,
    /// Backend key → Unix seconds, for documents that expire (time-limited
    /// locks, access requests): restored only while that is ahead.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub expires: std::collections::BTreeMap<String, i64>,
    /// The audit chain head last signed before the backup (JSON), so a
    /// restore can say where the chain it continues from stood.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<serde_json::Value>,
    pub secrets: SealedSecrets,
}

impl Backup {
    /// When it was taken, as RFC 3339.
    pub fn created_rfc3339(&self) -> String {
        time::OffsetDateTime::from_unix_timestamp(self.created)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }
}

/// The encrypted part of a [`Backup`]: argon2id turns the passphrase
/// into an AES-256-GCM key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SealedSecrets {
    /// `argon2id`.
    pub kdf: String,
    /// Memory (KiB), passes and lanes of the KDF.
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
    /// Base64.
    pub salt: String,
    /// `aes-256-gcm`.
    pub cipher: String,
    /// Base64: nonce, then ciphertext and tag.
    pub data: String,
}

/// An SSH session that started and has not ended, from the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActiveSession {
    pub session_id: String,
    pub user: String,
    pub login: String,
    /// Node id.
    pub node: String,
    /// The node's name when auth knows it.
    pub node_name: String,
    /// Unix seconds.
    pub started: i64,
}

/// A stored session recording, as listed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordingInfo {
    pub session_id: String,
    pub user: String,
    pub login: String,
    /// Node id and name.
    pub node: String,
    pub node_name: String,
    pub command: String,
    /// Unix seconds.
    pub start: i64,
    pub duration_ms: u64,
    /// Bytes stored.
    pub size: u64,
    pub events: u64,
    /// Cut short (the node crashed mid-session); plays up to the cut.
    #[serde(default)]
    pub truncated: bool,
}

/// Query of `GET /v1/recordings`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RecordingQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Node name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditEvents {
    pub events: Vec<AuditEvent>,
    /// When the limit cut the result: how many events match in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// Every error body of the API.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `access_denied`.
    pub code: String,
    /// A sentence a person can act on.
    pub message: String,
}

/// `<data-dir>/admin/config.json`: how the local operator reaches auth,
/// written at every start next to the admin key and certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdminConfig {
    pub cluster: String,
    /// Address of the auth API (mTLS).
    pub auth_addr: String,
    /// Public proxy address, for the commands printed to users.
    #[serde(default)]
    pub proxy_addr: Option<String>,
    pub ca_pin: String,
}

/// A node's request to join with a one-time token (sent through the proxy's
/// public API: the node has no certificate yet).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: Secret<String>,
    /// Human name of the node (unique names are the admin's business).
    pub name: String,
    /// OpenSSH public key of the node's host key.
    pub ssh_public_key: String,
    /// CSR for the node's X.509 certificate (same key).
    pub tls_csr_pem: String,
    /// Addresses the node's SSH server is reachable at, `host:port`; for a
    /// proxy, its public addresses.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// What joins: `node` (default) or `proxy`; must match the token.
    #[serde(default = "default_join_kind")]
    pub kind: crate::TokenKind,
}

fn default_join_kind() -> crate::TokenKind {
    crate::TokenKind::Node
}

/// A proxy's heartbeat: where users and peers reach it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProxyHeartbeat {
    pub id: String,
    /// Public `host:port` addresses.
    pub addrs: Vec<String>,
    pub version: String,
    /// The CA generation the proxy's certificates were issued under (a
    /// rotation waits for every proxy to hold the current one).
    #[serde(default)]
    pub ca_generation: String,
}

/// A proxy in the cluster, as listed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProxyInfo {
    pub id: String,
    pub addrs: Vec<String>,
    pub version: String,
    /// Unix seconds.
    pub heartbeat: i64,
}

/// Certificates for a node, at join and at every renewal.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeCerts {
    pub node_id: String,
    pub cluster: String,
    /// OpenSSH host certificate.
    pub ssh_host_cert: String,
    pub tls_cert_pem: String,
    pub tls_ca_pems: Vec<String>,
    /// OpenSSH public keys of the user CA: the only keys the node trusts.
    pub ssh_user_ca_keys: Vec<String>,
    /// The cluster's CA keys these certificates and trust lists were issued
    /// under; when a heartbeat's answer names another, the node renews at
    /// once (a CA rotation moved on).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_generation: String,
}

/// Auth's answer to a node's heartbeat.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// The cluster's current CA keys (see [`NodeCerts::ca_generation`]);
    /// empty from auth servers that predate rotation.
    #[serde(default)]
    pub ca_generation: String,
}

/// `POST /v1/cas/rotate`: starts a rotation (`phase` left out: automatic)
/// or moves it by hand.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RotateRequest {
    /// `user`, `host` or `tls`.
    pub ca: String,
    /// `init`, `switch`, `drop` or `rollback`; left out, the rotation runs
    /// by itself at the CA's pace (`warden_ca::CaType::wait`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// How long the old key stays trusted after the switch (automatic
    /// rotations; default: the cluster's default session TTL, so that
    /// certificates signed before the switch run out first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_secs: Option<u64>,
    /// A tls switch or drop by hand goes ahead although some node or
    /// proxy has not confirmed the previous step (it is cut off).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// A node's certificate renewal (mTLS with its current certificate).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenewNodeRequest {
    pub ssh_public_key: String,
    pub tls_csr_pem: String,
    #[serde(default)]
    pub addrs: Vec<String>,
}

/// A node's heartbeat: what it is now.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Heartbeat {
    pub name: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub addrs: Vec<String>,
    pub version: String,
    /// Seconds until the next heartbeat (omitted: 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_secs: Option<u64>,
    /// The CA generation of the node's certificates and trust.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_generation: String,
    /// The databases this agent's database service serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DatabaseHeartbeat>,
    /// An agent that serves databases only (`--roles db`): it takes no
    /// SSH logins and `warden ls` does not list it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub db_only: bool,
}

/// A database as its service reports it (its address stays with the
/// service).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatabaseHeartbeat {
    pub name: String,
    /// `postgres` or `mysql`.
    pub protocol: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A database in the inventory (`GET /v1/databases`): one entry per
/// service that serves it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    pub name: String,
    pub protocol: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The id of the database service (an agent) that serves it.
    pub service: String,
    /// That service's name.
    pub service_name: String,
    /// Unix seconds of the service's last heartbeat.
    pub heartbeat: i64,
}

/// A database service asks auth whether a user may open a database
/// connection, and for the client certificate that opens it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DbCertRequest {
    /// The X.509 certificate the user presented to the service (DER,
    /// base64): auth takes the user from it, so a service can ask only for
    /// users who hold a valid certificate, never for a name it makes up.
    pub user_cert: String,
    /// The database (its Warden name).
    pub database: String,
    /// The database user to connect as.
    pub db_user: String,
    /// The database (schema) name inside it.
    pub db_name: String,
    /// The service's fresh Ed25519 public key for this connection, base64.
    pub public_key: String,
}

/// What auth answers a [`DbCertRequest`] (a refusal is a 403 with the
/// reason).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DbCertResponse {
    /// The client certificate (subject CN: the database user), PEM.
    pub cert_pem: String,
    /// The database CA's certificates, PEM: what a database trusts, and
    /// what the service trusts in a database's server certificate unless
    /// the database has a CA file of its own.
    pub ca_pems: Vec<String>,
    /// The roles that allowed it.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// `warden admin db cert`: a server certificate for a database, from the
/// database CA.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DbServerCertRequest {
    /// DNS names and IP addresses the database is reached at.
    pub hosts: Vec<String>,
    /// The database's Ed25519 public key, base64 (its private key never
    /// leaves the admin's machine).
    pub public_key: String,
    /// Lifetime in seconds (default 90 days, at most 1 year).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// The database CA's certificates (`warden admin db ca export`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DbCa {
    pub ca_pems: Vec<String>,
}

/// A node asks auth whether a user may log in (decided with live roles).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessCheckRequest {
    pub user: String,
    pub login: String,
    /// The node id the certificate's `mfa-session@warden` extension names
    /// (a per-session MFA certificate), as the node read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_node: Option<String>,
    /// The certificate's `uid@warden`, as the node read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// Does a session to `node` need a fresh MFA check first?
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MfaRequiredRequest {
    pub node: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MfaRequiredResponse {
    pub required: bool,
    /// Roles that ask for it.
    pub roles: Vec<String>,
}

/// A fresh second factor for a one-minute certificate valid on one node only.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MfaSessionRequest {
    pub node: String,
    pub ssh_public_key: String,
    pub proof: MfaProof,
}

/// A WebAuthn challenge: `request` is the relying party's
/// `PublicKeyCredentialRequestOptions` (or creation options) as JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WebauthnChallenge {
    pub id: String,
    pub request: serde_json::Value,
}

/// A security key's answer (a `PublicKeyCredential` as JSON) to a challenge.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WebauthnAnswer {
    pub challenge_id: String,
    pub credential: serde_json::Value,
}

/// A fresh second factor: a TOTP code or a security key's answer.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MfaProof {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otp: Option<Secret<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webauthn: Option<WebauthnAnswer>,
}

impl MfaProof {
    /// A proof by one-time code.
    pub fn otp(code: String) -> Self {
        MfaProof {
            otp: Some(Secret::new(code)),
            webauthn: None,
        }
    }
}

/// What a challenge is for: an answer only counts for that purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MfaPurpose {
    Login,
    /// Per-session MFA before an SSH session.
    Session,
    /// Adding or removing MFA devices.
    Manage,
}

/// Password first, so that nobody learns which users have security keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginChallengeRequest {
    pub user: String,
    pub password: Secret<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MfaChallengeRequest {
    pub purpose: MfaPurpose,
}

/// The second factors the user can answer with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MfaChallengeResponse {
    pub totp: bool,
    /// Present when the user has security keys.
    #[serde(default)]
    pub webauthn: Option<WebauthnChallenge>,
}

/// An MFA device of the caller.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MfaDevice {
    pub name: String,
    /// `totp` or `webauthn`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds; 0 when unknown.
    pub added: i64,
    pub last_used: i64,
}

/// Starts enrolling a security key; an existing factor proves it is you.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MfaRegisterRequest {
    pub name: String,
    pub proof: MfaProof,
}

/// Completes enrolment with the new key's attestation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MfaRegisterFinish {
    pub answer: WebauthnAnswer,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MfaRemoveRequest {
    pub name: String,
    pub proof: MfaProof,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MfaSessionResponse {
    pub ssh_cert: String,
    pub expires: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AccessCheckResponse {
    pub allowed: bool,
    /// One-line reason, shown to the user on denial.
    pub reason: String,
    /// Every role's reasoning.
    pub explanation: Vec<String>,
    pub permit_port_forwarding: bool,
    pub permit_agent_forwarding: bool,
    pub permit_x11_forwarding: bool,
    pub roles: Vec<String>,
    #[serde(default)]
    pub record_session: crate::RecordMode,
    /// An allowed login that a role in audit mode would have refused: its
    /// reasons (the node records them as `access.would_deny`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub would_deny: Vec<String>,
}

impl AccessCheckResponse {
    /// A refusal with the reason the user is shown.
    pub fn denied(reason: String) -> Self {
        AccessCheckResponse {
            allowed: false,
            reason,
            explanation: vec![],
            permit_port_forwarding: false,
            permit_agent_forwarding: false,
            permit_x11_forwarding: false,
            roles: vec![],
            record_session: Default::default(),
            would_deny: vec![],
        }
    }
}

/// Starts a single sign-on login (`warden login --auth NAME`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SsoStartRequest {
    pub connector: String,
    pub ssh_public_key: String,
    pub tls_csr_pem: String,
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Browser mode: the client's loopback listener
    /// (`http://127.0.0.1:PORT/callback`) the browser is sent back to, which
    /// proves the browser and the waiting client are on one machine.
    #[serde(default)]
    pub client_redirect: Option<String>,
    /// The client machine's host name, shown on the headless login's
    /// confirmation page so the person at the browser can tell whose
    /// login they are about to complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_host: Option<String>,
    /// Web mode (the proxy's web UI starts it): after the provider, the
    /// browser is sent to the proxy's `/web/sso/done` with a completion
    /// value, which the proxy collects the login with for the browser that
    /// started it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub web: bool,
}

/// How the client continues a started login.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SsoStartResponse {
    /// Handle for polling.
    pub id: String,
    /// Secret for polling; only this client has it.
    pub poll_token: Secret<String>,
    /// Browser mode: the identity provider's URL to open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_url: Option<String>,
    /// Headless mode: the page to open anywhere and the code to type there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_code: Option<String>,
    /// Unix seconds after which the login must be started again.
    pub expires: i64,
}

/// The identity provider's redirect back, as the proxy received it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SsoCallback {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub code: Option<Secret<String>>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
    /// Headless mode: the cookie the device page set in this browser.
    #[serde(default)]
    pub binding: Option<Secret<String>>,
}

/// What the proxy shows the browser after the callback.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SsoCallbackResponse {
    /// Where to send the browser (the client's loopback listener), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    pub message: String,
}

/// Headless mode: the code typed on the device page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SsoDeviceRequest {
    pub user_code: String,
}

/// Headless mode: what the device page shows before the user confirms
/// (RFC 8628 §5.4: the person must see which client asked).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SsoDeviceInfo {
    pub user_code: String,
    pub connector: String,
    /// The client's address as the proxy saw it.
    #[serde(default)]
    pub source: Option<String>,
    /// The host name the client gave (unverified).
    #[serde(default)]
    pub client_host: Option<String>,
    /// Unix seconds the login was started.
    pub started: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SsoDeviceResponse {
    pub auth_url: String,
    /// Set as a cookie in the browser that typed the code; the callback
    /// must come back with it, so a forwarded login link is useless.
    pub binding: Secret<String>,
}

/// Polls a started login.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SsoResultRequest {
    pub id: String,
    pub poll_token: Secret<String>,
    /// Browser mode: the value the loopback listener received.
    #[serde(default)]
    pub completion: Option<Secret<String>>,
}

/// A started login's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SsoResult {
    Pending,
    Done { login: Box<LoginResponse> },
    Failed { error: String },
}

/// `POST /v1/policy/sync`: what `warden policy sync` did with a commit of
/// the RBAC repository it follows, for the audit log.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PolicySyncReport {
    /// The repository (URL or path) and the branch followed.
    pub repo: String,
    pub branch: String,
    /// The commit id (`dir:HASH` for a plain directory).
    pub commit: String,
    /// `applied`, `refused` (its tests failed) or `failed` (it could not
    /// be applied).
    pub outcome: String,
    /// What changed, as `KIND NAME`.
    #[serde(default)]
    pub created: Vec<String>,
    #[serde(default)]
    pub updated: Vec<String>,
    #[serde(default)]
    pub deleted: Vec<String>,
    /// Why it was refused or failed.
    #[serde(default)]
    pub reason: String,
}
