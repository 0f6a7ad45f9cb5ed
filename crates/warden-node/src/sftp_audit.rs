//! Reads the SFTP protocol as it passes between the client and
//! `sftp-server`, to audit file operations (path, bytes, outcome). Pure:
//! bytes in, operations out, so it is unit-tested without sockets. Input
//! it cannot follow (oversized or malformed packets) ends the tracking,
//! never the session.

use std::collections::HashMap;

/// Largest SFTP packet followed (OpenSSH's sftp-server allows 256 KiB).
const MAX_PACKET: usize = 512 * 1024;
/// Open handles / outstanding requests tracked at most.
const MAX_TRACKED: usize = 4096;

/// A file operation seen on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileOp {
    /// read, write, remove, rename, mkdir, rmdir.
    pub action: &'static str,
    pub path: String,
    /// For rename.
    pub target: Option<String>,
    pub bytes: u64,
    pub success: bool,
}

#[derive(Default)]
struct Stream {
    buf: Vec<u8>,
}

impl Stream {
    /// Appends bytes; returns complete packets (type, payload).
    fn feed(&mut self, data: &[u8]) -> Option<Vec<(u8, Vec<u8>)>> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            if self.buf.len() < 4 {
                return Some(out);
            }
            let len = u32::from_be_bytes(self.buf[..4].try_into().ok()?) as usize;
            if len == 0 || len > MAX_PACKET {
                return None;
            }
            if self.buf.len() < 4 + len {
                return Some(out);
            }
            let packet: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
            out.push((packet[0], packet[1..].to_vec()));
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_at_checked(4)?;
        self.0 = rest;
        Some(u32::from_be_bytes(head.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        let (head, rest) = self.0.split_at_checked(8)?;
        self.0 = rest;
        Some(u64::from_be_bytes(head.try_into().ok()?))
    }
    fn string(&mut self) -> Option<&[u8]> {
        let len = self.u32()? as usize;
        let (s, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        Some(s)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).chars().take(4096).collect()
}

enum Pending {
    Open(String, bool),
    Read(Vec<u8>),
    Op(FileOp),
}

struct Handle {
    path: String,
    writable: bool,
    read: u64,
    written: u64,
}

/// Follows one SFTP session.
#[derive(Default)]
pub struct SftpTracker {
    from_client: Stream,
    from_server: Stream,
    pending: HashMap<u32, Pending>,
    handles: HashMap<Vec<u8>, Handle>,
    broken: bool,
}

const SSH_FXF_WRITE: u32 = 0x02;

impl SftpTracker {
    /// Bytes the client sent.
    pub fn client(&mut self, data: &[u8]) -> Vec<FileOp> {
        if self.broken {
            return Vec::new();
        }
        let Some(packets) = self.from_client.feed(data) else {
            self.broken = true;
            return Vec::new();
        };
        for (ty, payload) in packets {
            if self.on_request(ty, &payload).is_none() {
                self.broken = true;
                break;
            }
        }
        Vec::new()
    }

    /// Bytes the server sent; completed operations come out.
    pub fn server(&mut self, data: &[u8]) -> Vec<FileOp> {
        let mut ops = Vec::new();
        if self.broken {
            return ops;
        }
        let Some(packets) = self.from_server.feed(data) else {
            self.broken = true;
            return ops;
        };
        for (ty, payload) in packets {
            if self.on_response(ty, &payload, &mut ops).is_none() {
                self.broken = true;
                break;
            }
        }
        ops
    }

    /// Operations still open when the session ends (handles never closed).
    pub fn finish(&mut self) -> Vec<FileOp> {
        self.handles
            .drain()
            .filter(|(_, h)| h.read > 0 || h.written > 0)
            .map(|(_, h)| handle_op(h, true))
            .collect()
    }

    fn track(&mut self, id: u32, p: Pending) {
        if self.pending.len() < MAX_TRACKED {
            self.pending.insert(id, p);
        }
    }

    fn on_request(&mut self, ty: u8, payload: &[u8]) -> Option<()> {
        let mut r = Reader(payload);
        if ty == 1 {
            return Some(()); // INIT has no id
        }
        let id = r.u32()?;
        let op = |action: &'static str, path: String| FileOp {
            action,
            path,
            target: None,
            bytes: 0,
            success: false,
        };
        match ty {
            3 => {
                let path = text(r.string()?);
                let flags = r.u32()?;
                self.track(id, Pending::Open(path, flags & SSH_FXF_WRITE != 0));
            }
            5 => {
                let handle = r.string()?.to_vec();
                self.track(id, Pending::Read(handle));
            }
            6 => {
                let handle = r.string()?.to_vec();
                let _offset = r.u64()?;
                let data = r.string()?;
                if let Some(h) = self.handles.get_mut(&handle) {
                    h.written += data.len() as u64;
                }
            }
            4 => {
                let handle = r.string()?.to_vec();
                if let Some(h) = self.handles.remove(&handle) {
                    if h.read > 0 || h.written > 0 || h.writable {
                        self.track(id, Pending::Op(handle_op(h, false)));
                    }
                }
            }
            13 => {
                let path = text(r.string()?);
                self.track(id, Pending::Op(op("remove", path)));
            }
            14 => {
                let path = text(r.string()?);
                self.track(id, Pending::Op(op("mkdir", path)));
            }
            15 => {
                let path = text(r.string()?);
                self.track(id, Pending::Op(op("rmdir", path)));
            }
            18 => {
                let from = text(r.string()?);
                let to = text(r.string()?);
                let mut o = op("rename", from);
                o.target = Some(to);
                self.track(id, Pending::Op(o));
            }
            _ => {}
        }
        Some(())
    }

    fn on_response(&mut self, ty: u8, payload: &[u8], ops: &mut Vec<FileOp>) -> Option<()> {
        let mut r = Reader(payload);
        if ty == 2 {
            return Some(()); // VERSION
        }
        let id = r.u32()?;
        let pending = self.pending.remove(&id);
        match (ty, pending) {
            (102, Some(Pending::Open(path, writable))) => {
                let handle = r.string()?.to_vec();
                if self.handles.len() < MAX_TRACKED {
                    self.handles.insert(
                        handle,
                        Handle {
                            path,
                            writable,
                            read: 0,
                            written: 0,
                        },
                    );
                }
            }
            (103, Some(Pending::Read(handle))) => {
                let data = r.string()?;
                if let Some(h) = self.handles.get_mut(&handle) {
                    h.read += data.len() as u64;
                }
            }
            (101, Some(Pending::Op(mut op))) => {
                op.success = r.u32()? == 0;
                ops.push(op);
            }
            (101, Some(Pending::Open(path, writable))) => {
                // A failed open is worth an event too.
                ops.push(FileOp {
                    action: if writable { "write" } else { "read" },
                    path,
                    target: None,
                    bytes: 0,
                    success: false,
                });
            }
            _ => {}
        }
        Some(())
    }
}

fn handle_op(h: Handle, unfinished: bool) -> FileOp {
    FileOp {
        action: if h.written > 0 || (h.writable && h.read == 0) {
            "write"
        } else {
            "read"
        },
        path: h.path,
        target: None,
        bytes: h.read + h.written,
        success: !unfinished,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(ty: u8, parts: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = std::iter::once(ty).chain(parts.concat()).collect();
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }
    fn s(b: &[u8]) -> Vec<u8> {
        let mut out = (b.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(b);
        out
    }
    fn u32b(v: u32) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }

    #[test]
    fn upload_download_and_remove() {
        let mut t = SftpTracker::default();
        // Upload: open for write, two writes (split across feeds), close.
        t.client(&packet(
            3,
            &[&u32b(1), &s(b"/tmp/up"), &u32b(0x1a), &u32b(0)],
        ));
        t.server(&packet(102, &[&u32b(1), &s(b"H1")]));
        let w = packet(
            6,
            &[&u32b(2), &s(b"H1"), &0u64.to_be_bytes(), &s(&[7u8; 1000])],
        );
        t.client(&w[..10]);
        t.client(&w[10..]);
        t.client(&packet(
            6,
            &[&u32b(3), &s(b"H1"), &1000u64.to_be_bytes(), &s(&[7u8; 500])],
        ));
        t.client(&packet(4, &[&u32b(4), &s(b"H1")]));
        let ops = t.server(&packet(101, &[&u32b(4), &u32b(0)]));
        assert_eq!(
            ops,
            vec![FileOp {
                action: "write",
                path: "/tmp/up".into(),
                target: None,
                bytes: 1500,
                success: true
            }]
        );
        // Download: open, read, data, close.
        t.client(&packet(
            3,
            &[&u32b(5), &s(b"/etc/hostname"), &u32b(1), &u32b(0)],
        ));
        t.server(&packet(102, &[&u32b(5), &s(b"H2")]));
        t.client(&packet(
            5,
            &[&u32b(6), &s(b"H2"), &0u64.to_be_bytes(), &u32b(4096)],
        ));
        t.server(&packet(103, &[&u32b(6), &s(b"myhost\n")]));
        t.client(&packet(4, &[&u32b(7), &s(b"H2")]));
        let ops = t.server(&packet(101, &[&u32b(7), &u32b(0)]));
        assert_eq!(ops[0].action, "read");
        assert_eq!(ops[0].bytes, 7);
        // Remove that fails.
        t.client(&packet(13, &[&u32b(8), &s(b"/nope")]));
        let ops = t.server(&packet(101, &[&u32b(8), &u32b(2)]));
        assert_eq!((ops[0].action, ops[0].success), ("remove", false));
        // Rename.
        t.client(&packet(18, &[&u32b(9), &s(b"/a"), &s(b"/b")]));
        let ops = t.server(&packet(101, &[&u32b(9), &u32b(0)]));
        assert_eq!(ops[0].target.as_deref(), Some("/b"));
    }

    #[test]
    fn garbage_stops_tracking_without_panicking() {
        let mut t = SftpTracker::default();
        t.client(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        assert!(t.broken);
        let mut t = SftpTracker::default();
        t.client(&packet(3, &[&u32b(1), &u32b(99)])); // truncated string
        assert!(t.broken);
        // Random input never panics.
        let mut x: u64 = 42;
        for _ in 0..2000 {
            let mut t = SftpTracker::default();
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 7) as u8
                })
                .collect();
            t.client(&bytes);
            t.server(&bytes);
            t.finish();
        }
    }
}
