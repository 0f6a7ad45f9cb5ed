//! Reading recordings, defensively: every length is checked before it is
//! trusted, and memory stays bounded by [`crate::MAX_RAW_CHUNK`] per chunk.

use crate::{Event, EventKind, Header, CHUNK_HEADER, MAGIC, MAX_RAW_CHUNK};

/// Why a recording cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a Warden recording (bad chunk magic at byte {0})")]
    BadMagic(usize),
    #[error("corrupt recording: chunk at byte {offset}: {reason}")]
    Corrupt { offset: usize, reason: String },
    #[error("empty recording: no header")]
    Empty,
}

/// A decoded recording.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    pub header: Header,
    pub events: Vec<Event>,
    /// The file ended inside a chunk (e.g. the node crashed while writing):
    /// everything before that chunk is here.
    pub truncated: bool,
}

impl Decoded {
    /// Seconds from start to the last event.
    pub fn duration(&self) -> f64 {
        self.events.last().map_or(0.0, |e| e.time)
    }
}

/// Decodes a whole recording.
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let mut header = None;
    let mut events = Vec::new();
    let mut offset = 0;
    let mut truncated = false;
    let corrupt = |offset: usize, reason: String| DecodeError::Corrupt { offset, reason };
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < CHUNK_HEADER {
            if !MAGIC.starts_with(&rest[..rest.len().min(4)]) {
                return Err(DecodeError::BadMagic(offset));
            }
            truncated = true;
            break;
        }
        if &rest[..4] != MAGIC {
            return Err(DecodeError::BadMagic(offset));
        }
        let payload_len = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
        let raw_len = u32::from_be_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
        if raw_len > MAX_RAW_CHUNK || payload_len > MAX_RAW_CHUNK + 1024 {
            return Err(corrupt(
                offset,
                format!("chunk sizes {payload_len}/{raw_len} out of range"),
            ));
        }
        if rest.len() < CHUNK_HEADER + payload_len {
            truncated = true;
            break;
        }
        let payload = &rest[CHUNK_HEADER..CHUNK_HEADER + payload_len];
        let raw = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(payload, raw_len)
            .map_err(|e| corrupt(offset, format!("cannot decompress: {:?}", e.status)))?;
        if raw.len() != raw_len {
            return Err(corrupt(
                offset,
                format!("{} bytes, header says {raw_len}", raw.len()),
            ));
        }
        let text = std::str::from_utf8(&raw).map_err(|e| corrupt(offset, e.to_string()))?;
        for line in text.split_terminator('\n') {
            if header.is_none() {
                let h: Header = serde_json::from_str(line)
                    .map_err(|e| corrupt(offset, format!("bad header: {e}")))?;
                if h.version != 2 {
                    return Err(corrupt(
                        offset,
                        format!("unsupported version {}", h.version),
                    ));
                }
                header = Some(h);
                continue;
            }
            let (time, code, data): (f64, String, String) = serde_json::from_str(line)
                .map_err(|e| corrupt(offset, format!("bad event: {e}")))?;
            let kind = EventKind::from_code(&code)
                .ok_or_else(|| corrupt(offset, format!("unknown event type {code:?}")))?;
            if !time.is_finite() || time < 0.0 {
                return Err(corrupt(offset, format!("bad event time {time}")));
            }
            events.push(Event { time, kind, data });
        }
        offset += CHUNK_HEADER + payload_len;
    }
    Ok(Decoded {
        header: header.ok_or(DecodeError::Empty)?,
        events,
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Encoder, SessionInfo, TARGET_CHUNK};

    fn sample() -> Vec<u8> {
        let mut e = Encoder::new(&Header {
            version: 2,
            width: 80,
            height: 24,
            timestamp: 1_700_000_000,
            title: None,
            warden: SessionInfo {
                session_id: "s1".into(),
                ..Default::default()
            },
        });
        let mut out = Vec::new();
        for i in 0..5000 {
            e.output(
                i as f64 * 0.01,
                format!("line {i} \u{1b}[1mbold\u{1b}[0m\r\n").as_bytes(),
            );
            if i % 1000 == 0 {
                e.resize(i as f64 * 0.01, 100 + i / 1000, 30);
                e.marker(i as f64 * 0.01, "exec: ls");
            }
            if let Some(c) = e.ready() {
                out.extend(c);
            }
        }
        out.extend(e.flush().unwrap());
        out
    }

    #[test]
    fn round_trip_over_many_chunks() {
        let bytes = sample();
        let d = decode(&bytes).unwrap();
        assert!(!d.truncated);
        assert_eq!(d.header.warden.session_id, "s1");
        assert_eq!(
            d.events
                .iter()
                .filter(|e| e.kind == EventKind::Output)
                .count(),
            5000
        );
        assert_eq!(
            d.events
                .iter()
                .filter(|e| e.kind == EventKind::Resize)
                .count(),
            5
        );
        assert!(bytes.len() > CHUNK_HEADER * 2, "several chunks");
        assert!(d.duration() > 49.0);
        let _ = TARGET_CHUNK;
    }

    #[test]
    fn a_cut_recording_plays_up_to_the_cut() {
        let bytes = sample();
        let whole = decode(&bytes).unwrap().events.len();
        let mut saw_partial = false;
        for cut in [bytes.len() - 1, bytes.len() / 2] {
            let d = decode(&bytes[..cut]).unwrap();
            assert!(d.truncated, "cut at {cut}");
            assert!(d.events.len() < whole);
            saw_partial |= !d.events.is_empty();
        }
        assert!(saw_partial);
        for cut in [13, 5, 3] {
            assert_eq!(decode(&bytes[..cut]), Err(DecodeError::Empty));
        }
    }

    #[test]
    fn corruption_is_an_error_naming_the_chunk() {
        let mut bytes = sample();
        let n = bytes.len();
        bytes[n / 2] ^= 0x55;
        match decode(&bytes) {
            Err(DecodeError::Corrupt { .. }) | Err(DecodeError::BadMagic(_)) => {}
            other => panic!("flipped byte accepted: {:?}", other.map(|d| d.events.len())),
        }
        assert_eq!(decode(b"GIF89a........"), Err(DecodeError::BadMagic(0)));
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&huge), Err(DecodeError::Corrupt { .. })));
    }
}
