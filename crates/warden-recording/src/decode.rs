//! Reading recordings, defensively: every length is checked before it is
//! trusted, and a chunk never takes more than [`crate::MAX_RAW_CHUNK`].
//! [`read`] hands out events as it goes and so holds one chunk at a time
//! (exports stream; auth checks uploads with [`scan`]); [`decode`] keeps
//! every event, for a player that seeks: its memory grows with the
//! session's output, which LZ4 may have shrunk up to 255-fold.

use crate::encode::HEADER_KIND;
use crate::{
    Event, EventKind, Header, CHUNK_HEADER, CHUNK_HEADER_V1, MAGIC, MAGIC_V1, MAX_RAW_CHUNK,
};

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

/// What [`scan`] learns of a recording.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub header: Header,
    /// Events [`decode`] would return.
    pub events: u64,
    /// Seconds from start to the last event.
    pub duration: f64,
    /// As [`Decoded::truncated`].
    pub truncated: bool,
}

/// What [`read`] hands out, in file order: the header, then events.
#[derive(Debug)]
pub enum Item<'a> {
    Header(&'a Header),
    Event(Event),
}

/// Decodes a whole recording, keeping every event.
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let mut events = Vec::new();
    let s = read(bytes, |item| {
        if let Item::Event(e) = item {
            events.push(e);
        }
    })?;
    Ok(Decoded {
        header: s.header,
        events,
        truncated: s.truncated,
    })
}

/// Checks a whole recording as [`decode`] does (accepting and refusing
/// the same files) without keeping its events.
pub fn scan(bytes: &[u8]) -> Result<Summary, DecodeError> {
    read(bytes, |_| {})
}

/// Reads a recording chunk by chunk, handing `sink` the header and each
/// event as it is read. A damaged chunk or record ends the walk with an
/// error; what was read before it (possibly the first records of that
/// chunk) has been handed out. What [`decode`] refuses, this refuses too.
pub fn read(bytes: &[u8], sink: impl FnMut(Item<'_>)) -> Result<Summary, DecodeError> {
    let mut r = Reader::new(sink);
    r.push(bytes)?;
    r.finish()
}

/// A [`Reader`] that only checks (as [`scan`]): for bytes that arrive in
/// pieces, such as an upload.
pub fn scanner() -> Reader<impl FnMut(Item<'_>)> {
    Reader::new(|_: Item<'_>| {})
}

/// Reads a recording as its bytes arrive, in pieces of any size: the same
/// checks and events as [`read`] over the whole file, holding at most one
/// chunk (bounded by [`crate::MAX_RAW_CHUNK`]) however large the file.
pub struct Reader<S: FnMut(Item<'_>)> {
    d: Decoder<S>,
    /// The start of a chunk whose end has not arrived yet.
    partial: Vec<u8>,
    /// Where `partial` starts in the file.
    offset: usize,
}

/// A chunk's header, read.
#[derive(Clone, Copy)]
struct Frame {
    v1: bool,
    head: usize,
    payload_len: usize,
    raw_len: usize,
    sum: u32,
}

impl Frame {
    fn len(&self) -> usize {
        self.head + self.payload_len
    }
}

/// What the bytes at the start of a chunk say: the whole chunk is there,
/// or this many bytes are needed to know more.
enum Next {
    Whole(Frame),
    Need(usize),
}

fn next(rest: &[u8], offset: usize) -> Result<Next, DecodeError> {
    let start = &rest[..rest.len().min(4)];
    if !MAGIC.starts_with(start) && !MAGIC_V1.starts_with(start) {
        return Err(DecodeError::BadMagic(offset));
    }
    if rest.len() < 4 {
        return Ok(Next::Need(4));
    }
    let v1 = start == MAGIC_V1;
    let head = if v1 { CHUNK_HEADER_V1 } else { CHUNK_HEADER };
    if rest.len() < head {
        return Ok(Next::Need(head));
    }
    let word = |at: usize| u32::from_be_bytes(rest[at..at + 4].try_into().expect("4 bytes"));
    let (payload_len, raw_len) = (word(4) as usize, word(8) as usize);
    if raw_len > MAX_RAW_CHUNK || payload_len > MAX_RAW_CHUNK + 1024 {
        return Err(corrupt(
            offset,
            format!("chunk sizes {payload_len}/{raw_len} out of range"),
        ));
    }
    let frame = Frame {
        v1,
        head,
        payload_len,
        raw_len,
        sum: if v1 { 0 } else { word(12) },
    };
    Ok(match rest.len() < frame.len() {
        true => Next::Need(frame.len()),
        false => Next::Whole(frame),
    })
}

impl<S: FnMut(Item<'_>)> Reader<S> {
    pub fn new(sink: S) -> Self {
        Reader {
            d: Decoder {
                header: None,
                sink,
                count: 0,
                last_time: 0.0,
                carry: Vec::new(),
            },
            partial: Vec::new(),
            offset: 0,
        }
    }

    /// The recording's header, once its first chunk has been read.
    pub fn header(&self) -> Option<&Header> {
        self.d.header.as_ref()
    }

    /// Reads the next `input` bytes of the file. After an error the
    /// recording is refused: push nothing more.
    pub fn push(&mut self, mut input: &[u8]) -> Result<(), DecodeError> {
        while !input.is_empty() {
            if self.partial.is_empty() {
                // Whole chunks straight from the input, without a copy.
                match next(input, self.offset)? {
                    Next::Whole(f) => {
                        self.chunk(&input[..f.len()], f)?;
                        input = &input[f.len()..];
                    }
                    Next::Need(_) => {
                        self.partial.extend_from_slice(input);
                        return Ok(());
                    }
                }
                continue;
            }
            let Next::Need(need) = next(&self.partial, self.offset)? else {
                unreachable!("a whole chunk is never left partial");
            };
            let take = (need - self.partial.len()).min(input.len());
            self.partial.extend_from_slice(&input[..take]);
            input = &input[take..];
            if let Next::Whole(f) = next(&self.partial, self.offset)? {
                let partial = std::mem::take(&mut self.partial);
                self.chunk(&partial, f)?;
            }
        }
        Ok(())
    }

    fn chunk(&mut self, bytes: &[u8], f: Frame) -> Result<(), DecodeError> {
        let payload = &bytes[f.head..f.len()];
        let result = match f.v1 {
            true => self.d.chunk_v1(payload, f.raw_len),
            false => self.d.chunk_v2(payload, f.raw_len, f.sum),
        };
        result.map_err(|reason| corrupt(self.offset, reason))?;
        self.offset += f.len();
        Ok(())
    }

    /// The end of the file: what was read, or why it is refused. A file
    /// that ends inside a chunk is `truncated`, not refused.
    pub fn finish(mut self) -> Result<Summary, DecodeError> {
        let truncated = !self.partial.is_empty();
        if truncated {
            // Bad magic or sizes in the cut chunk still refuse the file.
            next(&self.partial, self.offset)?;
        }
        let d = &mut self.d;
        if !d.carry.is_empty() {
            // Output ended inside a UTF-8 sequence.
            let time = d.last_time;
            d.push(
                time,
                EventKind::Output,
                char::REPLACEMENT_CHARACTER.to_string(),
            )
            .map_err(|reason| corrupt(self.offset, reason))?;
        }
        Ok(Summary {
            header: self.d.header.take().ok_or(DecodeError::Empty)?,
            events: self.d.count,
            duration: self.d.last_time,
            truncated,
        })
    }
}

fn corrupt(offset: usize, reason: String) -> DecodeError {
    DecodeError::Corrupt { offset, reason }
}

/// Decoding state carried across chunks.
struct Decoder<S> {
    header: Option<Header>,
    sink: S,
    count: u64,
    /// Time of the last event.
    last_time: f64,
    /// An incomplete UTF-8 sequence at the end of the last output record.
    carry: Vec<u8>,
}

impl<S: FnMut(Item<'_>)> Decoder<S> {
    fn set_header(&mut self, json: &[u8]) -> Result<(), String> {
        let h: Header = serde_json::from_slice(json).map_err(|e| format!("bad header: {e}"))?;
        if h.version != 2 {
            return Err(format!("unsupported version {}", h.version));
        }
        (self.sink)(Item::Header(&h));
        self.header = Some(h);
        Ok(())
    }

    fn chunk_v2(&mut self, payload: &[u8], raw_len: usize, sum: u32) -> Result<(), String> {
        if adler2::adler32_slice(payload) != sum {
            return Err("checksum mismatch".into());
        }
        let unpacked;
        let raw = if payload.len() == raw_len {
            payload
        } else {
            let mut out = vec![0; raw_len];
            let n = lz4_flex::block::decompress_into(payload, &mut out)
                .map_err(|e| format!("cannot decompress: {e}"))?;
            if n != raw_len {
                return Err(format!("{n} bytes, header says {raw_len}"));
            }
            unpacked = out;
            &unpacked[..]
        };
        let mut r = Cursor { buf: raw, at: 0 };
        while !r.done() {
            let kind = r.byte()?;
            let micros = r.varint()?;
            let len = r.varint()?;
            let data = r.take(len)?;
            if self.header.is_none() {
                if kind != HEADER_KIND {
                    return Err("the first record is not the header".into());
                }
                self.set_header(data)?;
                continue;
            }
            let kind = EventKind::from_byte(kind)
                .ok_or_else(|| format!("unknown record kind {kind:#04x}"))?;
            let data = match kind {
                EventKind::Output => self.text(data),
                _ => std::str::from_utf8(data)
                    .map_err(|e| format!("bad text: {e}"))?
                    .to_string(),
            };
            self.push(micros as f64 / 1e6, kind, data)?;
        }
        Ok(())
    }

    fn chunk_v1(&mut self, payload: &[u8], raw_len: usize) -> Result<(), String> {
        let raw = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(payload, raw_len)
            .map_err(|e| format!("cannot decompress: {:?}", e.status))?;
        if raw.len() != raw_len {
            return Err(format!("{} bytes, header says {raw_len}", raw.len()));
        }
        let text = std::str::from_utf8(&raw).map_err(|e| e.to_string())?;
        for line in text.split_terminator('\n') {
            if self.header.is_none() {
                self.set_header(line.as_bytes())?;
                continue;
            }
            let (time, code, data): (f64, String, String) =
                serde_json::from_str(line).map_err(|e| format!("bad event: {e}"))?;
            let kind = EventKind::from_code(&code)
                .ok_or_else(|| format!("unknown event type {code:?}"))?;
            self.push(time, kind, data)?;
        }
        Ok(())
    }

    fn push(&mut self, time: f64, kind: EventKind, data: String) -> Result<(), String> {
        if !time.is_finite() || time < 0.0 {
            return Err(format!("bad event time {time}"));
        }
        if kind != EventKind::Output || !data.is_empty() {
            self.count += 1;
            self.last_time = time;
            (self.sink)(Item::Event(Event { time, kind, data }));
        }
        Ok(())
    }

    /// Output bytes as text: invalid sequences replaced, a sequence split
    /// across writes joined.
    fn text(&mut self, bytes: &[u8]) -> String {
        let mut joined;
        let bytes = if self.carry.is_empty() {
            bytes
        } else {
            joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(bytes);
            &joined[..]
        };
        let end = bytes.len() - incomplete_tail(bytes);
        self.carry = bytes[end..].to_vec();
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    }
}

/// Length of an unfinished UTF-8 sequence at the end of `bytes` (0–3).
fn incomplete_tail(bytes: &[u8]) -> usize {
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
        return if need > back { back } else { 0 };
    }
    0
}

/// A cursor over a chunk's records; every read is bounds-checked.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn done(&self) -> bool {
        self.at >= self.buf.len()
    }

    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.buf.get(self.at).ok_or("record cut short")?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], String> {
        let left = (self.buf.len() - self.at) as u64;
        if len > left {
            return Err(format!("record of {len} bytes, {left} left in the chunk"));
        }
        let s = &self.buf[self.at..self.at + len as usize];
        self.at += len as usize;
        Ok(s)
    }
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
        let outputs: Vec<&Event> = d
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Output)
            .collect();
        assert_eq!(outputs.len(), 5000);
        assert_eq!(outputs[7].data, "line 7 \u{1b}[1mbold\u{1b}[0m\r\n");
        assert_eq!(outputs[7].time, 0.07);
        assert_eq!(
            d.events
                .iter()
                .filter(|e| e.kind == EventKind::Resize)
                .count(),
            5
        );
        assert!(bytes.len() > TARGET_CHUNK / 8, "several chunks");
        assert!(d.duration() > 49.0);
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
        for cut in [17, 5, 3] {
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
        assert_eq!(decode(b"GIF89a..........."), Err(DecodeError::BadMagic(0)));
        for magic in [MAGIC, MAGIC_V1] {
            let mut huge = magic.to_vec();
            huge.extend_from_slice(&[0xff; 12]);
            assert!(matches!(decode(&huge), Err(DecodeError::Corrupt { .. })));
        }
    }

    /// Fed in pieces of any size, a [`Reader`] hands out what [`read`]
    /// does over the whole file, and refuses and truncates alike.
    #[test]
    fn pieces_read_as_the_whole() {
        let whole = sample();
        let events = |bytes: &[u8], piece: usize| {
            let mut got = Vec::new();
            let mut r = Reader::new(|i: Item<'_>| {
                if let Item::Event(e) = i {
                    got.push(e)
                }
            });
            let mut pushed = Ok(());
            for p in bytes.chunks(piece) {
                pushed = r.push(p);
                if pushed.is_err() {
                    break;
                }
            }
            let summary = pushed.and_then(|()| r.finish());
            (summary, got)
        };
        let expected = decode(&whole).unwrap();
        for piece in [1, 3, 15, 16, 17, 1000, 65_536, whole.len()] {
            let (summary, got) = events(&whole, piece);
            let summary = summary.unwrap();
            assert_eq!(got, expected.events, "pieces of {piece}");
            assert_eq!(summary.events, got.len() as u64);
            assert!(!summary.truncated);
        }
        let cut = &whole[..whole.len() / 2];
        let (summary, got) = events(cut, 777);
        assert!(summary.unwrap().truncated);
        assert_eq!(got, decode(cut).unwrap().events);
        let mut bad = whole.clone();
        let n = bad.len();
        bad[n / 2] ^= 0x55;
        assert_eq!(events(&bad, 4096).0.err(), decode(&bad).err());
        assert_eq!(events(b"GIF89a", 2).0.err(), Some(DecodeError::BadMagic(0)));
        // The header is known once the first chunk is in.
        let mut r = scanner();
        let mut pushed = 0;
        while r.header().is_none() {
            r.push(&whole[pushed..pushed + 1000]).unwrap();
            pushed += 1000;
        }
        assert_eq!(r.header().unwrap().warden.session_id, "s1");
        assert!(pushed <= TARGET_CHUNK + 1000, "{pushed}");
    }

    /// A first-version file (zlib, asciicast JSON lines) as earlier nodes
    /// wrote it.
    #[test]
    fn first_version_files_still_play() {
        let raw = concat!(
            r#"{"version":2,"width":80,"height":24,"timestamp":1,"warden":{"session_id":"old","user":"a","login":"root","node":"n"}}"#,
            "\n",
            r#"[0.25,"o","hello \u001b[1mthere\u001b[0m\r\n"]"#,
            "\n",
            r#"[0.5,"m","exec: ls"]"#,
            "\n"
        );
        let payload = miniz_oxide::deflate::compress_to_vec_zlib(raw.as_bytes(), 1);
        let mut file = MAGIC_V1.to_vec();
        file.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        file.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        file.extend_from_slice(&payload);
        let d = decode(&file).unwrap();
        assert_eq!(d.header.warden.session_id, "old");
        assert_eq!(d.events.len(), 2);
        assert_eq!(d.events[0].data, "hello \u{1b}[1mthere\u{1b}[0m\r\n");
        assert_eq!(d.events[1].kind, EventKind::Marker);
        assert!(!d.truncated);
        assert_eq!(decode(&file[..file.len() - 1]), Err(DecodeError::Empty));
    }
}
