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
    /// Unix seconds: the end of the login that started this certificate's
    /// chain. Renewals never pass it; 0 in identities issued before it
    /// existed (their own expiry is then the bound) and for services.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub login_expires: i64,
    /// The user's `uid` when the certificate was issued (empty for
    /// services and for users made before uids existed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_id: String,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl Identity {
    /// When the login behind this certificate ends: no renewal goes past it.
    pub fn login_deadline(&self) -> i64 {
        if self.login_expires > 0 {
            self.login_expires
        } else {
            self.expires
        }
    }
}
