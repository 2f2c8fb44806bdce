//! One conformance suite for every [`Store`]: a store under test must decide exactly like
//! the in-memory store (itself held to the algorithms' reference models by
//! `tollgate-core`'s property tests), outcomes and stored states included, for every
//! operation the trait has. A store runs it with [`check_store`]; a new store operation
//! is specified here once, as a new [`Step`], and every store is held to it.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tollgate_core::algorithm::domain;
use tollgate_core::{
    Calendar, CalendarPeriod, CommitRule, CounterKey, HoldId, HoldKind, HoldSpec, Limit, LimitOp,
    MemoryStore, Nanos, SECOND, Settle, Store,
};

/// The limits scenarios draw from: the periods policies produce (whole seconds, up to a
/// year), one that divides a second, a limit that admits nothing, and the edges of the
/// domain (`tollgate_core::algorithm::domain`): 32-bit rates and bursts, a GCRA bucket
/// 1,000 years deep, bursts below and above the rate.
pub fn limits() -> Vec<Limit> {
    let year = domain::YEAR;
    let top = domain::MAX_REQUESTS;
    vec![
        Limit::fixed_window(5, SECOND).expect("valid limit"),
        Limit::gcra(3, SECOND, 4).expect("valid limit"),
        Limit::sliding_window(6, SECOND).expect("valid limit"),
        Limit::fixed_window(7, 60 * SECOND).expect("valid limit"),
        Limit::gcra(7, 60 * SECOND, 2).expect("valid limit"),
        Limit::sliding_window(9, 60 * SECOND).expect("valid limit"),
        Limit::sliding_window(4, SECOND / 10).expect("valid limit"),
        Limit::fixed_window(0, SECOND).expect("valid limit"),
        Limit::gcra(1, year, 1_000).expect("valid limit"),
        Limit::gcra(7, year, 3).expect("valid limit"),
        Limit::gcra(top, SECOND, top).expect("valid limit"),
        Limit::gcra(3, 2_592_000 * SECOND, top / 1_000).expect("valid limit"),
        Limit::fixed_window(top, year).expect("valid limit"),
        Limit::fixed_window(3, year).expect("valid limit"),
        Limit::sliding_window(top, year).expect("valid limit"),
        Limit::sliding_window(5, year).expect("valid limit"),
        Limit::concurrency(3).expect("valid limit"),
        // throttlecrab's THROTTLE: buckets that restart with a debt once idle, one of
        // max_burst 5 at 5 per second and one of max_burst 10 at 10 per year.
        Limit::gcra(1, SECOND / 5, 8)
            .expect("valid limit")
            .restarting_with(3 * SECOND / 5),
        Limit::gcra(1, year / 10, 18)
            .expect("valid limit")
            .restarting_with(8 * (year / 10)),
    ]
}

/// Calendar quotas the scenarios draw from, after [`limits`]: each op takes the window its
/// calendar gives at the step's `now`, as the limiter does (DST zones, a half-hour and a
/// 45-minute offset, a billing day past short months, the largest count in a year).
pub fn quotas() -> Vec<(Limit, Calendar)> {
    let calendar = |period, zone, anchor| Calendar::new(period, Some(zone), anchor).expect("valid");
    let month = 30 * 86_400 * SECOND;
    vec![
        (
            Limit::quota(5, month).expect("valid limit"),
            calendar(CalendarPeriod::Month, "Europe/Berlin", None),
        ),
        (
            Limit::quota(3, 86_400 * SECOND).expect("valid limit"),
            calendar(CalendarPeriod::Day, "America/New_York", None),
        ),
        (
            Limit::quota(4, 7 * 86_400 * SECOND).expect("valid limit"),
            calendar(CalendarPeriod::Week, "Asia/Kolkata", None),
        ),
        (
            Limit::quota(domain::MAX_REQUESTS, domain::YEAR).expect("valid limit"),
            calendar(CalendarPeriod::Year, "Pacific/Chatham", None),
        ),
        (
            Limit::quota(2, month).expect("valid limit"),
            calendar(CalendarPeriod::Month, "America/Santiago", Some(31)),
        ),
    ]
}

/// The limit of index `l` at `now`: one of [`limits`], or one of [`quotas`] in its window.
fn limit_at(limits: &[Limit], quotas: &[(Limit, Calendar)], l: usize, now: Nanos) -> Limit {
    match limits.get(l) {
        Some(limit) => *limit,
        None => {
            let (limit, calendar) = &quotas[l - limits.len()];
            let window = calendar.window_at(now);
            limit.in_window(window.start, window.end)
        }
    }
}

/// An op as the steps give it: (limit index, key, cost, enforced, quota mode).
pub type OpSpec = (usize, u64, u64, bool, bool);

/// One step of a scenario, after `gap` nanoseconds.
#[derive(Debug, Clone)]
pub enum Step {
    /// [`Store::apply`] of ops `(limit index, key, cost, enforce, quota mode)` under
    /// `rule`.
    Apply {
        /// The ops.
        ops: Vec<OpSpec>,
        /// The commit rule.
        rule: CommitRule,
    },
    /// [`Store::reserve`] of ops as in `Apply`, as a lease or a reservation kept for `ttl`.
    Reserve {
        /// The ops.
        ops: Vec<OpSpec>,
        /// A concurrency lease rather than a reservation.
        lease: bool,
        /// Nanoseconds until the store releases it.
        ttl: u64,
    },
    /// [`Store::settle`] of the `hold`-th hold taken so far (modulo their number): a
    /// commit at the cost given, or a release.
    Settle {
        /// Which hold.
        hold: usize,
        /// `Some(actual)` commits, `None` releases.
        commit: Option<u64>,
    },
    /// [`Store::extend`] of the `hold`-th hold by `ttl` from now.
    Extend {
        /// Which hold.
        hold: usize,
        /// Nanoseconds from now.
        ttl: u64,
    },
    /// [`Store::apply_many`] of independent batches (each like [`Step::Apply`]'s ops), which
    /// must decide as that many applies one after another.
    ApplyMany {
        /// The batches, in order.
        batches: Vec<Vec<OpSpec>>,
        /// How each batch commits.
        rule: CommitRule,
    },
    /// [`Store::lease`] on `(limit index, key)`: give back `unused`, take up to `want`.
    Lease {
        /// The counter's limit.
        limit: usize,
        /// The counter's key.
        key: u64,
        /// Tokens given back.
        unused: u64,
        /// Tokens wanted.
        want: u64,
    },
}

fn steps(limits: usize) -> impl Strategy<Value = Vec<(u64, Step)>> {
    let year = domain::YEAR;
    let gap = prop_oneof![
        4 => 0u64..1_000,
        4 => 0u64..300_000_000,
        4 => 0u64..20 * SECOND,
        1 => 0u64..40 * 86_400 * SECOND,
        1 => 0u64..2 * year,
    ];
    // Costs: a few, up to and past the bursts above, and far past any limit.
    let cost = prop_oneof![
        12 => 0u64..4,
        2 => 0u64..2_000,
        1 => domain::MAX_REQUESTS - 2..domain::MAX_REQUESTS + 2,
        1 => any::<u64>(),
    ];
    let op = (
        0..limits,
        0u64..3,
        cost,
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.3),
    );
    let rule = prop_oneof![
        Just(CommitRule::AllOrNothing),
        Just(CommitRule::EveryRequestCounts)
    ];
    let apply = (prop::collection::vec(op.clone(), 1..4), rule.clone())
        .prop_map(|(ops, rule)| Step::Apply { ops, rule });
    let apply_many = (
        prop::collection::vec(prop::collection::vec(op.clone(), 0..4), 1..12),
        rule,
    )
        .prop_map(|(batches, rule)| Step::ApplyMany { batches, rule });
    let ttl = prop_oneof![1u64..2_000, 1u64..30 * SECOND, 1u64..86_400 * SECOND];
    let reserve = (prop::collection::vec(op, 1..4), any::<bool>(), ttl.clone())
        .prop_map(|(ops, lease, ttl)| Step::Reserve { ops, lease, ttl });
    let amount =
        prop_oneof![4 => 0u64..6, 1 => 0u64..5_000, 1 => any::<u64>().prop_map(|a| a % (1 << 53))];
    let settle = (any::<usize>(), prop::option::weighted(0.7, amount))
        .prop_map(|(hold, commit)| Step::Settle { hold, commit });
    let extend = (any::<usize>(), ttl).prop_map(|(hold, ttl)| Step::Extend { hold, ttl });
    let tokens = prop_oneof![4 => 0u64..6, 1 => 0u64..5_000];
    let lease = (
        0..limits,
        0u64..3,
        tokens.clone(),
        tokens.prop_map(|t| t.max(1)),
    )
        .prop_map(|(limit, key, unused, want)| Step::Lease {
            limit,
            key,
            unused,
            want,
        });
    let step = prop_oneof![3 => apply, 2 => apply_many, 1 => lease, 2 => reserve, 2 => settle, 1 => extend];
    prop::collection::vec((gap, step), 1..40)
}

/// Runs `cases` random scenarios against `store` (driven on `runtime`), each in a counter
/// group of its own from `group`, and fails on the first answer that differs from the
/// in-memory store's. The store must decide on the caller's clock (`now`).
pub fn check_store(
    store: &dyn Store,
    runtime: &tokio::runtime::Runtime,
    cases: u32,
    group: impl Fn() -> u64,
) {
    let limits = limits();
    let quotas = quotas();
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    // Clock readings across the domain: today's, and any from 1970 to a century before
    // 2262, at any nanosecond.
    let start = prop_oneof![
        3 => 1_795_000_000 * SECOND..1_795_000_000 * SECOND + SECOND,
        1 => 0..domain::MAX_NOW - 100 * domain::YEAR,
    ];
    for (steps, start) in regressions() {
        if let Err(e) = run_scenario(store, runtime, &limits, &quotas, steps, start, group()) {
            panic!(
                "{} does not decide like the memory store: {e}",
                store.kind()
            );
        }
    }
    let result = runner.run(
        &(steps(limits.len() + quotas.len()), start),
        |(steps, start)| run_scenario(store, runtime, &limits, &quotas, steps, start, group()),
    );
    if let Err(e) = result {
        panic!(
            "{} does not decide like the memory store: {e}",
            store.kind()
        );
    }
}

/// Scenarios that once told a store apart from the memory store, replayed before the
/// random ones: `(steps, start)`.
fn regressions() -> Vec<(Vec<(u64, Step)>, Nanos)> {
    let top_per_year = 14; // `sliding_window(MAX_REQUESTS, YEAR)` in [`limits`]
    vec![(
        // A reservation expires; an empty batch comes after its deadline but in the same
        // window; the window then rolls. An empty batch decides nothing, so it must not
        // release the hold early (which gives the token back) on one store only.
        vec![
            (
                0,
                Step::Reserve {
                    ops: vec![(top_per_year, 1, 1, false, false)],
                    lease: false,
                    ttl: 1,
                },
            ),
            (
                1,
                Step::ApplyMany {
                    batches: vec![vec![]],
                    rule: CommitRule::AllOrNothing,
                },
            ),
            (
                2_551_999_141_577_016,
                Step::Apply {
                    ops: vec![(0, 0, 0, false, false)],
                    rule: CommitRule::AllOrNothing,
                },
            ),
            (
                0,
                Step::ApplyMany {
                    batches: vec![vec![(top_per_year, 1, 0, false, false)]],
                    rule: CommitRule::AllOrNothing,
                },
            ),
        ],
        1_795_000_000_858_422_983,
    )]
}

/// Runs one scenario against `store` and the memory store side by side, in counter group
/// `group`, and fails on the first answer that differs.
fn run_scenario(
    store: &dyn Store,
    runtime: &tokio::runtime::Runtime,
    limits: &[Limit],
    quotas: &[(Limit, Calendar)],
    steps: Vec<(u64, Step)>,
    start: Nanos,
    group: u64,
) -> Result<(), TestCaseError> {
    let reference = MemoryStore::default();
    let mut now: Nanos = start;
    let op = |l: usize, k: u64, cost: u64, enforce: bool, quota: bool, now: Nanos| {
        // One counter per (limit, key), as the limiter's keys would be, and none shared
        // with another case (stores that ignore groups keep cases apart by key).
        let key = CounterKey(group.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((l as u64) << 8 | k));
        let mut op = LimitOp::new(key, limit_at(limits, quotas, l, now), cost, enforce);
        op.group = group;
        op.quota = quota;
        op
    };
    let mut holds: Vec<HoldId> = Vec::new();
    for (gap, step) in steps {
        now += gap;
        match step {
            Step::Reserve { ops, lease, ttl } => {
                let make = || -> Vec<LimitOp> {
                    ops.iter()
                        .map(|&(l, k, c, e, q)| op(l, k, c, e, q, now))
                        .collect()
                };
                let hold = HoldSpec {
                    id: HoldId {
                        group,
                        nonce: holds.len() as u64,
                    },
                    kind: if lease {
                        HoldKind::Lease
                    } else {
                        HoldKind::Reservation
                    },
                    deadline: now + ttl,
                };
                let mut expected = make();
                reference
                    .reserve_sync(&mut expected, hold, now)
                    .map_err(|e| TestCaseError::fail(format!("memory: {e}")))?;
                let mut got = make();
                runtime
                    .block_on(store.reserve(&mut got, hold, now))
                    .map_err(|e| TestCaseError::fail(format!("store error: {e}")))?;
                for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
                    prop_assert_eq!(
                        e.outcome,
                        g.outcome,
                        "reserve op {} of {:?} at {}",
                        i,
                        ops,
                        now
                    );
                }
                holds.push(hold.id);
            }
            Step::Settle { hold, commit } => {
                if holds.is_empty() {
                    continue;
                }
                let id = holds[hold % holds.len()];
                let how = commit.map_or(Settle::Release, Settle::Commit);
                let expected = reference.settle_sync(id, how, now);
                let got = runtime
                    .block_on(store.settle(id, how, now))
                    .map_err(|e| TestCaseError::fail(format!("store error: {e}")))?;
                prop_assert_eq!(expected, got, "settle {:?} as {:?} at {}", id, how, now);
            }
            Step::Extend { hold, ttl } => {
                if holds.is_empty() {
                    continue;
                }
                let id = holds[hold % holds.len()];
                let expected = reference.extend_sync(id, now + ttl, now);
                let got = runtime
                    .block_on(store.extend(id, now + ttl, now))
                    .map_err(|e| TestCaseError::fail(format!("store error: {e}")))?;
                prop_assert_eq!(expected, got, "extend {:?} at {}", id, now);
            }
            Step::Apply { ops, rule } => {
                let make = || -> Vec<LimitOp> {
                    ops.iter()
                        .map(|&(l, k, c, e, q)| op(l, k, c, e, q, now))
                        .collect()
                };
                let mut expected = make();
                reference.apply_with(&mut expected, now, rule);
                let mut got = make();
                runtime
                    .block_on(store.apply(&mut got, now, rule))
                    .map_err(|e| TestCaseError::fail(format!("store error: {e}")))?;
                for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
                    prop_assert_eq!(
                        e.outcome,
                        g.outcome,
                        "op {} of {:?} at {} ({:?})",
                        i,
                        ops,
                        now,
                        rule
                    );
                }
            }
            Step::ApplyMany { batches, rule } => {
                let make = || -> Vec<LimitOp> {
                    (batches.iter().flatten())
                        .map(|&(l, k, c, e, q)| op(l, k, c, e, q, now))
                        .collect()
                };
                let lengths: Vec<usize> = batches.iter().map(Vec::len).collect();
                let mut expected = make();
                let mut rest = expected.as_mut_slice();
                for &n in &lengths {
                    let (batch, tail) = rest.split_at_mut(n);
                    reference.apply_with(batch, now, rule);
                    rest = tail;
                }
                let mut got = make();
                let results = runtime.block_on(store.apply_many(&mut got, &lengths, now, rule));
                prop_assert_eq!(results.len(), lengths.len());
                for result in results {
                    result.map_err(|e| TestCaseError::fail(format!("store error: {e}")))?;
                }
                for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
                    prop_assert_eq!(
                        e.outcome,
                        g.outcome,
                        "op {} of batches {:?} at {} ({:?})",
                        i,
                        batches,
                        now,
                        rule
                    );
                }
            }
            Step::Lease {
                limit,
                key,
                unused,
                want,
            } => {
                let op = op(limit, key, 0, true, false, now);
                if op.limit.restart_debt() > 0 {
                    // Leases come from policies' limits, which never restart with a debt.
                    continue;
                }
                let expected = reference.lease_sync(&op, unused, want, now);
                let got = runtime
                    .block_on(store.lease(&op, unused, want, now))
                    .map_err(|e| TestCaseError::fail(format!("store error: {e}")))?;
                prop_assert_eq!(
                    expected,
                    got,
                    "lease {:?} at {}",
                    (limit, key, unused, want),
                    now
                );
            }
        }
    }
    Ok(())
}

/// The case that once saturated: `1 per year, burst 1,000` (a bucket 1,000 years deep, past
/// 64-bit nanoseconds) takes 1,005 requests at one instant and admits exactly 1,000, each
/// answer with the right `remaining` and reset; the five refused ones wait one year. Then,
/// a year later, exactly one more. Every answer also equals the memory store's.
pub fn check_deep_bucket(store: &dyn Store, runtime: &tokio::runtime::Runtime, group: u64) {
    let year = domain::YEAR;
    let limit = Limit::gcra(1, year, 1_000).expect("valid limit");
    let reference = MemoryStore::default();
    let now: Nanos = 1_795_000_000 * SECOND + 123_456_789;
    let op = || {
        let mut op = LimitOp::new(
            CounterKey(group.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            limit,
            1,
            true,
        );
        op.group = group;
        op
    };
    let decide = |at: Nanos| {
        let mut got = [op()];
        runtime
            .block_on(store.apply(&mut got, at, CommitRule::AllOrNothing))
            .unwrap_or_else(|e| panic!("{}: store error: {e}", store.kind()));
        let mut expected = [op()];
        reference.apply_with(&mut expected, at, CommitRule::AllOrNothing);
        let got = got[0].outcome.expect("an outcome");
        assert_eq!(
            Some(got),
            expected[0].outcome,
            "{} differs from the memory store",
            store.kind()
        );
        got
    };
    let year_span = tollgate_core::Span::from(year);
    let mut admitted = 0u64;
    for i in 0..1_005u64 {
        let o = decide(now);
        if o.allowed {
            admitted += 1;
            assert_eq!(
                o.remaining,
                999 - i,
                "{}: remaining after request {i}",
                store.kind()
            );
            assert_eq!(o.reset_after, tollgate_core::Span::from(i + 1) * year_span);
        } else {
            assert_eq!(o.remaining, 0);
            assert_eq!(
                o.reset_after,
                1_000 * year_span,
                "{}: reset when refused",
                store.kind()
            );
            assert_eq!(
                o.retry_after,
                Some(year_span),
                "{}: retry when refused",
                store.kind()
            );
        }
    }
    assert_eq!(admitted, 1_000, "{}: admitted of 1,005", store.kind());
    let a_year_later = now + year;
    let next = decide(a_year_later);
    assert!(next.allowed, "{}: one more a year later", store.kind());
    assert_eq!(next.remaining, 0);
    assert!(
        !decide(a_year_later).allowed,
        "{}: and only one",
        store.kind()
    );
}
