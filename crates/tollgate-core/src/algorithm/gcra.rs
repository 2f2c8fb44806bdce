//! GCRA (generic cell rate algorithm): token-bucket semantics with a single timestamp of
//! state, the "theoretical arrival time" (TAT) of the next request.
//!
//! With emission interval `T = period / requests` (rounded up), a request of cost `n` is
//! admitted at time `now` when `used + n·T ≤ burst·T`, where `used = max(tat, now) − now`
//! is the time the bucket needs to be full again; then `tat ← max(tat, now) + n·T`.
//!
//! Exact over the whole domain (`super::domain`): a bucket of 1,000 at 1 per year is 1,000
//! years deep, past what 64-bit nanoseconds hold, so the arithmetic runs in 128 bits.
//! State word 0 is the TAT while it is below 2^63 ns (2262) and word 1 is 0; a later TAT
//! keeps its high bits in word 0 under the top bit and its low 64 bits in word 1. Either
//! way word 0 is at least the TAT as far as 64 bits can tell, which is what
//! [`CounterState::expires_at`] needs.

use super::{CounterState, Limit, Outcome};
use crate::time::{Nanos, Span};

const WIDE: u64 = 1 << 63;

/// The TAT a state holds (0 for a fresh one).
#[inline]
pub(super) fn tat(state: CounterState) -> Span {
    let [word0, word1] = state.0;
    if word0 & WIDE == 0 {
        Span::from(word0)
    } else {
        (Span::from(word0 & !WIDE) << 64) | Span::from(word1)
    }
}

/// The state holding `tat` (below 2^127 ns, which the domain keeps far away).
#[inline]
pub(super) fn state_at(tat: Span) -> CounterState {
    match u64::try_from(tat) {
        Ok(word0) if word0 & WIDE == 0 => CounterState([word0, 0]),
        _ => CounterState([WIDE | (tat >> 64) as u64, tat as u64]),
    }
}

/// ⌈a / b⌉ for b > 0, in 64 bits when `a` fits (every bucket under 584 years deep).
#[inline]
fn div_ceil(a: Span, b: u64) -> Span {
    match u64::try_from(a) {
        Ok(a) => Span::from(a.div_ceil(b)),
        Err(_) => a.div_ceil(Span::from(b)),
    }
}

/// The TAT a decision at `now` starts from: `now` for a bucket that has refilled (its TAT
/// passed), or `now` plus the restart debt once its TAT is reached
/// ([`Limit::restarting_with`]).
#[inline]
fn live_tat(limit: &Limit, stored: Span, now: Span) -> Span {
    if limit.at == 0 {
        stored.max(now)
    } else if stored <= now {
        now + Span::from(limit.at)
    } else {
        stored
    }
}

pub(super) fn decide(limit: &Limit, state: CounterState, cost: u64, now: Nanos) -> Outcome {
    let t = Span::from(limit.emission);
    let burst = limit.burst;
    let now_wide = Span::from(now);
    let stored = tat(state);
    let tat = live_tat(limit, stored, now_wide);
    let used = tat - now_wide;
    let mut retry_after = None;
    if cost <= burst {
        let room = Span::from(burst - cost) * t;
        if used <= room {
            let took = Span::from(cost) * t;
            // used ≤ (burst − cost)·T, so ⌈used / T⌉ ≤ burst − cost.
            let remaining = burst - cost - div_ceil(used, limit.emission) as u64;
            return Outcome {
                allowed: true,
                remaining,
                reset_after: used + took,
                retry_after: None,
                state: if cost == 0 && (limit.at == 0 || stored > now_wide) {
                    state
                } else {
                    state_at(tat + took)
                },
            };
        }
        retry_after = Some(used - room);
    }
    let remaining = if used >= Span::from(burst) * t {
        0
    } else {
        // used < burst·T, so ⌈used / T⌉ ≤ burst.
        burst - div_ceil(used, limit.emission) as u64
    };
    Outcome {
        allowed: false,
        remaining,
        reset_after: used,
        retry_after,
        state,
    }
}

/// Gives back `cost` emission intervals, never more than a burst (a refund restores at
/// most a full bucket).
pub(super) fn refund(limit: &Limit, state: CounterState, cost: u64, now: Nanos) -> CounterState {
    let stored = tat(state);
    let back =
        stored.saturating_sub(Span::from(cost.min(limit.burst)) * Span::from(limit.emission));
    // Below `now` every value means "full"; keep `now` so the state stays recognisably live.
    state_at(back.max(Span::from(now).min(stored)))
}

/// Charges `cost` whatever the room, into debt down to one full bucket past empty (a
/// commit's overage): `tat ≤ now + 2 × burst × T`.
pub(super) fn force(limit: &Limit, state: CounterState, cost: u64, now: Nanos) -> CounterState {
    let t = Span::from(limit.emission);
    let stored = tat(state);
    let now_wide = Span::from(now);
    let floor = now_wide + 2 * Span::from(limit.burst) * t;
    let charged = live_tat(limit, stored, now_wide) + Span::from(cost.min(2 * limit.burst)) * t;
    state_at(charged.min(floor).max(stored))
}

/// A refused request empties the bucket, without going into debt.
pub(super) fn charge(limit: &Limit, state: CounterState, cost: u64, now: Nanos) -> CounterState {
    let t = Span::from(limit.emission);
    let stored = tat(state);
    let now_wide = Span::from(now);
    let full_debt = now_wide + Span::from(limit.burst) * t;
    let tat = if cost > limit.burst {
        full_debt
    } else {
        (live_tat(limit, stored, now_wide) + Span::from(cost) * t).min(full_debt)
    };
    state_at(tat.max(stored))
}

#[cfg(test)]
mod tests {
    use super::{state_at, tat};
    use crate::algorithm::{CounterState, Limit, domain};
    use crate::time::{SECOND, Span};

    #[test]
    fn a_bucket_restarting_with_a_debt_keeps_its_credit_only_while_live() {
        // Burst 8 at 1 per second, restarting 3 s used: a fresh bucket holds 5, a live
        // one up to 8, and an idle one restarts at 5 again.
        let limit = Limit::gcra(1, SECOND, 8)
            .unwrap()
            .restarting_with(3 * SECOND);
        let now = 1_000 * SECOND;
        let fresh = limit.decide(CounterState::default(), 1, now);
        assert_eq!((fresh.allowed, fresh.remaining), (true, 4));
        // Its TAT is now + 4 s: 3 s later the bucket is live with 7 of 8 left.
        let live = limit.decide(fresh.state, 0, now + 3 * SECOND);
        assert_eq!(live.remaining, 7);
        assert_eq!(
            live.state, fresh.state,
            "a peek on a live bucket changes nothing"
        );
        // At its TAT it restarts; a peek keeps the restart.
        let idle = limit.decide(fresh.state, 0, now + 4 * SECOND);
        assert_eq!(idle.remaining, 5);
        assert_eq!(tat(idle.state), Span::from(now + 7 * SECOND));
        // Without a debt a bucket at its TAT is full, and the same peek keeps nothing.
        let plain = Limit::gcra(1, SECOND, 8).unwrap();
        let full = plain.decide(fresh.state, 0, now + 4 * SECOND);
        assert_eq!((full.remaining, full.state), (8, fresh.state));
    }

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
        assert_eq!(denied.retry_after, Some(Span::from(SECOND / 10)));
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

    #[test]
    fn a_thousand_years_deep_bucket_admits_its_burst_exactly() {
        // 1 per year, burst 1,000: the bucket is 1,000 years deep, past 64-bit nanoseconds.
        let year = domain::YEAR;
        let limit = Limit::gcra(1, year, 1_000).unwrap();
        let now = 1_795_000_000 * SECOND;
        let mut state = CounterState::default();
        let mut admitted = 0;
        for i in 0..1_005u64 {
            let out = limit.decide(state, 1, now);
            if out.allowed {
                admitted += 1;
                state = out.state;
                assert_eq!(out.remaining, 999 - i);
                assert_eq!(out.reset_after, Span::from(i + 1) * Span::from(year));
            } else {
                assert_eq!(out.remaining, 0);
                assert_eq!(out.reset_after, 1_000 * Span::from(year));
                assert_eq!(out.retry_after, Some(Span::from(year)));
            }
        }
        assert_eq!(admitted, 1_000);
        // The TAT is past 2262, so it lives in two words, and nothing sweeps it early.
        assert_eq!(tat(state), Span::from(now) + 1_000 * Span::from(year));
        assert!(state.expires_at() >= domain::MAX_NOW);
        // A year later exactly one more fits.
        let later = now + year;
        let next = limit.decide(state, 1, later);
        assert!(next.allowed);
        assert!(!limit.decide(next.state, 1, later).allowed);
    }

    #[test]
    fn wide_times_round_trip_through_the_state_words() {
        for t in [
            0,
            1,
            (1u128 << 63) - 1,
            1 << 63,
            u128::from(u64::MAX),
            1 << 100,
            (1 << 127) - 1,
        ] {
            assert_eq!(tat(state_at(t)), t, "{t}");
            assert!(u128::from(state_at(t).expires_at()) >= t.min(u128::from(domain::MAX_NOW)));
        }
        assert_eq!(state_at(5), CounterState([5, 0]));
    }
}
