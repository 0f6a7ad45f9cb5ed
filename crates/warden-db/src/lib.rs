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

/// `s` as an audit record keeps it: cut to [`MAX_AUDITED`] bytes (on a
/// character boundary) and marked.
pub fn audit_text(s: &str) -> String {
    cut(s)
}

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

/// Reads fields off a message body, in the protocol's byte order
/// (PostgreSQL's big-endian, MySQL's little-endian).
struct Reader<'a> {
    b: &'a [u8],
    what: &'static str,
    big_endian: bool,
}

impl<'a> Reader<'a> {
    fn big_endian(b: &'a [u8], what: &'static str) -> Self {
        Reader {
            b,
            what,
            big_endian: true,
        }
    }

    fn little_endian(b: &'a [u8], what: &'static str) -> Self {
        Reader {
            b,
            what,
            big_endian: false,
        }
    }

    fn done(&self) -> bool {
        self.b.is_empty()
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.b)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.b.len() < n {
            return Err(malformed(self.what, "it ends inside a field"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ProtocolError> {
        let b: [u8; 2] = self.bytes(2)?.try_into().expect("2 bytes");
        Ok(match self.big_endian {
            true => u16::from_be_bytes(b),
            false => u16::from_le_bytes(b),
        })
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        let b: [u8; 4] = self.bytes(4)?.try_into().expect("4 bytes");
        Ok(match self.big_endian {
            true => u32::from_be_bytes(b),
            false => u32::from_le_bytes(b),
        })
    }

    /// A NUL-terminated string's bytes.
    fn cstr_bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let Some(end) = self.b.iter().position(|&c| c == 0) else {
            return Err(malformed(self.what, "a string has no terminating NUL"));
        };
        let s = &self.b[..end];
        self.b = &self.b[end + 1..];
        Ok(s)
    }

    /// A NUL-terminated UTF-8 string.
    fn cstr(&mut self) -> Result<String, ProtocolError> {
        let b = self.cstr_bytes()?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| malformed(self.what, "a string is not UTF-8"))
    }
}
