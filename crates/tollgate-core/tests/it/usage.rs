//! Check-then-report ([`tollgate_core::Limiter::probe`] and `report`) on the memory store
//! with a manual clock: a probe takes nothing, a report charges past the limit, and both
//! follow a model of one counter per window; the overshoot that concurrent requests cause
//! between probe and report, which reservations avoid.

use proptest::prelude::*;
use tollgate_core::{HoldKind, SECOND, Settle};

use crate::support::{check, limiter, now_or_never, peek, probe, report, reserve};

const POLICIES: &str = "domain: llm
descriptors:
  - key: api_key
    rate_limit: {name: tokens_per_minute, unit: minute, requests_per_unit: 1000}
  - key: bucket
    rate_limit: {name: tokens_gcra, algorithm: gcra, unit: minute, requests_per_unit: 600, burst: 600}
";

const KEY: &[&[(&str, &str)]] = &[&[("api_key", "a")]];

#[test]
fn a_probe_takes_nothing_and_admits_exactly_what_is_left() {
    let (l, _clock) = limiter(POLICIES);
    for _ in 0..5 {
        assert!(probe(&l, "llm", KEY, 1000).allowed);
    }
    assert_eq!(peek(&l, "llm", KEY).statuses[0].remaining, 1000);
    assert!(!probe(&l, "llm", KEY, 1001).allowed, "more than the limit");
    report(&l, "llm", KEY, 400);
    assert!(probe(&l, "llm", KEY, 600).allowed);
    let over = probe(&l, "llm", KEY, 601);
    assert!(!over.allowed);
    assert_eq!(over.statuses[0].remaining, 600);
}

#[test]
fn a_report_charges_past_the_limit_until_the_window_ends() {
    let (l, clock) = limiter(POLICIES);
    let first = report(&l, "llm", KEY, 900);
    assert!(first.allowed);
    let second = report(&l, "llm", KEY, 900);
    assert!(!second.allowed, "the report says it did not fit");
    assert_eq!(peek(&l, "llm", KEY).statuses[0].remaining, 0);
    assert!(!check(&l, "llm", KEY).allowed, "1,800 of 1,000 used");
    // The clock starts 20 s into a minute; the next minute starts afresh.
    clock.advance(40 * SECOND);
    assert!(probe(&l, "llm", KEY, 1000).allowed);
}

#[test]
fn a_report_on_a_gcra_bucket_empties_it_without_debt() {
    let (l, clock) = limiter(POLICIES);
    let bucket: &[&[(&str, &str)]] = &[&[("bucket", "b")]];
    report(&l, "llm", bucket, 5_000);
    assert!(!probe(&l, "llm", bucket, 1).allowed);
    // One request's emission interval (100 ms) later, one fits again: no debt was kept.
    clock.advance(SECOND / 10);
    assert!(probe(&l, "llm", bucket, 1).allowed);
    assert!(!probe(&l, "llm", bucket, 2).allowed);
}

/// Check-then-report lets every request that probes before any report lands pass; a
/// reservation holds each estimate at once, so the same requests cannot overshoot.
#[test]
fn concurrent_probes_overshoot_where_reservations_do_not() {
    let (l, _clock) = limiter(POLICIES);
    // Ten calls of 300 tokens each start together against a 1,000-token minute.
    let passed = (0..10)
        .filter(|_| probe(&l, "llm", KEY, 300).allowed)
        .count();
    assert_eq!(passed, 10, "every probe sees the full minute");
    for _ in 0..passed {
        report(&l, "llm", KEY, 300);
    }
    // 3,000 charged to a 1,000-token minute: even a 1-token call is refused now.
    assert_eq!(peek(&l, "llm", KEY).statuses[0].remaining, 0);
    assert!(!probe(&l, "llm", KEY, 1).allowed);

    let (l, _clock) = limiter(POLICIES);
    let ids: Vec<_> = (0..10)
        .filter_map(|_| reserve(&l, "llm", KEY, 300, HoldKind::Reservation, 30 * SECOND).id)
        .collect();
    assert_eq!(ids.len(), 3, "three estimates of 300 fit in 1,000");
    for id in ids {
        now_or_never(l.settle(id, Settle::Commit(300))).unwrap();
    }
    assert_eq!(peek(&l, "llm", KEY).statuses[0].remaining, 100);
}

#[derive(Debug, Clone)]
enum Step {
    Probe(u64),
    Report(u64),
    Check(u64),
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u64..1_500).prop_map(Step::Probe),
        (0u64..700).prop_map(Step::Report),
        (1u64..400).prop_map(Step::Check),
        (0u64..50).prop_map(|s| Step::Wait(s * SECOND)),
    ]
}

proptest! {
    /// Against a model of one count per minute: a probe admits exactly when the count plus
    /// its cost fits and changes nothing, a report adds its cost whatever it is, a check
    /// adds its cost only when it fits.
    #[test]
    fn probes_and_reports_match_a_count_per_minute(steps in prop::collection::vec(step(), 1..80)) {
        let (l, clock) = limiter(POLICIES);
        let minute = |t: u64| t / (60 * SECOND);
        let mut counted: (u64, u64) = (minute(clock_now(&clock)), 0);
        for step in steps {
            let now = clock_now(&clock);
            if minute(now) != counted.0 {
                counted = (minute(now), 0);
            }
            match step {
                Step::Probe(cost) => {
                    let cost = cost.max(1);
                    let d = probe(&l, "llm", KEY, cost);
                    prop_assert_eq!(d.allowed, counted.1 + cost <= 1000, "probe {} with {} counted", cost, counted.1);
                    prop_assert_eq!(d.statuses[0].remaining, 1000u64.saturating_sub(counted.1));
                }
                Step::Report(cost) => {
                    let cost = cost.max(1);
                    let d = report(&l, "llm", KEY, cost);
                    prop_assert_eq!(d.allowed, counted.1 + cost <= 1000);
                    counted.1 += cost;
                }
                Step::Check(cost) => {
                    let d = crate::support::check_hits(&l, "llm", KEY, cost);
                    let fits = counted.1 + cost <= 1000;
                    prop_assert_eq!(d.allowed, fits);
                    if fits {
                        counted.1 += cost;
                    }
                }
                Step::Wait(ns) => clock.advance(ns),
            }
        }
    }
}

fn clock_now(clock: &tollgate_core::ManualClock) -> u64 {
    use tollgate_core::Clock;
    clock.now()
}
