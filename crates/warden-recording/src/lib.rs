//! Session recordings: a versioned file of independently decodable,
//! compressed chunks of timed events. Pure: encoding, decoding and
//! exports; the node and auth do the I/O.
//!
//! ```text
//! file    = chunk*
//! chunk   = "WRC2" | u32be payload_len | u32be raw_len | u32be adler32(payload) | payload
//! payload = lz4_block(raw), or raw itself when payload_len == raw_len
//! raw     = record*
//! record  = kind:u8 | varint micros since start | varint len | data[len]
//! kind    = 'h' header (asciicast v2 header JSON, first record of the file)
//!         | 'o' output (the bytes as sent, any encoding)
//!         | 'r' resize ("COLSxROWS") | 'm' marker (UTF-8: a command, a file operation)
//! ```
//! Output is kept as bytes, not text: the session's path only copies and
//! compresses (LZ4, which passes incompressible data through quickly);
//! turning bytes into asciicast's UTF-8 text happens on playback. A file
//! cut short by a crash decodes up to its last whole chunk; a damaged
//! chunk is an error naming its offset. Files of the first version
//! (`WRC1`: zlib-compressed asciicast v2 JSON lines, 12-byte chunk headers
//! without a checksum field) still decode.

mod decode;
mod encode;
mod export;

pub use decode::{decode, read, scan, scanner, DecodeError, Decoded, Item, Reader, Summary};
pub use encode::Encoder;
pub use export::{asciicast, plain_text, AsciicastWriter, TextWriter};

use serde::{Deserialize, Serialize};

/// Chunk magic and format version written today.
pub const MAGIC: &[u8; 4] = b"WRC2";
/// The first version's magic (read, never written).
pub const MAGIC_V1: &[u8; 4] = b"WRC1";
/// Bytes before a chunk's payload.
pub const CHUNK_HEADER: usize = 16;
/// Bytes before a first-version chunk's payload.
pub const CHUNK_HEADER_V1: usize = 12;
/// Largest uncompressed chunk a decoder accepts (bounds its memory).
pub const MAX_RAW_CHUNK: usize = 4 << 20;
/// Raw bytes an encoder collects before it closes a chunk.
pub const TARGET_CHUNK: usize = 64 << 10;
/// Longest marker kept (longer ones are cut, marked with an ellipsis).
pub const MAX_MARKER: usize = 16 << 10;

/// What a recording is about; the first line of the file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always 2 (asciicast v2).
    pub version: u32,
    pub width: u32,
    pub height: u32,
    /// Unix seconds at the start.
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default)]
    pub warden: SessionInfo,
}

/// The session a recording belongs to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub session_id: String,
    pub user: String,
    pub login: String,
    /// Node id and name.
    pub node: String,
    #[serde(default)]
    pub node_name: String,
    /// `shell`, the command, or `subsystem sftp`.
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub pty: bool,
}

/// One timed event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Seconds since the start.
    pub time: f64,
    pub kind: EventKind,
    pub data: String,
}

/// Event types (asciicast v2 letters; also the record kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Output,
    Resize,
    Marker,
}

impl EventKind {
    pub fn code(self) -> &'static str {
        match self {
            EventKind::Output => "o",
            EventKind::Resize => "r",
            EventKind::Marker => "m",
        }
    }

    fn byte(self) -> u8 {
        self.code().as_bytes()[0]
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'o' => EventKind::Output,
            b'r' => EventKind::Resize,
            b'm' => EventKind::Marker,
            _ => return None,
        })
    }

    fn from_code(c: &str) -> Option<Self> {
        Some(match c {
            "o" => EventKind::Output,
            "r" => EventKind::Resize,
            "m" => EventKind::Marker,
            _ => return None,
        })
    }
}
