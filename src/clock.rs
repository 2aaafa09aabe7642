//! Time as a parameter. Protocol code takes `now` from a [`Clock`] held in the state and never reads
//! the system clock itself, so tests move time (expired codes, key rotation) without sleeping.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + Debug {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> i64;

    /// Whole seconds since the Unix epoch (the unit of JWT `exp`, `iat`, `nbf`).
    fn now(&self) -> i64 {
        self.now_millis().div_euclid(1000)
    }
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug)]
pub struct FixedClock {
    millis: AtomicI64,
}

impl FixedClock {
    /// A clock stopped at `unix_seconds`.
    pub fn at(unix_seconds: i64) -> Self {
        Self { millis: AtomicI64::new(unix_seconds * 1000) }
    }

    /// Moves the clock forward (or back, with a negative value) by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.millis.fetch_add(seconds * 1000, Ordering::SeqCst);
    }

    /// Sets the clock to `unix_seconds`.
    pub fn set(&self, unix_seconds: i64) {
        self.millis.store(unix_seconds * 1000, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now_millis(&self) -> i64 {
        self.millis.load(Ordering::SeqCst)
    }
}

/// Minutes since local midnight in the UK (Europe/London: GMT in winter, BST in summer) at
/// `unix_seconds`: clinical services keep UK time, so time-of-day policy conditions read this.
pub fn uk_minute_of_day(unix_seconds: i64) -> u16 {
    use chrono::Timelike as _;
    let Some(utc) = chrono::DateTime::from_timestamp(unix_seconds, 0) else { return 0 };
    let local = utc.with_timezone(&chrono_tz::Europe::London);
    u16::try_from(local.hour() * 60 + local.minute()).unwrap_or(0)
}

/// An instant as people in the UK read it: "2 December 2026, 14:05 GMT" (BST in summer).
pub fn uk_local_time(unix_millis: i64) -> String {
    use chrono::{Datelike as _, Offset as _, Timelike as _};
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let Some(utc) = chrono::DateTime::from_timestamp_millis(unix_millis) else { return String::new() };
    let local = utc.with_timezone(&chrono_tz::Europe::London);
    let zone = if local.offset().fix().local_minus_utc() == 0 { "GMT" } else { "BST" };
    format!(
        "{} {} {}, {:02}:{:02} {zone}",
        local.day(),
        MONTHS[local.month0() as usize],
        local.year(),
        local.hour(),
        local.minute()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uk_local_time_reads_gmt_in_winter_and_bst_in_summer() {
        // 2026-12-02T14:05:00Z and 2026-07-01T14:05:00Z
        assert_eq!(uk_local_time(1_796_220_300_000), "2 December 2026, 14:05 GMT");
        assert_eq!(uk_local_time(1_782_914_700_000), "1 July 2026, 15:05 BST");
    }

    #[test]
    fn uk_time_follows_the_clock_changes() {
        // 2026-03-29 01:00 UTC the clocks go forward: 00:59 UTC is 00:59 GMT, 01:00 UTC is 02:00 BST
        assert_eq!(uk_minute_of_day(1_774_745_940), 59);
        assert_eq!(uk_minute_of_day(1_774_746_000), 120);
        // a summer afternoon: 2026-07-01 16:30 UTC is 17:30 BST
        assert_eq!(uk_minute_of_day(1_782_923_400), 17 * 60 + 30);
        // 2026-10-25 01:00 UTC the clocks go back: 00:30 UTC is 01:30 BST, 01:30 UTC is 01:30 GMT
        assert_eq!(uk_minute_of_day(1_792_888_200), 90);
        assert_eq!(uk_minute_of_day(1_792_891_800), 90);
        // winter: 2026-12-01 07:59 UTC is 07:59 GMT
        assert_eq!(uk_minute_of_day(1_796_111_940), 7 * 60 + 59);
    }

    #[test]
    fn fixed_clock_moves_only_when_told() {
        let clock = FixedClock::at(1_700_000_000);
        assert_eq!(clock.now(), 1_700_000_000);
        clock.advance(61);
        assert_eq!(clock.now(), 1_700_000_061);
        clock.set(5);
        assert_eq!(clock.now_millis(), 5000);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > 1_577_836_800);
    }
}
