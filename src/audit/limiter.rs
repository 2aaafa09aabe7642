//! Rate limiting for audit records that anyone can cause without being identified: requests
//! refused for a missing or bad token. Every such refusal is counted; the first few per source
//! and target in each window are recorded one by one, and the rest are summed into the next
//! record for that source and target (or a summary written by housekeeping), so a burst against
//! one patient's record shows up in full without letting a flood write the audit log full.

use std::collections::HashMap;

use parking_lot::Mutex;

/// Records per source and target in one window.
pub const PER_KEY: u32 = 3;
/// Records in one window across all sources.
pub const GLOBAL: u32 = 120;
/// The window, in milliseconds.
pub const WINDOW_MS: i64 = 60_000;
/// Distinct sources and targets tracked in one window; more share one overflow count.
pub const MAX_KEYS: usize = 4096;
/// The key refusals share once [`MAX_KEYS`] are tracked.
pub const OVERFLOW_KEY: &str = "(other sources)";

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Write a record; `suppressed_before` refusals of this key were counted but not recorded
    /// since its last record.
    Record { suppressed_before: u64 },
    /// Only count it.
    Suppress,
}

#[derive(Debug, Default)]
struct Window {
    start: i64,
    recorded: u32,
    keys: HashMap<String, (u32, u64)>,
    /// Suppressed counts of windows that have ended, not yet written.
    carried: HashMap<String, u64>,
}

/// The limiter, one per process.
#[derive(Debug, Default)]
pub struct RefusalLimiter {
    window: Mutex<Window>,
}

impl RefusalLimiter {
    /// Decides whether the refusal keyed `key` (source and target) at `now_ms` is recorded.
    pub fn admit(&self, key: &str, now_ms: i64) -> Admit {
        let mut w = self.window.lock();
        roll(&mut w, now_ms);
        let key = if w.keys.contains_key(key) || w.keys.len() < MAX_KEYS { key } else { OVERFLOW_KEY };
        let global_full = w.recorded >= GLOBAL;
        let entry = w.keys.entry(key.to_owned()).or_default();
        if entry.0 < PER_KEY && !global_full {
            entry.0 += 1;
            let mut suppressed_before = std::mem::take(&mut entry.1);
            w.recorded += 1;
            suppressed_before += w.carried.remove(key).unwrap_or(0);
            Admit::Record { suppressed_before }
        } else {
            entry.1 += 1;
            Admit::Suppress
        }
    }

    /// Suppressed counts of every window that has ended by `now_ms`, to be written as summary
    /// records: (key, how many refusals were not recorded one by one).
    pub fn take_summaries(&self, now_ms: i64) -> Vec<(String, u64)> {
        let mut w = self.window.lock();
        roll(&mut w, now_ms);
        let mut out: Vec<(String, u64)> = w.carried.drain().filter(|(_, n)| *n > 0).collect();
        out.sort();
        out
    }
}

/// Starts a new window when the current one has ended, carrying its suppressed counts.
fn roll(w: &mut Window, now_ms: i64) {
    if now_ms - w.start < WINDOW_MS {
        return;
    }
    let ended = std::mem::take(&mut w.keys);
    for (key, (_, suppressed)) in ended {
        if suppressed > 0 {
            let carried_keys = w.carried.len();
            let key = if w.carried.contains_key(&key) || carried_keys < MAX_KEYS { key } else { OVERFLOW_KEY.into() };
            *w.carried.entry(key).or_default() += suppressed;
        }
    }
    w.start = now_ms;
    w.recorded = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_recorded_a_few_times_and_counted_in_full() {
        let limiter = RefusalLimiter::default();
        let t = 1_000_000;
        for _ in 0..PER_KEY {
            assert_eq!(limiter.admit("10.0.0.1|9434765919", t), Admit::Record { suppressed_before: 0 });
        }
        for _ in 0..97 {
            assert_eq!(limiter.admit("10.0.0.1|9434765919", t + 10), Admit::Suppress);
        }
        // another target from the same source is its own key
        assert_eq!(limiter.admit("10.0.0.1|9000000009", t), Admit::Record { suppressed_before: 0 });
        // the next window's first record carries the count
        assert_eq!(limiter.admit("10.0.0.1|9434765919", t + WINDOW_MS), Admit::Record { suppressed_before: 97 });
        assert!(limiter.take_summaries(t + WINDOW_MS).is_empty(), "already reported");
    }

    #[test]
    fn a_burst_that_stops_is_summarised_by_housekeeping() {
        let limiter = RefusalLimiter::default();
        for _ in 0..(PER_KEY + 5) {
            limiter.admit("ip|p", 0);
        }
        assert!(limiter.take_summaries(WINDOW_MS - 1).is_empty(), "the window is still open");
        assert_eq!(limiter.take_summaries(WINDOW_MS), vec![("ip|p".to_owned(), 5)]);
        assert!(limiter.take_summaries(2 * WINDOW_MS).is_empty());
    }

    #[test]
    fn the_whole_log_is_protected_from_many_sources() {
        let limiter = RefusalLimiter::default();
        let recorded =
            (0..1000).filter(|i| matches!(limiter.admit(&format!("ip{i}|p"), 0), Admit::Record { .. })).count();
        assert_eq!(recorded, GLOBAL as usize);
        let summaries = limiter.take_summaries(WINDOW_MS);
        assert_eq!(summaries.iter().map(|(_, n)| n).sum::<u64>(), 1000 - u64::from(GLOBAL));
    }

    #[test]
    fn tracked_keys_are_bounded() {
        let limiter = RefusalLimiter::default();
        for i in 0..(MAX_KEYS + 100) {
            limiter.admit(&format!("k{i}"), 0);
        }
        let w = limiter.window.lock();
        assert!(w.keys.len() <= MAX_KEYS + 1);
        assert!(w.keys.contains_key(OVERFLOW_KEY));
    }
}
