//! A fixed-window rate limit by key (a client id, say), in memory on each node: at most `limit`
//! admissions per key per window, with a bounded number of keys tracked (the rest share one).

use std::collections::HashMap;

use parking_lot::Mutex;

/// Keys tracked in one window; beyond that they share one count.
const MAX_KEYS: usize = 4096;
const OVERFLOW_KEY: &str = "(other keys)";

#[derive(Debug, Default)]
struct Window {
    start: i64,
    counts: HashMap<String, u32>,
}

/// The limiter.
#[derive(Debug)]
pub struct RateLimit {
    limit: u32,
    window_ms: i64,
    window: Mutex<Window>,
}

impl RateLimit {
    pub fn new(limit: u32, window_ms: i64) -> Self {
        Self { limit, window_ms: window_ms.max(1), window: Mutex::new(Window::default()) }
    }

    /// Whether one more request keyed `key` at `now_ms` is admitted (and counts it if so).
    pub fn admit(&self, key: &str, now_ms: i64) -> bool {
        let mut w = self.window.lock();
        if now_ms - w.start >= self.window_ms || now_ms < w.start {
            w.start = now_ms;
            w.counts.clear();
        }
        let key = if w.counts.contains_key(key) || w.counts.len() < MAX_KEYS { key } else { OVERFLOW_KEY };
        let count = w.counts.entry(key.to_owned()).or_default();
        if *count >= self.limit {
            return false;
        }
        *count += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_gets_its_limit_per_window_and_keys_are_bounded() {
        let limit = RateLimit::new(2, 60_000);
        assert!(limit.admit("a", 0) && limit.admit("a", 1));
        assert!(!limit.admit("a", 2), "the third in the window is refused");
        assert!(limit.admit("b", 2), "another key has its own count");
        assert!(limit.admit("a", 60_000), "a new window starts afresh");
        for i in 0..MAX_KEYS + 10 {
            limit.admit(&format!("k{i}"), 60_001);
        }
        assert!(limit.window.lock().counts.len() <= MAX_KEYS + 1);
    }
}
