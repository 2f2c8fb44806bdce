//! Concurrency limits: at most `requests` (the policy's `max_in_flight`) slots held at once.
//!
//! State word 0 is when the last slot held expires (every lease has a TTL, so a client that
//! died frees its slot by then at the latest); word 1 is how many are held. Slots are taken
//! only by an op whose limit says until when ([`Limit::holding_until`]); they are given
//! back one hold at a time ([`Limit::refund`]) when it is released or expires, and a state
//! past word 0 holds nothing whatever word 1 says.

use super::{CounterState, Limit, Outcome};
use crate::time::{Nanos, Span};

/// Slots held at `now`.
fn held(state: CounterState, now: Nanos) -> u64 {
    if state.0[0] > now { state.0[1] } else { 0 }
}

pub(super) fn decide(limit: &Limit, state: CounterState, cost: u64, now: Nanos) -> Outcome {
    let held_now = held(state, now);
    let after = held_now.saturating_add(cost);
    let until = limit.held_until();
    // Until every slot held now has expired, at the latest.
    let busy_until = |count: u64, last: Nanos| {
        if count == 0 {
            0
        } else {
            Span::from(last.saturating_sub(now))
        }
    };
    if after <= limit.requests {
        let takes = cost > 0 && until > now;
        let state = if takes {
            CounterState([state.0[0].max(until), after])
        } else {
            state
        };
        let count = if takes { after } else { held_now };
        Outcome {
            allowed: true,
            remaining: limit.requests - count,
            reset_after: busy_until(count, state.0[0]),
            retry_after: None,
            state,
        }
    } else {
        let reset_after = busy_until(held_now, state.0[0]);
        Outcome {
            allowed: false,
            remaining: limit.requests.saturating_sub(held_now),
            reset_after,
            // At the latest when every slot held now has expired.
            retry_after: (cost <= limit.requests).then_some(reset_after),
            state,
        }
    }
}

pub(super) fn refund(state: CounterState, cost: u64, now: Nanos) -> CounterState {
    if state.0[0] <= now {
        return state;
    }
    CounterState([state.0[0], state.0[1].saturating_sub(cost)])
}

pub(super) fn extend(state: CounterState, until: Nanos, now: Nanos) -> CounterState {
    if state.0[0] <= now || state.0[1] == 0 {
        return state;
    }
    CounterState([state.0[0].max(until), state.0[1]])
}

#[cfg(test)]
mod tests {
    use crate::algorithm::{CounterState, Limit};
    use crate::time::SECOND;

    #[test]
    fn slots_are_taken_only_with_a_deadline_and_free_when_it_passes() {
        let limit = Limit::concurrency(2).unwrap();
        let now = 100 * SECOND;
        let probe = limit.decide(CounterState::default(), 1, now);
        assert!(probe.allowed);
        assert_eq!(
            probe.state,
            CounterState::default(),
            "a probe takes nothing"
        );
        let held = limit.holding_until(now + 30 * SECOND);
        let a = held.decide(CounterState::default(), 1, now);
        let b = held.decide(a.state, 1, now);
        assert_eq!(b.remaining, 0);
        let c = held.decide(b.state, 1, now + SECOND);
        assert!(!c.allowed);
        assert_eq!(c.retry_after, Some(u128::from(29 * SECOND)));
        // Released one: a slot is free again.
        let freed = limit.refund(b.state, 1, now + SECOND);
        assert!(held.decide(freed, 1, now + SECOND).allowed);
        // Nobody released anything: at the deadline every slot is free.
        assert_eq!(limit.decide(b.state, 0, now + 30 * SECOND).remaining, 2);
    }
}
