//! Reservations and concurrency leases through the limiter, on the memory store with a
//! manual clock: what a hold takes, what settling it gives back or charges, expiry, and a
//! property test against a reference model.

use std::collections::HashMap;

use proptest::prelude::*;
use tollgate_core::{ExtendOutcome, HoldKind, SECOND, Settle, SettleOutcome, Settled};

use crate::support::{check, limiter, peek, reserve};

const POLICIES: &str = "domain: llm
descriptors:
  - key: api_key
    rate_limit: {name: tokens_per_minute, unit: minute, requests_per_unit: 1000}
  - key: org
    rate_limit: {name: tokens_per_month, algorithm: quota, period: month, requests_per_unit: 5000}
  - key: streams_of
    rate_limit: {name: streams, algorithm: concurrency, max_in_flight: 2}
";

/// Minute windows start at :00; the limiter's clock starts 20 s into one.
const TO_NEXT_MINUTE: u64 = 40 * SECOND;

fn remaining(l: &tollgate_core::Limiter, descriptors: &[&[(&str, &str)]]) -> Vec<u64> {
    peek(l, "llm", descriptors)
        .statuses
        .iter()
        .map(|s| s.remaining)
        .collect()
}

#[test]
fn a_reservation_holds_the_estimate_on_every_limit_at_once_or_on_none() {
    let (l, _clock) = limiter(POLICIES);
    let both: &[&[(&str, &str)]] = &[&[("api_key", "a")], &[("org", "o")]];
    let r = reserve(&l, "llm", both, 600, HoldKind::Reservation, 30 * SECOND);
    assert!(r.decision.allowed);
    let id = r.id.expect("an admitted reservation has an id");
    assert_eq!(remaining(&l, both), [400, 4400]);
    // 600 more do not fit the minute: nothing is taken from the month either.
    let denied = reserve(&l, "llm", both, 600, HoldKind::Reservation, 30 * SECOND);
    assert!(!denied.decision.allowed);
    assert_eq!(denied.id, None);
    assert_eq!(remaining(&l, both), [400, 4400]);
    // The call used 250: the rest comes back to both.
    let done = crate::support::now_or_never(l.settle(id, Settle::Commit(250))).unwrap();
    assert_eq!(
        done,
        SettleOutcome::Settled {
            how: Settled::Committed { actual: 250 },
            repeated: false
        }
    );
    assert_eq!(remaining(&l, both), [750, 4750]);
    // Repeating the commit changes nothing and says so; another settlement conflicts.
    let again = crate::support::now_or_never(l.settle(id, Settle::Commit(250))).unwrap();
    assert!(matches!(
        again,
        SettleOutcome::Settled { repeated: true, .. }
    ));
    let other = crate::support::now_or_never(l.settle(id, Settle::Release)).unwrap();
    assert_eq!(
        other,
        SettleOutcome::Conflict {
            already: Settled::Committed { actual: 250 }
        }
    );
    assert_eq!(remaining(&l, both), [750, 4750]);
}

#[test]
fn an_overage_is_charged_past_the_limit_until_the_window_ends() {
    let (l, clock) = limiter(POLICIES);
    let key: &[&[(&str, &str)]] = &[&[("api_key", "a")]];
    let r = reserve(&l, "llm", key, 900, HoldKind::Reservation, 30 * SECOND);
    let id = r.id.unwrap();
    crate::support::now_or_never(l.settle(id, Settle::Commit(1_500))).unwrap();
    assert_eq!(remaining(&l, key), [0]);
    let next = reserve(&l, "llm", key, 1, HoldKind::Reservation, 30 * SECOND);
    assert!(!next.decision.allowed, "the overage is paid off first");
    clock.advance(TO_NEXT_MINUTE);
    assert_eq!(remaining(&l, key), [1000], "a new window owes nothing");
}

#[test]
fn a_hold_left_alone_is_released_at_its_deadline_and_its_id_forgotten() {
    let (l, clock) = limiter(POLICIES);
    let key: &[&[(&str, &str)]] = &[&[("api_key", "a")], &[("org", "o")]];
    let r = reserve(&l, "llm", key, 1_000, HoldKind::Reservation, 10 * SECOND);
    let id = r.id.unwrap();
    assert_eq!(r.deadline, clock_now(&clock) + 10 * SECOND);
    clock.advance(10 * SECOND - 1);
    assert_eq!(remaining(&l, key), [0, 4000], "held until the deadline");
    clock.advance(1);
    assert_eq!(remaining(&l, key), [1000, 5000], "given back at it");
    for _ in 0..2 {
        let late = crate::support::now_or_never(l.settle(id, Settle::Commit(10))).unwrap();
        assert_eq!(late, SettleOutcome::Unknown, "the same answer every time");
    }
    assert_eq!(remaining(&l, key), [1000, 5000]);
}

#[test]
fn a_release_gives_everything_back_once() {
    let (l, _clock) = limiter(POLICIES);
    let key: &[&[(&str, &str)]] = &[&[("api_key", "a")]];
    let id = reserve(&l, "llm", key, 700, HoldKind::Reservation, 10 * SECOND)
        .id
        .unwrap();
    for repeated in [false, true] {
        let out = crate::support::now_or_never(l.settle(id, Settle::Release)).unwrap();
        assert_eq!(
            out,
            SettleOutcome::Settled {
                how: Settled::Released,
                repeated
            }
        );
        assert_eq!(remaining(&l, key), [1000]);
    }
}

fn clock_now(clock: &tollgate_core::ManualClock) -> u64 {
    use tollgate_core::Clock;
    clock.now()
}

#[test]
fn concurrency_slots_are_leased_released_extended_and_freed_by_their_ttl() {
    let (l, clock) = limiter(POLICIES);
    let key: &[&[(&str, &str)]] = &[&[("streams_of", "k")]];
    let ttl = 30 * SECOND;
    let a = reserve(&l, "llm", key, 1, HoldKind::Lease, ttl).id.unwrap();
    let b = reserve(&l, "llm", key, 1, HoldKind::Lease, ttl).id.unwrap();
    let third = reserve(&l, "llm", key, 1, HoldKind::Lease, ttl);
    assert!(!third.decision.allowed);
    assert_eq!(
        third.decision.statuses[0].retry_after,
        Some(u128::from(ttl))
    );
    // A plain check only asks whether a slot is free, and takes none.
    assert!(!check(&l, "llm", key).allowed);
    crate::support::now_or_never(l.settle(a, Settle::Release)).unwrap();
    assert!(check(&l, "llm", key).allowed);
    assert!(check(&l, "llm", key).allowed, "a check took nothing");
    let c = reserve(&l, "llm", key, 1, HoldKind::Lease, ttl).id.unwrap();
    // b keeps its slot with heartbeats; c's client dies.
    clock.advance(ttl - SECOND);
    let beat = crate::support::now_or_never(l.extend_hold(b, ttl)).unwrap();
    assert_eq!(
        beat,
        ExtendOutcome::Extended {
            deadline: clock_now(&clock) + ttl
        }
    );
    assert!(!check(&l, "llm", key).allowed, "both slots still held");
    clock.advance(SECOND);
    assert!(
        check(&l, "llm", key).allowed,
        "c's slot came back at its TTL"
    );
    assert_eq!(peek(&l, "llm", key).statuses[0].remaining, 1);
    let gone = crate::support::now_or_never(l.extend_hold(c, ttl)).unwrap();
    assert_eq!(gone, ExtendOutcome::Unknown);
}

#[test]
fn ttls_outside_their_bounds_are_refused() {
    let (l, _clock) = limiter(POLICIES);
    let entries = [tollgate_core::Entry {
        key: "api_key",
        value: "a",
    }];
    let descriptors = [tollgate_core::Descriptor {
        entries: &entries,
        hits: None,
        limit_override: None,
    }];
    let request = tollgate_core::CheckRequest {
        domain: "llm",
        descriptors: &descriptors,
        hits: 1,
    };
    for ttl in [0, 86_400 * SECOND + 1] {
        let err = crate::support::now_or_never(l.reserve(&request, HoldKind::Reservation, ttl))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("ttl_ms must be between 1 and 86400000"),
            "{err}"
        );
    }
}

#[derive(Debug, Clone)]
enum Step {
    Reserve { estimate: u64, ttl_s: u64 },
    Commit { which: usize, actual: u64 },
    Release { which: usize },
    Wait { s: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u64..400, 1u64..90).prop_map(|(estimate, ttl_s)| Step::Reserve { estimate, ttl_s }),
        2 => (0usize..8, 0u64..600).prop_map(|(which, actual)| Step::Commit { which, actual }),
        1 => (0usize..8).prop_map(|which| Step::Release { which }),
        2 => (0u64..50).prop_map(|s| Step::Wait { s }),
    ]
}

/// The model's expiry: a hold past its deadline gives back to its own minute.
fn expire(
    live: &mut HashMap<tollgate_core::HoldId, (u64, u64, u64)>,
    charged: &mut HashMap<u64, u64>,
    now: u64,
) {
    let minute = now / (60 * SECOND);
    live.retain(|_, &mut (amount, deadline, taken)| {
        if deadline > now {
            return true;
        }
        if taken == minute {
            *charged.entry(taken).or_default() -= amount;
        }
        false
    });
}

proptest! {
    /// Against a model that keeps every hold and every committed cost with its minute: the
    /// limiter's `remaining` is the limit less what the current minute holds and was
    /// charged (overages included), a reservation is admitted exactly when its estimate
    /// fits, and what holds keep never passes the limit.
    #[test]
    fn holds_match_a_model_of_holds_and_charges_per_window(steps in prop::collection::vec(step(), 1..60)) {
        let (l, clock) = limiter(POLICIES);
        let key: &[&[(&str, &str)]] = &[&[("api_key", "m")]];
        let minute = |t: u64| t / (60 * SECOND);
        // id → (amount, deadline, minute taken); charged per minute.
        let mut live: HashMap<tollgate_core::HoldId, (u64, u64, u64)> = HashMap::new();
        let mut charged: HashMap<u64, u64> = HashMap::new();
        let mut ids = Vec::new();
        for step in steps {
            let now = clock_now(&clock);
            expire(&mut live, &mut charged, now);
            let used = charged.get(&minute(now)).copied().unwrap_or(0);
            match step {
                Step::Reserve { estimate, ttl_s } => {
                    let r = reserve(&l, "llm", key, estimate, HoldKind::Reservation, ttl_s * SECOND);
                    let fits = used + estimate <= 1000;
                    prop_assert_eq!(r.decision.allowed, fits, "estimate {} with {} used", estimate, used);
                    if let Some(id) = r.id {
                        *charged.entry(minute(now)).or_default() += estimate;
                        live.insert(id, (estimate, now + ttl_s * SECOND, minute(now)));
                        ids.push(id);
                    }
                }
                Step::Commit { which, actual } => {
                    if let Some(&id) = ids.get(which) {
                        let out = crate::support::now_or_never(l.settle(id, Settle::Commit(actual))).unwrap();
                        if let Some((amount, _, taken)) = live.remove(&id) {
                            prop_assert!(matches!(out, SettleOutcome::Settled { repeated: false, .. }), "{:?}", out);
                            let here = charged.entry(minute(now)).or_default();
                            if taken == minute(now) {
                                *here = *here - amount + actual;
                            } else {
                                *here += actual.saturating_sub(amount);
                            }
                        } else {
                            prop_assert!(!matches!(out, SettleOutcome::Settled { repeated: false, .. }), "{:?}", out);
                        }
                    }
                }
                Step::Release { which } => {
                    if let Some(&id) = ids.get(which) {
                        let out = crate::support::now_or_never(l.settle(id, Settle::Release)).unwrap();
                        if let Some((amount, _, taken)) = live.remove(&id) {
                            prop_assert!(matches!(out, SettleOutcome::Settled { repeated: false, .. }), "{:?}", out);
                            if taken == minute(now) {
                                *charged.entry(taken).or_default() -= amount;
                            }
                        }
                    }
                }
                Step::Wait { s } => clock.advance(s * SECOND),
            }
            let now = clock_now(&clock);
            expire(&mut live, &mut charged, now);
            let used = charged.get(&minute(now)).copied().unwrap_or(0);
            prop_assert_eq!(remaining(&l, key), vec![1000u64.saturating_sub(used)], "at {}", now);
            let held: u64 = live.values().filter(|h| h.2 == minute(now)).map(|h| h.0).sum();
            prop_assert!(held <= 1000);
        }
    }
}
