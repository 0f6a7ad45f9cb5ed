//! The MySQL/MariaDB client/server protocol: packet framing, the client's
//! handshake response (who connects, to which database), its commands,
//! and the statements they run for the audit log (COM_QUERY, and
//! prepared statements with the parameters COM_STMT_EXECUTE sends).

use crate::{cut, malformed, ProtocolError, QueryRecord, Reader};
use std::collections::HashMap;

/// Capability flags Warden reads.
pub mod caps {
    pub const CONNECT_WITH_DB: u32 = 0x0000_0008;
    pub const PROTOCOL_41: u32 = 0x0000_0200;
    pub const SSL: u32 = 0x0000_0800;
    pub const SECURE_CONNECTION: u32 = 0x0000_8000;
    pub const PLUGIN_AUTH: u32 = 0x0008_0000;
    pub const CONNECT_ATTRS: u32 = 0x0010_0000;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x0020_0000;
    pub const COMPRESS: u32 = 0x0000_0020;
    pub const QUERY_ATTRIBUTES: u32 = 0x0800_0000;
    /// What Warden's relay does not pass on: compression (it could not
    /// read the statements) and query attributes (its parser does not
    /// know them), and TLS, which the relay does itself.
    pub const NOT_RELAYED: u32 = COMPRESS | QUERY_ATTRIBUTES | SSL;
}

/// A packet's payload: at most 2^24 - 1 bytes (longer ones are split, the
/// pieces joined by [`PacketDecoder`]).
const MAX_PAYLOAD: usize = 0xff_ffff;
/// The largest joined packet accepted: 32 MiB (MySQL's default
/// `max_allowed_packet` is 64 MiB, MariaDB's 16; a bigger statement is
/// refused here rather than buffered without bound).
pub const MAX_PACKET: usize = 32 << 20;

/// One logical packet: its sequence id (of the first piece) and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub seq: u8,
    pub payload: Vec<u8>,
}

/// Splits a byte stream (either direction) into packets, joining those
/// split at 2^24 - 1 bytes; holds at most one incomplete packet, never
/// more than [`MAX_PACKET`] bytes of one.
#[derive(Default)]
pub struct PacketDecoder {
    buf: Vec<u8>,
    /// A packet being joined from pieces.
    partial: Option<Packet>,
}

impl PacketDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `input`; the packets it completed.
    pub fn push(&mut self, input: &[u8]) -> Result<Vec<Packet>, ProtocolError> {
        self.buf.extend_from_slice(input);
        let mut out = Vec::new();
        let mut at = 0;
        while self.buf.len() - at >= 4 {
            let h = &self.buf[at..at + 4];
            let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
            let seq = h[3];
            let held = self.partial.as_ref().map_or(0, |p| p.payload.len());
            if held + len > MAX_PACKET {
                return Err(ProtocolError::TooLarge(held + len));
            }
            if self.buf.len() - at < 4 + len {
                break;
            }
            let piece = &self.buf[at + 4..at + 4 + len];
            at += 4 + len;
            let mut p = self.partial.take().unwrap_or(Packet {
                seq,
                payload: Vec::new(),
            });
            p.payload.extend_from_slice(piece);
            if len == MAX_PAYLOAD {
                self.partial = Some(p);
            } else {
                out.push(p);
            }
        }
        self.buf.drain(..at);
        Ok(out)
    }
}

/// The client's handshake response: who it is and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub capabilities: u32,
    pub user: String,
    pub database: Option<String>,
    pub auth_plugin: Option<String>,
}

/// Reads a client's first packet: `Ok(None)` for an SSL request (the
/// short form that asks for TLS first), else the handshake response.
pub fn parse_handshake_response(
    payload: &[u8],
) -> Result<Option<HandshakeResponse>, ProtocolError> {
    let what = "handshake response";
    let mut r = Reader::little_endian(payload, what);
    let capabilities = r.u32()?;
    if capabilities & caps::PROTOCOL_41 == 0 {
        return Err(malformed(what, "the client does not speak protocol 4.1"));
    }
    r.bytes(4 + 1 + 23)?; // max packet size, character set, filler
    if r.done() {
        return if capabilities & caps::SSL != 0 {
            Ok(None)
        } else {
            Err(malformed(what, "it ends before the user name"))
        };
    }
    let user = r.cstr()?;
    if capabilities & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        let n = lenenc(&mut r)?;
        r.bytes(usize::try_from(n).map_err(|_| malformed(what, "auth data length"))?)?;
    } else if capabilities & caps::SECURE_CONNECTION != 0 {
        let n = r.u8()? as usize;
        r.bytes(n)?;
    } else {
        r.cstr_bytes()?;
    }
    let database = if capabilities & caps::CONNECT_WITH_DB != 0 && !r.done() {
        Some(r.cstr()?).filter(|d| !d.is_empty())
    } else {
        None
    };
    let auth_plugin = if capabilities & caps::PLUGIN_AUTH != 0 && !r.done() {
        Some(r.cstr()?)
    } else {
        None
    };
    Ok(Some(HandshakeResponse {
        capabilities,
        user,
        database,
        auth_plugin,
    }))
}

/// The server's greeting (HandshakeV10) as the relay passes it to its
/// client: the same, but for the capabilities the relay does not pass on
/// ([`caps::NOT_RELAYED`]), so the client asks for none of them.
pub fn greeting_for_client(payload: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let what = "server greeting";
    if payload.len() > MAX_HANDSHAKE {
        return Err(ProtocolError::TooLarge(payload.len()));
    }
    let mut r = Reader::little_endian(payload, what);
    match r.u8()? {
        10 => {}
        0xff => return Err(malformed(what, "the server refused the connection")),
        v => return Err(malformed(what, format!("protocol version {v}"))),
    }
    r.cstr_bytes()?; // server version
    r.bytes(4 + 8 + 1)?; // connection id, scramble, filler
    let low = payload.len() - r.b.len();
    r.bytes(2 + 1 + 2)?; // capabilities (low), character set, status
    let high = payload.len() - r.b.len();
    r.bytes(2 + 1)?; // capabilities (high), auth data length
    let reserved = payload.len() - r.b.len();
    r.bytes(10)?;
    let mut out = payload.to_vec();
    // MariaDB's extended capabilities (bulk execution and the like) live
    // in the last four reserved bytes: none are offered.
    out[reserved..reserved + 10].fill(0);
    let caps =
        u32::from_le_bytes([out[low], out[low + 1], out[high], out[high + 1]]) & !caps::NOT_RELAYED;
    let b = caps.to_le_bytes();
    out[low..low + 2].copy_from_slice(&b[..2]);
    out[high..high + 2].copy_from_slice(&b[2..]);
    Ok(out)
}

/// What the relay sends the server for a client's handshake response: the
/// SSL request (TLS comes first, with the connection's certificate), then
/// the response itself with TLS among its capabilities and no password
/// (the certificate authenticates; the client's answer to a scramble the
/// relay made up would mean nothing to the server).
pub fn handshake_for_server(payload: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ProtocolError> {
    let what = "handshake response";
    // Bounded well under a packet's 16 MiB: the rewritten response is sent
    // as one packet, and what follows the fields read here (connection
    // attributes) is passed on as it is.
    if payload.len() > MAX_HANDSHAKE {
        return Err(ProtocolError::TooLarge(payload.len()));
    }
    let mut r = Reader::little_endian(payload, what);
    let caps = (r.u32()? & !caps::NOT_RELAYED) | caps::SSL;
    r.bytes(4 + 1 + 23)?;
    r.cstr_bytes()?;
    let auth_at = payload.len() - r.b.len();
    if caps & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        let n = lenenc(&mut r)?;
        r.bytes(usize::try_from(n).map_err(|_| malformed(what, "auth data length"))?)?;
    } else if caps & caps::SECURE_CONNECTION != 0 {
        let n = r.u8()? as usize;
        r.bytes(n)?;
    } else {
        r.cstr_bytes()?;
    }
    let after_auth = payload.len() - r.b.len();
    let mut response = caps.to_le_bytes().to_vec();
    response.extend_from_slice(&payload[4..auth_at]);
    // MariaDB's extended capabilities (the filler's last four bytes):
    // none, as none were offered.
    response[28..32].fill(0);
    // Empty auth data: one zero byte in each of the three encodings.
    response.push(0);
    response.extend_from_slice(&payload[after_auth..]);
    let ssl = response[..32].to_vec();
    Ok((ssl, response))
}

/// An ERR packet's payload: how the relay refuses a client in MySQL's
/// words (`mysql` prints `ERROR code (state): message`).
pub fn err_packet(code: u16, state: &str, message: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    let mut st = state.as_bytes().to_vec();
    st.resize(5, b'0');
    p.extend_from_slice(&st);
    p.extend_from_slice(message.as_bytes());
    p
}

/// The largest greeting or handshake response the relay rewrites.
pub const MAX_HANDSHAKE: usize = 64 << 10;

/// A client command (the first packet of each exchange after login).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Quit,
    /// COM_INIT_DB: switches the database.
    InitDb(String),
    Query(String),
    Ping,
    /// COM_STMT_PREPARE
    Prepare(String),
    /// COM_STMT_EXECUTE: the statement and its raw parameter block.
    Execute {
        statement: u32,
        rest: Vec<u8>,
    },
    /// COM_STMT_SEND_LONG_DATA: a parameter's value sent ahead.
    SendLongData {
        statement: u32,
        param: u16,
    },
    /// COM_STMT_CLOSE
    Close(u32),
    /// COM_STMT_RESET
    Reset(u32),
    /// COM_STMT_FETCH
    Fetch(u32),
    /// COM_CHANGE_USER: a new login inside the connection. Warden refuses
    /// it (the database user is the one the certificate names).
    ChangeUser,
    /// COM_RESET_CONNECTION
    ResetConnection,
    /// COM_SET_OPTION
    SetOption,
    /// Anything else (replication, shutdown, debug...): its code.
    Other(u8),
}

/// Reads a command packet's payload.
pub fn parse_command(payload: &[u8]) -> Result<Command, ProtocolError> {
    let what = "command";
    let Some((&code, body)) = payload.split_first() else {
        return Err(malformed(what, "an empty packet"));
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut r = Reader::little_endian(body, what);
    Ok(match code {
        0x01 => Command::Quit,
        0x02 => Command::InitDb(text(body)),
        0x03 => Command::Query(text(body)),
        0x0e => Command::Ping,
        0x16 => Command::Prepare(text(body)),
        0x17 => Command::Execute {
            statement: r.u32()?,
            rest: r.rest().to_vec(),
        },
        0x18 => Command::SendLongData {
            statement: r.u32()?,
            param: r.u16()?,
        },
        0x19 => Command::Close(r.u32()?),
        0x1a => Command::Reset(r.u32()?),
        0x1c => Command::Fetch(r.u32()?),
        0x11 => Command::ChangeUser,
        0x1f => Command::ResetConnection,
        0x1b => Command::SetOption,
        other => Command::Other(other),
    })
}

/// The server's answer to COM_STMT_PREPARE, when it succeeded: the
/// statement's id and its parameter count.
pub fn parse_prepare_ok(payload: &[u8]) -> Option<(u32, u16)> {
    let mut r = Reader::little_endian(payload, "prepare answer");
    if r.u8().ok()? != 0 {
        return None;
    }
    let id = r.u32().ok()?;
    let _columns = r.u16().ok()?;
    let params = r.u16().ok()?;
    Some((id, params))
}

/// Prepared statements remembered per connection at most.
const MAX_PREPARED: usize = 10_000;

/// Follows a connection's commands (and the server's answers to prepares)
/// and names the statements it runs: COM_QUERY at once, a prepared
/// statement at each COM_STMT_EXECUTE, with its parameters.
#[derive(Default)]
pub struct QueryLog {
    /// A prepare sent, waiting for the server's answer.
    preparing: Option<String>,
    /// The id of the statement prepared last (an execute of id
    /// 0xffffffff means it, in MariaDB).
    last: Option<u32>,
    statements: HashMap<u32, Prepared>,
}

/// A prepared statement as the log knows it.
#[derive(Clone, Default)]
struct Prepared {
    query: String,
    params: u16,
    /// Parameter types from the last execute that sent them (clients send
    /// them once, then reuse them).
    types: Option<Vec<(u8, u8)>>,
    /// Parameters sent ahead with COM_STMT_SEND_LONG_DATA (absent from the
    /// next execute's values).
    long_data: std::collections::BTreeSet<u16>,
}

impl QueryLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// What the client's command runs, if anything.
    pub fn client(&mut self, c: &Command) -> Option<QueryRecord> {
        match c {
            Command::Query(q) => Some(QueryRecord {
                query: cut(q),
                params: Vec::new(),
            }),
            Command::InitDb(db) => Some(QueryRecord {
                query: cut(&format!("USE {db}")),
                params: Vec::new(),
            }),
            Command::Prepare(q) => {
                self.preparing = Some(cut(q));
                None
            }
            Command::Execute { statement, rest } => {
                let statement = match (*statement, self.last) {
                    (u32::MAX, Some(last)) => last,
                    (id, _) => id,
                };
                let Some(p) = self.statements.get_mut(&statement) else {
                    return Some(QueryRecord {
                        query: format!("(prepared statement {statement})"),
                        params: Vec::new(),
                    });
                };
                let (params, types) = execute_params(rest, p);
                if types.is_some() {
                    p.types = types;
                }
                // Long data counts for one execute.
                p.long_data.clear();
                Some(QueryRecord {
                    query: p.query.clone(),
                    params,
                })
            }
            Command::SendLongData { statement, param } => {
                if let Some(p) = self.statements.get_mut(statement) {
                    p.long_data.insert(*param);
                }
                None
            }
            Command::Reset(id) => {
                if let Some(p) = self.statements.get_mut(id) {
                    p.long_data.clear();
                }
                None
            }
            Command::Close(id) => {
                self.statements.remove(id);
                None
            }
            _ => None,
        }
    }

    /// The server's first packet after a COM_STMT_PREPARE. Past
    /// [`MAX_PREPARED`] statements the connection is refused (forgetting
    /// one would let it run unnamed).
    pub fn prepared(&mut self, payload: &[u8]) -> Result<(), ProtocolError> {
        let Some(query) = self.preparing.take() else {
            return Ok(());
        };
        if let Some((id, params)) = parse_prepare_ok(payload) {
            self.last = Some(id);
            self.statements.insert(
                id,
                Prepared {
                    query,
                    params,
                    ..Default::default()
                },
            );
            if self.statements.len() > MAX_PREPARED {
                return Err(malformed(
                    "connection",
                    format!("more than {MAX_PREPARED} prepared statements; reconnect"),
                ));
            }
        }
        Ok(())
    }
}

/// The parameters of a COM_STMT_EXECUTE (after the statement id): flags,
/// iteration count, NULL bitmap, "types follow" flag, types, values; and
/// the types, when this execute sent them. Types sent by an earlier
/// execute are used when this one sends none; parameters sent ahead as
/// long data are not in the values. What cannot be decoded is shown as
/// such rather than guessed.
fn execute_params(rest: &[u8], p: &Prepared) -> (Vec<String>, Option<Vec<(u8, u8)>>) {
    let n = p.params as usize;
    if n == 0 {
        return (Vec::new(), None);
    }
    let mut r = Reader::little_endian(rest, "execute");
    let mut sent = None;
    let parsed = (|| -> Result<Vec<String>, ProtocolError> {
        r.bytes(1 + 4)?; // flags, iteration count
        let bitmap = r.bytes(n.div_ceil(8))?.to_vec();
        let types: Vec<(u8, u8)> = if r.u8()? == 1 {
            let t: Vec<(u8, u8)> = (0..n)
                .map(|_| Ok((r.u8()?, r.u8()?)))
                .collect::<Result<_, ProtocolError>>()?;
            sent = Some(t.clone());
            t
        } else {
            match &p.types {
                Some(t) if t.len() == n => t.clone(),
                _ => return Ok(vec!["(types not known)".into(); n]),
            }
        };
        let mut out = Vec::with_capacity(n);
        for (i, (t, flags)) in types.into_iter().enumerate() {
            if bitmap[i / 8] & (1 << (i % 8)) != 0 {
                out.push("NULL".into());
                continue;
            }
            if p.long_data.contains(&(i as u16)) {
                out.push("(sent as long data)".into());
                continue;
            }
            let unsigned = flags & 0x80 != 0;
            let v = match t {
                0x01 => int(r.bytes(1)?, unsigned),
                0x02 | 0x0d => int(r.bytes(2)?, unsigned),
                0x03 | 0x09 => int(r.bytes(4)?, unsigned),
                0x08 => int(r.bytes(8)?, unsigned),
                0x04 => {
                    let b = r.bytes(4)?;
                    f32::from_le_bytes([b[0], b[1], b[2], b[3]]).to_string()
                }
                0x05 => {
                    let b = r.bytes(8)?;
                    f64::from_le_bytes(b.try_into().expect("8 bytes")).to_string()
                }
                0x07 | 0x0a | 0x0b | 0x0c => {
                    let len = r.u8()? as usize;
                    crate::hex(r.bytes(len)?)
                }
                0x06 => "NULL".into(),
                0x00 | 0x0f | 0xf5 | 0xf6 | 0xf7 | 0xf8 | 0xf9 | 0xfa | 0xfb | 0xfc | 0xfd
                | 0xfe | 0xff | 0x10 => {
                    let len = usize::try_from(lenenc(&mut r)?)
                        .map_err(|_| malformed("execute", "value length"))?;
                    let b = r.bytes(len)?;
                    match std::str::from_utf8(b) {
                        Ok(s) => cut(s),
                        Err(_) => crate::hex(b),
                    }
                }
                other => {
                    // Unknown type: its length is unknown, so nothing after
                    // it can be read either.
                    out.push(format!("(type {other:#x})"));
                    out.resize(n, "(not decoded)".into());
                    return Ok(out);
                }
            };
            out.push(v);
        }
        Ok(out)
    })();
    let shown = parsed.unwrap_or_else(|e| vec![format!("(parameters not decoded: {e})")]);
    (shown, sent)
}

fn int(b: &[u8], unsigned: bool) -> String {
    let mut v = [0u8; 8];
    v[..b.len()].copy_from_slice(b);
    let u = u64::from_le_bytes(v);
    if unsigned {
        return u.to_string();
    }
    let shift = 64 - 8 * b.len() as u32;
    (((u << shift) as i64) >> shift).to_string()
}

/// A length-encoded integer.
fn lenenc(r: &mut Reader<'_>) -> Result<u64, ProtocolError> {
    Ok(match r.u8()? {
        n @ 0..=0xfa => n as u64,
        0xfc => r.u16()? as u64,
        0xfd => {
            let b = r.bytes(3)?;
            u32::from_le_bytes([b[0], b[1], b[2], 0]) as u64
        }
        0xfe => {
            let b = r.bytes(8)?;
            u64::from_le_bytes(b.try_into().expect("8 bytes"))
        }
        other => {
            return Err(malformed(
                r.what,
                format!("{other:#x} starts no length-encoded integer"),
            ))
        }
    })
}

/// Builds packets (of one piece: under 16 MiB).
pub mod build {
    use super::caps;

    /// A packet with `seq` around `payload` (one piece: under 16 MiB).
    pub fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() <= 0xff_ffff, "one piece only");
        let mut p = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        p.push(seq);
        p.extend_from_slice(payload);
        p
    }

    /// `payload` as the packets that carry it from `seq` on: pieces of
    /// 2^24 - 1 bytes, then a shorter (possibly empty) last one.
    pub fn packets(mut seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = payload;
        loop {
            let n = rest.len().min(super::MAX_PAYLOAD);
            out.extend(packet(seq, &rest[..n]));
            seq = seq.wrapping_add(1);
            rest = &rest[n..];
            if n < super::MAX_PAYLOAD {
                return out;
            }
        }
    }

    /// A handshake response payload for `user` (and `db`).
    pub fn handshake_response(user: &str, db: Option<&str>) -> Vec<u8> {
        let mut c = caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH;
        if db.is_some() {
            c |= caps::CONNECT_WITH_DB;
        }
        let mut p = c.to_le_bytes().to_vec();
        p.extend_from_slice(&(1u32 << 24).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(user.as_bytes());
        p.push(0);
        p.push(0); // no auth data: the certificate authenticates
        if let Some(db) = db {
            p.extend_from_slice(db.as_bytes());
            p.push(0);
        }
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    /// The short form asking for TLS.
    pub fn ssl_request() -> Vec<u8> {
        let c = caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::SSL;
        let mut p = c.to_le_bytes().to_vec();
        p.extend_from_slice(&(1u32 << 24).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0; 23]);
        p
    }

    pub fn command(code: u8, body: &[u8]) -> Vec<u8> {
        let mut p = vec![code];
        p.extend_from_slice(body);
        p
    }

    /// COM_STMT_EXECUTE of `statement` with a string and a signed
    /// long-long parameter (`None`: NULL).
    pub fn execute(statement: u32, s: Option<&str>, n: Option<i64>) -> Vec<u8> {
        let mut p = vec![0x17];
        p.extend_from_slice(&statement.to_le_bytes());
        p.push(0); // flags
        p.extend_from_slice(&1u32.to_le_bytes());
        p.push(s.is_none() as u8 | ((n.is_none() as u8) << 1));
        p.push(1); // types follow
        p.extend_from_slice(&[0xfd, 0, 0x08, 0]);
        if let Some(s) = s {
            p.push(s.len() as u8);
            p.extend_from_slice(s.as_bytes());
        }
        if let Some(n) = n {
            p.extend_from_slice(&n.to_le_bytes());
        }
        p
    }

    /// The server's COM_STMT_PREPARE_OK.
    pub fn prepare_ok(statement: u32, params: u16) -> Vec<u8> {
        let mut p = vec![0];
        p.extend_from_slice(&statement.to_le_bytes());
        p.extend_from_slice(&1u16.to_le_bytes());
        p.extend_from_slice(&params.to_le_bytes());
        p.extend_from_slice(&[0, 0, 0]);
        p
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_payloads_go_out_in_pieces_and_come_back_whole() {
        for len in [0, 5, 0xff_ffff, 0xff_ffff + 7] {
            let payload = vec![7u8; len];
            let mut d = PacketDecoder::new();
            let got = d.push(&build::packets(3, &payload)).unwrap();
            assert_eq!(got, vec![Packet { seq: 3, payload }], "{len}");
        }
    }

    #[test]
    fn the_relay_rewrites_the_handshake() {
        // A greeting: version 10, "10.11.6-MariaDB", id, scramble,
        // filler, caps low (SSL | PROTOCOL_41), charset, status, caps high
        // (PLUGIN_AUTH), auth data length, reserved, scramble 2, plugin.
        let low = (caps::SSL | caps::PROTOCOL_41 | caps::COMPRESS) as u16;
        let high = ((caps::PLUGIN_AUTH | caps::QUERY_ATTRIBUTES) >> 16) as u16;
        let mut g = vec![10];
        g.extend_from_slice(b"10.11.6-MariaDB\0");
        g.extend_from_slice(&[1, 0, 0, 0]);
        g.extend_from_slice(b"abcdefgh\0");
        g.extend_from_slice(&low.to_le_bytes());
        g.push(45);
        g.extend_from_slice(&[2, 0]);
        g.extend_from_slice(&high.to_le_bytes());
        g.push(21);
        g.extend_from_slice(&[0; 10]);
        g.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
        let out = greeting_for_client(&g).unwrap();
        assert_eq!(out.len(), g.len());
        let at = 1 + 16 + 4 + 9;
        let caps = u32::from_le_bytes([out[at], out[at + 1], out[at + 5], out[at + 6]]);
        assert_eq!(caps, caps::PROTOCOL_41 | caps::PLUGIN_AUTH);
        assert!(greeting_for_client(&[0xff, 1, 2]).is_err());
        assert!(greeting_for_client(&g[..20]).is_err());

        // The client's response: TLS added, its password answer dropped.
        let mut resp = build::handshake_response("reader", Some("app"));
        // A 20-byte scrambled password where the builder put none.
        let at = 32 + 7;
        resp.splice(at..at + 1, std::iter::once(20).chain([7u8; 20]));
        let parsed = parse_handshake_response(&resp).unwrap().unwrap();
        assert_eq!(parsed.database.as_deref(), Some("app"));
        let (ssl, server) = handshake_for_server(&resp).unwrap();
        assert_eq!(ssl.len(), 32);
        assert_eq!(parse_handshake_response(&ssl), Ok(None), "an SSL request");
        let again = parse_handshake_response(&server).unwrap().unwrap();
        assert_eq!(again.user, "reader");
        assert_eq!(again.database.as_deref(), Some("app"));
        assert_eq!(again.auth_plugin.as_deref(), Some("mysql_native_password"));
        assert_ne!(again.capabilities & caps::SSL, 0);
        assert_eq!(server.len(), resp.len() - 20);
        assert!(handshake_for_server(&resp[..30]).is_err());
        let err = err_packet(1045, "28000", "warden: denied");
        assert_eq!(err[0], 0xff);
        assert!(String::from_utf8_lossy(&err).ends_with("#28000warden: denied"));
    }

    use super::*;

    #[test]
    fn packets_are_framed_and_joined() {
        let mut stream = build::packet(0, b"hello");
        stream.extend(build::packet(1, b""));
        let mut d = PacketDecoder::new();
        let mut got = Vec::new();
        for b in &stream {
            got.extend(d.push(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(
            got,
            vec![
                Packet {
                    seq: 0,
                    payload: b"hello".to_vec()
                },
                Packet {
                    seq: 1,
                    payload: vec![]
                }
            ]
        );
        // A payload of exactly 2^24 - 1 continues in the next packet.
        let big = vec![7u8; MAX_PAYLOAD];
        let mut s = build::packet(3, &big);
        s.extend(build::packet(4, b"end"));
        let got = PacketDecoder::new().push(&s).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].seq, 3);
        assert_eq!(got[0].payload.len(), MAX_PAYLOAD + 3);
    }

    #[test]
    fn handshake_names_the_user_and_database() {
        let h = parse_handshake_response(&build::handshake_response("alice", Some("app")))
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.user.as_str(), h.database.as_deref()),
            ("alice", Some("app"))
        );
        assert_eq!(h.auth_plugin.as_deref(), Some("mysql_native_password"));
        assert_eq!(parse_handshake_response(&build::ssl_request()), Ok(None));
        assert!(parse_handshake_response(&[1, 2, 3]).is_err());
    }

    #[test]
    fn queries_and_prepared_statements_are_named() {
        let mut log = QueryLog::new();
        let q = parse_command(&build::command(0x03, b"select 1")).unwrap();
        assert_eq!(log.client(&q).unwrap().query, "select 1");
        let p = parse_command(&build::command(
            0x16,
            b"select * from t where a = ? and b = ?",
        ))
        .unwrap();
        assert_eq!(log.client(&p), None);
        log.prepared(&build::prepare_ok(7, 2)).unwrap();
        let e = parse_command(&build::execute(7, Some("x'y"), Some(-42))).unwrap();
        assert_eq!(
            log.client(&e),
            Some(QueryRecord {
                query: "select * from t where a = ? and b = ?".into(),
                params: vec!["x'y".into(), "-42".into()]
            })
        );
        let e = parse_command(&build::execute(7, None, Some(5))).unwrap();
        assert_eq!(log.client(&e).unwrap().params, vec!["NULL", "5"]);
        // Types sent once are reused by a later execute that sends none.
        // (Layout: code, id 1..5, flags 5, iterations 6..10, NULL bitmap
        // 10, "types follow" 11, types 12..16, values from 16.)
        let mut again = build::execute(7, Some("z"), Some(9));
        again.splice(11..16, [0]);
        let e = parse_command(&again).unwrap();
        assert_eq!(log.client(&e).unwrap().params, vec!["z", "9"]);
        // A parameter sent ahead as long data is not among the values.
        let long = parse_command(&build::command(0x18, &[7, 0, 0, 0, 0, 0, b'x'])).unwrap();
        assert_eq!(log.client(&long), None);
        let mut no_first = build::execute(7, Some(""), Some(3));
        no_first.remove(16); // the empty string's length byte
        let e = parse_command(&no_first).unwrap();
        assert_eq!(
            log.client(&e).unwrap().params,
            vec!["(sent as long data)", "3"]
        );
        assert_eq!(parse_command(&[0x11, 1, 2]).unwrap(), Command::ChangeUser);
        assert!(parse_command(&[]).is_err());
    }

    #[test]
    fn oversized_packets_are_refused() {
        let mut d = PacketDecoder::new();
        let mut s = Vec::new();
        for seq in 0..3 {
            s.extend_from_slice(&[0xff, 0xff, 0xff, seq]);
            s.resize(s.len() + MAX_PAYLOAD, 0);
        }
        // 48 MiB of continuation pieces: past the limit, refused.
        assert!(matches!(d.push(&s), Err(ProtocolError::TooLarge(_))));
    }
}
