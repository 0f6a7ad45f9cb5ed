//! Database wire protocols for Warden's database access, as pure code:
//! byte streams in, typed messages and audit records out, no I/O. The
//! database service (which carries the bytes) builds on these; keeping
//! them apart makes them testable and fuzzable on their own.
//!
//! Every decoder bounds what it holds (a message is at most
//! [`MAX_MESSAGE`] bytes) and refuses malformed input with an error that
//! says what was wrong; none panics on any input.

pub mod postgres;

/// The largest protocol message a decoder accepts (larger ones are
/// refused, so a client or server cannot make the proxy buffer without
/// bound).
pub const MAX_MESSAGE: usize = 16 << 20;

/// Why a byte stream is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("message of {0} bytes is larger than the {MAX_MESSAGE}-byte limit")]
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
