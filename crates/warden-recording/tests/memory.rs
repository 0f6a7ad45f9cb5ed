//! Memory taken to read a recording, measured by a counting allocator.
//! The auth service checks every upload with `scan`: a recording of output
//! that compressed well (`yes`, a file of zeros) must not take its
//! uncompressed size in memory there. One test only in this binary, so
//! that nothing else allocates while it measures. Exports stream alike.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use warden_recording::{decode, read, scan, AsciicastWriter, Encoder, Header};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is passed to the system allocator unchanged; only
// sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`; returns its result and the most memory it held at once.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let out = f();
    (out, PEAK.load(Relaxed).saturating_sub(base))
}

#[test]
fn scan_holds_one_chunk_not_the_whole_output() {
    const MIB: usize = 1 << 20;
    let mut e = Encoder::new(&Header {
        version: 2,
        width: 80,
        height: 24,
        ..Default::default()
    });
    // 64 MiB of `yes` output.
    let write = b"y\n".repeat(32 << 10);
    let mut file = Vec::new();
    for i in 0..1024 {
        e.output(i as f64 * 0.001, &write);
        if let Some(c) = e.ready() {
            file.extend(c);
        }
    }
    file.extend(e.flush().unwrap_or_default());
    assert!(file.len() < MIB, "{} bytes compressed", file.len());

    let (summary, scan_peak) = peak_of(|| scan(&file).unwrap());
    assert_eq!(summary.events, 1024);
    assert!(!summary.truncated);
    // An export streams (what `warden play --format asciicast` does).
    let ((), export_peak) = peak_of(|| {
        let mut w = AsciicastWriter::new(std::io::sink());
        read(&file, |i| w.item(&i)).unwrap();
        w.finish().unwrap();
    });
    let (decoded, decode_peak) = peak_of(|| decode(&file).unwrap());
    assert_eq!(decoded.events.len(), 1024);
    eprintln!(
        "{} byte file: scan peaked at {scan_peak} bytes, export at {export_peak}, decode at {decode_peak}",
        file.len()
    );
    // The meter works: decoding keeps the 64 MiB of output.
    assert!(
        decode_peak >= 64 * MIB,
        "decode peaked at {decode_peak} bytes"
    );
    assert!(
        export_peak < 2 * MIB,
        "export peaked at {export_peak} bytes"
    );
    assert!(
        scan_peak < 2 * MIB,
        "scan peaked at {scan_peak} bytes for a {} byte file",
        file.len()
    );
}
