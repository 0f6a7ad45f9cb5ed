//! The PostgreSQL frontend/backend protocol (version 3), client side of
//! the conversation: the startup packet, then the client's messages, and
//! the queries they run for the audit log (simple queries, and the
//! extended protocol's Parse/Bind/Execute with the parameters sent).

use crate::{cut, malformed, ProtocolError, QueryRecord, MAX_MESSAGE};
use std::collections::HashMap;

/// Protocol version 3.0, as a startup packet carries it.
pub const PROTOCOL_3_0: u32 = 196_608;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// A startup packet is small; anything larger is not one.
const MAX_STARTUP: usize = 10_000;

/// The first packet of a connection (it has no type byte).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Startup {
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption (refused by Warden).
    GssEncRequest,
    /// Cancels a running query of another connection.
    Cancel { pid: u32, key: u32 },
    /// The real start: the protocol version and the parameters (`user`,
    /// `database`, `application_name`, ...).
    Start {
        version: u32,
        params: Vec<(String, String)>,
    },
}

impl Startup {
    /// A startup parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            Startup::Start { params, .. } => params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// Reads the startup packet at the front of `buf`: the packet and its
/// length, or `None` while more bytes are needed.
pub fn parse_startup(buf: &[u8]) -> Result<Option<(Startup, usize)>, ProtocolError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(8..=MAX_STARTUP).contains(&len) {
        return Err(malformed(
            "startup packet",
            format!("length {len} is out of range"),
        ));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let code = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let body = &buf[8..len];
    let packet = match code {
        SSL_REQUEST if body.is_empty() => Startup::SslRequest,
        GSSENC_REQUEST if body.is_empty() => Startup::GssEncRequest,
        CANCEL_REQUEST if body.len() == 8 => Startup::Cancel {
            pid: u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
            key: u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
        },
        v if v >> 16 == 3 => {
            let mut r = Reader::new(body, "startup packet");
            let mut params = Vec::new();
            loop {
                let k = r.cstr()?;
                if k.is_empty() {
                    break;
                }
                let v = r.cstr()?;
                params.push((k, v));
            }
            if !r.done() {
                return Err(malformed("startup packet", "bytes after the parameters"));
            }
            Startup::Start { version: v, params }
        }
        other => {
            return Err(malformed(
                "startup packet",
                format!("unknown request code {other}"),
            ))
        }
    };
    Ok(Some((packet, len)))
}

/// A message from the client, after the startup packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frontend {
    /// `Q`: one or more statements as text.
    Query(String),
    /// `P`: prepares `query` under `name` (empty: the unnamed statement).
    Parse {
        name: String,
        query: String,
        param_types: Vec<u32>,
    },
    /// `B`: binds parameters to a prepared statement, making a portal.
    Bind {
        portal: String,
        statement: String,
        /// Per parameter: text (0) or binary (1); one code for all, or none
        /// (all text).
        formats: Vec<u16>,
        /// `None`: SQL NULL.
        params: Vec<Option<Vec<u8>>>,
    },
    /// `E`: runs a portal.
    Execute { portal: String, max_rows: u32 },
    /// `C`: closes a statement (`S`) or portal (`P`).
    Close { kind: u8, name: String },
    /// `D`: describes a statement or portal.
    Describe { kind: u8, name: String },
    /// `S`
    Sync,
    /// `H`
    Flush,
    /// `X`: the client leaves.
    Terminate,
    /// `p`: a password or SASL message (its contents are never kept).
    Authentication,
    /// `d`, `c`, `f`: COPY data and its end.
    Copy,
    /// `F`: a function call by object id.
    FunctionCall { oid: u32 },
}

/// Splits the client's byte stream into messages, holding at most one
/// incomplete message.
#[derive(Default)]
pub struct FrontendDecoder {
    buf: Vec<u8>,
}

impl FrontendDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `input` and returns the messages it completed. After an error
    /// the stream is refused: push nothing more.
    pub fn push(&mut self, input: &[u8]) -> Result<Vec<Frontend>, ProtocolError> {
        self.buf.extend_from_slice(input);
        let mut out = Vec::new();
        let mut at = 0;
        while self.buf.len() - at >= 5 {
            let tag = self.buf[at];
            let b = &self.buf[at + 1..at + 5];
            let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            if len < 4 {
                return Err(malformed("message", format!("length {len} is too small")));
            }
            if len > MAX_MESSAGE {
                return Err(ProtocolError::TooLarge(len));
            }
            if self.buf.len() - at < 1 + len {
                break;
            }
            out.push(frontend(tag, &self.buf[at + 5..at + 1 + len])?);
            at += 1 + len;
        }
        self.buf.drain(..at);
        Ok(out)
    }
}

fn frontend(tag: u8, body: &[u8]) -> Result<Frontend, ProtocolError> {
    let what = "client message";
    let mut r = Reader::new(body, what);
    let m = match tag {
        b'Q' => Frontend::Query(r.cstr()?),
        b'P' => {
            let name = r.cstr()?;
            let query = r.cstr()?;
            let n = r.u16()? as usize;
            let param_types = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Frontend::Parse {
                name,
                query,
                param_types,
            }
        }
        b'B' => {
            let portal = r.cstr()?;
            let statement = r.cstr()?;
            let nf = r.u16()? as usize;
            let formats = (0..nf).map(|_| r.u16()).collect::<Result<_, _>>()?;
            let np = r.u16()? as usize;
            let mut params = Vec::with_capacity(np.min(1024));
            for _ in 0..np {
                let len = r.u32()? as i32;
                params.push(match len {
                    -1 => None,
                    n if n < 0 => return Err(malformed(what, format!("parameter length {n}"))),
                    n => Some(r.bytes(n as usize)?.to_vec()),
                });
            }
            // Result-column format codes follow; nothing to keep.
            let nr = r.u16()? as usize;
            r.bytes(2 * nr)?;
            Frontend::Bind {
                portal,
                statement,
                formats,
                params,
            }
        }
        b'E' => Frontend::Execute {
            portal: r.cstr()?,
            max_rows: r.u32()?,
        },
        b'C' | b'D' => {
            let kind = r.u8()?;
            if kind != b'S' && kind != b'P' {
                return Err(malformed(what, format!("unknown kind {kind:#x}")));
            }
            let name = r.cstr()?;
            return Ok(if tag == b'C' {
                Frontend::Close { kind, name }
            } else {
                Frontend::Describe { kind, name }
            });
        }
        b'S' => Frontend::Sync,
        b'H' => Frontend::Flush,
        b'X' => Frontend::Terminate,
        b'p' => return Ok(Frontend::Authentication),
        b'd' | b'c' | b'f' => return Ok(Frontend::Copy),
        b'F' => return Ok(Frontend::FunctionCall { oid: r.u32()? }),
        other => {
            return Err(malformed(
                what,
                format!("unknown message type {:?}", other as char),
            ))
        }
    };
    if !r.done() {
        return Err(malformed(what, "bytes after the message's fields"));
    }
    Ok(m)
}

/// Prepared statements and portals remembered per connection at most.
const MAX_PREPARED: usize = 10_000;

/// Follows a connection's messages and names the statements it runs:
/// simple queries at once, extended ones at Execute, with the statement's
/// text from its Parse and the parameters from its Bind.
#[derive(Default)]
pub struct QueryLog {
    statements: HashMap<String, String>,
    portals: HashMap<String, QueryRecord>,
}

impl QueryLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// What `m` runs, if anything.
    pub fn observe(&mut self, m: &Frontend) -> Option<QueryRecord> {
        match m {
            Frontend::Query(q) => Some(QueryRecord {
                query: cut(q),
                params: Vec::new(),
            }),
            Frontend::Parse { name, query, .. } => {
                if self.statements.len() >= MAX_PREPARED && !self.statements.contains_key(name) {
                    self.statements.clear();
                }
                self.statements.insert(name.clone(), cut(query));
                None
            }
            Frontend::Bind {
                portal,
                statement,
                formats,
                params,
            } => {
                let query = self
                    .statements
                    .get(statement)
                    .cloned()
                    .unwrap_or_else(|| format!("(prepared statement {statement:?})"));
                let params = params
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let binary = match formats.len() {
                            0 => false,
                            1 => formats[0] == 1,
                            _ => formats.get(i) == Some(&1),
                        };
                        show_param(p.as_deref(), binary)
                    })
                    .collect();
                if self.portals.len() >= MAX_PREPARED && !self.portals.contains_key(portal) {
                    self.portals.clear();
                }
                self.portals
                    .insert(portal.clone(), QueryRecord { query, params });
                None
            }
            Frontend::Execute { portal, .. } => Some(
                self.portals
                    .get(portal)
                    .cloned()
                    .unwrap_or_else(|| QueryRecord {
                        query: format!("(portal {portal:?})"),
                        params: Vec::new(),
                    }),
            ),
            Frontend::Close { kind: b'S', name } => {
                self.statements.remove(name);
                None
            }
            Frontend::Close { name, .. } => {
                self.portals.remove(name);
                None
            }
            Frontend::FunctionCall { oid } => Some(QueryRecord {
                query: format!("(function call {oid})"),
                params: Vec::new(),
            }),
            _ => None,
        }
    }
}

fn show_param(p: Option<&[u8]>, binary: bool) -> String {
    match p {
        None => "NULL".into(),
        Some(b) if !binary => cut(&String::from_utf8_lossy(b)),
        Some(b) => crate::hex(b),
    }
}

/// Reads fields off a message body.
struct Reader<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8], what: &'static str) -> Self {
        Reader { b, what }
    }

    fn done(&self) -> bool {
        self.b.is_empty()
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
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A NUL-terminated UTF-8 string.
    fn cstr(&mut self) -> Result<String, ProtocolError> {
        let Some(end) = self.b.iter().position(|&c| c == 0) else {
            return Err(malformed(self.what, "a string has no terminating NUL"));
        };
        let s = std::str::from_utf8(&self.b[..end])
            .map_err(|_| malformed(self.what, "a string is not UTF-8"))?
            .to_string();
        self.b = &self.b[end + 1..];
        Ok(s)
    }
}

/// Builds client messages (tests, and the proxy's own probes).
pub mod build {
    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn cstr(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    /// A startup packet with `params`.
    pub fn startup(params: &[(&str, &str)]) -> Vec<u8> {
        let mut body = super::PROTOCOL_3_0.to_be_bytes().to_vec();
        for (k, v) in params {
            cstr(&mut body, k);
            cstr(&mut body, v);
        }
        body.push(0);
        let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        m.extend_from_slice(&body);
        m
    }

    pub fn query(q: &str) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, q);
        message(b'Q', &b)
    }

    pub fn parse(name: &str, q: &str) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, name);
        cstr(&mut b, q);
        b.extend_from_slice(&0u16.to_be_bytes());
        message(b'P', &b)
    }

    /// A Bind of text (or, with `binary`, binary) parameters.
    pub fn bind(portal: &str, statement: &str, params: &[Option<&[u8]>], binary: bool) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, portal);
        cstr(&mut b, statement);
        b.extend_from_slice(&1u16.to_be_bytes());
        b.extend_from_slice(&(binary as u16).to_be_bytes());
        b.extend_from_slice(&(params.len() as u16).to_be_bytes());
        for p in params {
            match p {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        b.extend_from_slice(&0u16.to_be_bytes());
        message(b'B', &b)
    }

    pub fn execute(portal: &str) -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, portal);
        b.extend_from_slice(&0u32.to_be_bytes());
        message(b'E', &b)
    }

    pub fn sync() -> Vec<u8> {
        message(b'S', &[])
    }

    pub fn terminate() -> Vec<u8> {
        message(b'X', &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_AUDITED;

    #[test]
    fn startup_packets() {
        let p = build::startup(&[("user", "alice"), ("database", "app")]);
        assert_eq!(parse_startup(&p[..p.len() - 1]), Ok(None), "needs more");
        let (s, len) = parse_startup(&p).unwrap().unwrap();
        assert_eq!(len, p.len());
        assert_eq!(s.param("user"), Some("alice"));
        assert_eq!(s.param("database"), Some("app"));
        let ssl = [0, 0, 0, 8, 4, 210, 22, 47];
        assert_eq!(parse_startup(&ssl), Ok(Some((Startup::SslRequest, 8))));
        let huge = [0, 0, 255, 255, 0, 3, 0, 0];
        assert!(parse_startup(&huge).is_err());
        let unknown = [0, 0, 0, 8, 0, 9, 0, 0];
        assert!(parse_startup(&unknown).is_err());
    }

    #[test]
    fn simple_and_extended_queries_are_named_with_their_parameters() {
        let mut stream = build::query("select 1; select 2");
        stream.extend(build::parse(
            "s1",
            "select * from t where id = $1 and name = $2",
        ));
        stream.extend(build::bind("", "s1", &[Some(b"42"), None], false));
        stream.extend(build::execute(""));
        stream.extend(build::bind("p", "s1", &[Some(&[0, 1, 255])], true));
        stream.extend(build::execute("p"));
        stream.extend(build::sync());
        stream.extend(build::terminate());
        let mut d = FrontendDecoder::new();
        let mut log = QueryLog::new();
        let mut runs = Vec::new();
        // Byte by byte: messages complete across reads.
        for b in &stream {
            for m in d.push(std::slice::from_ref(b)).unwrap() {
                runs.extend(log.observe(&m));
            }
        }
        assert_eq!(
            runs,
            vec![
                QueryRecord {
                    query: "select 1; select 2".into(),
                    params: vec![]
                },
                QueryRecord {
                    query: "select * from t where id = $1 and name = $2".into(),
                    params: vec!["42".into(), "NULL".into()]
                },
                QueryRecord {
                    query: "select * from t where id = $1 and name = $2".into(),
                    params: vec!["\\x0001ff".into()]
                },
            ]
        );
    }

    #[test]
    fn bad_messages_are_refused_not_panicked_on() {
        let mut d = FrontendDecoder::new();
        assert_eq!(
            d.push(&[b'Q', 0x7f, 0xff, 0xff, 0xff]),
            Err(ProtocolError::TooLarge(0x7fff_ffff))
        );
        let mut d = FrontendDecoder::new();
        assert!(d.push(&[b'Q', 0, 0, 0, 2]).is_err(), "length below 4");
        let mut d = FrontendDecoder::new();
        assert!(d.push(&[b'Q', 0, 0, 0, 6, b'x', b'y']).is_err(), "no NUL");
        let mut d = FrontendDecoder::new();
        assert!(d.push(&[b'?', 0, 0, 0, 4]).is_err(), "unknown type");
        let mut d = FrontendDecoder::new();
        let mut bind = build::bind("", "", &[Some(b"x")], false);
        bind[11] = 0xff; // a parameter count far beyond the body
        assert!(d.push(&bind).is_err());
    }

    #[test]
    fn long_statements_are_cut_for_the_audit_log() {
        let q = "é".repeat(MAX_AUDITED);
        let r = QueryLog::new().observe(&Frontend::Query(q)).unwrap();
        assert!(r.query.len() <= MAX_AUDITED + '…'.len_utf8());
        assert!(r.query.ends_with('…'));
    }
}
