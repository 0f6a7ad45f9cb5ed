//! The auth service: certificate authorities, users and roles, login, and
//! the mTLS HTTP API that the proxy, nodes, clients and admins call.

mod api;
mod audit_chain;
pub mod backup;
mod cas;
mod certs;
mod config;
mod databases;
mod error;
mod explain;
/// Outgoing HTTP(S): webhooks and OpenID Connect.
use warden_http as http_out;
mod init;
mod locks;
mod login;
mod mfa;
mod nodes;
mod oidc;
mod policy_sync;
mod push;
mod ratelimit;
mod recordings;
mod requests;
mod resources;
mod rotation;
mod routes;
mod serve;
mod server;
mod sessions;
mod webauthn;
mod webhook;

pub use error::AuthError;
pub use init::{AdminConfig, ADMIN_DIR};
pub use nodes::SERVICE_CERT_TTL;
pub use serve::serve_mtls;
pub use server::{AuthServer, Keys, ServiceIdentity, StoreConfig};
