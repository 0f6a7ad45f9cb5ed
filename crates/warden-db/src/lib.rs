//! Database wire protocols for Warden's database access, as pure code:
//! byte streams in, typed messages and audit records out, no I/O. The
//! database service (which carries the bytes) builds on these; keeping
//! them apart makes them testable and fuzzable on their own.
//!
//! Every decoder bounds what it holds (a PostgreSQL message is at most
//! [`MAX_MESSAGE`] bytes, a MySQL packet [`mysql::MAX_PACKET`]) and
//! refuses malformed input with an error that says what was wrong; none
//! panics on any input.

pub mod mysql;
pub mod postgres;

/// The largest PostgreSQL message a decoder accepts (larger ones are
/// refused, so a client or server cannot make the proxy buffer without
/// bound).
pub const MAX_MESSAGE: usize = 16 << 20;

/// Why a byte stream is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("a message of {0} bytes is larger than Warden accepts")]
    TooLarge(usize),
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
}

fn malformed(what: &'static str, why: impl Into<String>) -> ProtocolError {
    ProtocolError::Malformed {
        what,
        why: why.into(),
    }
}

/// One statement run, as the audit log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryRecord {
    /// The SQL text.
    pub query: String,
    /// The parameters bound to a prepared statement: text ones as they
    /// are, binary ones as `\x` and hex, NULL as `NULL`.
    pub params: Vec<String>,
}

/// The largest statement or parameter an audit record keeps (longer ones
/// are cut and marked).
pub const MAX_AUDITED: usize = 16 << 10;

/// `s`, cut to [`MAX_AUDITED`] bytes (on a character boundary) and marked.
fn cut(s: &str) -> String {
    if s.len() <= MAX_AUDITED {
        return s.to_string();
    }
    let mut end = MAX_AUDITED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Bytes as `\x` and hex (cut to half of [`MAX_AUDITED`] bytes).
fn hex(b: &[u8]) -> String {
    let b = &b[..b.len().min(MAX_AUDITED / 2)];
    let digits: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("\\x{digits}")
}
