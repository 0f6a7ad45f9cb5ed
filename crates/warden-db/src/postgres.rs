//! The PostgreSQL frontend/backend protocol (version 3), client side of
//! the conversation: the startup packet, then the client's messages, and
//! the queries they run for the audit log (simple queries, and the
//! extended protocol's Parse/Bind/Execute with the parameters sent).

use crate::{cut, malformed, ProtocolError, QueryRecord, Reader, MAX_MESSAGE};
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
            let mut r = Reader::big_endian(body, "startup packet");
            let mut params = Vec::new();
            loop {
                let k = r.cstr()?;
                if k.is_empty() {
                    break;
                }
                let v = r.cstr()?;
                // PostgreSQL takes the last of a repeated key: refused, so
                // what Warden checks is what the server uses.
                if params.iter().any(|(x, _)| *x == k) {
                    return Err(malformed(
                        "startup packet",
                        format!("parameter {k:?} given twice"),
                    ));
                }
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

/// An ErrorResponse (`E`) with severity `FATAL`, SQLSTATE `code` and
/// `message`, as the server would send it: how Warden refuses a client in
/// its own words (stock clients print the message).
pub fn fatal(code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(field);
        // A NUL would end the field early: none in what Warden writes.
        body.extend(value.bytes().filter(|b| *b != 0));
        body.push(0);
    }
    body.push(0);
    let mut m = vec![b'E'];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(&body);
    m
}

/// What the server says while a connection starts, up to ReadyForQuery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartupReply {
    /// `R` with code 0: authenticated.
    AuthenticationOk,
    /// `R` with another code: the server wants a password (or SASL,
    /// GSSAPI...), which Warden never has: it connects with certificates.
    AuthenticationRequest(u32),
    /// `E`: the server refused; its message.
    Error(String),
    /// `Z`: ready for queries.
    Ready,
    /// Anything else (parameter status, backend key data, notices).
    Other(u8),
}

/// Reads one server message at the front of `buf` during startup: the
/// message and its length, or `None` while more bytes are needed.
pub fn parse_startup_reply(buf: &[u8]) -> Result<Option<(StartupReply, usize)>, ProtocolError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len < 4 {
        return Err(malformed("server message", format!("length {len}")));
    }
    if len > MAX_MESSAGE {
        return Err(ProtocolError::TooLarge(len));
    }
    if buf.len() < len + 1 {
        return Ok(None);
    }
    let body = &buf[5..len + 1];
    let reply = match tag {
        b'R' => {
            if body.len() < 4 {
                return Err(malformed("authentication request", "shorter than 4 bytes"));
            }
            match u32::from_be_bytes([body[0], body[1], body[2], body[3]]) {
                0 => StartupReply::AuthenticationOk,
                n => StartupReply::AuthenticationRequest(n),
            }
        }
        b'E' => {
            // Fields: a type byte and a C string each; `M` is the message.
            let mut message = String::new();
            let mut rest = body;
            while let Some((&field, tail)) = rest.split_first() {
                if field == 0 {
                    break;
                }
                let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
                if field == b'M' {
                    message = String::from_utf8_lossy(&tail[..end]).into_owned();
                }
                rest = tail.get(end + 1..).unwrap_or(&[]);
            }
            StartupReply::Error(cut(&message))
        }
        b'Z' => StartupReply::Ready,
        other => StartupReply::Other(other),
    };
    Ok(Some((reply, len + 1)))
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

/// Splits a byte stream (either direction, after the startup packet) into
/// `(type, body)` messages, holding at most one incomplete message.
#[derive(Default)]
struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// The messages `input` completed, each handed to `each`; the first
    /// error ends the stream (messages before it are handed out first).
    fn push(
        &mut self,
        input: &[u8],
        mut each: impl FnMut(u8, &[u8]) -> Result<(), ProtocolError>,
    ) -> Result<(), ProtocolError> {
        self.buf.extend_from_slice(input);
        let mut at = 0;
        let result = loop {
            if self.buf.len() - at < 5 {
                break Ok(());
            }
            let tag = self.buf[at];
            let b = &self.buf[at + 1..at + 5];
            let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            if len < 4 {
                break Err(malformed("message", format!("length {len} is too small")));
            }
            if len > MAX_MESSAGE {
                break Err(ProtocolError::TooLarge(len));
            }
            if self.buf.len() - at < 1 + len {
                break Ok(());
            }
            if let Err(e) = each(tag, &self.buf[at + 5..at + 1 + len]) {
                break Err(e);
            }
            at += 1 + len;
        };
        self.buf.drain(..at);
        result
    }
}

/// Splits the client's byte stream into messages.
#[derive(Default)]
pub struct FrontendDecoder {
    framer: Framer,
}

impl FrontendDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `input`: the messages it completed, and the error that ends
    /// the stream, if one does (the messages before it still count: the
    /// caller audits them, then refuses the stream).
    pub fn push(&mut self, input: &[u8]) -> (Vec<Frontend>, Option<ProtocolError>) {
        let mut out = Vec::new();
        let err = self
            .framer
            .push(input, |tag, body| {
                out.push(frontend(tag, body)?);
                Ok(())
            })
            .err();
        (out, err)
    }
}

/// Splits the server's byte stream into message types (all the query log
/// needs of it).
#[derive(Default)]
pub struct BackendDecoder {
    framer: Framer,
}

impl BackendDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The types of the messages `input` completed, and the error that
    /// ends the stream, if one does.
    pub fn push(&mut self, input: &[u8]) -> (Vec<u8>, Option<ProtocolError>) {
        let mut out = Vec::new();
        let err = self
            .framer
            .push(input, |tag, _| {
                out.push(tag);
                Ok(())
            })
            .err();
        (out, err)
    }
}

fn frontend(tag: u8, body: &[u8]) -> Result<Frontend, ProtocolError> {
    let what = "client message";
    let mut r = Reader::big_endian(body, what);
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

/// Prepared statements, portals and unanswered messages remembered per
/// connection at most; past that the connection is refused, since
/// forgetting would let a statement run unnamed.
const MAX_PREPARED: usize = 10_000;
/// Bytes of statement text and parameters one connection's log holds at
/// most (the same reasoning).
const MAX_HELD: usize = 32 << 20;
/// Parameter text one record carries at most; the rest are counted.
const MAX_PARAMS_TEXT: usize = 4 * crate::MAX_AUDITED;

fn size(r: &QueryRecord) -> usize {
    r.query.len() + r.params.iter().map(String::len).sum::<usize>()
}

/// A client message waiting for the server's answer.
enum Waiting {
    Parse { name: String, query: String },
    Bind { portal: String, record: QueryRecord },
    Close { kind: u8, name: String },
    Describe,
    Execute { portal: String },
    Sync,
    Query,
}

/// Follows a connection and names the statements it runs. The server has
/// the last word: a Parse, Bind or Close takes effect when the server
/// confirms it (and not at all when it refuses it, or ignores it after an
/// error until the next Sync), and an extended-protocol statement is named
/// when the server completes or refuses its Execute, as the server knew it
/// then. So a client cannot make the log name one statement while the
/// server runs another. Simple queries are named as sent.
#[derive(Default)]
pub struct QueryLog {
    statements: HashMap<String, String>,
    portals: HashMap<String, QueryRecord>,
    waiting: std::collections::VecDeque<Waiting>,
    /// Bytes held in `statements` and `portals`.
    held: usize,
}

impl QueryLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// A client message: a simple query (or function call) is named at
    /// once; the extended protocol's wait for [`Self::server`].
    pub fn client(&mut self, m: &Frontend) -> Result<Option<QueryRecord>, ProtocolError> {
        if self.waiting.len() >= MAX_PREPARED {
            return Err(too_many("messages the server has not answered"));
        }
        let (wait, record) = match m {
            Frontend::Query(q) => (
                Some(Waiting::Query),
                Some(QueryRecord {
                    query: cut(q),
                    params: Vec::new(),
                }),
            ),
            Frontend::FunctionCall { oid } => (
                None,
                Some(QueryRecord {
                    query: format!("(function call {oid})"),
                    params: Vec::new(),
                }),
            ),
            Frontend::Parse { name, query, .. } => (
                Some(Waiting::Parse {
                    name: name.clone(),
                    query: cut(query),
                }),
                None,
            ),
            Frontend::Bind {
                portal,
                statement,
                formats,
                params,
            } => {
                let mut shown = Vec::new();
                let mut text = 0;
                for (i, p) in params.iter().enumerate() {
                    if text >= MAX_PARAMS_TEXT {
                        shown.push(format!("({} more parameters)", params.len() - i));
                        break;
                    }
                    let binary = match formats.len() {
                        0 => false,
                        1 => formats[0] == 1,
                        _ => formats.get(i) == Some(&1),
                    };
                    let v = show_param(p.as_deref(), binary);
                    text += v.len();
                    shown.push(v);
                }
                let params = shown;
                // The statement's text is looked up when the server binds.
                let record = QueryRecord {
                    query: statement.clone(),
                    params,
                };
                (
                    Some(Waiting::Bind {
                        portal: portal.clone(),
                        record,
                    }),
                    None,
                )
            }
            Frontend::Close { kind, name } => (
                Some(Waiting::Close {
                    kind: *kind,
                    name: name.clone(),
                }),
                None,
            ),
            Frontend::Describe { .. } => (Some(Waiting::Describe), None),
            Frontend::Execute { portal, .. } => (
                Some(Waiting::Execute {
                    portal: portal.clone(),
                }),
                None,
            ),
            Frontend::Sync => (Some(Waiting::Sync), None),
            _ => (None, None),
        };
        self.waiting.extend(wait);
        Ok(record)
    }

    /// A server message (its type): what an Execute it completes (or
    /// refuses) ran.
    pub fn server(&mut self, tag: u8) -> Result<Option<QueryRecord>, ProtocolError> {
        let front = self.waiting.front();
        match (tag, front) {
            // A simple query's own messages, up to its ReadyForQuery.
            (b'Z', Some(Waiting::Query)) | (b'Z', Some(Waiting::Sync)) => {
                self.waiting.pop_front();
            }
            (_, Some(Waiting::Query)) => {}
            (b'1', Some(Waiting::Parse { .. })) => {
                if let Some(Waiting::Parse { name, query }) = self.waiting.pop_front() {
                    self.held += query.len();
                    if let Some(old) = self.statements.insert(name, query) {
                        self.held -= old.len();
                    }
                    if self.statements.len() > MAX_PREPARED || self.held > MAX_HELD {
                        return Err(too_many("prepared statements, or bytes of them"));
                    }
                }
            }
            (b'2', Some(Waiting::Bind { .. })) => {
                if let Some(Waiting::Bind { portal, mut record }) = self.waiting.pop_front() {
                    record.query = self
                        .statements
                        .get(&record.query)
                        .cloned()
                        .unwrap_or_else(|| format!("(prepared statement {:?})", record.query));
                    self.held += size(&record);
                    if let Some(old) = self.portals.insert(portal, record) {
                        self.held -= size(&old);
                    }
                    if self.portals.len() > MAX_PREPARED || self.held > MAX_HELD {
                        return Err(too_many("portals, or bytes of them"));
                    }
                }
            }
            (b'3', Some(Waiting::Close { .. })) => {
                if let Some(Waiting::Close { kind, name }) = self.waiting.pop_front() {
                    if kind == b'S' {
                        if let Some(old) = self.statements.remove(&name) {
                            self.held -= old.len();
                        }
                    } else if let Some(old) = self.portals.remove(&name) {
                        self.held -= size(&old);
                    }
                }
            }
            (b'T' | b'n', Some(Waiting::Describe)) => {
                self.waiting.pop_front();
            }
            (b'C' | b'I' | b's', Some(Waiting::Execute { .. })) => {
                return Ok(self.executed());
            }
            (b'E', Some(_)) => {
                // Refused: the failing message, and everything after it up
                // to the Sync, never took effect (the server skips them).
                // An Execute that failed still ran as far as it got.
                let failed = match self.waiting.front() {
                    Some(Waiting::Execute { .. }) => self.executed(),
                    _ => None,
                };
                while !matches!(self.waiting.front(), Some(Waiting::Sync) | None) {
                    self.waiting.pop_front();
                }
                return Ok(failed);
            }
            _ => {}
        }
        Ok(None)
    }

    /// The Execute at the front: what its portal held.
    fn executed(&mut self) -> Option<QueryRecord> {
        let Some(Waiting::Execute { portal }) = self.waiting.pop_front() else {
            return None;
        };
        Some(
            self.portals
                .get(&portal)
                .cloned()
                .unwrap_or_else(|| QueryRecord {
                    query: format!("(portal {portal:?})"),
                    params: Vec::new(),
                }),
        )
    }
}

fn too_many(what: &str) -> ProtocolError {
    malformed(
        "connection",
        format!("more than {MAX_PREPARED} {what}; reconnect"),
    )
}

fn show_param(p: Option<&[u8]>, binary: bool) -> String {
    match p {
        None => "NULL".into(),
        Some(b) if !binary => cut(&String::from_utf8_lossy(b)),
        Some(b) => crate::hex(b),
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

    /// Closes prepared statement `name`.
    pub fn close_statement(name: &str) -> Vec<u8> {
        let mut b = vec![b'S'];
        cstr(&mut b, name);
        message(b'C', &b)
    }

    /// A server message of type `tag` with an empty body.
    pub fn backend(tag: u8) -> Vec<u8> {
        message(tag, &[])
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
    fn the_servers_start_and_warden_refusals() {
        let refusal = fatal("28000", "warden: access denied");
        let (r, len) = parse_startup_reply(&refusal).unwrap().unwrap();
        assert_eq!(r, StartupReply::Error("warden: access denied".into()));
        assert_eq!(len, refusal.len());
        assert_eq!(parse_startup_reply(&refusal[..len - 1]), Ok(None));
        let mut ok = vec![b'R', 0, 0, 0, 8, 0, 0, 0, 0];
        ok.extend_from_slice(&[b'R', 0, 0, 0, 8, 0, 0, 0, 5]);
        let (r, len) = parse_startup_reply(&ok).unwrap().unwrap();
        assert_eq!((r, len), (StartupReply::AuthenticationOk, 9));
        let (r, _) = parse_startup_reply(&ok[9..]).unwrap().unwrap();
        assert_eq!(r, StartupReply::AuthenticationRequest(5));
        assert!(parse_startup_reply(&[b'R', 0, 0, 0, 2]).is_err());
        assert!(parse_startup_reply(&[b'R', 0, 0, 0, 4]).is_err(), "no code");
        assert!(
            parse_startup_reply(&[b'Z', 0x7f, 0, 0, 0]).is_err(),
            "too large"
        );
    }

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

    /// Client bytes, each followed by the server's answer (message types),
    /// through a decoder and a log; the statements named.
    fn run(steps: &[(Vec<u8>, &[u8])]) -> Vec<QueryRecord> {
        let mut d = FrontendDecoder::new();
        let mut log = QueryLog::new();
        let mut runs = Vec::new();
        for (client, server) in steps {
            // Byte by byte: messages complete across reads.
            for b in client {
                let (msgs, err) = d.push(std::slice::from_ref(b));
                assert_eq!(err, None);
                for m in msgs {
                    runs.extend(log.client(&m).unwrap());
                }
            }
            for tag in *server {
                runs.extend(log.server(*tag).unwrap());
            }
        }
        runs
    }

    fn record(query: &str, params: &[&str]) -> QueryRecord {
        QueryRecord {
            query: query.into(),
            params: params.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn simple_and_extended_queries_are_named_with_their_parameters() {
        let q = "select * from t where id = $1 and name = $2";
        let runs = run(&[
            (build::query("select 1; select 2"), b"TDCTDCZ"),
            (build::parse("s1", q), b"1"),
            (build::bind("", "s1", &[Some(b"42"), None], false), b"2"),
            (build::execute(""), b"DC"),
            (build::bind("p", "s1", &[Some(&[0, 1, 255])], true), b"2"),
            (build::execute("p"), b"C"),
            (build::sync(), b"Z"),
            (build::terminate(), b""),
        ]);
        assert_eq!(
            runs,
            vec![
                record("select 1; select 2", &[]),
                record(q, &["42", "NULL"]),
                record(q, &["\\x0001ff"]),
            ]
        );
    }

    /// Pipelined: the client sends everything before the server answers.
    #[test]
    fn pipelined_messages_are_named_as_the_server_answers() {
        let mut all = build::parse("", "select $1");
        all.extend(build::bind("", "", &[Some(b"7")], false));
        all.extend(build::execute(""));
        all.extend(build::sync());
        assert_eq!(run(&[(all, b"12DCZ")]), vec![record("select $1", &["7"])]);
    }

    /// What the server refused, or skipped after an error, never changes
    /// what the log names: a client cannot have it name one statement
    /// while the server runs another.
    #[test]
    fn refused_and_skipped_messages_take_no_effect() {
        let runs = run(&[
            (build::parse("s", "drop table t"), b"1"),
            (build::sync(), b"Z"),
            // Already exists: the server refuses it and keeps the first.
            (build::parse("s", "select 1"), b"E"),
            (build::sync(), b"Z"),
            (build::bind("", "s", &[], false), b"2"),
            (build::execute(""), b"C"),
            (build::sync(), b"Z"),
        ]);
        assert_eq!(runs, vec![record("drop table t", &[])]);
        // An error, then a Close and a Parse the server skips until Sync.
        let mut skipped = build::bind("", "nosuch", &[], false);
        skipped.extend(build::close_statement("s"));
        skipped.extend(build::parse("s", "select 1"));
        skipped.extend(build::sync());
        let runs = run(&[
            (build::parse("s", "drop table t"), b"1"),
            (build::sync(), b"Z"),
            (skipped, b"EZ"),
            (build::bind("", "s", &[], false), b"2"),
            (build::execute(""), b"C"),
            (build::sync(), b"Z"),
        ]);
        assert_eq!(runs, vec![record("drop table t", &[])]);
        // A failing Execute is still named.
        let runs = run(&[
            (build::parse("", "select 1/0"), b"1"),
            (build::bind("", "", &[], false), b"2"),
            (build::execute(""), b"E"),
            (build::sync(), b"Z"),
        ]);
        assert_eq!(runs, vec![record("select 1/0", &[])]);
    }

    #[test]
    fn bad_messages_are_refused_not_panicked_on() {
        let err = |b: &[u8]| FrontendDecoder::new().push(b).1;
        assert_eq!(
            err(&[b'Q', 0x7f, 0xff, 0xff, 0xff]),
            Some(ProtocolError::TooLarge(0x7fff_ffff))
        );
        assert!(err(&[b'Q', 0, 0, 0, 2]).is_some(), "length below 4");
        assert!(err(&[b'Q', 0, 0, 0, 6, b'x', b'y']).is_some(), "no NUL");
        assert!(err(&[b'?', 0, 0, 0, 4]).is_some(), "unknown type");
        let mut bind = build::bind("", "", &[Some(b"x")], false);
        bind[11] = 0xff; // a parameter count far beyond the body
        assert!(err(&bind).is_some());
        // The messages before a bad one are still handed out.
        let mut two = build::query("select 1");
        two.extend([b'?', 0, 0, 0, 4]);
        let (msgs, e) = FrontendDecoder::new().push(&two);
        assert_eq!(msgs, vec![Frontend::Query("select 1".into())]);
        assert!(e.is_some());
        // A repeated startup parameter: PostgreSQL would take the last.
        let p = build::startup(&[("user", "app"), ("user", "postgres")]);
        assert!(parse_startup(&p).is_err());
    }

    #[test]
    fn long_statements_are_cut_for_the_audit_log() {
        let q = "é".repeat(MAX_AUDITED);
        let r = QueryLog::new()
            .client(&Frontend::Query(q))
            .unwrap()
            .unwrap();
        assert!(r.query.len() <= MAX_AUDITED + '…'.len_utf8());
        assert!(r.query.ends_with('…'));
    }
}
