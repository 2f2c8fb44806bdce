//! redis-cell's `CL.THROTTLE key max_burst count period [quantity]`, answered as redis-cell
//! answers it.
//!
//! redis-cell's GCRA admits exactly what Tollgate's does with `burst = max_burst + 1` and
//! its own emission interval (`period / count` in nanoseconds, truncated through `f64`),
//! so the decision is the core's [`Limit::gcra`] on the store, and only the reply is
//! computed here, with redis-cell's own roundings: `remaining` from whole microseconds
//! through `f64`, and each time in whole seconds as the [`CellRelease`] answered as puts
//! them: truncated, as the module on crates.io (0.2.2) and the 0.3 releases do, or rounded
//! up, as the releases since 0.4.0 do. Tollgate refuses what redis-cell computes nonsense
//! for (a zero or negative rate, a negative burst or quantity) with an error naming it; a
//! zero rate gets the newer releases' own words for it.

use tollgate_core::algorithm::{Limit, Outcome};

/// One parsed `CL.THROTTLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// The limit that decides.
    pub limit: Limit,
    /// Units this call takes (0 peeks).
    pub quantity: u64,
    /// redis-cell's `max_burst + 1`, the reply's second integer.
    pub cell_limit: i64,
    /// Nanoseconds per unit.
    pub emission: i64,
}

/// The five integers of the reply.
pub type Reply = [i64; 5];

/// Which of redis-cell's releases `CL.THROTTLE` answers as. They decide alike and differ
/// in two details of the reply: how its times are put in whole seconds, and the words
/// before an error's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
pub enum CellRelease {
    /// 0.2, the module published on crates.io (0.2.2): times truncated (1.9 s is 1),
    /// errors `Cell error: <message>`.
    #[default]
    #[value(name = "0.2")]
    #[serde(rename = "0.2")]
    V0_2,
    /// 0.3 (GitHub releases, 2021–2023): times truncated, errors
    /// `Cell error: Store error: <message>`.
    #[value(name = "0.3")]
    #[serde(rename = "0.3")]
    V0_3,
    /// 0.4.0 and later (GitHub releases; 0.5.0 the newest): times rounded up when their
    /// fraction has whole milliseconds, so that a caller never retries too early (1.9 s
    /// is 2), errors `Cell error: Store error: <message>`.
    #[value(name = "0.4")]
    #[serde(rename = "0.4")]
    V0_4,
}

impl CellRelease {
    /// `ns` in whole seconds, as this release puts them.
    pub fn seconds(self, ns: i128) -> i64 {
        match self {
            // `time` 0.1's `Duration::num_seconds`.
            Self::V0_2 | Self::V0_3 => (ns / 1_000_000_000) as i64,
            // `as_seconds_f64() as i64`, plus one when `subsec_milliseconds() > 0` (a
            // fraction under a millisecond is not rounded; nor, through f64, is what
            // rounds to the next second by itself).
            Self::V0_4 => {
                let (whole, fraction) = (ns / 1_000_000_000, ns % 1_000_000_000);
                let seconds = (whole as f64 + fraction as f64 / 1e9) as i64;
                seconds + i64::from(fraction / 1_000_000 > 0)
            }
        }
    }

    /// The error reply's text for `message`, in this release's words.
    pub fn error(self, message: &str) -> String {
        match self {
            Self::V0_2 => format!("Cell error: {message}"),
            // From 0.3 on, the module shows its error's `Display`, which adds these words.
            Self::V0_3 | Self::V0_4 => format!("Cell error: Store error: {message}"),
        }
    }
}

impl Throttle {
    /// Parses the arguments after the command name. An error is the message that
    /// [`CellRelease::error`] puts in the reply.
    pub fn parse(args: &[&[u8]]) -> Result<Self, String> {
        if args.len() != 4 && args.len() != 5 {
            return Err(
                "Usage: cl.throttle <key> <max_burst> <count per period> <period> [<quantity>]"
                    .to_string(),
            );
        }
        let max_burst = integer(args[1])?;
        let count = integer(args[2])?;
        let period = integer(args[3])?;
        let quantity = args.get(4).map_or(Ok(1), |q| integer(q))?;
        // redis-cell: `Duration::seconds(period)` in nanoseconds, divided as f64, truncated.
        let period_ns = i128::from(period) * 1_000_000_000;
        let emission = if count == 0 || period_ns == 0 {
            0
        } else {
            (period_ns as f64 / count as f64) as i64
        };
        if emission == 0 {
            return Err("Zero rates are not supported".to_string());
        }
        // What redis-cell computes without complaint but no rate limit means: Tollgate
        // refuses it by name instead of answering with its arithmetic's accidents.
        if emission < 0 {
            return Err(format!(
                "count per period and period must be positive (Tollgate refuses {count} per {period} s)"
            ));
        }
        if max_burst < 0 {
            return Err(format!(
                "max_burst must not be negative (Tollgate refuses {max_burst})"
            ));
        }
        if quantity < 0 {
            return Err(format!(
                "quantity must not be negative (Tollgate refuses {quantity})"
            ));
        }
        // redis-cell keeps times in signed 64-bit nanoseconds (now is about 2^60.6): past
        // 2^61 (73 years) for the bucket or for one call's cost, its sums would overflow.
        const ROOM: i128 = 1 << 61;
        if i128::from(emission) * (i128::from(max_burst) + 1) > ROOM {
            return Err(format!(
                "a bucket of {} at {emission} ns each is deeper than 73 years",
                i128::from(max_burst) + 1
            ));
        }
        if i128::from(emission) * i128::from(quantity) > ROOM {
            return Err(format!(
                "quantity {quantity} at {emission} ns each is more than 73 years"
            ));
        }
        let burst = max_burst as u64 + 1;
        let limit = Limit::gcra(1, emission as u64, burst)
            .map_err(|e| format!("{e} (max_burst {max_burst}, {count} per {period} s)"))?;
        Ok(Self {
            limit,
            quantity: quantity as u64,
            cell_limit: max_burst + 1,
            emission,
        })
    }

    /// The reply to this call given what the store decided: limited (0/1), limit,
    /// remaining, retry after (s, -1 when allowed or never), reset after (s).
    pub fn reply(&self, outcome: &Outcome, release: CellRelease) -> Reply {
        let t = i128::from(self.emission);
        let dvt = t * i128::from(self.cell_limit);
        // redis-cell's `ttl`: the TAT after an admission, or as it stands after a denial,
        // less now; the core reports exactly that as `reset_after`.
        let ttl = outcome.reset_after as i128;
        let retry = match (outcome.allowed, outcome.retry_after) {
            (false, Some(after)) => after as i128,
            _ => -1_000_000_000,
        };
        let next = dvt - ttl;
        let remaining = if next > -t {
            // Duration::whole_microseconds truncates toward zero, like integer division.
            ((next / 1_000) as f64 / (t / 1_000) as f64) as i64
        } else {
            0
        };
        [
            i64::from(!outcome.allowed),
            self.cell_limit,
            remaining,
            release.seconds(retry),
            release.seconds(ttl),
        ]
    }
}

/// redis-cell's integers: digits only, an optional sign, within i64.
fn integer(arg: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            format!(
                "Couldn't parse as integer: {}",
                String::from_utf8_lossy(&arg[..arg.len().min(64)])
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::spread;
    use tollgate_core::algorithm::CounterState;

    /// A straight restatement of redis-cell's `rate_limit` over one stored TAT, in its
    /// own arithmetic (signed nanoseconds), with the reply's roundings: the model the
    /// answers are checked against.
    struct Cell {
        tat: Option<i64>,
    }

    impl Cell {
        fn call(
            &mut self,
            max_burst: i64,
            count: i64,
            period: i64,
            q: i64,
            now: i64,
            release: CellRelease,
        ) -> Reply {
            let emission = ((period as i128 * 1_000_000_000) as f64 / count as f64) as i64;
            let dvt = emission * (max_burst + 1);
            let increment = emission * q;
            let tat = self.tat.filter(|&t| t > now).unwrap_or(now);
            let new_tat = tat.max(now) + increment;
            let allow_at = new_tat - dvt;
            let diff = now - allow_at;
            let (limited, ttl, mut retry) = if diff < 0 {
                let retry = if increment <= dvt {
                    -diff
                } else {
                    -1_000_000_000
                };
                (true, tat - now, retry)
            } else {
                self.tat = Some(new_tat);
                (false, new_tat - now, -1_000_000_000)
            };
            if !limited {
                retry = -1_000_000_000;
            }
            let next = dvt - ttl;
            let remaining = if next > -emission {
                ((next / 1_000) as f64 / (emission / 1_000) as f64) as i64
            } else {
                0
            };
            // redis-cell 0.2: `time` 0.1's `num_seconds`. 0.4+: `time` 0.3's
            // `as_seconds_f64() as i64`, one more when `subsec_milliseconds() > 0`.
            let secs = |d: i64| match release {
                CellRelease::V0_2 | CellRelease::V0_3 => d / 1_000_000_000,
                CellRelease::V0_4 => {
                    let (s, n) = (d / 1_000_000_000, d % 1_000_000_000);
                    (s as f64 + n as f64 / 1_000_000_000.0) as i64 + i64::from(n / 1_000_000 > 0)
                }
            };
            [
                i64::from(limited),
                max_burst + 1,
                remaining,
                secs(retry),
                secs(ttl),
            ]
        }
    }

    fn args(parts: &[&str]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    fn throttle(parts: &[&str]) -> Result<Throttle, String> {
        let owned = args(parts);
        let borrowed: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        Throttle::parse(&borrowed)
    }

    #[test]
    fn the_readmes_example_answers_as_redis_cell_documents() {
        // `CL.THROTTLE user123 15 30 60 1` on a fresh key: allowed, limit 16, 15 left,
        // no retry, reset in 2 s.
        let t = throttle(&["user123", "15", "30", "60", "1"]).unwrap();
        let now = 1_700_000_000_000_000_000;
        let out = t.limit.decide(CounterState::default(), t.quantity, now);
        assert_eq!(t.reply(&out, CellRelease::V0_2), [0, 16, 15, -1, 2]);
    }

    #[test]
    fn times_are_truncated_up_to_0_3_and_rounded_up_from_0_4() {
        let cases: [(i128, i64, i64); 8] = [
            (0, 0, 0),
            (-1_000_000_000, -1, -1),
            (2_000_000_000, 2, 2),
            (1_900_000_000, 1, 2),
            (1_001_000_000, 1, 2),
            // Under a millisecond past the second: redis-cell 0.4+ does not round it.
            (2_000_900_000, 2, 2),
            (59_999_999_999, 59, 60),
            // A year and a bit.
            (31_536_000_500_000_000, 31_536_000, 31_536_001),
        ];
        for (ns, truncated, rounded) in cases {
            assert_eq!(CellRelease::V0_2.seconds(ns), truncated, "{ns} ns by 0.2");
            assert_eq!(CellRelease::V0_3.seconds(ns), truncated, "{ns} ns by 0.3");
            assert_eq!(CellRelease::V0_4.seconds(ns), rounded, "{ns} ns by 0.4");
        }
    }

    #[test]
    fn a_denial_a_third_of_a_second_out_answers_0_or_1_by_release() {
        // Three a second, burst 1: the second call at once waits 333 ms.
        let t = throttle(&["k", "0", "3", "1"]).unwrap();
        let now = 1_700_000_000_000_000_000;
        let first = t.limit.decide(CounterState::default(), 1, now);
        assert_eq!(t.reply(&first, CellRelease::V0_2), [0, 1, 0, -1, 0]);
        assert_eq!(t.reply(&first, CellRelease::V0_4), [0, 1, 0, -1, 1]);
        let second = t.limit.decide(first.state, 1, now + 1_000_000);
        assert_eq!(t.reply(&second, CellRelease::V0_2), [1, 1, 0, 0, 0]);
        assert_eq!(t.reply(&second, CellRelease::V0_4), [1, 1, 0, 1, 1]);
    }

    #[test]
    fn bad_arguments_get_each_releases_messages() {
        let usage = throttle(&["k", "1", "2"]).unwrap_err();
        assert_eq!(
            CellRelease::V0_2.error(&usage),
            "Cell error: Usage: cl.throttle <key> <max_burst> <count per period> <period> [<quantity>]"
        );
        assert_eq!(
            CellRelease::V0_4.error(&usage),
            "Cell error: Store error: Usage: cl.throttle <key> <max_burst> <count per period> <period> [<quantity>]"
        );
        let not_integer = throttle(&["k", "x", "2", "3"]).unwrap_err();
        assert_eq!(
            CellRelease::V0_2.error(&not_integer),
            "Cell error: Couldn't parse as integer: x"
        );
        assert_eq!(
            CellRelease::V0_3.error(&not_integer),
            "Cell error: Store error: Couldn't parse as integer: x"
        );
        // 0.2.2 answers a zero rate with numbers of no meaning; the later releases refuse
        // it in these words, which Tollgate uses for every release.
        assert_eq!(
            throttle(&["k", "1", "0", "3"]).unwrap_err(),
            "Zero rates are not supported"
        );
        assert!(
            throttle(&["k", "1", "2", "3", "-1"])
                .unwrap_err()
                .contains("quantity")
        );
    }

    proptest::proptest! {
        /// Every reply over a random sequence of calls equals the restated redis-cell's,
        /// at real magnitudes: bursts from 1 to a million, rates from one a year to a
        /// million a second, quantities around the burst (0 peeks; past it never fits),
        /// gaps from nothing to an hour.
        #[test]
        fn replies_match_redis_cells_arithmetic(
            max_burst in spread([(0, 10), (10, 1_000), (1_000, 1_000_000)]),
            count in spread([(1, 10), (10, 1_000), (1_000, 1_000_000)]),
            period in spread([(1, 60), (60, 86_400), (86_400, 31_536_000)]),
            calls in proptest::collection::vec((0i64..120, 0i64..3_600_000_000_000), 1..40),
        ) {
            let (b, c, p) = (max_burst.to_string(), count.to_string(), period.to_string());
            proptest::prop_assume!(throttle(&["k", &b, &c, &p]).is_ok(), "outside redis-cell's arithmetic");
            let mut model = Cell { tat: None };
            let mut state = CounterState::default();
            let mut now: i64 = 1_795_000_000_000_000_000;
            for (i, (share, gap)) in calls.into_iter().enumerate() {
                // Each release's roundings in turn: the reply is the same decision's.
                let release = [CellRelease::V0_2, CellRelease::V0_3, CellRelease::V0_4][i % 3];
                now += gap;
                // From 0 to 1.2 bursts.
                let quantity = share * (max_burst + 1) / 100;
                let Ok(t) = throttle(&["k", &b, &c, &p, &quantity.to_string()]) else {
                    // Past a bucket that is itself near the 73 years redis-cell's sums hold.
                    proptest::prop_assert!(i128::from(quantity) > i128::from(max_burst) + 1);
                    continue;
                };
                let out = t.limit.decide(state, t.quantity, now as u64);
                let expected = model.call(max_burst, count, period, quantity, now, release);
                proptest::prop_assert_eq!(t.reply(&out, release), expected, "quantity {} at {} ({:?})", quantity, now, release);
                if out.allowed {
                    state = out.state;
                }
            }
        }
    }
}
