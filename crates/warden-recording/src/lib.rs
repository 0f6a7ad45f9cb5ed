//! Session recordings: a versioned file of independently decodable,
//! compressed chunks of timed events whose bodies are asciicast v2 lines.
//! Pure: encoding, decoding and exports; the node and auth do the I/O.
//!
//! ```text
//! file   = chunk*
//! chunk  = "WRC1" | u32be payload_len | u32be raw_len | payload
//! payload = zlib(raw)            (zlib's Adler-32 catches corruption)
//! raw     = line*                 (UTF-8, '\n'-terminated JSON)
//! ```
//! The first line of the first chunk is the header (asciicast v2's, plus a
//! `warden` object describing the session); every other line is an event
//! `[seconds, type, data]` with type `o` (output), `r` (resize, `COLSxROWS`)
//! or `m` (marker: a command, a file operation). A file cut short by a crash
//! decodes up to its last whole chunk; a damaged chunk is an error naming
//! its offset.

mod decode;
mod encode;
mod export;

pub use decode::{decode, DecodeError, Decoded};
pub use encode::Encoder;
pub use export::{asciicast, plain_text};

use serde::{Deserialize, Serialize};

/// Chunk magic and format version.
pub const MAGIC: &[u8; 4] = b"WRC1";
/// Bytes before a chunk's payload.
pub const CHUNK_HEADER: usize = 12;
/// Largest uncompressed chunk a decoder accepts (bounds its memory).
pub const MAX_RAW_CHUNK: usize = 4 << 20;
/// Raw bytes an encoder collects before it closes a chunk.
pub const TARGET_CHUNK: usize = 64 << 10;

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

/// Event types (asciicast v2 letters).
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

    fn from_code(c: &str) -> Option<Self> {
        Some(match c {
            "o" => EventKind::Output,
            "r" => EventKind::Resize,
            "m" => EventKind::Marker,
            _ => return None,
        })
    }
}
