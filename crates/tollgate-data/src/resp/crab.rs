//! throttlecrab-server's `THROTTLE key max_burst count_per_period period [quantity]`,
//! answered as its RESP transport (0.4.40) answers it: five integers, allowed (1/0),
//! limit (= max_burst), remaining, reset after and retry after (whole seconds, truncated;
//! retry 0 when allowed).
//!
//! throttlecrab's GCRA (emission `T = period / count` through `f64`, tolerance
//! `τ = T·(max_burst − 1)`) starts a key with its TAT at `now − T` and keeps the stored TAT
//! until `τ` past it. So a key that idled for between `T` and `τ` past its TAT holds up to
//! `2·max_burst − 1` while a fresh one holds `max_burst`. That is the core's GCRA with a
//! burst of `2τ/T` whose idle bucket restarts `τ − T` used ([`Limit::restarting_with`]),
//! its TAT shifted by `τ`, which is how Tollgate decides it, on the configured store.
//! Two of throttlecrab's cases need no state: a rate too fast for whole nanoseconds
//! (`T = 0`: everything passes, nothing remains) and `max_burst` 1 (`τ = 0`: the TAT
//! expires the moment it is written, so every call answers like a fresh key's first).
//! Not reproduced: after a zero-quantity call at `max_burst` 1, throttlecrab's store keeps
//! that key forever and refuses it; and parameters past what its 64-bit nanoseconds hold
//! (a bucket deeper than 146 years), which Tollgate refuses with an error naming them.

use tollgate_core::algorithm::{Limit, Outcome};

/// throttlecrab wraps its library's errors in this (`anyhow` context, then `ERR `).
const FAILED: &str = "ERR Rate limit check failed: ";

/// Beyond this many nanoseconds (146 years) of bucket, throttlecrab's sums on
/// `now` saturate: refused rather than answered with what saturation gives.
const ROOM: i128 = 1 << 62;

/// One parsed `THROTTLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrabThrottle {
    /// Decided on the store.
    Stored(Stored),
    /// Answered without state (see the module's doc).
    Stateless([i64; 5]),
}

/// A `THROTTLE` decided on the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The limit that decides: burst `2τ/T`, restarting `τ − T` used.
    pub limit: Limit,
    /// Units this call takes (0 peeks).
    pub quantity: u64,
    /// `max_burst`, the reply's second integer.
    max_burst: i64,
    /// Nanoseconds per unit.
    emission: i128,
    /// `τ` in nanoseconds.
    tolerance: i128,
}

impl CrabThrottle {
    /// Parses the arguments after the command name. Errors are the reply's text.
    pub fn parse(args: &[&[u8]]) -> Result<Self, String> {
        if args.len() != 4 && args.len() != 5 {
            return Err("ERR wrong number of arguments for 'throttle' command".into());
        }
        let max_burst = integer(args[1]).ok_or("ERR invalid max_burst")?;
        let count = integer(args[2]).ok_or("ERR invalid count_per_period")?;
        let period = integer(args[3]).ok_or("ERR invalid period")?;
        let quantity = match args.get(4) {
            Some(q) => integer(q).ok_or("ERR invalid quantity")?,
            None => 1,
        };
        if quantity < 0 {
            return Err(format!("{FAILED}negative quantity: {quantity}"));
        }
        if max_burst <= 0 || count <= 0 || period <= 0 {
            return Err(format!("{FAILED}invalid rate limit parameters"));
        }
        // throttlecrab: `Rate::from_count_and_period`, then `T · (max_burst − 1) as u32`.
        let emission = (period as f64 * 1_000_000_000.0 / count as f64) as u64;
        let steps = u64::from((max_burst - 1) as u32);
        let emission = i128::from(emission);
        let tolerance = emission * i128::from(steps);
        let q = i128::from(quantity);
        if emission == 0 {
            // Every TAT is `now`: everything passes and nothing is ever left.
            return Ok(Self::Stateless([1, max_burst, 0, 0, 0]));
        }
        if 2 * tolerance + emission > ROOM {
            return Err(format!(
                "{FAILED}a bucket of {max_burst} at {emission} ns each is deeper than 146 years"
            ));
        }
        if tolerance == 0 {
            // The TAT of `now − T` a fresh key starts from, every time.
            let debt = (q - 1) * emission;
            return Ok(Self::Stateless(if quantity <= 1 {
                [1, max_burst, 1 - quantity, seconds(debt.max(0)), 0]
            } else {
                [0, max_burst, 1, 0, seconds(debt.min(i128::from(i64::MAX)))]
            }));
        }
        let burst = 2 * steps;
        let limit = Limit::gcra(1, emission as u64, burst)
            .map_err(|e| format!("{FAILED}{e} (max_burst {max_burst}, {count} per {period} s)"))?
            .restarting_with((tolerance - emission) as u64);
        Ok(Self::Stored(Stored {
            limit,
            quantity: quantity as u64,
            max_burst,
            emission,
            tolerance,
        }))
    }
}

impl Stored {
    /// The reply given what the store decided at about `now()` (nanoseconds since the
    /// epoch, read only for a denial, whose retry past 2262 depends on it). The core's
    /// `reset_after` is the shifted TAT less now: `y = tat − now + τ` after an
    /// admission, or as it stands after a denial.
    pub fn reply(&self, outcome: &Outcome, now: impl FnOnce() -> u64) -> [i64; 5] {
        let (t, tau) = (self.emission, self.tolerance);
        let y = outcome.reset_after as i128;
        // throttlecrab: (now + τ − tat) / T, at least 0.
        let remaining = ((2 * tau - y) / t).max(0);
        let retry = if outcome.allowed {
            0
        } else {
            // allow_at − now, in throttlecrab's saturating 64-bit sums.
            let (now, top) = (i128::from(now()), i128::from(i64::MAX));
            let increment = (t * i128::from(self.quantity)).min(top);
            let new_tat = (now + y - tau + increment).min(top);
            (new_tat - tau - now).max(0)
        };
        [
            i64::from(outcome.allowed),
            self.max_burst,
            i64::try_from(remaining).unwrap_or(i64::MAX),
            seconds(y.max(0)),
            seconds(retry),
        ]
    }
}

/// throttlecrab's integers: Rust's `i64` parse (an optional sign, digits).
fn integer(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// Whole seconds, truncated (`Duration::as_secs`).
fn seconds(ns: i128) -> i64 {
    i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::spread;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    use throttlecrab::{PeriodicStore, RateLimiter};
    use tollgate_core::algorithm::CounterState;

    fn parse(parts: &[&str]) -> Result<CrabThrottle, String> {
        let borrowed: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        CrabThrottle::parse(&borrowed)
    }

    /// Tollgate's answer, on a core state kept between calls.
    fn answer(state: &mut CounterState, parts: &[&str], now: u64) -> Result<[i64; 5], String> {
        Ok(match parse(parts)? {
            CrabThrottle::Stateless(reply) => reply,
            CrabThrottle::Stored(s) => {
                let out = s.limit.decide(*state, s.quantity, now);
                if out.allowed {
                    *state = out.state;
                }
                s.reply(&out, || now)
            }
        })
    }

    /// throttlecrab's own answer, from its published library, as its server shapes it.
    fn upstream(
        limiter: &mut RateLimiter<PeriodicStore>,
        (burst, count, period, quantity): (i64, i64, i64, i64),
        now: u64,
    ) -> Result<[i64; 5], String> {
        let at = UNIX_EPOCH + Duration::from_nanos(now);
        match limiter.rate_limit("k", burst, count, period, quantity, at) {
            Ok((allowed, r)) => Ok([
                i64::from(allowed),
                r.limit,
                r.remaining,
                r.reset_after.as_secs() as i64,
                r.retry_after.as_secs() as i64,
            ]),
            Err(e) => Err(format!("{FAILED}{e}")),
        }
    }

    #[test]
    fn the_readmes_example_answers_as_throttlecrab_documents() {
        // `THROTTLE user:123 10 100 60` on a fresh key: allowed, limit 10, 9 left.
        let mut state = CounterState::default();
        let now = 1_795_000_000_000_000_000;
        let reply = answer(&mut state, &["user:123", "10", "100", "60"], now).unwrap();
        assert_eq!(&reply[..3], &[1, 10, 9]);
    }

    #[test]
    fn an_idle_key_holds_more_than_a_fresh_one_as_in_throttlecrab() {
        // 10 per 10 s, max_burst 10: one call, then 5 s idle leaves 13 (fresh: 9).
        let mut state = CounterState::default();
        let t0 = 1_795_000_000_000_000_000u64;
        assert_eq!(
            answer(&mut state, &["k", "10", "10", "10"], t0).unwrap()[2],
            9
        );
        let later = answer(&mut state, &["k", "10", "10", "10"], t0 + 5_000_000_000).unwrap();
        let mut crab = RateLimiter::new(PeriodicStore::new());
        upstream(&mut crab, (10, 10, 10, 1), t0).unwrap();
        let expected = upstream(&mut crab, (10, 10, 10, 1), t0 + 5_000_000_000).unwrap();
        assert_eq!(later, expected);
        assert_eq!(later[2], 13);
    }

    #[test]
    fn bad_arguments_get_throttlecrabs_messages() {
        assert_eq!(
            parse(&["k", "1", "2"]).unwrap_err(),
            "ERR wrong number of arguments for 'throttle' command"
        );
        assert_eq!(
            parse(&["k", "x", "2", "3"]).unwrap_err(),
            "ERR invalid max_burst"
        );
        assert_eq!(
            parse(&["k", "1", "2.5", "3"]).unwrap_err(),
            "ERR invalid count_per_period"
        );
        assert_eq!(
            parse(&["k", "1", "2", ""]).unwrap_err(),
            "ERR invalid period"
        );
        assert_eq!(
            parse(&["k", "1", "2", "3", "q"]).unwrap_err(),
            "ERR invalid quantity"
        );
        let mut crab = RateLimiter::new(PeriodicStore::new());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        for (parts, params) in [
            (["k", "1", "2", "3", "-1"], (1, 2, 3, -1)),
            (["k", "0", "2", "3", "1"], (0, 2, 3, 1)),
            (["k", "1", "-2", "3", "1"], (1, -2, 3, 1)),
            (["k", "1", "2", "0", "1"], (1, 2, 0, 1)),
        ] {
            assert_eq!(
                parse(&parts).unwrap_err(),
                upstream(&mut crab, params, now).unwrap_err()
            );
        }
    }

    #[test]
    fn a_bucket_deeper_than_throttlecrabs_nanoseconds_hold_is_refused_by_name() {
        let err = parse(&["k", "1000", "1", "31536000"]).unwrap_err();
        assert!(err.contains("deeper than 146 years"), "{err}");
    }

    proptest::proptest! {
        /// Every reply over a random sequence of calls equals throttlecrab's own library's
        /// (0.4.40, the code its server runs) at real magnitudes: bursts from 1 to a
        /// million, rates from one a year to a million a second, quantities from 0 to
        /// past twice the burst, gaps from nothing to an hour.
        #[test]
        fn replies_match_throttlecrabs_library(
            max_burst in spread([(1, 10), (10, 1_000), (1_000, 1_000_000)]),
            count in spread([(1, 10), (10, 1_000), (1_000, 1_000_000)]),
            period in spread([(1, 60), (60, 86_400), (86_400, 31_536_000)]),
            calls in proptest::collection::vec((0i64..220, 0u64..3_600_000_000_000), 1..40),
        ) {
            let (b, c, p) = (max_burst.to_string(), count.to_string(), period.to_string());
            proptest::prop_assume!(parse(&["k", &b, &c, &p]).is_ok(), "past 146 years");
            let mut crab = RateLimiter::new(PeriodicStore::new());
            let mut state = CounterState::default();
            let mut now: u64 = 1_795_000_000_000_000_000;
            for (share, gap) in calls {
                now += gap;
                // At max_burst 1 a zero quantity makes throttlecrab refuse the key
                // forever (the module's doc): not drawn.
                let quantity = (share * max_burst / 100).max(i64::from(max_burst == 1));
                let q = quantity.to_string();
                let got = answer(&mut state, &["k", &b, &c, &p, &q], now);
                let expected = upstream(&mut crab, (max_burst, count, period, quantity), now);
                proptest::prop_assert_eq!(got, expected, "quantity {} at {}", quantity, now);
            }
        }
    }
}
