//! Per-source token buckets for login attempts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Sources tracked at most; past this the oldest-refilled are forgotten.
const MAX_SOURCES: usize = 100_000;

pub struct RateLimiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new() -> Self {
        RateLimiter {
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `source`'s bucket of `per_minute` capacity.
    pub fn allow(&self, source: &str, per_minute: u32) -> bool {
        let cap = per_minute.max(1) as f64;
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SOURCES && !map.contains_key(source) {
            // Forget sources idle for a minute (their buckets are full again).
            map.retain(|_, (_, t)| now.duration_since(*t).as_secs() < 60);
            if map.len() >= MAX_SOURCES {
                // Under a flood from this many sources, new ones wait.
                return false;
            }
        }
        let (tokens, last) = map.entry(source.to_string()).or_insert((cap, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * cap / 60.0).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How long one summary covers.
pub const SUMMARY_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Refused attempts, summarised: the first refusal of a source in a window
/// is written as an event, the rest only counted, so a flood costs the
/// audit log one event per source and window, not one per attempt.
pub struct Refusals {
    /// Key -> (window start, refusals counted after the first).
    map: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Refusals {
    pub fn new() -> Self {
        Refusals {
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Notes one refusal; true when it opens a window (write it as an event).
    pub fn note(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((start, count)) = map.get_mut(key) {
            if now.duration_since(*start) < SUMMARY_WINDOW {
                *count = count.saturating_add(1);
                return false;
            }
            if *count > 0 {
                // Its summary is still due: the next drain writes it.
                return false;
            }
        }
        if map.len() >= MAX_SOURCES && !map.contains_key(key) {
            // Under a flood from this many sources, count, do not write.
            return false;
        }
        map.insert(key.to_string(), (now, 0));
        true
    }

    /// Windows that ended with refusals counted: (key, count), removed.
    pub fn drain(&self) -> Vec<(String, u64)> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        map.retain(|k, (start, count)| {
            if now.duration_since(*start) < SUMMARY_WINDOW {
                return true;
            }
            if *count > 0 {
                out.push((k.clone(), *count));
            }
            false
        });
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn refusals_are_written_once_per_window_then_counted() {
        let r = super::Refusals::new();
        assert!(r.note("login:10.0.0.1"));
        for _ in 0..999 {
            assert!(!r.note("login:10.0.0.1"));
        }
        assert!(r.note("login:10.0.0.2"), "each source has its own window");
        assert!(r.drain().is_empty(), "windows still open");
    }

    #[test]
    fn bucket_empties_per_source() {
        let l = super::RateLimiter::new();
        for _ in 0..3 {
            assert!(l.allow("a", 3));
        }
        assert!(!l.allow("a", 3));
        assert!(l.allow("b", 3));
    }
}
