//! Building chunks from events.

use crate::{EventKind, Header, CHUNK_HEADER, MAGIC, TARGET_CHUNK};
use miniz_oxide::deflate::compress_to_vec_zlib;

/// Fast compression: recording must not slow a session down much.
const LEVEL: u8 = 1;

/// Turns events into chunks. Output bytes may split UTF-8 sequences; the
/// encoder carries an incomplete tail to the next call.
pub struct Encoder {
    raw: String,
    carry: Vec<u8>,
    header_pending: Option<String>,
}

impl Encoder {
    /// An encoder whose first line is `header` (always as version 2).
    pub fn new(header: &Header) -> Self {
        let header = Header {
            version: 2,
            ..header.clone()
        };
        let mut line = serde_json::to_string(&header).expect("headers serialize");
        line.push('\n');
        Encoder {
            raw: String::new(),
            carry: Vec::new(),
            header_pending: Some(line),
        }
    }

    fn push_line(&mut self, time: f64, kind: EventKind, data: &str) {
        if let Some(h) = self.header_pending.take() {
            self.raw.push_str(&h);
        }
        let line =
            serde_json::to_string(&(round(time), kind.code(), data)).expect("events serialize");
        self.raw.push_str(&line);
        self.raw.push('\n');
    }

    /// Terminal output at `time` seconds.
    pub fn output(&mut self, time: f64, bytes: &[u8]) {
        let mut all;
        let bytes = if self.carry.is_empty() {
            bytes
        } else {
            all = std::mem::take(&mut self.carry);
            all.extend_from_slice(bytes);
            &all[..]
        };
        let (text, rest) = split_utf8(bytes);
        self.carry = rest.to_vec();
        if !text.is_empty() {
            self.push_line(time, EventKind::Output, &text);
        }
    }

    pub fn resize(&mut self, time: f64, cols: u32, rows: u32) {
        self.push_line(time, EventKind::Resize, &format!("{cols}x{rows}"));
    }

    pub fn marker(&mut self, time: f64, text: &str) {
        self.push_line(time, EventKind::Marker, text);
    }

    /// A finished chunk, once enough events have collected.
    pub fn ready(&mut self) -> Option<Vec<u8>> {
        (self.raw.len() >= TARGET_CHUNK)
            .then(|| self.flush())
            .flatten()
    }

    /// Whatever has collected as a chunk (none if nothing has).
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        if let Some(h) = self.header_pending.take() {
            self.raw.push_str(&h);
        }
        if self.raw.is_empty() {
            return None;
        }
        let raw = std::mem::take(&mut self.raw);
        Some(chunk(raw.as_bytes()))
    }
}

fn round(t: f64) -> f64 {
    (t * 1e6).round() / 1e6
}

/// One chunk holding `raw`.
pub(crate) fn chunk(raw: &[u8]) -> Vec<u8> {
    let payload = compress_to_vec_zlib(raw, LEVEL);
    let mut out = Vec::with_capacity(CHUNK_HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&(raw.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Valid text of `bytes` (invalid sequences replaced) and an incomplete
/// UTF-8 tail (at most 3 bytes) to keep for later.
fn split_utf8(bytes: &[u8]) -> (String, &[u8]) {
    let mut end = bytes.len();
    // Look back at most 3 bytes for the start of an unfinished sequence.
    for back in 1..=3.min(bytes.len()) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        if need > back {
            end = bytes.len() - back;
        }
        break;
    }
    (
        String::from_utf8_lossy(&bytes[..end]).into_owned(),
        &bytes[end..],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_reads_is_joined() {
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
}
