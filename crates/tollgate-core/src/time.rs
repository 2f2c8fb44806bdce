//! Time as the engine sees it: nanoseconds since the UNIX epoch, read through an injected
//! [`Clock`] so that tests and property tests drive time by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the UNIX epoch (1970-01-01T00:00:00Z).
///
/// Wall-clock time, not a monotonic instant: fixed windows are aligned to the calendar
/// (a minute window starts at second 0), exactly like envoyproxy/ratelimit.
pub type Nanos = u64;

/// One second in [`Nanos`].
pub const SECOND: Nanos = 1_000_000_000;

/// A length of time in nanoseconds, wide enough for limits that take centuries to refill:
/// a GCRA bucket of 1,000 requests at 1 per year is 1,000 years deep, and [`Nanos`] ends
/// 584 years after 1970.
pub type Span = u128;

/// The instant `span` after `at`, saturating at the last instant [`Nanos`] can name.
#[inline]
pub fn instant_after(at: Nanos, span: Span) -> Nanos {
    Nanos::try_from(u128::from(at) + span).unwrap_or(Nanos::MAX)
}

/// `span` in whole `unit`s (milliseconds, seconds), rounded up and saturating: how edges
/// report a wait.
#[inline]
pub fn ceil_units(span: Span, unit: Nanos) -> u64 {
    u64::try_from(span.div_ceil(Span::from(unit.max(1)))).unwrap_or(u64::MAX)
}

/// `span` as [`Nanos`], saturating (for durations a caller keeps in 64 bits).
#[inline]
pub fn saturating_nanos(span: Span) -> Nanos {
    Nanos::try_from(span).unwrap_or(Nanos::MAX)
}

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Nanos;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Nanos {
        // A clock before 1970 is a broken host; treat it as the epoch rather than panic.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to: for tests, property tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: Nanos) -> Self {
        Self(AtomicU64::new(start))
    }

    /// Moves the clock forward by `by` nanoseconds.
    pub fn advance(&self, by: Nanos) {
        self.0.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock to `to` (which may be in the past, to test clock steps).
    pub fn set(&self, to: Nanos) {
        self.0.store(to, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Nanos {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(5);
        assert_eq!(clock.now(), 5);
        clock.advance(10);
        assert_eq!(clock.now(), 15);
        clock.set(3);
        assert_eq!(clock.now(), 3);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > 1_577_836_800 * SECOND);
    }
}
