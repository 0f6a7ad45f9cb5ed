//! Role-based access decisions, pure and explainable.
//!
//! Nothing here does I/O: callers pass the roles in force and get a
//! [`Decision`] that says what was decided and which role decided it.
//! Deny rules always beat allow rules; no role means no access.

mod access;
mod approval;
mod claims;
mod db;
pub mod defaults;
mod eval;
mod grant;
mod labels;
mod locks;
mod password;
pub mod predicate;
pub mod suggest;
mod template;

pub use access::{
    decide_db_login, decide_node_login, effective, locks_in_force, same_user, AccessSnapshot,
    AccessState, DbLogin, Effective, NodeLogin,
};
pub use approval::{rule_approves, validate_approval_rule, ApprovalInput};
pub use claims::{claims_to_traits, map_roles, validate_claim_mappings};
pub use db::{check_db_access, database_visible, valid_db_identifier, DbRequest};
pub use eval::{
    allowed_logins, check_node_access, check_request_roles, check_rule, session_options,
    validate_role, Decision, SessionOptions, MAX_SESSION_TTL,
};
pub use grant::{check_grant, check_grant_all, ANY_ROLE};
pub use labels::{label_matches, value_matches};
pub use locks::{lock_for, lock_message, node_lock, LockSubject};
pub use password::{password_strength, MAX_PASSWORD, MIN_PASSWORD};
pub use predicate::{Predicate, PredicateError};
pub use template::{expand, external_traits, is_internal_trait, TemplateError, EXTERNAL_PREFIX};

use std::collections::BTreeMap;

/// User traits: named lists of values (`logins`, `groups`, ...).
pub type Traits = BTreeMap<String, Vec<String>>;
