//! Who a certificate says its holder is.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The kind of principal behind a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// A person (or bot) who logged in.
    User,
    /// The local operator identity created at first start in the data dir.
    Admin,
    /// A proxy service.
    Proxy,
    /// A node agent.
    Node,
}

/// The identity carried in a Warden X.509 certificate extension.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub kind: IdentityKind,
    pub username: String,
    pub cluster: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub logins: Vec<String>,
    #[serde(default)]
    pub traits: BTreeMap<String, Vec<String>>,
    /// Active access request ids (the access-request issue fills this).
    #[serde(default)]
    pub requests: Vec<String>,
    /// Unix seconds.
    pub expires: i64,
}
