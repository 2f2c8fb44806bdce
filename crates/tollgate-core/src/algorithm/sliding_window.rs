//! Weighted two-window counter ("sliding window counter").
//!
//! Counts are kept per calendar-aligned window; at elapsed time `e` into the current window
//! of length `P`, the estimate is `prev × (P − e) / P + curr`, compared exactly in integers.
//! Error bound (see `docs/design/rate-limiting.md`): within any aligned window at most `limit`
//! are admitted; within any rolling interval of length `P`, fewer than `2 × limit`; with
//! evenly spread traffic in the previous window the estimate is exact.
//!
//! State word 0 is the start of the current window plus two periods (when its counts stop
//! mattering); word 1 packs `prev << 32 | curr`.

use super::{CounterState, Limit, Outcome, window_start};
use crate::time::Nanos;

fn unpack(state: CounterState, current: Nanos, period: Nanos) -> (Nanos, u64, u64) {
    let [expires, packed] = state.0;
    let start = expires.saturating_sub(period.saturating_mul(2));
    let (prev, curr) = (packed >> 32, packed & 0xffff_ffff);
    if packed == 0 || expires <= current {
        (current, 0, 0)
    } else if start >= current {
        // Same window, or the clock stepped back: keep the newer counts.
        (start, prev, curr)
    } else if start.saturating_add(period) == current {
        (current, curr, 0)
    } else {
        (current, 0, 0)
    }
}

/// A refused request counts in the current window (32-bit counts saturate).
pub(super) fn charge(limit: &Limit, state: CounterState, cost: u64, now: Nanos) -> CounterState {
    let p = limit.period;
    let (start, prev, curr) = unpack(state, window_start(now, p), p);
    let curr = curr.saturating_add(cost).min(u64::from(u32::MAX));
    CounterState([
        start.saturating_add(p).saturating_add(p),
        (prev << 32) | curr,
    ])
}

pub(super) fn decide(limit: &Limit, state: CounterState, cost: u64, now: Nanos) -> Outcome {
    let p = limit.period;
    let (start, prev, curr) = unpack(state, window_start(now, p), p);
    let elapsed = now.saturating_sub(start).min(p - 1);
    let weight = u128::from(p - elapsed);
    let (p128, l128) = (u128::from(p), u128::from(limit.requests));
    let weighted_prev = u128::from(prev) * weight;
    let after = curr.saturating_add(cost);
    let allowed = weighted_prev + u128::from(after) * p128 <= l128 * p128;
    // Whole requests still available before this one: floor((L·P − prev·w) / P) − curr.
    let available = (l128 * p128).saturating_sub(weighted_prev) / p128;
    let available = u64::try_from(available)
        .unwrap_or(u64::MAX)
        .saturating_sub(curr);
    let window_end = start.saturating_add(p);
    let reset_after = if curr > 0 || (allowed && cost > 0) {
        window_end.saturating_add(p) - now
    } else if prev > 0 {
        window_end - now
    } else {
        0
    };
    if allowed {
        let state = if cost == 0 {
            state
        } else {
            CounterState([window_end.saturating_add(p), (prev << 32) | after])
        };
        Outcome {
            allowed,
            remaining: available - cost,
            reset_after,
            retry_after: None,
            state,
        }
    } else {
        Outcome {
            allowed,
            remaining: available,
            reset_after,
            retry_after: retry_after(limit, start, prev, curr, cost, now),
            state,
        }
    }
}

/// Earliest wait after which `cost` fits, assuming no other traffic.
fn retry_after(
    limit: &Limit,
    start: Nanos,
    prev: u64,
    curr: u64,
    cost: u64,
    now: Nanos,
) -> Option<Nanos> {
    if cost > limit.requests {
        return None;
    }
    let p = u128::from(limit.period);
    // Smallest elapsed time e in a window with weighted count `w_count` and fresh count `fresh`
    // such that w_count·(P − e) ≤ (L − fresh − cost)·P.
    let earliest = |w_count: u64, fresh: u64| -> Option<u128> {
        let room = limit.requests.checked_sub(fresh)?.checked_sub(cost)?;
        if w_count == 0 {
            return Some(0);
        }
        let q = u128::from(room) * p / u128::from(w_count);
        Some(p.saturating_sub(q))
    };
    if let Some(e) = earliest(prev, curr) {
        let at = u128::from(start) + e;
        if at < u128::from(start) + p {
            return Some(u64::try_from(at.saturating_sub(u128::from(now))).unwrap_or(u64::MAX));
        }
    }
    let e = earliest(curr, 0)?;
    let at = u128::from(start) + p + e;
    Some(u64::try_from(at.saturating_sub(u128::from(now))).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use crate::algorithm::{CounterState, Limit};
    use crate::time::SECOND;

    #[test]
    fn previous_window_weighs_in_linearly() {
        let limit = Limit::sliding_window(10, 10 * SECOND).unwrap();
        let t0 = 100 * SECOND;
        let full = limit.decide(CounterState::default(), 10, t0);
        assert!(full.allowed);
        // Half-way through the next window, half of the previous 10 still count.
        let half = limit.decide(full.state, 0, t0 + 15 * SECOND);
        assert_eq!(half.remaining, 5);
        let six = limit.decide(full.state, 6, t0 + 15 * SECOND);
        assert!(!six.allowed);
        assert_eq!(six.retry_after, Some(SECOND));
        let five = limit.decide(full.state, 5, t0 + 15 * SECOND);
        assert!(five.allowed);
    }

    #[test]
    fn old_windows_are_forgotten() {
        let limit = Limit::sliding_window(3, SECOND).unwrap();
        let a = limit.decide(CounterState::default(), 3, 10 * SECOND);
        let b = limit.decide(a.state, 3, 12 * SECOND);
        assert!(b.allowed);
    }
}
