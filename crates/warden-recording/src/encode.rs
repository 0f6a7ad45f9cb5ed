//! Building chunks from events.

use crate::{EventKind, Header, CHUNK_HEADER, MAGIC, MAX_MARKER, TARGET_CHUNK};

/// Record kind of the header.
pub(crate) const HEADER_KIND: u8 = b'h';

/// Turns events into chunks. Cheap per event (a copy into a buffer); the
/// work is in [`Encoder::ready`]/[`Encoder::flush`], once per chunk.
pub struct Encoder {
    raw: Vec<u8>,
    /// Chunks closed inside a large write, not yet handed out.
    finished: Vec<u8>,
}

impl Encoder {
    /// An encoder whose first record is `header` (always as version 2).
    pub fn new(header: &Header) -> Self {
        let header = Header {
            version: 2,
            ..header.clone()
        };
        let json = serde_json::to_vec(&header).expect("headers serialize");
        let mut e = Encoder {
            raw: Vec::with_capacity(TARGET_CHUNK + 1024),
            finished: Vec::new(),
        };
        e.record(HEADER_KIND, 0.0, &json);
        e
    }

    fn record(&mut self, kind: u8, time: f64, data: &[u8]) {
        self.raw.push(kind);
        put_varint(&mut self.raw, micros(time));
        put_varint(&mut self.raw, data.len() as u64);
        self.raw.extend_from_slice(data);
    }

    /// Terminal output at `time` seconds, as the bytes were sent. Large
    /// writes are split so that no chunk outgrows what decoders accept.
    pub fn output(&mut self, time: f64, bytes: &[u8]) {
        for piece in bytes.chunks(TARGET_CHUNK) {
            if self.raw.len() >= TARGET_CHUNK {
                let c = chunk(&self.raw);
                self.finished.extend_from_slice(&c);
                self.raw.clear();
            }
            self.record(EventKind::Output.byte(), time, piece);
        }
    }

    pub fn resize(&mut self, time: f64, cols: u32, rows: u32) {
        self.record(
            EventKind::Resize.byte(),
            time,
            format!("{cols}x{rows}").as_bytes(),
        );
    }

    /// A marker line. Control characters are shown escaped (`\u{1b}`): a
    /// marker often carries what a user typed (a command, a forward's
    /// host), which must not fake other lines or drive the auditor's
    /// terminal on playback.
    pub fn marker(&mut self, time: f64, text: &str) {
        let mut end = text.len().min(MAX_MARKER);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let cut = end < text.len();
        let mut text: String = text[..end]
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
        if cut {
            text.push('…');
        }
        self.record(EventKind::Marker.byte(), time, text.as_bytes());
    }

    /// Finished chunks, once enough events have collected.
    pub fn ready(&mut self) -> Option<Vec<u8>> {
        if self.raw.len() >= TARGET_CHUNK {
            self.flush()
        } else {
            (!self.finished.is_empty()).then(|| std::mem::take(&mut self.finished))
        }
    }

    /// Everything collected, as chunks (none if nothing has).
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        let mut out = std::mem::take(&mut self.finished);
        if !self.raw.is_empty() {
            out.extend_from_slice(&chunk(&self.raw));
            self.raw.clear();
        }
        (!out.is_empty()).then_some(out)
    }
}

/// Seconds as whole microseconds (negative and non-finite times as 0).
fn micros(t: f64) -> u64 {
    if t.is_finite() && t > 0.0 {
        (t * 1e6).round() as u64
    } else {
        0
    }
}

/// LEB128.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One chunk holding `raw`: compressed when that makes it smaller.
pub(crate) fn chunk(raw: &[u8]) -> Vec<u8> {
    let packed = lz4_flex::block::compress(raw);
    let payload = if packed.len() < raw.len() {
        &packed[..]
    } else {
        raw
    };
    let mut out = Vec::with_capacity(CHUNK_HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&(raw.len() as u32).to_be_bytes());
    out.extend_from_slice(&adler2::adler32_slice(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_writes_is_joined_on_playback() {
        let h = Header::default();
        let mut e = Encoder::new(&h);
        let s = "é€😀".as_bytes();
        e.output(0.0, &s[..1]);
        e.output(0.1, &s[1..4]);
        e.output(0.2, &s[4..]);
        let bytes = e.flush().unwrap();
        let d = crate::decode(&bytes).unwrap();
        let text: String = d.events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(text, "é€😀");
    }

    #[test]
    fn incompressible_output_is_stored_and_zeros_shrink() {
        let mut e = Encoder::new(&Header::default());
        let random: Vec<u8> = (0u32..70_000)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        e.output(0.0, &random);
        let c = e.ready().expect("a full chunk");
        assert!(c.len() < random.len() + 200, "{}", c.len());
        e.output(1.0, &[0; 1 << 20]);
        let mut zeros = Vec::new();
        while let Some(c) = e.ready() {
            zeros.extend(c);
        }
        zeros.extend(e.flush().unwrap_or_default());
        assert!(zeros.len() < 64 << 10, "{}", zeros.len());
        let mut all = c;
        all.extend(zeros);
        let d = crate::decode(&all).unwrap();
        assert_eq!(d.events.len(), 2 + (1 << 20) / TARGET_CHUNK);
    }

    #[test]
    fn long_markers_are_cut_on_a_char_boundary() {
        let mut e = Encoder::new(&Header::default());
        e.marker(0.0, &"é".repeat(MAX_MARKER));
        e.marker(1.0, "exec: ls\n# exec: fake\u{1b}[2J");
        let d = crate::decode(&e.flush().unwrap()).unwrap();
        assert!(d.events[0].data.ends_with('…'));
        assert!(d.events[0].data.len() <= MAX_MARKER + 3);
        assert_eq!(d.events[1].data, "exec: ls\\u{a}# exec: fake\\u{1b}[2J");
    }
}
