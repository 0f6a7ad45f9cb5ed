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

#[cfg(test)]
mod tests {
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
