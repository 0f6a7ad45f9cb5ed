//! Warden's shared vocabulary: resources, identities, audit events and API
//! messages. No I/O lives here, so every other crate can depend on it.

pub mod api;
pub mod audit;
pub mod duration;
pub mod endpoints;
pub mod identity;
pub mod metrics;
pub mod resource;
pub mod secret;

pub use identity::{Identity, IdentityKind};
pub use resource::{
    AccessRequestSpec, ApprovalRuleSpec, ClaimMapping, ClusterConfigSpec, Document, LabelValues,
    LockSpec, LockTarget, Metadata, NodeSpec, OidcConnectorSpec, RecordMode, RequestState,
    RequestedNode, Requester, RequireMfa, Review, RoleConditions, RoleMode, RoleOptions, RoleSpec,
    Rule, Schedule, TokenKind, TokenSpec, UserSpec, WebhookSpec,
};
pub use secret::Secret;

/// The version string every component reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// TLS ALPN protocol a client uses to reach the auth API through the proxy.
pub const ALPN_AUTH: &[u8] = b"warden-auth";
/// TLS ALPN protocol of a node's reverse tunnel.
pub const ALPN_TUNNEL: &[u8] = b"warden-tunnel";
/// The `forwarded-tcpip` address a draining proxy opens in a tunnel to ask
/// the node to open a new tunnel (to the process now accepting).
pub const TUNNEL_MOVE_ADDRESS: &str = "move@warden";
/// TLS ALPN protocol of a PostgreSQL connection through the proxy to a
/// database service (mTLS end to end with the user's certificate; the SNI
/// names the service's id, which the proxy routes by).
pub const ALPN_DB_POSTGRES: &[u8] = b"warden-db-postgres";
/// TLS ALPN protocol of a MySQL/MariaDB connection, as
/// [`ALPN_DB_POSTGRES`].
pub const ALPN_DB_MYSQL: &[u8] = b"warden-db-mysql";
/// The `connected address` of a tunnel channel that carries a database
/// connection rather than an SSH one.
pub const TUNNEL_DB_ADDRESS: &str = "db@warden";
/// TLS ALPN protocol between peer proxies (mTLS, proxy identities).
pub const ALPN_PEER: &[u8] = b"warden-peer";
/// DNS name in the auth server's certificate; clients always verify this name.
pub const AUTH_SERVER_NAME: &str = "warden-auth";
/// OID of the X.509 extension that carries a Warden identity as JSON
/// (a private enterprise arc, fixed for the cluster's lifetime).
pub const IDENTITY_EXT_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 1, 1];
