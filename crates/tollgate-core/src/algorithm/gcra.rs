//! GCRA (generic cell rate algorithm): token-bucket semantics with a single timestamp of
//! state, the "theoretical arrival time" (TAT) of the next request.
//!
//! With emission interval `T = period / requests` (rounded up) and capacity `C = burst × T`,
//! a request of cost `n` is admitted at time `now` when
//! `max(tat, now) + n·T − now ≤ C`, and then `tat ← max(tat, now) + n·T`.
//! State word 0 is the TAT (also the time the bucket is full again); word 1 is unused.

use super::{CounterState, Limit, Outcome};
use crate::time::Nanos;

pub(super) fn decide(limit: &Limit, state: CounterState, cost: u64, now: Nanos) -> Outcome {
    let t = limit.emission;
    let capacity = limit.burst.saturating_mul(t);
    let tat = state.0[0].max(now);
    let new_tat = tat.saturating_add(cost.saturating_mul(t));
    // Time the bucket needs to drain to empty, i.e. to be full of tokens again.
    let used = tat - now;
    if new_tat - now <= capacity {
        let used_after = new_tat - now;
        Outcome {
            allowed: true,
            remaining: (capacity - used_after) / t,
            reset_after: used_after,
            retry_after: None,
            state: if cost == 0 {
                state
            } else {
                CounterState([new_tat, 0])
            },
        }
    } else {
        let retry_after = (cost <= limit.burst).then(|| new_tat - capacity - now);
        Outcome {
            allowed: false,
            remaining: capacity.saturating_sub(used) / t,
            reset_after: used,
            retry_after,
            state,
        }
    }
}

/// A refused request empties the bucket, without going into debt.
pub(super) fn refund(limit: &Limit, state: CounterState, cost: u64, now: Nanos) -> CounterState {
    let back = state.0[0].saturating_sub(cost.saturating_mul(limit.emission));
    // Below `now` every value means "full"; keep `now` so the state stays recognisably live.
    CounterState([back.max(now.min(state.0[0])), 0])
}

pub(super) fn charge(limit: &Limit, state: CounterState, cost: u64, now: Nanos) -> CounterState {
    let t = limit.emission;
    let full_debt = now.saturating_add(limit.burst.saturating_mul(t));
    let tat = state.0[0]
        .max(now)
        .saturating_add(cost.saturating_mul(t))
        .min(full_debt);
    CounterState([tat.max(state.0[0]), 0])
}

#[cfg(test)]
mod tests {
    use crate::algorithm::{CounterState, Limit};
    use crate::time::SECOND;

    #[test]
    fn burst_then_steady_rate() {
        // 10 per second, burst 5: 5 at once, then one every 100 ms.
        let limit = Limit::gcra(10, SECOND, 5).unwrap();
        let mut state = CounterState::default();
        let now = 1_000 * SECOND;
        for i in 0..5 {
            let out = limit.decide(state, 1, now);
            assert!(out.allowed, "request {i} of the burst");
            assert_eq!(out.remaining, 4 - i);
            state = out.state;
        }
        let denied = limit.decide(state, 1, now);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Some(SECOND / 10));
        assert_eq!(denied.state, state);
        let later = limit.decide(state, 1, now + SECOND / 10);
        assert!(later.allowed);
    }

    #[test]
    fn cost_above_burst_can_never_pass() {
        let limit = Limit::gcra(10, SECOND, 5).unwrap();
        let out = limit.decide(CounterState::default(), 6, SECOND);
        assert!(!out.allowed);
        assert_eq!(out.retry_after, None);
    }

    #[test]
    fn idle_bucket_refills_to_burst_not_beyond() {
        let limit = Limit::gcra(1, SECOND, 3).unwrap();
        let start = 50 * SECOND;
        let out = limit.decide(CounterState::default(), 3, start);
        assert!(out.allowed);
        let after_an_hour = limit.decide(out.state, 0, start + 3_600 * SECOND);
        assert_eq!(after_an_hour.remaining, 3);
    }
}
