//! Property tests: each algorithm against a simple reference model on a manual clock, plus
//! the guarantees the docs state (bounds, denials change nothing, retry times are exact).
//!
//! Magnitudes are drawn as policies and clocks produce them (`algorithm::domain`): times
//! anywhere from 1970 to 2262, every policy unit up to a year, rates and bursts up to
//! `u32::MAX`, bursts below and above the rate, costs up to and past the burst, and gaps
//! from nanoseconds to several periods. Small numbers alone once hid a saturation.

use std::collections::HashMap;

use proptest::prelude::*;
use tollgate_core::algorithm::domain::{MAX_NOW, MAX_REQUESTS, YEAR};
use tollgate_core::{
    Calendar, CalendarPeriod, CounterKey, CounterState, Limit, LimitOp, MemoryStore, Outcome,
    SECOND, Span, Unit,
};

/// A clock reading: epoch-scale, at any nanosecond, from 1970 to a century before 2262.
fn epoch() -> impl Strategy<Value = u64> {
    prop_oneof![
        1_500_000_000 * SECOND..2_500_000_000 * SECOND,
        0..MAX_NOW - 100 * YEAR,
    ]
}

/// Every period a policy unit produces.
fn unit_period() -> impl Strategy<Value = u64> {
    prop::sample::select(Unit::ALL.to_vec()).prop_map(|u| u.nanos())
}

/// Requests per unit: a handful, thousands, or near the 32-bit top.
fn rate() -> impl Strategy<Value = u64> {
    prop_oneof![
        1u64..10,
        1u64..100_000,
        MAX_REQUESTS - 1_000..=MAX_REQUESTS,
        1..=MAX_REQUESTS
    ]
}

/// One request: time since the previous one (nanoseconds to a few `scale`s), and its cost
/// (small, up to twice `burst`, or far past it).
fn events(scale: u64, burst: u64) -> impl Strategy<Value = Vec<(u64, u64)>> {
    let gap = prop_oneof![
        3 => 0u64..1_000,
        3 => 0..=scale,
        2 => 0..=scale.saturating_mul(3),
        1 => Just(0u64),
    ];
    let cost = prop_oneof![
        6 => 0u64..4,
        3 => 0..=burst.saturating_mul(2),
        1 => prop_oneof![Just(burst), Just(burst + 1), Just(u64::MAX), any::<u64>()],
    ];
    prop::collection::vec((gap, cost), 1..120)
}

/// Runs `limit` over `events` from `start`, returning (time, cost, outcome, state before).
fn run(limit: &Limit, start: u64, events: &[(u64, u64)]) -> Vec<(u64, u64, Outcome, CounterState)> {
    let mut state = CounterState::default();
    let mut now = start;
    let mut out = Vec::new();
    for &(gap, cost) in events {
        now = now.saturating_add(gap).min(MAX_NOW - 1);
        let o = limit.decide(state, cost, now);
        out.push((now, cost, o, state));
        if o.allowed {
            state = o.state;
        }
    }
    out
}

/// `now + span` when it is still a clock reading of the domain.
fn later(now: u64, span: Span) -> Option<u64> {
    u64::try_from(Span::from(now) + span)
        .ok()
        .filter(|&t| t < MAX_NOW)
}

fn check_common(
    limit: &Limit,
    trace: &[(u64, u64, Outcome, CounterState)],
) -> Result<(), TestCaseError> {
    for &(now, cost, o, before) in trace {
        if !o.allowed {
            prop_assert_eq!(o.state, before, "a denial changed state");
            if let Some(wait) = o.retry_after {
                prop_assert!(wait > 0);
                if let Some(at) = later(now, wait) {
                    prop_assert!(
                        limit.decide(before, cost, at).allowed,
                        "not admitted after retry_after"
                    );
                    prop_assert!(
                        !limit.decide(before, cost, at - 1).allowed,
                        "retry_after not minimal"
                    );
                }
            } else {
                prop_assert!(cost > limit.burst() || limit.requests() == 0);
            }
        }
        if cost == 0 {
            prop_assert_eq!(o.allowed, limit.requests() > 0 || o.allowed);
        }
        // Charging (envoy's counting) equals the decision's state when admitted, and never
        // leaves more room than there was.
        let charged = limit.charge(before, cost, now);
        if o.allowed {
            prop_assert_eq!(charged, o.state);
        } else {
            prop_assert!(
                limit.decide(charged, 0, now).remaining <= limit.decide(before, 0, now).remaining
            );
        }
        if o.allowed && cost > 0 {
            // The expiry invariant: once past it, the state decides exactly like a fresh one
            // (a state that outlives the clock's domain is never swept).
            let expiry = o.state.expires_at();
            prop_assert!(Span::from(expiry) >= limit.expiry_of(o.state).min(Span::from(MAX_NOW)));
            if expiry < MAX_NOW {
                let at = expiry.max(now);
                for probe in [1, limit.burst().max(limit.requests()).max(1)] {
                    prop_assert_eq!(
                        limit.decide(o.state, probe, at).allowed,
                        limit.decide(CounterState::default(), probe, at).allowed
                    );
                    prop_assert_eq!(
                        limit.decide(o.state, 0, at).remaining,
                        limit.decide(CounterState::default(), 0, at).remaining
                    );
                }
            }
        }
    }
    Ok(())
}

/// A GCRA limit inside the domain: a rate per policy unit with a burst below, at or above
/// it (a bucket up to a million years deep).
fn gcra_limit() -> impl Strategy<Value = Limit> {
    (
        rate(),
        unit_period(),
        prop_oneof![Just(0u8), Just(1), Just(2)],
        rate(),
    )
        .prop_filter_map("outside the domain", |(requests, period, shape, other)| {
            let burst = match shape {
                0 => other.min(requests),
                1 => requests,
                _ => other.max(requests),
            };
            Limit::gcra(requests, period, burst).ok()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(768))]

    #[test]
    fn gcra_matches_a_token_bucket_and_its_bound(
        (limit, start, events) in gcra_limit().prop_flat_map(|limit| {
            let scale = limit.emission().saturating_mul(limit.burst().min(4)).max(1);
            (Just(limit), epoch(), events(scale, limit.burst()))
        }),
    ) {
        let trace = run(&limit, start, &events);
        check_common(&limit, &trace)?;

        // Reference: a bucket of nanoseconds of credit, full at start, in 128 bits.
        let t = Span::from(limit.emission());
        let burst = Span::from(limit.burst());
        let capacity = burst * t;
        let (mut credit, mut last) = (capacity, start);
        for &(now, cost, o, _) in &trace {
            credit = (credit + Span::from(now - last)).min(capacity);
            last = now;
            let need = Span::from(cost) * t;
            let fits = credit >= need;
            prop_assert_eq!(o.allowed, fits, "at {} cost {}", now, cost);
            if fits {
                credit -= need;
                prop_assert_eq!(Span::from(o.remaining), credit / t);
                prop_assert_eq!(o.reset_after, capacity - credit);
            } else {
                prop_assert_eq!(Span::from(o.remaining), credit / t);
                prop_assert_eq!(o.reset_after, capacity - credit);
                let retry = (Span::from(cost) <= burst).then(|| need - credit);
                prop_assert_eq!(o.retry_after, retry);
            }
        }

        // Never more than burst + rate × elapsed over any interval.
        let (requests, period) = (Span::from(limit.requests()), Span::from(limit.period()));
        for i in 0..trace.len() {
            let mut admitted = 0u128;
            for j in i..trace.len() {
                if trace[j].2.allowed { admitted += Span::from(trace[j].1); }
                let elapsed = Span::from(trace[j].0 - trace[i].0);
                prop_assert!(admitted * period <= burst * period + elapsed * requests);
            }
        }
    }

    #[test]
    fn fixed_window_matches_per_window_counts(
        (requests, period, start, events) in (prop_oneof![Just(0u64), rate()], unit_period())
            .prop_flat_map(|(requests, period)| {
                (Just(requests), Just(period), epoch(), events(period / 3, requests))
            }),
    ) {
        let limit = Limit::fixed_window(requests, period).unwrap();
        let trace = run(&limit, start, &events);
        check_common(&limit, &trace)?;
        let mut windows: HashMap<u64, u64> = HashMap::new();
        for &(now, cost, o, _) in &trace {
            let used = windows.entry(now / period).or_default();
            let fits = requests > 0 && *used + cost.min(requests + 1) <= requests || cost == 0 && requests == 0;
            prop_assert_eq!(o.allowed, fits, "at {} cost {}", now, cost);
            if fits && requests > 0 {
                *used += cost;
                prop_assert_eq!(o.remaining, requests - *used);
                prop_assert_eq!(o.reset_after, Span::from((now / period + 1) * period - now));
            }
        }
        prop_assert!(windows.values().all(|&used| used <= requests));
    }

    /// A calendar quota against per-window counts, each decision in the window its calendar
    /// gives at that instant (as the limiter asks): what a window admits never passes the
    /// limit, a new window starts empty, and the reset is the window's exact end.
    #[test]
    fn quota_matches_per_calendar_window_counts(
        requests in prop_oneof![Just(0u64), rate()],
        zone in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/Santiago", "Asia/Kathmandu", "Australia/Lord_Howe"]),
        period in prop::sample::select(CalendarPeriod::ALL.to_vec()),
        anchor in prop_oneof![Just(None), (1u8..=31).prop_map(Some)],
        start in epoch(),
        events in (prop_oneof![Just(3_600 * SECOND), Just(86_400 * SECOND), Just(40 * 86_400 * SECOND)], rate())
            .prop_flat_map(|(scale, burst)| events(scale, burst)),
    ) {
        let anchor = anchor.filter(|_| period == CalendarPeriod::Month);
        let calendar = Calendar::new(period, Some(zone), anchor).unwrap();
        let base = Limit::quota(requests, 30 * 86_400 * SECOND).unwrap();
        let mut state = CounterState::default();
        let mut windows: HashMap<u64, u64> = HashMap::new();
        let mut now = start;
        for &(gap, cost) in &events {
            now = now.saturating_add(gap).min(MAX_NOW - 1);
            let window = calendar.window_at(now);
            prop_assert!(window.start <= now && now < window.end);
            let limit = base.in_window(window.start, window.end);
            let o = limit.decide(state, cost, now);
            let used = windows.entry(window.start).or_default();
            let fits = if requests == 0 { cost == 0 } else { used.saturating_add(cost) <= requests };
            prop_assert_eq!(o.allowed, fits, "at {} cost {} in {:?}", now, cost, window);
            if requests > 0 {
                prop_assert_eq!(o.reset_after, Span::from(window.end - now));
                if fits {
                    *used += cost;
                    prop_assert_eq!(o.remaining, requests - *used);
                } else {
                    prop_assert_eq!(o.remaining, requests - *used);
                    prop_assert_eq!(o.state, state, "a denial changes nothing");
                }
            }
            if o.allowed {
                state = o.state;
            }
        }
        prop_assert!(windows.values().all(|&used| used <= requests));
    }

    /// The sliding window against its documented rule in continuous form: the estimate
    /// `prev × (P − e) / P + curr` never counts less than the exact one and less than
    /// `prev / 1000` more, so a request that does not fit the continuous estimate is
    /// denied and one that fits with that margin is admitted; and the bounds hold.
    #[test]
    fn sliding_window_keeps_the_continuous_estimate_and_its_bound(
        (requests, period, start, events) in (rate(), unit_period())
            .prop_flat_map(|(requests, period)| {
                (Just(requests), Just(period), epoch(), events(period / 3, requests))
            }),
    ) {
        let limit = Limit::sliding_window(requests, period).unwrap();
        let trace = run(&limit, start, &events);
        check_common(&limit, &trace)?;
        let mut windows: HashMap<u64, u64> = HashMap::new();
        let (l, p) = (Span::from(requests), Span::from(period));
        for &(now, cost, o, _) in &trace {
            let w = now / period;
            let prev = Span::from(windows.get(&w.wrapping_sub(1)).copied().unwrap_or(0));
            let curr = Span::from(windows.get(&w).copied().unwrap_or(0));
            let e = Span::from(now % period);
            let cost_w = Span::from(cost);
            // × P: prev·(P − e) + (curr + cost)·P against L·P; the margin prev/1000 × 1000.
            let continuous = prev * (p - e) + (curr + cost_w) * p;
            if continuous > l * p {
                prop_assert!(!o.allowed, "admitted past the continuous estimate at {} cost {}", now, cost);
            } else if continuous * 1_000 + prev * p <= l * p * 1_000 {
                prop_assert!(o.allowed, "denied within the margin at {} cost {}", now, cost);
            }
            if o.allowed {
                *windows.entry(w).or_default() += cost;
            }
        }
        // Bounds: ≤ L per aligned window; < 2L in any rolling interval of length P.
        prop_assert!(windows.values().all(|&used| used <= requests));
        for i in 0..trace.len() {
            let admitted: Span = trace[i..]
                .iter()
                .take_while(|e| e.0 < trace[i].0 + period)
                .filter(|e| e.2.allowed)
                .map(|e| Span::from(e.1))
                .sum();
            prop_assert!(admitted < 2 * l, "{} admitted in one period", admitted);
        }
    }

    /// The sliding window's quantization on periods that are not policy units (the ones
    /// that divide into 1,000 slices and the ones that do not) keeps its integer rule.
    #[test]
    fn sliding_window_matches_the_weighted_estimate_on_short_periods(
        requests in 1u64..10,
        period in prop_oneof![1u64..1_000, (1u64..40).prop_map(|k| k * 1_000)],
        start in epoch(),
        gaps in events(400, 4),
    ) {
        let limit = Limit::sliding_window(requests, period).unwrap();
        let events: Vec<(u64, u64)> =
            gaps.iter().map(|&(gap, cost)| (gap % (3 * period), cost.min(6))).collect();
        let (n, slice) = if period % 1_000 == 0 { (1_000, period / 1_000) } else { (period, 1) };
        let trace = run(&limit, start, &events);
        check_common(&limit, &trace)?;
        let mut windows: HashMap<u64, u64> = HashMap::new();
        for &(now, cost, o, _) in &trace {
            let w = now / period;
            let prev = windows.get(&w.wrapping_sub(1)).copied().unwrap_or(0);
            let curr = windows.get(&w).copied().unwrap_or(0);
            let elapsed = now % period;
            let fits = u128::from(prev) * u128::from(n - elapsed / slice)
                + u128::from(curr + cost) * u128::from(n)
                <= u128::from(requests) * u128::from(n);
            prop_assert_eq!(o.allowed, fits, "at {} cost {}", now, cost);
            if fits {
                *windows.entry(w).or_default() += cost;
            }
        }
    }

    /// Giving back what an admitted decision took restores exactly the room there was,
    /// then or later (a window that has rolled since keeps nothing to give back, so a
    /// sliding window may then have less); and a refund never creates room that was not
    /// taken.
    #[test]
    fn refunds_restore_the_room_a_decision_took(
        (limit, start, events, delays) in (
            prop_oneof![
                (rate(), unit_period()).prop_map(|(r, p)| Limit::fixed_window(r, p).unwrap()),
                gcra_limit(),
                (rate(), unit_period()).prop_map(|(r, p)| Limit::sliding_window(r, p).unwrap()),
            ],
        ).prop_flat_map(|(limit,)| {
            let scale = limit.period() / 3;
            (Just(limit), epoch(), events(scale, limit.burst()),
             prop::collection::vec(prop_oneof![Just(0u64), 0u64..1_000, 0..=limit.period()], 120))
        }),
        refund_cost in prop_oneof![1u64..5, any::<u64>()],
    ) {
        let trace = run(&limit, start, &events);
        for (&(now, cost, o, before), &delay) in trace.iter().zip(&delays) {
            let room_before = limit.decide(before, 0, now).remaining;
            if o.allowed && cost > 0 {
                let back = limit.refund(o.state, cost, now);
                prop_assert_eq!(limit.decide(back, 0, now).remaining, room_before);
                let at = (now + delay).min(MAX_NOW - 1);
                let back = limit.refund(o.state, cost, at);
                let (got, had) = (limit.decide(back, 0, at).remaining, limit.decide(before, 0, at).remaining);
                let same_window = now / limit.period() == at / limit.period();
                if limit.algorithm() == tollgate_core::Algorithm::SlidingWindow && !same_window {
                    prop_assert!(got <= had, "refund at {} made room: {} > {}", at, got, had);
                } else {
                    prop_assert_eq!(got, had, "refund at {}", at);
                }
            }
            // Refunding more than was taken stops at a fresh counter's room.
            let over = limit.refund(before, refund_cost, now);
            prop_assert!(limit.decide(over, 0, now).remaining <= limit.burst());
        }
    }

    #[test]
    fn divided_limits_split_requests_and_burst(n in 1u64..10, requests in 0u64..100, burst in 1u64..100) {
        let limit = Limit::gcra(requests, 1_000_000, burst).unwrap();
        let part = limit.divided(n);
        if requests == 0 {
            prop_assert_eq!(part, limit);
        } else {
            prop_assert_eq!(part.requests(), (requests / n).max(1));
            prop_assert_eq!(part.burst(), (burst / n).max(1));
            prop_assert_eq!(part.period(), limit.period());
        }
    }

    /// envoyproxy/ratelimit's counting against a naive model: evaluate in order, and every
    /// op charges its counter, admitted or not.
    #[test]
    fn memory_store_every_request_counts(
        batches in prop::collection::vec(
            (0u64..50, prop::collection::vec((0u64..3, 1u64..4), 1..4)),
            1..60,
        ),
    ) {
        let limits = [
            Limit::fixed_window(5, 100).unwrap(),
            Limit::gcra(3, 100, 4).unwrap(),
            Limit::sliding_window(6, 100).unwrap(),
        ];
        let store = MemoryStore::default();
        let mut model: HashMap<u64, CounterState> = HashMap::new();
        let mut now = 10_000;
        for (gap, batch) in batches {
            now += gap;
            let key = |k: u64| CounterKey(k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut ops: Vec<LimitOp> =
                batch.iter().map(|&(k, cost)| LimitOp::new(key(k), limits[k as usize], cost, true)).collect();
            store.apply_with(&mut ops, now, tollgate_core::CommitRule::EveryRequestCounts);
            for (op, &(k, cost)) in ops.iter().zip(&batch) {
                let state = model.get(&k).copied().unwrap_or_default();
                prop_assert_eq!(op.outcome, Some(limits[k as usize].decide(state, cost, now)));
                model.insert(k, limits[k as usize].charge(state, cost, now));
            }
            for (&k, state) in &model {
                prop_assert_eq!(store.get(key(k)).unwrap_or_default(), *state);
            }
        }
    }

    /// The store's batch semantics against a naive model: evaluate in order on a copy,
    /// commit the copy only if every enforced op admits.
    #[test]
    fn memory_store_batches_are_all_or_nothing(
        batches in prop::collection::vec(
            (0u64..50, prop::collection::vec((0u64..3, 1u64..4, any::<bool>()), 1..4)),
            1..60,
        ),
    ) {
        let limits = [
            Limit::fixed_window(5, 100).unwrap(),
            Limit::gcra(3, 100, 4).unwrap(),
            Limit::sliding_window(6, 100).unwrap(),
        ];
        let store = MemoryStore::default();
        let mut model: HashMap<u64, CounterState> = HashMap::new();
        let mut now = 10_000;
        for (gap, batch) in batches {
            now += gap;
            let mut ops: Vec<LimitOp> = batch
                .iter()
                .map(|&(k, cost, enforce)| {
                    LimitOp::new(CounterKey(k.wrapping_mul(0x9E37_79B9_7F4A_7C15)), limits[k as usize], cost, enforce)
                })
                .collect();
            store.apply_sync(&mut ops, now);

            let mut scratch = model.clone();
            let mut admitted = true;
            let mut expected = Vec::new();
            for &(k, cost, enforce) in &batch {
                let state = scratch.get(&k).copied().unwrap_or_default();
                let outcome = limits[k as usize].decide(state, cost, now);
                if outcome.allowed {
                    scratch.insert(k, outcome.state);
                } else if enforce {
                    admitted = false;
                }
                expected.push(outcome);
            }
            if admitted {
                model = scratch;
            } else {
                // Nothing consumed: would-be admissions report the untouched counter.
                for (outcome, &(k, _, _)) in expected.iter_mut().zip(&batch) {
                    if outcome.allowed {
                        let state = model.get(&k).copied().unwrap_or_default();
                        *outcome = limits[k as usize].decide(state, 0, now);
                    }
                }
            }
            for (op, outcome) in ops.iter().zip(&expected) {
                prop_assert_eq!(op.outcome, Some(*outcome));
            }
            prop_assert_eq!(tollgate_core::store::batch_admits(&ops), admitted);
        }
    }
}
