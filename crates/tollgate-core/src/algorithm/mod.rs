//! Rate-limiting algorithms as pure functions of (state, limit, cost, now).
//!
//! A store keeps one [`CounterState`] per counter key and, under its own atomicity,
//! calls [`Limit::decide`]; the algorithm never reads a clock or touches memory it was not
//! given. That is what lets the in-memory store, a Redis script and the property tests
//! share one definition of "correct".

mod concurrency;
mod fixed_window;
mod gcra;
mod sliding_window;

use crate::time::{Nanos, SECOND, Span};

/// The domain every algorithm is exact over, in memory and in the Redis script alike
/// (`docs/design/rate-limiting.md`, "Domain"). A limit outside it is refused when built.
pub mod domain {
    use crate::time::{Nanos, SECOND, Span};

    /// Most requests per period, and most burst: Envoy's `requests_per_unit` is 32-bit.
    pub const MAX_REQUESTS: u64 = u32::MAX as u64;
    /// Longest period: a century (policies use a year at most).
    pub const MAX_PERIOD: Nanos = 100 * YEAR;
    /// Deepest GCRA bucket (`burst × period / requests`): a million years, beyond any
    /// policy and still exact in the Redis script's seconds.
    pub const MAX_GCRA_DEPTH: Span = 1_000_000 * YEAR as Span;
    /// Counts are exact up to 2^53 (the Redis script's doubles); a window that counts
    /// refused requests (envoy's counting) stops there.
    pub const MAX_COUNT: u64 = 1 << 53;
    /// Clock readings: from 1970 to 2262 (2^63 nanoseconds). Later GCRA times are kept in
    /// two words (see `gcra`), so a bucket may reach far past it.
    pub const MAX_NOW: Nanos = 1 << 63;
    /// A policy year: 365 days.
    pub const YEAR: Nanos = 31_536_000 * SECOND;
}

/// Which algorithm a limit uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Calendar-aligned fixed windows (envoyproxy/ratelimit's semantics, the default).
    FixedWindow,
    /// Generic cell rate algorithm: a token bucket with `rate` and `burst`, one timestamp of state.
    Gcra,
    /// Weighted two-window counter: a smooth approximation of a sliding window.
    SlidingWindow,
    /// A fixed window whose bounds the caller gives with each op (calendar days, weeks,
    /// months and years in a time zone; see [`crate::calendar`]).
    Quota,
    /// At most `max_in_flight` held at once: slots taken by leases and reservations
    /// ([`crate::hold`]) until released or expired; a plain check only asks if one is free.
    Concurrency,
}

impl Algorithm {
    /// The name used in policy files and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::FixedWindow => "fixed_window",
            Algorithm::Gcra => "gcra",
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::Quota => "quota",
            Algorithm::Concurrency => "concurrency",
        }
    }

    /// A stable small number that separates counters of different algorithms.
    pub(crate) fn tag(self) -> u8 {
        match self {
            Algorithm::FixedWindow => 1,
            Algorithm::Gcra => 2,
            Algorithm::SlidingWindow => 3,
            Algorithm::Quota => 4,
            Algorithm::Concurrency => 5,
        }
    }
}

/// The state a store keeps for one counter key: two machine words whose meaning belongs to
/// the algorithm. The all-zero state means "never seen".
///
/// Invariant, for every algorithm: word 0 is the time after which the state is equivalent
/// to a fresh one ([`CounterState::expires_at`]). Stores use it to drop idle counters
/// without keeping an expiry of their own. A GCRA time past [`domain::MAX_NOW`] sets word
/// 0's top bit (see `gcra`): such a state outlives every clock reading of the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct CounterState(pub [u64; 2]);

impl CounterState {
    /// After this time the state is as good as fresh and may be dropped.
    #[inline]
    pub fn expires_at(&self) -> Nanos {
        self.0[0]
    }
}

/// What an algorithm decided for one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Whether `cost` fits.
    pub allowed: bool,
    /// Requests still available after this decision (before it, when denied).
    pub remaining: u64,
    /// Nanoseconds until the counter is back to its full allowance, if nothing else arrives.
    pub reset_after: Span,
    /// When denied: nanoseconds until the same request would be admitted, if nothing else
    /// arrives. `None` when allowed, or when the request can never fit (cost above the limit).
    pub retry_after: Option<Span>,
    /// The state to store if this outcome is committed. Equal to the input state when denied.
    pub state: CounterState,
}

/// Why a limit could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The period is zero.
    #[error("the period must be longer than zero")]
    ZeroPeriod,
    /// `burst` was zero for a limit that admits requests.
    #[error("burst must be at least 1")]
    ZeroBurst,
    /// More requests per period than the domain holds.
    #[error("at most {max} requests per unit, got {got}", max = domain::MAX_REQUESTS)]
    TooManyRequests {
        /// The requested limit.
        got: u64,
    },
    /// A burst larger than the domain holds.
    #[error("burst must be at most {max}, got {got}", max = domain::MAX_REQUESTS)]
    BurstTooLarge {
        /// The requested burst.
        got: u64,
    },
    /// A period longer than the domain holds.
    #[error("the period must be at most 100 years")]
    PeriodTooLong,
    /// A GCRA bucket that takes longer than the domain holds to refill.
    #[error(
        "a gcra burst of {burst} at {requests} per unit refills in {years} years; at most \
         {max} years are allowed (burst x unit / requests_per_unit)",
        max = domain::MAX_GCRA_DEPTH / domain::YEAR as Span
    )]
    GcraTooDeep {
        /// The burst.
        burst: u64,
        /// The requests per period.
        requests: u64,
        /// Years to refill, rounded down.
        years: Span,
    },
}

/// A rate limit ready to decide: the algorithm with its parameters checked and its derived
/// constants computed once, off the decision path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    algorithm: Algorithm,
    requests: u64,
    period: Nanos,
    burst: u64,
    /// GCRA only: nanoseconds per request, rounded up so the rate is never exceeded.
    emission: Nanos,
    /// Set per decision: for a quota the start of the window `period` long that the op
    /// counts in ([`Limit::in_window`]); for a concurrency limit when a slot taken now
    /// is free again ([`Limit::holding_until`]; 0: a probe that takes nothing). For GCRA
    /// the debt an idle bucket restarts with ([`Limit::restarting_with`]; 0: full).
    at: Nanos,
}

impl Limit {
    /// At most `requests` per calendar-aligned window of `period` nanoseconds.
    pub fn fixed_window(requests: u64, period: Nanos) -> Result<Self, LimitError> {
        Self::build(Algorithm::FixedWindow, requests, period, requests)
    }

    /// A token bucket refilled at `requests` per `period`, holding at most `burst` tokens.
    pub fn gcra(requests: u64, period: Nanos, burst: u64) -> Result<Self, LimitError> {
        Self::build(Algorithm::Gcra, requests, period, burst)
    }

    /// About `requests` per rolling `period` (see the error bound in `docs/design/rate-limiting.md`).
    pub fn sliding_window(requests: u64, period: Nanos) -> Result<Self, LimitError> {
        Self::build(Algorithm::SlidingWindow, requests, period, requests)
    }

    /// At most `requests` per calendar window. `nominal` is the period's usual length
    /// (a 30-day month): each decision gives the actual window with [`Limit::in_window`].
    pub fn quota(requests: u64, nominal: Nanos) -> Result<Self, LimitError> {
        Self::build(Algorithm::Quota, requests, nominal, requests)
    }

    /// This quota limit counting in the window `[start, end)`; other algorithms are
    /// returned unchanged.
    pub fn in_window(mut self, start: Nanos, end: Nanos) -> Self {
        if self.algorithm == Algorithm::Quota {
            self.at = start;
            self.period = end.saturating_sub(start).max(1);
        }
        self
    }

    /// At most `max_in_flight` slots held at once (see [`Algorithm::Concurrency`]).
    pub fn concurrency(max_in_flight: u64) -> Result<Self, LimitError> {
        Self::build(Algorithm::Concurrency, max_in_flight, SECOND, max_in_flight)
    }

    /// This concurrency limit taking slots held until `deadline`; other algorithms are
    /// returned unchanged. Without it a concurrency op only asks whether a slot is free.
    pub fn holding_until(mut self, deadline: Nanos) -> Self {
        if self.algorithm == Algorithm::Concurrency {
            self.at = deadline;
        }
        self
    }

    /// This GCRA bucket, once idle (its TAT reached), restarting with `debt` nanoseconds
    /// already used instead of full, while a live bucket keeps its credit up to the
    /// whole burst: throttlecrab's `THROTTLE`, whose stored TAT outlives the moment its
    /// bucket refilled (see tollgate-data's `resp::crab`). The debt is capped at the
    /// burst; other algorithms are returned unchanged. Unlike other limits, a zero cost
    /// on an idle bucket changes its state: the restart is kept.
    pub fn restarting_with(mut self, debt: Nanos) -> Self {
        if self.algorithm == Algorithm::Gcra {
            let depth = Span::from(self.burst) * Span::from(self.emission);
            self.at = Nanos::try_from(Span::from(debt).min(depth)).unwrap_or(Nanos::MAX);
        }
        self
    }

    /// For GCRA, the debt an idle bucket restarts with ([`Limit::restarting_with`]); 0
    /// otherwise.
    pub fn restart_debt(&self) -> Nanos {
        if self.algorithm == Algorithm::Gcra {
            self.at
        } else {
            0
        }
    }

    /// For a concurrency op, until when the slots it takes are held; 0 otherwise.
    pub fn held_until(&self) -> Nanos {
        if self.algorithm == Algorithm::Concurrency {
            self.at
        } else {
            0
        }
    }

    /// The start of the window that holds `now`: aligned to the epoch for fixed and
    /// sliding windows, the given one for quotas.
    #[inline]
    pub fn window_of(&self, now: Nanos) -> Nanos {
        if self.algorithm == Algorithm::Quota {
            self.at
        } else {
            window_start(now, self.period)
        }
    }

    /// For a quota, the start of the window it counts in; 0 otherwise.
    pub fn window_start(&self) -> Nanos {
        if self.algorithm == Algorithm::Quota {
            self.at
        } else {
            0
        }
    }

    fn build(
        algorithm: Algorithm,
        requests: u64,
        period: Nanos,
        burst: u64,
    ) -> Result<Self, LimitError> {
        if period == 0 {
            return Err(LimitError::ZeroPeriod);
        }
        if burst == 0 && requests > 0 {
            return Err(LimitError::ZeroBurst);
        }
        if period > domain::MAX_PERIOD {
            return Err(LimitError::PeriodTooLong);
        }
        if requests > domain::MAX_REQUESTS {
            return Err(LimitError::TooManyRequests { got: requests });
        }
        if burst > domain::MAX_REQUESTS {
            return Err(LimitError::BurstTooLarge { got: burst });
        }
        let emission = if requests == 0 {
            0
        } else {
            period.div_ceil(requests)
        };
        let depth = Span::from(burst) * Span::from(emission);
        if algorithm == Algorithm::Gcra && depth > domain::MAX_GCRA_DEPTH {
            return Err(LimitError::GcraTooDeep {
                burst,
                requests,
                years: depth / Span::from(domain::YEAR),
            });
        }
        Ok(Self {
            algorithm,
            requests,
            period,
            burst,
            emission,
            at: 0,
        })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Requests per period (the refill rate for GCRA).
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The period in nanoseconds.
    pub fn period(&self) -> Nanos {
        self.period
    }

    /// GCRA's nanoseconds per request (`period / requests`, rounded up); 0 for a zero limit.
    pub fn emission(&self) -> Nanos {
        self.emission
    }

    /// The most requests admitted at once: `burst` for GCRA, the limit for windows.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Decides whether `cost` more requests fit, given the counter's `state` at time `now`.
    ///
    /// Pure: the caller commits `Outcome::state` only if the whole decision admits.
    /// A cost of zero reports what is left and changes no state, except that an idle
    /// bucket [restarting with a debt](Limit::restarting_with) restarts.
    #[inline]
    pub fn decide(&self, state: CounterState, cost: u64, now: Nanos) -> Outcome {
        if self.requests == 0 {
            // Nothing ever fits; a zero cost is admitted and reports nothing left.
            return Outcome {
                allowed: cost == 0,
                remaining: 0,
                reset_after: 0,
                retry_after: None,
                state,
            };
        }
        match self.algorithm {
            Algorithm::FixedWindow | Algorithm::Quota => {
                fixed_window::decide(self, state, cost, now)
            }
            Algorithm::Gcra => gcra::decide(self, state, cost, now),
            Algorithm::SlidingWindow => sliding_window::decide(self, state, cost, now),
            Algorithm::Concurrency => concurrency::decide(self, state, cost, now),
        }
    }
}

impl Limit {
    /// The state after counting `cost` whether it fits or not: envoyproxy/ratelimit's way
    /// of counting, where refused requests count too. Equal to `decide(..).state` when
    /// the request fits. A fixed or sliding window counts past its limit; a GCRA bucket is
    /// emptied but never goes into debt, so a refused burst cannot lock a client out for
    /// longer than one full refill.
    pub fn charge(&self, state: CounterState, cost: u64, now: Nanos) -> CounterState {
        let outcome = self.decide(state, cost, now);
        if outcome.allowed || cost == 0 {
            return outcome.state;
        }
        match self.algorithm {
            Algorithm::FixedWindow | Algorithm::Quota => {
                fixed_window::charge(self, state, cost, now)
            }
            Algorithm::Gcra => gcra::charge(self, state, cost, now),
            Algorithm::SlidingWindow => sliding_window::charge(self, state, cost, now),
            // A refused slot is not taken.
            Algorithm::Concurrency => state,
        }
    }
}

impl Limit {
    /// The state after giving back `cost` that an earlier decision took (a request admitted
    /// here but denied by another store, or leased tokens never spent). Never leaves more
    /// room than the counter had before that decision; a window that has since ended
    /// keeps nothing to give back.
    pub fn refund(&self, state: CounterState, cost: u64, now: Nanos) -> CounterState {
        if cost == 0 || state == CounterState::default() {
            return state;
        }
        match self.algorithm {
            Algorithm::FixedWindow | Algorithm::Quota => {
                fixed_window::refund(self, state, cost, now)
            }
            Algorithm::Gcra => gcra::refund(self, state, cost, now),
            Algorithm::SlidingWindow => sliding_window::refund(self, state, cost, now),
            Algorithm::Concurrency => concurrency::refund(state, cost, now),
        }
    }

    /// Takes up to `want` at once for a node to spend locally (`consistency: leased`):
    /// as much as fits, possibly nothing. With nothing granted the outcome is the denial of
    /// `want` (capped at the burst), whose `retry_after` says when a full lease fits.
    pub fn lease(&self, state: CounterState, want: u64, now: Nanos) -> (u64, Outcome) {
        let room = self.decide(state, 0, now).remaining;
        let granted = want.min(room);
        if granted == 0 {
            return (0, self.decide(state, want.clamp(1, self.burst.max(1)), now));
        }
        (granted, self.decide(state, granted, now))
    }

    /// How long tokens leased at `now` may be spent: to the end of the current window for
    /// window algorithms (they were counted in it), a whole period for GCRA (they were
    /// taken from the bucket already; the caller caps it further).
    pub fn lease_valid_for(&self, now: Nanos) -> Nanos {
        match self.algorithm {
            Algorithm::Gcra | Algorithm::Concurrency => self.period,
            Algorithm::FixedWindow | Algorithm::SlidingWindow | Algorithm::Quota => self
                .window_of(now)
                .saturating_add(self.period)
                .saturating_sub(now),
        }
    }

    /// The same limit for one of `nodes` nodes that split it: requests and burst divided,
    /// at least 1 each (a zero limit stays zero). Used by `on_store_error: local`.
    pub fn divided(&self, nodes: u64) -> Limit {
        if nodes <= 1 || self.requests == 0 {
            return *self;
        }
        let requests = (self.requests / nodes).max(1);
        let burst = (self.burst / nodes).max(1);
        let at = self.at;
        Self::build(self.algorithm, requests, self.period, burst)
            .map(|l| Self { at, ..l })
            .unwrap_or(*self)
    }
}

impl Limit {
    /// The state of this limit's counter from its parts as a store that keeps no machine
    /// words holds them (the Redis script): the expiry time of word 0 (for GCRA the
    /// theoretical arrival time, which may lie past [`Nanos`]) and the algorithm's two
    /// counts.
    pub fn state_from_parts(&self, expiry: Span, a: u64, b: u64) -> CounterState {
        let word0 = Nanos::try_from(expiry).unwrap_or(Nanos::MAX);
        match self.algorithm {
            Algorithm::FixedWindow | Algorithm::Quota | Algorithm::Concurrency => {
                CounterState([word0, a])
            }
            Algorithm::Gcra => gcra::state_at(expiry),
            Algorithm::SlidingWindow => CounterState([word0, (a << 32) | (b & 0xffff_ffff)]),
        }
    }

    /// The expiry time of `state` (for GCRA the whole theoretical arrival time), the
    /// inverse of [`Limit::state_from_parts`].
    pub fn expiry_of(&self, state: CounterState) -> Span {
        match self.algorithm {
            Algorithm::Gcra => gcra::tat(state),
            Algorithm::FixedWindow
            | Algorithm::SlidingWindow
            | Algorithm::Quota
            | Algorithm::Concurrency => Span::from(state.0[0]),
        }
    }
}

impl Limit {
    /// The state after charging `cost` more to a counter whether it fits or not, as a
    /// commit does for what a reservation used beyond its estimate. Windows count it past
    /// their limit until they end; a GCRA bucket goes into debt, at most one full bucket
    /// past empty, so later requests wait until it is paid off (two full refills at
    /// most); a concurrency limit is unchanged (a commit frees its slots instead).
    pub fn force(&self, state: CounterState, cost: u64, now: Nanos) -> CounterState {
        if cost == 0 || self.requests == 0 {
            return state;
        }
        match self.algorithm {
            Algorithm::FixedWindow | Algorithm::Quota => {
                fixed_window::charge(self, state, cost, now)
            }
            Algorithm::SlidingWindow => sliding_window::charge(self, state, cost, now),
            Algorithm::Gcra => gcra::force(self, state, cost, now),
            Algorithm::Concurrency => state,
        }
    }

    /// The state after the slots of a hold are kept until `until`: a concurrency
    /// counter's expiry moves out to it; other counters are unchanged.
    pub fn extend(&self, state: CounterState, until: Nanos, now: Nanos) -> CounterState {
        match self.algorithm {
            Algorithm::Concurrency => concurrency::extend(state, until, now),
            _ => state,
        }
    }
}

/// Start of the calendar-aligned window of length `period` that contains `now`.
#[inline]
fn window_start(now: Nanos, period: Nanos) -> Nanos {
    now - now % period
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::SECOND;

    #[test]
    fn zero_period_is_rejected() {
        assert_eq!(Limit::fixed_window(1, 0), Err(LimitError::ZeroPeriod));
        assert_eq!(Limit::gcra(1, 0, 1), Err(LimitError::ZeroPeriod));
    }

    #[test]
    fn zero_burst_is_rejected_for_gcra() {
        assert_eq!(Limit::gcra(10, 1, 0), Err(LimitError::ZeroBurst));
    }

    #[test]
    fn limits_outside_the_domain_are_refused() {
        let year = domain::YEAR;
        for build in [Limit::fixed_window, Limit::sliding_window] {
            assert!(matches!(
                build(domain::MAX_REQUESTS + 1, SECOND),
                Err(LimitError::TooManyRequests { .. })
            ));
            assert!(build(domain::MAX_REQUESTS, year).is_ok());
            assert_eq!(
                build(1, domain::MAX_PERIOD + 1),
                Err(LimitError::PeriodTooLong)
            );
        }
        assert!(matches!(
            Limit::gcra(1, SECOND, domain::MAX_REQUESTS + 1),
            Err(LimitError::BurstTooLarge { .. })
        ));
        // A thousand years deep is inside; a million and one is not.
        assert!(Limit::gcra(1, year, 1_000).is_ok());
        assert!(Limit::gcra(1, year, 1_000_000).is_ok());
        let err = Limit::gcra(1, year, 1_000_001).unwrap_err();
        assert_eq!(
            err,
            LimitError::GcraTooDeep {
                burst: 1_000_001,
                requests: 1,
                years: 1_000_001
            }
        );
        assert!(err.to_string().contains("at most 1000000 years"), "{err}");
        // The fastest rate with the largest burst is a few seconds deep.
        assert!(Limit::gcra(domain::MAX_REQUESTS, SECOND, domain::MAX_REQUESTS).is_ok());
    }

    #[test]
    fn zero_requests_always_denies_and_never_changes_state() {
        for limit in [
            Limit::fixed_window(0, 1_000).unwrap(),
            Limit::gcra(0, 1_000, 0).unwrap(),
            Limit::sliding_window(0, 1_000).unwrap(),
        ] {
            let state = CounterState([7, 9]);
            let out = limit.decide(state, 1, 12_345);
            assert!(!out.allowed, "{:?}", limit.algorithm());
            assert_eq!(out.retry_after, None);
            assert_eq!(out.state, state);
        }
    }
}
