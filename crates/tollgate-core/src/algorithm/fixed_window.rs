//! Fixed windows aligned to the calendar, as envoyproxy/ratelimit counts them: a minute
//! window starts at second 0 of the minute, a day window at midnight UTC.
//!
//! State word 0 is the end of the window the count belongs to; word 1 is the count.
//! If the wall clock steps back, the newer window stored is kept (never resets early).
//!
//! Quotas (`Algorithm::Quota`) count the same way in the window their op names.

use super::{CounterState, Limit, Outcome, domain};
use crate::time::{Nanos, Span};

/// The window the count belongs to (its end) and the count so far.
fn unpack(limit: &Limit, state: CounterState, now: Nanos) -> (Nanos, u64) {
    let current = limit.window_of(now);
    if state.0[0] > current && state.0[1] > 0 {
        (state.0[0], state.0[1])
    } else {
        (current.saturating_add(limit.period), 0)
    }
}

/// A refused request counts past the limit until the window ends (up to `MAX_COUNT`).
pub(super) fn charge(limit: &Limit, state: CounterState, cost: u64, now: Nanos) -> CounterState {
    let (end, count) = unpack(limit, state, now);
    CounterState([end, count.saturating_add(cost).min(domain::MAX_COUNT)])
}

/// Gives back only to the window the op counts in: a counter that has moved on to another
/// (a later quota window, a clock that stepped) keeps its count.
pub(super) fn refund(limit: &Limit, state: CounterState, cost: u64, now: Nanos) -> CounterState {
    let end = limit.window_of(now).saturating_add(limit.period);
    if end != state.0[0] {
        return state;
    }
    CounterState([end, state.0[1].saturating_sub(cost)])
}

pub(super) fn decide(limit: &Limit, state: CounterState, cost: u64, now: Nanos) -> Outcome {
    let (end, count) = unpack(limit, state, now);
    let reset_after = Span::from(end.saturating_sub(now));
    let after = count.saturating_add(cost);
    if after <= limit.requests {
        Outcome {
            allowed: true,
            remaining: limit.requests - after,
            reset_after,
            retry_after: None,
            state: if cost == 0 {
                state
            } else {
                CounterState([end, after])
            },
        }
    } else {
        Outcome {
            allowed: false,
            remaining: limit.requests.saturating_sub(count),
            reset_after,
            retry_after: (cost <= limit.requests).then_some(reset_after),
            state,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::algorithm::{CounterState, Limit};
    use crate::time::{SECOND, Span};

    #[test]
    fn windows_are_aligned_to_the_clock() {
        let limit = Limit::fixed_window(2, 60 * SECOND).unwrap();
        // 10 s before the end of a minute.
        let now = 120 * SECOND + 50 * SECOND;
        let a = limit.decide(CounterState::default(), 2, now);
        assert!(a.allowed);
        assert_eq!(a.reset_after, Span::from(10 * SECOND));
        let b = limit.decide(a.state, 1, now + 5 * SECOND);
        assert!(!b.allowed);
        assert_eq!(b.retry_after, Some(Span::from(5 * SECOND)));
        // The next minute starts fresh.
        let c = limit.decide(a.state, 2, 180 * SECOND);
        assert!(c.allowed);
        assert_eq!(c.remaining, 0);
    }

    #[test]
    fn a_clock_step_back_does_not_reset_the_count() {
        let limit = Limit::fixed_window(1, SECOND).unwrap();
        let a = limit.decide(CounterState::default(), 1, 10 * SECOND);
        let b = limit.decide(a.state, 1, 9 * SECOND);
        assert!(!b.allowed);
    }
}
