//! Resources: versioned documents (`kind`, `version`, `metadata`, `spec`)
//! that read and write as YAML or JSON, so RBAC can live in git.

use crate::duration::HumanDuration;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Resource kinds known to this version.
pub mod kind {
    pub const USER: &str = "user";
    pub const ROLE: &str = "role";
    pub const TOKEN: &str = "token";
    pub const CLUSTER_CONFIG: &str = "cluster_config";
    pub const NODE: &str = "node";
    pub const LOCK: &str = "lock";
    pub const ACCESS_REQUEST: &str = "access_request";
    pub const APPROVAL_RULE: &str = "approval_rule";
    pub const WEBHOOK: &str = "webhook";
    pub const OIDC: &str = "oidc";
}

/// The only document version so far.
pub const V1: &str = "v1";

/// A resource document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document<S> {
    pub kind: String,
    pub version: String,
    pub metadata: Metadata,
    pub spec: S,
}

impl<S> Document<S> {
    pub fn new(kind: &str, name: impl Into<String>, spec: S) -> Self {
        Document {
            kind: kind.to_string(),
            version: V1.to_string(),
            metadata: Metadata {
                name: name.into(),
                ..Metadata::default()
            },
            spec,
        }
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }
}

/// Common metadata of every resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Store revision of this version of the document; set by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub expires: Option<OffsetDateTime>,
}

/// A resource name must be usable in a store key and on a command line.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: use 1-128 characters of a-z, A-Z, 0-9, '-', '_', '.', '@', not starting with '.'"
        ))
    }
}

/// Most labels a node may carry.
pub const MAX_LABELS: usize = 64;

/// Checks node labels as a node reports them: keys of 1-63 characters of
/// a-z, A-Z, 0-9, '-', '_', '.', '/'; values of at most 255 printable
/// characters (no control characters or bidirectional overrides), so
/// nothing a node says can rewrite a terminal that lists it.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels per node"));
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= 63
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        if !key_ok {
            return Err(format!(
                "invalid label key {:?}: use 1-63 characters of a-z, A-Z, 0-9, '-', '_', '.', '/'",
                k.escape_default().to_string()
            ));
        }
        let value_ok = v.chars().count() <= 255
            && !v.chars().any(|c| {
                c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            });
        if !value_ok {
            return Err(format!(
                "invalid value of label {k}: at most 255 characters, no control characters"
            ));
        }
    }
    Ok(())
}

/// A user: roles and traits. Credentials live apart, never in this document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserSpec {
    pub roles: Vec<String>,
    /// Named lists of values used by role templates; `logins` feeds
    /// `{{internal.logins}}`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub traits: BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Set by auth when the user is created, new for every user of the
    /// name: certificates carry it, so a certificate of a deleted user is
    /// refused even after a new user of the same name is created.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// A role: what it allows, what it denies, and session options.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleSpec {
    pub options: RoleOptions,
    pub allow: RoleConditions,
    pub deny: RoleConditions,
}

/// Options attached to sessions and certificates of a role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleOptions {
    /// Longest certificate/session lifetime this role grants.
    pub max_session_ttl: HumanDuration,
    /// Interactive terminals. `None` means "this role has no opinion";
    /// a permission holds if some role grants it and none forbids it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permit_pty: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permit_port_forwarding: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permit_agent_forwarding: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permit_x11_forwarding: Option<bool>,
    /// Session recording: `on` unless every role says `off`; `strict`
    /// (any role) refuses sessions whose recording cannot be written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_session: Option<RecordMode>,
    /// `session`: every SSH session needs a fresh MFA check (any role).
    #[serde(skip_serializing_if = "is_default")]
    pub require_mfa: RequireMfa,
    /// `audit`: this role's deny rules do not refuse node logins; each
    /// login they would have refused is recorded (`access.would_deny`),
    /// so a narrowing can be watched before it is enforced.
    #[serde(skip_serializing_if = "is_default")]
    pub mode: RoleMode,
}

/// Whether a role's deny rules refuse (`enforce`) or only record (`audit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleMode {
    #[default]
    Enforce,
    Audit,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// When a role asks for a second factor beyond login.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequireMfa {
    #[default]
    Off,
    /// Before each SSH session: `warden ssh` asks for a one-time code and
    /// gets a one-minute certificate for that node only.
    Session,
}

/// Whether and how sessions are recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordMode {
    Off,
    #[default]
    On,
    Strict,
}

impl Default for RoleOptions {
    fn default() -> Self {
        RoleOptions {
            max_session_ttl: HumanDuration::from_secs(8 * 3600),
            permit_pty: None,
            permit_port_forwarding: None,
            permit_agent_forwarding: None,
            permit_x11_forwarding: None,
            record_session: None,
            require_mfa: RequireMfa::Off,
            mode: RoleMode::Enforce,
        }
    }
}

/// One side (allow or deny) of a role.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleConditions {
    /// Unix logins; may use trait templates such as `{{internal.logins}}`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logins: Vec<String>,
    /// Node label selectors: exact values, `*`, or anchored `^regex$`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, LabelValues>,
    /// A condition over the user, the login and the node, in the
    /// predicate language of `warden_policy::Predicate`, e.g.
    /// `contains(user.traits["teams"], node.labels["team"])`. Allow: the
    /// role grants node access only where it holds (as well as `logins`
    /// and `node_labels`). Deny: the rule denies where it holds (and its
    /// `node_labels`, if any, match).
    #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_: Option<String>,
    #[serde(skip_serializing_if = "RequestConditions::is_empty")]
    pub request: RequestConditions,
    /// Access requests this role may approve or deny.
    #[serde(skip_serializing_if = "RequestConditions::is_empty")]
    pub review_requests: RequestConditions,
    /// Permissions on cluster resources (users, roles, tokens, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Roles a holder may give to users (create, update), take away, and
    /// whose holders' accounts it may reset or delete: names, `*`, or trait
    /// templates (`{{internal.grantable}}`). Deny wins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grant_roles: Vec<String>,
    /// Database label selectors, as `node_labels` for nodes.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub db_labels: BTreeMap<String, LabelValues>,
    /// Database users (names, `*`, or trait templates such as
    /// `{{internal.db_users}}`). Allow: the users one may connect as.
    /// Deny: users nobody with this role may connect as, anywhere.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub db_users: Vec<String>,
    /// Database names (logical databases), like `db_users`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub db_names: Vec<String>,
}

/// Roles a user may request just in time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestConditions {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Resource requests: a user may ask for one node and login that
    /// these roles would allow, without getting the whole role.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search_as_roles: Vec<String>,
    /// Approvals from distinct reviewers a request needs (default 1); a
    /// single denial ends it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals: Option<u32>,
    /// Longest access a request grants once approved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<HumanDuration>,
}

impl RequestConditions {
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
            && self.search_as_roles.is_empty()
            && self.approvals.is_none()
            && self.max_duration.is_none()
    }
}

/// A permission on resources: `resources: [user, role]`, `verbs: [list, read]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
}

/// Resource names usable in rules.
pub mod resources {
    pub const USER: &str = "user";
    pub const ROLE: &str = "role";
    pub const TOKEN: &str = "token";
    pub const CLUSTER_CONFIG: &str = "cluster_config";
    pub const EVENT: &str = "event";
    pub const SESSION: &str = "session";
    pub const NODE: &str = "node";
    pub const LOCK: &str = "lock";
    pub const ALL: &[&str] = &[
        USER,
        ROLE,
        TOKEN,
        CLUSTER_CONFIG,
        EVENT,
        SESSION,
        NODE,
        LOCK,
    ];
}

/// Verbs usable in rules.
pub mod verbs {
    pub const LIST: &str = "list";
    pub const READ: &str = "read";
    pub const CREATE: &str = "create";
    pub const UPDATE: &str = "update";
    pub const DELETE: &str = "delete";
    pub const ALL: &[&str] = &[LIST, READ, CREATE, UPDATE, DELETE];
}

/// Label values: YAML accepts a single string or a list.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct LabelValues(pub Vec<String>);

impl<'de> Deserialize<'de> for LabelValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => LabelValues(vec![s]),
            OneOrMany::Many(v) => LabelValues(v),
        })
    }
}

/// What a token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Lets a new user set a password and enrol a second factor.
    Signup,
    /// Lets a node join the cluster.
    Node,
    /// Lets a proxy join the cluster.
    Proxy,
}

impl std::fmt::Display for TokenKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenKind::Signup => "signup",
            TokenKind::Node => "node",
            TokenKind::Proxy => "proxy",
        })
    }
}

impl std::str::FromStr for TokenKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "signup" => Ok(TokenKind::Signup),
            "node" => Ok(TokenKind::Node),
            "proxy" => Ok(TokenKind::Proxy),
            _ => Err(format!(
                "unknown token type {s:?}: expected one of signup, node, proxy"
            )),
        }
    }
}

/// A one-time token. The document's name is a short id; the secret itself is
/// never stored, only its SHA-256.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    pub kind: TokenKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Node tokens: the host names and IPs the node may have in its host
    /// certificate (besides its id and name). Others it claims are left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<String>,
    /// Node tokens: the node may take a name that a live node holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
}

impl TokenSpec {
    /// May a node joining with this token name `host` in its host
    /// certificate?
    pub fn allows_addr(&self, host: &str) -> bool {
        self.addrs.iter().any(|a| a.eq_ignore_ascii_case(host))
    }
}

/// What a node was admitted as at join: its name and the addresses its
/// host certificate may name. Renewals and heartbeats cannot change them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeGrant {
    pub name: String,
    #[serde(default)]
    pub addrs: Vec<String>,
}

/// A node is online if it sent a heartbeat this recently (seconds): three
/// of the default 30-second heartbeats.
pub const NODE_ONLINE_SECS: i64 = 90;
/// How many heartbeats a node may miss before it is shown offline.
pub const MISSED_HEARTBEATS: i64 = 3;

/// A node in the inventory; `metadata.name` is its id, `metadata.labels`
/// its labels, `metadata.expires` when it is dropped without heartbeats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSpec {
    /// Human name (`db-1`).
    pub hostname: String,
    /// Where its SSH server listens, `host:port` (empty behind NAT).
    pub addrs: Vec<String>,
    pub version: String,
    /// Unix seconds of the last heartbeat.
    pub heartbeat: i64,
    /// Seconds between the node's heartbeats (0: the default, 30). Left
    /// out when 0, so that older readers (strict about fields) still parse
    /// nodes that do not report it.
    #[serde(skip_serializing_if = "is_zero")]
    pub heartbeat_every: u64,
    /// Serves databases only (no SSH logins): not listed as a server.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub db_only: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl NodeSpec {
    /// Whether the node is online at `now` (Unix seconds): it has missed
    /// fewer than [`MISSED_HEARTBEATS`] heartbeats.
    pub fn online(&self, now: i64) -> bool {
        let every = match self.heartbeat_every {
            0 => NODE_ONLINE_SECS / MISSED_HEARTBEATS,
            n => n.min(3600) as i64,
        };
        now - self.heartbeat <= every * MISSED_HEARTBEATS
    }
}

/// What a lock blocks: every field set must match (a lock with `user` and
/// `node` blocks that user on that node only).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockTarget {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Node id or name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// An access request id: revokes what that request granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

impl LockTarget {
    pub fn is_empty(&self) -> bool {
        self.user.is_none()
            && self.role.is_none()
            && self.node.is_none()
            && self.login.is_none()
            && self.request.is_none()
    }

    /// Does this lock block `user` (with `roles`) as `login` on the node
    /// (`node_id`, `node_name`)? `None` arguments match only unset fields.
    pub fn matches(
        &self,
        user: &str,
        roles: &[String],
        node: Option<(&str, &str)>,
        login: Option<&str>,
    ) -> bool {
        // Request locks act on the request itself, not on sessions.
        if self.is_empty() || self.request.is_some() {
            return false;
        }
        let user_ok = self.user.as_deref().is_none_or(|u| u == user);
        let role_ok = self
            .role
            .as_deref()
            .is_none_or(|r| roles.iter().any(|x| x == r));
        let node_ok = self
            .node
            .as_deref()
            .is_none_or(|n| node.is_some_and(|(id, name)| n == id || n == name));
        let login_ok = self.login.as_deref().is_none_or(|l| login == Some(l));
        user_ok && role_ok && node_ok && login_ok
    }

    /// `user=bob node=db-1`.
    pub fn describe(&self) -> String {
        [
            ("user", &self.user),
            ("role", &self.role),
            ("node", &self.node),
            ("login", &self.login),
            ("request", &self.request),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// A lock: blocks new access at once and ends live sessions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockSpec {
    pub target: LockTarget,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

/// Where an access request stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    #[default]
    Pending,
    Approved,
    Denied,
}

impl std::fmt::Display for RequestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
        })
    }
}

/// One reviewer's decision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub reviewer: String,
    pub approve: bool,
    pub reason: String,
    /// Unix seconds.
    pub time: i64,
}

/// One node and login asked for in a resource request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedNode {
    /// Node id (stable across renames).
    pub node: String,
    /// Its name when asked, for people.
    pub name: String,
    pub login: String,
}

/// A just-in-time request (`metadata.name` is its id): either for extra
/// roles, or for logins on given nodes (a resource request), never both.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessRequestSpec {
    pub user: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Resource requests: the nodes and logins asked for ...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<RequestedNode>,
    /// ... and the roles (`allow.request.search_as_roles`) that allow them;
    /// access is re-checked against these roles on every login.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search_as_roles: Vec<String>,
    pub reason: String,
    pub state: RequestState,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reviews: Vec<Review>,
    /// How long the access lasts once approved (seconds).
    pub duration_secs: u64,
    /// Approvals needed.
    pub approvals_needed: u32,
    /// Unix seconds; set on approval. Access ends then, whatever else.
    pub access_until: i64,
    /// Unix seconds.
    pub created: i64,
    /// The requester's uid: a later user of the same name gets nothing
    /// from it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user_uid: String,
}

impl AccessRequestSpec {
    /// Approved and not yet over.
    pub fn active(&self, now: i64) -> bool {
        self.state == RequestState::Approved && self.access_until > now
    }

    /// What is asked for, for people: roles, or `login@node` pairs.
    pub fn describe(&self) -> String {
        if self.resources.is_empty() {
            format!("roles {}", self.roles.join(","))
        } else {
            let nodes: Vec<String> = self
                .resources
                .iter()
                .map(|r| format!("{}@{}", r.login, r.name))
                .collect();
            format!("access to {}", nodes.join(","))
        }
    }
}

/// Who an [`ApprovalRuleSpec`] approves for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Requester {
    /// The requester holds at least one of these roles (empty: any user).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// For each key, the requester's trait has at least one of the values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub traits: BTreeMap<String, Vec<String>>,
}

/// When an [`ApprovalRuleSpec`] applies, in UTC.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    /// Three-letter day names (`mon` .. `sun`); empty: every day.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
    /// `HH:MM-HH:MM`, start inclusive, end exclusive; empty: all day.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hours: String,
}

/// A policy the auth service applies to new access requests: a request
/// that meets every condition is approved at once, recorded with the rule's
/// name. Requests no rule approves wait for human reviewers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalRuleSpec {
    pub requester: Requester,
    /// Role requests whose every role is listed here.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Resource requests whose every node matches these labels (values may
    /// use the requester's traits: `team: '{{internal.team}}'`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, LabelValues>,
    /// Regex the reason must match, e.g. `^INC-[0-9]+`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Requests for longer than this are left to people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

/// An outgoing HTTP notification of audit events (e.g. access requests to a
/// chat bot): JSON POSTs signed with HMAC-SHA256, retried with backoff.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSpec {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Event types to send; `access_request.*` style prefixes and `*` work.
    pub events: Vec<String>,
    /// HMAC key. Never returned by the API.
    #[serde(skip_serializing_if = "secret_is_empty")]
    pub secret: crate::Secret<String>,
}

fn secret_is_empty(s: &crate::Secret<String>) -> bool {
    s.expose().is_empty()
}

impl WebhookSpec {
    /// Does this webhook want events of `event_type`?
    pub fn wants(&self, event_type: &str) -> bool {
        self.events.iter().any(|p| {
            p == "*"
                || p == event_type
                || p.strip_suffix('*')
                    .is_some_and(|prefix| event_type.starts_with(prefix))
        })
    }
}

/// An OpenID Connect identity provider users log in through
/// (`warden login --auth NAME`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConnectorSpec {
    /// The provider's issuer; discovery reads
    /// `<issuer_url>/.well-known/openid-configuration`.
    pub issuer_url: String,
    pub client_id: String,
    /// Never returned by the API nor logged.
    #[serde(skip_serializing_if = "secret_is_empty")]
    pub client_secret: crate::Secret<String>,
    /// Scopes asked for besides `openid` (e.g. `email`, `groups`).
    pub scopes: Vec<String>,
    /// IdP claims to Warden roles; a login that maps to no role is refused.
    pub claims_to_roles: Vec<ClaimMapping>,
    /// Callback URLs, one per proxy (`https://<proxy>/v1/oidc/callback`);
    /// each proxy uses the one with its own public address.
    #[serde(deserialize_with = "one_or_many")]
    pub redirect_url: Vec<String>,
    /// The claim that names the Warden user (an email address by default).
    pub username_claim: String,
    /// How long a started login may take before its link expires.
    pub login_timeout: HumanDuration,
    /// Shown to users instead of the connector name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl Default for OidcConnectorSpec {
    fn default() -> Self {
        OidcConnectorSpec {
            issuer_url: String::new(),
            client_id: String::new(),
            client_secret: crate::Secret::new(String::new()),
            scopes: vec!["email".into(), "profile".into()],
            claims_to_roles: vec![],
            redirect_url: vec![],
            username_claim: "email".into(),
            login_timeout: HumanDuration::from_secs(600),
            display: None,
        }
    }
}

/// One rule of `claims_to_roles`: when a value of `claim` matches the
/// regular expression `value` (whole value), grant `roles`, in which
/// `$1`, `${name}` expand to the match's groups.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMapping {
    pub claim: String,
    pub value: String,
    pub roles: Vec<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Cluster-wide settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfigSpec {
    pub cluster_name: String,
    /// Failed logins in a row before a user is locked out.
    pub lockout_attempts: u32,
    pub lockout_duration: HumanDuration,
    /// Login attempts allowed per source address per minute.
    pub login_rate_per_minute: u32,
    /// Default certificate lifetime when the client asks for none.
    pub default_session_ttl: HumanDuration,
}

impl Default for ClusterConfigSpec {
    fn default() -> Self {
        ClusterConfigSpec {
            cluster_name: "warden".into(),
            lockout_attempts: 5,
            lockout_duration: HumanDuration::from_secs(15 * 60),
            login_rate_per_minute: 30,
            default_session_ttl: HumanDuration::from_secs(8 * 3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_labels_are_checked() {
        let ok: BTreeMap<String, String> = [
            ("env".to_string(), "prod".to_string()),
            ("k8s.io/zone".to_string(), "eu west 1".to_string()),
        ]
        .into();
        assert!(validate_labels(&ok).is_ok());
        for (k, v) in [
            ("env", "\x1b]0;owned\x07"),
            ("env", "a\u{202e}b"),
            ("bad key", "x"),
            ("", "x"),
        ] {
            let l: BTreeMap<String, String> = [(k.to_string(), v.to_string())].into();
            assert!(validate_labels(&l).is_err(), "{k:?}={v:?}");
        }
        let long: BTreeMap<String, String> = [("k".to_string(), "x".repeat(256))].into();
        assert!(validate_labels(&long).is_err());
        let many: BTreeMap<String, String> = (0..65)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(validate_labels(&many).is_err());
    }

    #[test]
    fn label_values_accept_string_or_list() {
        let c: RoleConditions =
            serde_json::from_str(r#"{"node_labels":{"env":"prod","team":["a","b"]}}"#).unwrap();
        assert_eq!(c.node_labels["env"].0, vec!["prod"]);
        assert_eq!(c.node_labels["team"].0, vec!["a", "b"]);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = serde_json::from_str::<RoleConditions>(r#"{"login":["root"]}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `login`"), "{e}");
    }

    #[test]
    fn lock_targets_match_on_every_field_set() {
        let roles = vec!["dba".to_string()];
        let user = LockTarget {
            user: Some("bob".into()),
            ..Default::default()
        };
        assert!(user.matches("bob", &[], None, None));
        assert!(!user.matches("alice", &[], None, None));
        let role = LockTarget {
            role: Some("dba".into()),
            ..Default::default()
        };
        assert!(role.matches("carol", &roles, Some(("id1", "db-1")), Some("root")));
        assert!(!role.matches("carol", &[], None, None));
        let on_node = LockTarget {
            user: Some("bob".into()),
            node: Some("db-1".into()),
            ..Default::default()
        };
        assert!(on_node.matches("bob", &[], Some(("id1", "db-1")), Some("root")));
        assert!(
            on_node.matches("bob", &[], Some(("db-1", "x")), None),
            "by id too"
        );
        assert!(
            !on_node.matches("bob", &[], None, None),
            "unknown node: not this lock"
        );
        assert!(!on_node.matches("bob", &[], Some(("id2", "web-1")), None));
        let login = LockTarget {
            login: Some("root".into()),
            ..Default::default()
        };
        assert!(login.matches("anyone", &[], Some(("i", "n")), Some("root")));
        assert!(!login.matches("anyone", &[], Some(("i", "n")), Some("ubuntu")));
        assert!(
            !LockTarget::default().matches("bob", &roles, None, None),
            "an empty lock blocks nothing"
        );
        assert_eq!(on_node.describe(), "user=bob node=db-1");
    }

    #[test]
    fn names() {
        assert!(validate_name("alice").is_ok());
        assert!(validate_name("bob.smith@corp").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("..").is_err());
    }
}
