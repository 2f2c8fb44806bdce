//! Weighted two-window counter ("sliding window counter").
//!
//! Counts are kept per calendar-aligned window; at elapsed time `e` into the current window
//! of length `P`, the estimate is `prev × (P − e) / P + curr`, compared exactly in integers,
//! with `e` rounded down to a thousandth of the period (so the weight rounds up).
//! Error bound (see `docs/design/rate-limiting.md`): within any aligned window at most `limit`
//! are admitted; within any rolling interval of length `P`, fewer than `2 × limit`; with
//! evenly spread traffic in the previous window the estimate is exact.
//!
//! State word 0 is the start of the current window plus two periods (when its counts stop
//! mattering); word 1 packs `prev << 32 | curr`.

use super::{CounterState, Limit, Outcome, window_start};
use crate::time::{Nanos, Span};

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
pub(super) fn refund(limit: &Limit, state: CounterState, cost: u64, now: Nanos) -> CounterState {
    let p = limit.period;
    let current = window_start(now, p);
    let (start, prev, curr) = unpack(state, current, p);
    if start.saturating_add(p.saturating_mul(2)) != state.0[0] {
        // The counted window is no longer the current one: nothing to give back.
        return state;
    }
    CounterState([state.0[0], (prev << 32) | curr.saturating_sub(cost)])
}

pub(super) fn charge(limit: &Limit, state: CounterState, cost: u64, now: Nanos) -> CounterState {
    let p = limit.period;
    let (start, prev, curr) = unpack(state, window_start(now, p), p);
    let curr = curr.saturating_add(cost).min(u64::from(u32::MAX));
    CounterState([
        start.saturating_add(p).saturating_add(p),
        (prev << 32) | curr,
    ])
}

/// How finely the previous window's weight is measured: a period whose length in nanoseconds
/// is a multiple of 1 000 (every policy unit) is cut into 1 000 slices; any other period into
/// slices of one nanosecond. Quantizing keeps every product below 2^53, so a Redis script
/// working in doubles computes exactly the same decisions.
fn slices(period: Nanos) -> (u64, Nanos) {
    if period.is_multiple_of(1_000) {
        (1_000, period / 1_000)
    } else {
        (period, 1)
    }
}

pub(super) fn decide(limit: &Limit, state: CounterState, cost: u64, now: Nanos) -> Outcome {
    let p = limit.period;
    let (start, prev, curr) = unpack(state, window_start(now, p), p);
    let (n, slice) = slices(p);
    let elapsed = now.saturating_sub(start).min(p - 1);
    // Rounded up to whole slices: the estimate never counts less than the exact one.
    let weight = u128::from(n - elapsed / slice);
    let (n128, l128) = (u128::from(n), u128::from(limit.requests));
    let weighted_prev = u128::from(prev) * weight;
    let after = curr.saturating_add(cost);
    let allowed = weighted_prev + u128::from(after) * n128 <= l128 * n128;
    let available = (l128 * n128).saturating_sub(weighted_prev) / n128;
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
            reset_after: Span::from(reset_after),
            retry_after: None,
            state,
        }
    } else {
        Outcome {
            allowed,
            remaining: available,
            reset_after: Span::from(reset_after),
            retry_after: retry_after(limit, start, prev, curr, cost, now).map(Span::from),
            state,
        }
    }
}

/// The first time the same request fits: in this window once enough slices of the previous
/// one have passed, else in the next window, where today's count becomes the previous one.
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
    let p = limit.period;
    let (n, slice) = slices(p);
    // Offset into a window at which `w_count` weighted plus `fresh + cost` fits.
    let earliest = |w_count: u64, fresh: u64| -> Option<Nanos> {
        let room = limit.requests.checked_sub(fresh)?.checked_sub(cost)?;
        if w_count == 0 {
            return Some(0);
        }
        let max_weight = u128::from(room) * u128::from(n) / u128::from(w_count);
        let max_weight = u64::try_from(max_weight).unwrap_or(u64::MAX);
        Some(n.saturating_sub(max_weight).saturating_mul(slice))
    };
    if let Some(e) = earliest(prev, curr)
        && e < p
    {
        return Some(start.saturating_add(e).saturating_sub(now));
    }
    let e = earliest(curr, 0)?;
    Some(
        start
            .saturating_add(p)
            .saturating_add(e)
            .saturating_sub(now),
    )
}

#[cfg(test)]
mod tests {
    use crate::algorithm::{CounterState, Limit};
    use crate::time::{SECOND, Span};

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
        assert_eq!(six.retry_after, Some(Span::from(SECOND)));
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
