//! Mutation fuzzing of the PostgreSQL and MySQL decoders: valid streams, then
//! random byte flips, cuts, splices and length rewrites, fed in random
//! pieces. They must never panic; what the frontend decoder accepts whole
//! must decode the same however it is split. Deterministic;
//! WARDEN_FUZZ_CASES for more.

use warden_db::mysql;
use warden_db::postgres::{
    build, parse_startup, parse_startup_reply, BackendDecoder, FrontendDecoder, QueryLog,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn stream(r: &mut Rng) -> Vec<u8> {
    let mut s = Vec::new();
    for _ in 0..r.below(12) {
        match r.below(6) {
            0 => s.extend(build::query("select now(); -- ü")),
            1 => s.extend(build::parse("st", "insert into t values ($1, $2)")),
            2 => s.extend(build::bind(
                "",
                "st",
                &[Some(b"1"), None, Some(&[0xff, 0])],
                r.below(2) == 0,
            )),
            3 => s.extend(build::execute("")),
            4 => s.extend(build::sync()),
            _ => s.extend(build::terminate()),
        }
    }
    s
}

fn mutate(r: &mut Rng, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + r.below(4) {
        if b.is_empty() {
            break;
        }
        let at = r.below(b.len());
        match r.below(5) {
            0 => b[at] = r.next() as u8,
            1 => b.truncate(at),
            2 => {
                let piece: Vec<u8> = b[at..].iter().take(r.below(40)).copied().collect();
                let to = r.below(b.len());
                b.splice(to..to, piece);
            }
            3 => {
                // A length field rewritten (or any four bytes).
                let v = match r.below(3) {
                    0 => u32::MAX,
                    1 => r.below(64) as u32,
                    _ => r.next() as u32,
                };
                for (i, x) in v.to_be_bytes().iter().enumerate() {
                    if let Some(y) = b.get_mut(at + i) {
                        *y = *x;
                    }
                }
            }
            _ => b.insert(at, r.next() as u8),
        }
    }
    b
}

/// Feeds `b` in random pieces; the messages, or the first error.
fn decode(r: &mut Rng, b: &[u8]) -> Result<Vec<String>, String> {
    let mut d = FrontendDecoder::new();
    let mut log = QueryLog::new();
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let n = 1 + r.below(64);
        let piece = &b[at..(at + n).min(b.len())];
        at += piece.len();
        let (msgs, err) = d.push(piece);
        for m in msgs {
            out.push(format!("{m:?}"));
            let named = log.client(&m).map_err(|e| e.to_string())?;
            out.push(format!("{named:?}"));
            // A server answer drawn from the message (so both splits see
            // the same conversation).
            let tag = b"12CEZTnsID"[format!("{m:?}").len() % 10];
            let named = log.server(tag).map_err(|e| e.to_string())?;
            out.push(format!("{named:?}"));
        }
        if let Some(e) = err {
            return Err(e.to_string());
        }
    }
    Ok(out)
}

#[test]
fn decoders_never_panic_and_do_not_depend_on_how_bytes_arrive() {
    let cases: usize = std::env::var("WARDEN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..cases {
        let clean = stream(&mut r);
        let b = if r.below(4) == 0 {
            clean
        } else {
            mutate(&mut r, clean)
        };
        let one = decode(&mut r, &b);
        let two = decode(&mut r, &b);
        assert_eq!(one, two, "case {case}: the split changed the result");
        // Startup packets from any bytes.
        let mut p = build::startup(&[("user", "app"), ("database", "db")]);
        if r.below(2) == 0 {
            p = mutate(&mut r, p);
        }
        let _ = parse_startup(&p);
        let _ = parse_startup(&b);
        // The server's side of the start, as the database service reads
        // it: whatever the bytes, an answer or an error.
        let mut at = 0;
        while let Ok(Some((_, len))) = parse_startup_reply(&b[at..]) {
            assert!(len > 0 && at + len <= b.len());
            at += len;
        }
        // The server's side: any bytes split into message types.
        let mut bd = BackendDecoder::new();
        let _ = bd.push(&b);
    }
}

fn mysql_stream(r: &mut Rng) -> Vec<u8> {
    use mysql::build;
    let mut s = build::packet(1, &build::handshake_response("app", Some("db")));
    for i in 0..r.below(10) {
        let seq = (i % 256) as u8;
        let payload = match r.below(6) {
            0 => build::command(0x03, "select 'ü', ?".as_bytes()),
            1 => build::command(0x16, b"insert into t values (?, ?)"),
            2 => build::prepare_ok(r.below(4) as u32, r.below(3) as u16),
            3 => build::execute(r.below(4) as u32, Some("x"), Some(-1)),
            4 => build::execute(r.below(4) as u32, None, None),
            _ => build::command(0x0e, b""),
        };
        s.extend(build::packet(seq, &payload));
    }
    s
}

/// Packets in random pieces, each read as a command (and as a prepare
/// answer), through one query log; the records, or the first error.
fn mysql_decode(r: &mut Rng, b: &[u8]) -> Result<Vec<String>, String> {
    let mut d = mysql::PacketDecoder::new();
    let mut log = mysql::QueryLog::new();
    let mut out = Vec::new();
    let mut first = true;
    let mut at = 0;
    while at < b.len() {
        let n = 1 + r.below(64);
        let piece = &b[at..(at + n).min(b.len())];
        at += piece.len();
        for p in d.push(piece).map_err(|e| e.to_string())? {
            if std::mem::take(&mut first) {
                out.push(format!("{:?}", mysql::parse_handshake_response(&p.payload)));
                continue;
            }
            log.prepared(&p.payload).map_err(|e| e.to_string())?;
            match mysql::parse_command(&p.payload) {
                Ok(c) => out.push(format!("{:?}", log.client(&c))),
                Err(e) => out.push(e.to_string()),
            }
        }
    }
    Ok(out)
}

#[test]
fn mysql_decoders_never_panic_and_do_not_depend_on_how_bytes_arrive() {
    let cases: usize = std::env::var("WARDEN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut r = Rng(0x0123_4567_89ab_cdef);
    for case in 0..cases {
        let clean = mysql_stream(&mut r);
        let b = if r.below(4) == 0 {
            clean
        } else {
            mutate(&mut r, clean)
        };
        let one = mysql_decode(&mut r, &b);
        let two = mysql_decode(&mut r, &b);
        assert_eq!(one, two, "case {case}: the split changed the result");
        // The relay's rewrites of a greeting and a handshake response,
        // on whatever a server or client sent: an answer or an error.
        let payload = b.get(4..).unwrap_or_default();
        if let Ok(g) = warden_db::mysql::greeting_for_client(payload) {
            assert_eq!(g.len(), payload.len(), "case {case}");
        }
        if let Ok((ssl, resp)) = warden_db::mysql::handshake_for_server(payload) {
            assert_eq!(ssl.len(), 32, "case {case}");
            assert!(resp.len() >= 33, "case {case}");
        }
    }
}
