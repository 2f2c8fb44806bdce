//! Property tests: each algorithm against a simple reference model on a manual clock, plus
//! the guarantees the docs state (bounds, denials change nothing, retry times are exact).

use std::collections::HashMap;

use proptest::prelude::*;
use tollgate_core::{CounterKey, CounterState, Limit, LimitOp, MemoryStore, Outcome};

/// One request: time since the previous one, and its cost.
fn events(max_gap: u64, max_cost: u64) -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((0..=max_gap, 0..=max_cost), 1..120)
}

/// Runs `limit` over `events` from `start`, returning (time, cost, outcome, state before).
fn run(limit: &Limit, start: u64, events: &[(u64, u64)]) -> Vec<(u64, u64, Outcome, CounterState)> {
    let mut state = CounterState::default();
    let mut now = start;
    let mut out = Vec::new();
    for &(gap, cost) in events {
        now += gap;
        let o = limit.decide(state, cost, now);
        out.push((now, cost, o, state));
        if o.allowed {
            state = o.state;
        }
    }
    out
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
                prop_assert!(
                    limit.decide(before, cost, now + wait).allowed,
                    "not admitted after retry_after"
                );
                prop_assert!(
                    !limit.decide(before, cost, now + wait - 1).allowed,
                    "retry_after not minimal"
                );
            } else {
                prop_assert!(cost > limit.burst().max(limit.requests()) || limit.requests() == 0);
            }
        }
        if cost == 0 {
            prop_assert!(o.allowed);
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
            // The expiry invariant: once past it, the state decides exactly like a fresh one.
            let later = o.state.expires_at().max(now);
            for probe in [1, limit.burst().max(limit.requests()).max(1)] {
                prop_assert_eq!(
                    limit.decide(o.state, probe, later).allowed,
                    limit.decide(CounterState::default(), probe, later).allowed
                );
                prop_assert_eq!(
                    limit.decide(o.state, 0, later).remaining,
                    limit.decide(CounterState::default(), 0, later).remaining
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn gcra_matches_a_token_bucket_and_its_bound(
        requests in 1u64..10,
        period in 1u64..1_000,
        extra_burst in 0u64..5,
        start in 0u64..1_000_000,
        events in events(300, 6),
    ) {
        let burst = requests + extra_burst;
        let limit = Limit::gcra(requests, period, burst).unwrap();
        let trace = run(&limit, start, &events);
        check_common(&limit, &trace)?;

        // Reference: a bucket of tokens measured in nanoseconds of credit, full at start.
        let t = period.div_ceil(requests);
        let capacity = burst * t;
        let (mut tokens, mut last) = (capacity, start);
        for &(now, cost, o, _) in &trace {
            tokens = (tokens + (now - last)).min(capacity);
            last = now;
            let fits = tokens >= cost * t;
            prop_assert_eq!(o.allowed, fits, "at {} cost {}", now, cost);
            if fits {
                tokens -= cost * t;
                prop_assert_eq!(o.remaining, tokens / t);
            }
        }

        // Never more than burst + rate × elapsed over any interval.
        for i in 0..trace.len() {
            let mut admitted = 0u128;
            for j in i..trace.len() {
                if trace[j].2.allowed { admitted += u128::from(trace[j].1); }
                let elapsed = u128::from(trace[j].0 - trace[i].0);
                prop_assert!(admitted * u128::from(period)
                    <= u128::from(burst) * u128::from(period) + elapsed * u128::from(requests));
            }
        }
    }

    #[test]
    fn fixed_window_matches_per_window_counts(
        requests in 0u64..10,
        period in 1u64..1_000,
        start in 0u64..1_000_000,
        events in events(400, 4),
    ) {
        let limit = Limit::fixed_window(requests, period).unwrap();
        let trace = run(&limit, start, &events);
        check_common(&limit, &trace)?;
        let mut windows: HashMap<u64, u64> = HashMap::new();
        for &(now, cost, o, _) in &trace {
            let used = windows.entry(now / period).or_default();
            let fits = *used + cost <= requests;
            prop_assert_eq!(o.allowed, fits);
            if fits {
                *used += cost;
                prop_assert_eq!(o.remaining, requests - *used);
                prop_assert_eq!(o.reset_after, (now / period + 1) * period - now);
            }
        }
        prop_assert!(windows.values().all(|&used| used <= requests));
    }

    #[test]
    fn sliding_window_matches_the_weighted_estimate_and_its_bound(
        requests in 1u64..10,
        period in prop_oneof![1u64..1_000, (1u64..40).prop_map(|k| k * 1_000)],
        start in 0u64..1_000_000,
        gaps in events(400, 4),
    ) {
        let limit = Limit::sliding_window(requests, period).unwrap();
        // Gaps scale with the period so that long periods see several windows too.
        let events: Vec<(u64, u64)> =
            gaps.iter().map(|&(gap, cost)| (gap * period.div_ceil(1_000), cost)).collect();
        // The weight is measured in slices: 1 000 when the period divides into them.
        let (n, slice) = if period % 1_000 == 0 { (1_000, period / 1_000) } else { (period, 1) };
        let trace = run(&limit, start, &events);
        check_common(&limit, &trace)?;
        let mut windows: HashMap<u64, u64> = HashMap::new();
        for &(now, cost, o, _) in &trace {
            let w = now / period;
            let prev = windows.get(&w.wrapping_sub(1)).copied().unwrap_or(0);
            let curr = windows.get(&w).copied().unwrap_or(0);
            let elapsed = now % period;
            // prev·(n − ⌊e/slice⌋)/n + curr + cost ≤ L, in integers.
            let fits = u128::from(prev) * u128::from(n - elapsed / slice)
                + u128::from(curr + cost) * u128::from(n)
                <= u128::from(requests) * u128::from(n);
            prop_assert_eq!(o.allowed, fits, "at {} cost {}", now, cost);
            if fits {
                *windows.entry(w).or_default() += cost;
            }
        }
        // Bounds: ≤ L per aligned window; < 2L in any rolling interval of length P.
        prop_assert!(windows.values().all(|&used| used <= requests));
        for i in 0..trace.len() {
            let admitted: u64 = trace[i..]
                .iter()
                .take_while(|e| e.0 < trace[i].0 + period)
                .filter(|e| e.2.allowed)
                .map(|e| e.1)
                .sum();
            prop_assert!(admitted < 2 * requests, "{} admitted in one period", admitted);
        }
    }

    /// Giving back what an admitted decision took restores exactly the room there was, and
    /// a refund never creates room that was not taken.
    #[test]
    fn refunds_restore_the_room_a_decision_took(
        which in 0usize..3,
        start in 0u64..1_000_000,
        events in events(300, 4),
        refund_cost in 1u64..5,
    ) {
        let limit = [
            Limit::fixed_window(5, 1_000).unwrap(),
            Limit::gcra(3, 1_000, 4).unwrap(),
            Limit::sliding_window(6, 1_000).unwrap(),
        ][which];
        let trace = run(&limit, start, &events);
        for &(now, cost, o, before) in &trace {
            let room_before = limit.decide(before, 0, now).remaining;
            if o.allowed && cost > 0 {
                let back = limit.refund(o.state, cost, now);
                prop_assert_eq!(limit.decide(back, 0, now).remaining, room_before);
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
