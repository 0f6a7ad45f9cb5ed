//! Storage behind traits: the key-value [`Backend`] (users, roles, tokens,
//! CA keys...) and the [`AuditLog`], with embedded SQLite implementations.
//!
//! The traits are shaped after etcd (revisions, prefix watches that resume
//! from a revision); [`postgres`] holds the stores several auth servers
//! share. [`conformance`] is the test suite every implementation
//! must pass.

mod audit;
mod backend;
mod cache;
pub mod conformance;
mod etcd;
pub mod postgres;
mod recordings;
pub mod s3;
pub mod spool;
mod sqlite;

pub use audit::{search_sql, AuditLog, SqliteAuditLog, VerifyReport};
pub use backend::{Backend, Event, EventKind, Item, StoreError, Watcher};
pub use cache::WatchCache;
pub use etcd::EtcdBackend;
pub use postgres::{PostgresAuditLog, PostgresBackend};
pub use recordings::{
    is_session_id, read_all, FileRecordingStore, RecordingStore, RecordingStream, Upload,
};
pub use s3::S3RecordingStore;
pub use spool::EventSpool;
pub use sqlite::SqliteBackend;

/// Result type of the store.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Whether a host name (no port; brackets allowed) names this machine:
/// the one place a store may be reached without TLS unless told so.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_matches(|c| c == '[' || c == ']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
