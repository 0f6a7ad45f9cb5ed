//! Benchmarks of Warden against baselines measured in the same run.
//! Run `bench/run.sh`; each binary prints `name value unit` lines.

use std::time::{Duration, Instant};

/// Runs `f` until `min` has passed (at least `min_iters` times); returns
/// operations per second.
pub fn rate(min: Duration, min_iters: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u32;
    while n < min_iters || start.elapsed() < min {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// A fresh temp dir for one benchmark.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
