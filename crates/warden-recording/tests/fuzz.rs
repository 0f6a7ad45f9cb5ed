//! Mutation fuzzing of the decoder: random recordings, then random byte
//! flips, cuts, splices and length rewrites. It must never panic, and what
//! it accepts must re-export. Half the cases then repair the chunks'
//! checksums, so that damaged payloads reach the LZ4 and record decoders
//! instead of stopping at the checksum. Deterministic; WARDEN_FUZZ_CASES
//! for more.

use warden_recording::{
    asciicast, decode, plain_text, read, scan, AsciicastWriter, Encoder, Header, TextWriter,
    CHUNK_HEADER, MAGIC, MAX_RAW_CHUNK,
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

fn recording(rng: &mut Rng) -> Vec<u8> {
    let mut e = Encoder::new(&Header {
        version: 2,
        width: 80,
        height: 24,
        ..Default::default()
    });
    let mut out = Vec::new();
    for i in 0..rng.below(300) {
        let len = rng.below(400);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        match rng.below(10) {
            0 => e.resize(i as f64, rng.below(300) as u32, rng.below(100) as u32),
            1 => e.marker(i as f64, "sftp put /etc/passwd"),
            _ => e.output(i as f64 * 0.1, &bytes),
        }
        if rng.below(20) == 0 {
            if let Some(c) = e.flush() {
                out.extend(c);
            }
        }
    }
    if let Some(c) = e.flush() {
        out.extend(c);
    }
    out
}

#[test]
fn decoder_never_panics_on_mutated_input() {
    let cases: usize = std::env::var("WARDEN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..cases {
        let mut bytes = recording(&mut rng);
        let pristine = decode(&bytes).expect("fresh recordings decode");
        assert!(!pristine.truncated);
        for _ in 0..1 + rng.below(4) {
            if bytes.is_empty() {
                break;
            }
            let at = rng.below(bytes.len());
            match rng.below(5) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes.truncate(at),
                2 => {
                    let extra: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
                    bytes.splice(at..at, extra);
                }
                3 => {
                    // A chunk header claiming a large or small length.
                    let mut h = MAGIC.to_vec();
                    h.extend_from_slice(&(rng.next() as u32).to_be_bytes());
                    h.extend_from_slice(&(rng.next() as u32 % 5_000_000).to_be_bytes());
                    bytes.splice(at..at, h);
                }
                _ => {
                    let end = (at + rng.below(64)).min(bytes.len());
                    bytes.drain(at..end);
                }
            }
        }
        if rng.below(2) == 0 {
            repair_checksums(&mut bytes);
        }
        // What auth accepts (scan) is exactly what players can decode.
        match (decode(&bytes), scan(&bytes)) {
            (Ok(d), Ok(s)) => {
                accepted += 1;
                assert_eq!(s.header, d.header);
                assert_eq!(s.events, d.events.len() as u64);
                assert_eq!(s.duration, d.duration());
                assert_eq!(s.truncated, d.truncated);
                // Streamed exports equal the in-memory ones.
                let mut cast = AsciicastWriter::new(Vec::new());
                let mut text = TextWriter::new(Vec::new());
                read(&bytes, |i| {
                    cast.item(&i);
                    text.item(&i);
                })
                .unwrap();
                assert_eq!(cast.finish().unwrap(), asciicast(&d).into_bytes());
                assert_eq!(text.finish().unwrap(), plain_text(&d).into_bytes());
            }
            (Err(e), Err(f)) => {
                refused += 1;
                assert_eq!(e, f);
                assert!(!e.to_string().is_empty());
            }
            (d, s) => panic!("decode {:?} but scan {:?}", d.map(|_| ()), s.map(|_| ())),
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

/// Rewrites each chunk's checksum to match its (possibly damaged) payload.
fn repair_checksums(bytes: &mut [u8]) {
    let mut at = 0;
    while at + CHUNK_HEADER <= bytes.len() && &bytes[at..at + 4] == MAGIC {
        let len = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let end = at + CHUNK_HEADER + len;
        if len > MAX_RAW_CHUNK || end > bytes.len() {
            return;
        }
        let sum = adler2::adler32_slice(&bytes[at + CHUNK_HEADER..end]);
        bytes[at + 12..at + 16].copy_from_slice(&sum.to_be_bytes());
        at = end;
    }
}
