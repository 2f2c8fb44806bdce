//! Calendar quotas: window boundaries against an independent oracle, and the limiter
//! counting in them.

use std::collections::HashMap;

use serde_json::Value;
use tollgate_core::{Calendar, CalendarPeriod, PolicyError, PolicySet, SECOND};

use crate::support::{check_hits, limiter, peek};

/// Every boundary of the committed table (Python's zoneinfo, `scripts/calendar-oracle`) is
/// the one the core computes, with and without its cache.
#[test]
fn every_boundary_equals_the_oracles() {
    let text = include_str!("../fixtures/calendar_windows.json");
    let doc: Value = serde_json::from_str(text).expect("the fixture is JSON");
    assert_eq!(
        doc["tzdata"].as_str(),
        Some("2026f"),
        "the oracle ran on the tz release jiff bundles; regenerate with scripts/calendar-oracle"
    );
    let periods: Vec<(CalendarPeriod, u8)> = doc["periods"]
        .as_array()
        .expect("periods")
        .iter()
        .map(|p| {
            let name = p[0].as_str().expect("period name");
            let anchor = p[1].as_u64().expect("anchor") as u8;
            (CalendarPeriod::parse(name).expect("known period"), anchor)
        })
        .collect();
    let mut calendars: HashMap<(String, usize), Calendar> = HashMap::new();
    let cases = doc["cases"].as_array().expect("cases");
    assert!(
        cases.len() > 2_000,
        "the table has {} instants",
        cases.len()
    );
    let mut checked = 0;
    for case in cases {
        let zone = case[0].as_str().expect("zone");
        let at = case[1].as_u64().expect("at_s") * SECOND;
        for (i, &(period, anchor)) in periods.iter().enumerate() {
            let calendar = calendars.entry((zone.to_owned(), i)).or_insert_with(|| {
                let anchor = (anchor != 1).then_some(anchor);
                Calendar::new(period, Some(zone), anchor).expect("a valid calendar")
            });
            let want = (
                case[2 + 2 * i].as_u64().expect("start") * SECOND,
                case[3 + 2 * i].as_u64().expect("end") * SECOND,
            );
            for (how, got) in [
                ("computed", calendar.compute(at)),
                ("cached", calendar.window_at(at)),
            ] {
                assert_eq!(
                    (got.start, got.end),
                    want,
                    "{zone} {period} anchor {anchor} at {} s ({how})",
                    at / SECOND
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 14_000, "{checked} windows checked");
}

fn quota_file(extra: &str) -> String {
    format!(
        "domain: billing
descriptors:
  - key: org
    rate_limit:
      algorithm: quota
      period: month
      requests_per_unit: 1000
{extra}"
    )
}

/// 2026-03-31T23:59:59 in Berlin (CEST, +2) is 21:59:59Z; the April window starts a second
/// later and the March count does not follow it.
#[test]
fn a_monthly_quota_resets_at_local_midnight_of_the_first() {
    let (limiter, clock) = limiter(&quota_file("      time_zone: Europe/Berlin\n"));
    let last_second_of_march = 1_774_994_399 * SECOND;
    clock.set(last_second_of_march);
    let d = check_hits(&limiter, "billing", &[&[("org", "acme")]], 1000);
    assert!(d.allowed);
    assert_eq!(d.statuses[0].reset_after, u128::from(SECOND));
    assert!(!check_hits(&limiter, "billing", &[&[("org", "acme")]], 1).allowed);
    clock.advance(SECOND);
    let d = check_hits(&limiter, "billing", &[&[("org", "acme")]], 1);
    assert!(d.allowed, "April starts fresh");
    assert_eq!(d.statuses[0].remaining, 999);
    // April has 30 days, all in CEST: the window ends 2026-04-30T22:00:00Z.
    let may = 1_777_586_400 * SECOND;
    assert_eq!(
        d.statuses[0].reset_after,
        u128::from(may - (last_second_of_march + SECOND))
    );
    let p = peek(&limiter, "billing", &[&[("org", "acme")]]);
    assert_eq!(p.statuses[0].remaining, 999, "a peek takes nothing");
}

/// A billing day of the 31st in February falls on the 28th; the quota counts from there.
#[test]
fn a_billing_day_past_a_short_month_falls_on_its_last_day() {
    let (limiter, clock) = limiter(&quota_file("      anchor_day: 31\n"));
    // 2026-02-27T12:00:00Z: the window is [Jan 31, Feb 28).
    clock.set(1_772_193_600 * SECOND);
    assert!(check_hits(&limiter, "billing", &[&[("org", "a")]], 1000).allowed);
    assert!(!check_hits(&limiter, "billing", &[&[("org", "a")]], 1).allowed);
    // 2026-02-28T00:00:00Z: a new window, to March 31.
    clock.set(1_772_236_800 * SECOND);
    let d = check_hits(&limiter, "billing", &[&[("org", "a")]], 1);
    assert!(d.allowed);
    assert_eq!(
        d.statuses[0].reset_after,
        u128::from((1_774_915_200 - 1_772_236_800) * SECOND)
    );
}

fn error(yaml: &str) -> PolicyError {
    let mut errors = PolicySet::from_files([("billing.yaml", yaml)]).expect_err("refused");
    errors.remove(0)
}

#[test]
fn an_unknown_time_zone_is_a_load_error_with_file_line_and_field() {
    let e = error(&quota_file("      time_zone: Europe/Atlantis\n"));
    assert_eq!(e.file, "billing.yaml");
    assert!(e.line.is_some(), "{e}");
    assert!(
        e.message
            .contains("descriptors[0].rate_limit.time_zone: unknown time zone 'Europe/Atlantis'"),
        "{e}"
    );
}

#[test]
fn quota_settings_are_checked_where_they_are_written() {
    let e = error(&quota_file("      anchor_day: 32\n"));
    assert!(
        e.message
            .contains("descriptors[0].rate_limit.anchor_day: anchor_day must be between 1 and 31"),
        "{e}"
    );
    let e = error(&quota_file("      unit: month\n"));
    assert!(e.message.contains("instead of unit"), "{e}");
    let e = error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {algorithm: quota, requests_per_unit: 1}\n",
    );
    assert!(e.message.contains("period is required"), "{e}");
    let e = error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: day, requests_per_unit: 1, time_zone: UTC}\n",
    );
    assert!(e.message.contains("apply only to algorithm quota"), "{e}");
    let e = error(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {algorithm: quota, period: fortnight, requests_per_unit: 1}\n",
    );
    assert!(
        e.message.contains("invalid quota period 'fortnight'"),
        "{e}"
    );
    let e = error(&quota_file("      anchor_day: 3\n").replace("month", "week"));
    assert!(
        e.message
            .contains("anchor_day applies only to period month"),
        "{e}"
    );
}
