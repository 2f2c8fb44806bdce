//! Calendar windows for quotas (`algorithm: quota`): a day, week, month or year as a time
//! zone's clocks show it, so a plan resets at local midnight on the first of the month
//! (or on its billing day), through DST changes and short months.
//!
//! The limiter computes the window that holds `now` here and hands its bounds to the
//! store with the op ([`crate::Limit::in_window`]); no store does calendar arithmetic.
//! The time zone database is the one bundled with `jiff`, so every node of a cluster (and
//! every host) draws the same boundaries for the same release of Tollgate.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::time::{Nanos, SECOND};

/// The length of a calendar quota's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CalendarPeriod {
    /// From local midnight to the next.
    Day,
    /// From Monday's local midnight to the next Monday's (ISO weeks).
    Week,
    /// From the first (or the anchor day) of a month to the same day of the next.
    Month,
    /// From the first of January to the next.
    Year,
}

impl CalendarPeriod {
    /// Every period, shortest first.
    pub const ALL: [CalendarPeriod; 4] = [
        CalendarPeriod::Day,
        CalendarPeriod::Week,
        CalendarPeriod::Month,
        CalendarPeriod::Year,
    ];

    /// The name in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            CalendarPeriod::Day => "day",
            CalendarPeriod::Week => "week",
            CalendarPeriod::Month => "month",
            CalendarPeriod::Year => "year",
        }
    }

    /// Parses a period name, case-insensitively.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for CalendarPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a calendar could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// The time zone is not in the bundled database.
    #[error("unknown time zone '{0}' (an IANA name such as Europe/Berlin or America/New_York)")]
    UnknownZone(String),
    /// An anchor day outside 1..=31.
    #[error("anchor_day must be between 1 and 31, got {0}")]
    AnchorOutOfRange(u8),
    /// An anchor day for a period other than a month.
    #[error("anchor_day applies only to period month, not {0}")]
    AnchorNeedsMonth(CalendarPeriod),
}

/// Every time zone name a calendar accepts (the bundled database's), sorted.
pub fn zone_names() -> Vec<String> {
    let mut names: Vec<String> = jiff::tz::db().available().map(|n| n.to_string()).collect();
    names.sort();
    names
}

/// A window `[start, end)` in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The first instant of the window.
    pub start: Nanos,
    /// The first instant after it.
    pub end: Nanos,
}

/// Calendar windows in one time zone. Cheap to ask: the current window is cached (one
/// atomic word), and recomputed only when `now` leaves it.
pub struct Calendar {
    period: CalendarPeriod,
    zone: TimeZone,
    zone_name: Box<str>,
    anchor_day: Option<u8>,
    /// The last window computed: start in seconds (top 39 bits) and length in seconds
    /// (low 25 bits; a year with a DST hour is 31.6 million). 0 before the first.
    cached: AtomicU64,
}

const LENGTH_BITS: u32 = 25;

impl Calendar {
    /// Windows of `period` in `zone` (an IANA name; `UTC` when `None`), months starting on
    /// `anchor_day` (default the 1st; in a month too short for it, its last day).
    pub fn new(
        period: CalendarPeriod,
        zone: Option<&str>,
        anchor_day: Option<u8>,
    ) -> Result<Self, CalendarError> {
        let zone_name = zone.unwrap_or("UTC");
        let tz = jiff::tz::db()
            .get(zone_name)
            .map_err(|_| CalendarError::UnknownZone(zone_name.to_owned()))?;
        if let Some(day) = anchor_day {
            if period != CalendarPeriod::Month {
                return Err(CalendarError::AnchorNeedsMonth(period));
            }
            if !(1..=31).contains(&day) {
                return Err(CalendarError::AnchorOutOfRange(day));
            }
        }
        Ok(Self {
            period,
            zone: tz,
            zone_name: zone_name.into(),
            anchor_day: anchor_day.filter(|&d| d != 1),
            cached: AtomicU64::new(0),
        })
    }

    /// The period.
    pub fn period(&self) -> CalendarPeriod {
        self.period
    }

    /// The time zone's name as configured.
    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    /// The billing day of the month, when it is not the 1st.
    pub fn anchor_day(&self) -> Option<u8> {
        self.anchor_day
    }

    /// The window that holds `now`.
    pub fn window_at(&self, now: Nanos) -> Window {
        let cached = self.cached.load(Ordering::Relaxed);
        let length = cached & ((1 << LENGTH_BITS) - 1);
        if length > 0 {
            let start = (cached >> LENGTH_BITS) * SECOND;
            let end = start + length * SECOND;
            if start <= now && now < end {
                return Window { start, end };
            }
        }
        let window = self.compute(now);
        // Boundaries are local midnights, whole seconds in every zone of the database.
        let (start_s, end_s) = (window.start / SECOND, window.end / SECOND);
        let length = end_s - start_s;
        if window.start.is_multiple_of(SECOND)
            && window.end.is_multiple_of(SECOND)
            && length > 0
            && length < (1 << LENGTH_BITS)
            && start_s < (1 << (64 - LENGTH_BITS))
        {
            self.cached
                .store((start_s << LENGTH_BITS) | length, Ordering::Relaxed);
        }
        window
    }

    /// The window that holds `now`, from the calendar (no cache).
    pub fn compute(&self, now: Nanos) -> Window {
        let at = Timestamp::from_nanosecond(i128::from(now)).unwrap_or(Timestamp::MAX);
        let today = self.zone.to_datetime(at).date();
        let (first, next) = match self.period {
            CalendarPeriod::Day => (today, today.tomorrow().unwrap_or(Date::MAX)),
            CalendarPeriod::Week => {
                let monday = today
                    .checked_sub(i64::from(today.weekday().to_monday_zero_offset()).days())
                    .unwrap_or(Date::MIN);
                (monday, monday.checked_add(7.days()).unwrap_or(Date::MAX))
            }
            CalendarPeriod::Month => {
                let day = self.anchor_day.unwrap_or(1);
                let this = anchored(today.first_of_month(), day);
                if today >= this {
                    (this, anchored(next_month(today), day))
                } else {
                    (anchored(previous_month(today), day), this)
                }
            }
            CalendarPeriod::Year => {
                let first = Date::new(today.year(), 1, 1).unwrap_or(Date::MIN);
                (first, first.checked_add(1.year()).unwrap_or(Date::MAX))
            }
        };
        let start = self.midnight(first);
        // The window always holds `now`, even where a zone's database is strange.
        let end = self.midnight(next).max(now.saturating_add(1));
        Window {
            start: start.min(now),
            end,
        }
    }

    /// The first instant of `date` in the zone: local midnight, or where midnight is
    /// skipped by a DST change, the first instant after the gap.
    fn midnight(&self, date: Date) -> Nanos {
        let local = DateTime::from_parts(date, Time::midnight());
        match self.zone.to_timestamp(local) {
            Ok(ts) => Nanos::try_from(ts.as_nanosecond().max(0)).unwrap_or(Nanos::MAX),
            Err(_) => Nanos::MAX,
        }
    }
}

/// The first of the month after `date`'s.
fn next_month(date: Date) -> Date {
    date.first_of_month()
        .checked_add(1.month())
        .unwrap_or(Date::MAX)
}

/// The first of the month before `date`'s.
fn previous_month(date: Date) -> Date {
    date.first_of_month()
        .checked_sub(1.month())
        .unwrap_or(Date::MIN)
}

/// Day `day` of the month that starts on `first`, or its last day when it has fewer.
fn anchored(first: Date, day: u8) -> Date {
    let day = i8::try_from(day).unwrap_or(1).min(first.days_in_month());
    Date::new(first.year(), first.month(), day).unwrap_or(first)
}

impl fmt::Debug for Calendar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Calendar")
            .field("period", &self.period)
            .field("zone", &self.zone_name)
            .field("anchor_day", &self.anchor_day)
            .finish()
    }
}

impl PartialEq for Calendar {
    fn eq(&self, other: &Self) -> bool {
        self.period == other.period
            && self.zone_name == other.zone_name
            && self.anchor_day == other.anchor_day
    }
}

impl Eq for Calendar {}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Nanos {
        let ts: Timestamp = text.parse().unwrap();
        ts.as_nanosecond() as Nanos
    }

    #[test]
    fn a_month_in_new_york_starts_at_local_midnight() {
        let cal = Calendar::new(CalendarPeriod::Month, Some("America/New_York"), None).unwrap();
        let w = cal.window_at(at("2026-03-15T12:00:00Z"));
        assert_eq!(w.start, at("2026-03-01T05:00:00Z"), "EST");
        assert_eq!(w.end, at("2026-04-01T04:00:00Z"), "EDT after 8 March");
    }

    #[test]
    fn an_anchor_past_the_month_end_falls_on_its_last_day() {
        let cal = Calendar::new(CalendarPeriod::Month, None, Some(31)).unwrap();
        let w = cal.window_at(at("2026-02-10T00:00:00Z"));
        assert_eq!(w.start, at("2026-01-31T00:00:00Z"));
        assert_eq!(w.end, at("2026-02-28T00:00:00Z"));
        let w = cal.window_at(at("2026-02-28T00:00:00Z"));
        assert_eq!(w.start, at("2026-02-28T00:00:00Z"));
        assert_eq!(w.end, at("2026-03-31T00:00:00Z"));
    }

    #[test]
    fn the_cache_answers_what_the_calendar_does() {
        let cal = Calendar::new(CalendarPeriod::Week, Some("Europe/Berlin"), None).unwrap();
        let mut now = at("2026-03-20T00:00:00Z");
        for _ in 0..2_000 {
            assert_eq!(cal.window_at(now), cal.compute(now), "at {now}");
            now += 3_599 * SECOND + 7;
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        assert_eq!(
            Calendar::new(CalendarPeriod::Day, Some("Mars/Olympus"), None).unwrap_err(),
            CalendarError::UnknownZone("Mars/Olympus".into())
        );
        assert_eq!(
            Calendar::new(CalendarPeriod::Month, None, Some(0)).unwrap_err(),
            CalendarError::AnchorOutOfRange(0)
        );
        assert_eq!(
            Calendar::new(CalendarPeriod::Week, None, Some(3)).unwrap_err(),
            CalendarError::AnchorNeedsMonth(CalendarPeriod::Week)
        );
    }
}
