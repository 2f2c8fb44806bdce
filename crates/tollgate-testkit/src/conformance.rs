//! One conformance suite for every [`Store`]: a store under test must decide exactly like
//! the in-memory store (itself held to the algorithms' reference models by
//! `tollgate-core`'s property tests), outcomes and stored states included, for every
//! operation the trait has. A store runs it with [`check_store`]; a new store operation
//! is specified here once, as a new [`Step`], and every store is held to it.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tollgate_core::{CommitRule, CounterKey, Limit, LimitOp, MemoryStore, Nanos, SECOND, Store};

/// The limits scenarios draw from: the periods policies produce (whole seconds), one that
/// divides a second, and a limit that admits nothing.
pub fn limits() -> Vec<Limit> {
    vec![
        Limit::fixed_window(5, SECOND).expect("valid limit"),
        Limit::gcra(3, SECOND, 4).expect("valid limit"),
        Limit::sliding_window(6, SECOND).expect("valid limit"),
        Limit::fixed_window(7, 60 * SECOND).expect("valid limit"),
        Limit::gcra(7, 60 * SECOND, 2).expect("valid limit"),
        Limit::sliding_window(9, 60 * SECOND).expect("valid limit"),
        Limit::sliding_window(4, SECOND / 10).expect("valid limit"),
        Limit::fixed_window(0, SECOND).expect("valid limit"),
    ]
}

/// One step of a scenario, after `gap` nanoseconds.
#[derive(Debug, Clone)]
pub enum Step {
    /// [`Store::apply`] of ops `(limit index, key, cost, enforce, quota mode)` under
    /// `rule`.
    Apply {
        /// The ops.
        ops: Vec<(usize, u64, u64, bool, bool)>,
        /// The commit rule.
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
    let gap = prop_oneof![0u64..1_000, 0u64..300_000_000, 0u64..20 * SECOND];
    let op = (
        0..limits,
        0u64..3,
        0u64..4,
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.3),
    );
    let rule = prop_oneof![
        Just(CommitRule::AllOrNothing),
        Just(CommitRule::EveryRequestCounts)
    ];
    let apply =
        (prop::collection::vec(op, 1..4), rule).prop_map(|(ops, rule)| Step::Apply { ops, rule });
    let lease =
        (0..limits, 0u64..3, 0u64..3, 1u64..6).prop_map(|(limit, key, unused, want)| Step::Lease {
            limit,
            key,
            unused,
            want,
        });
    let step = prop_oneof![3 => apply, 1 => lease];
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
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let result = runner.run(&(steps(limits.len()), 0u64..SECOND), |(steps, offset)| {
        let reference = MemoryStore::default();
        let group = group();
        // A realistic wall-clock time (late 2026) plus a random sub-second offset.
        let mut now: Nanos = 1_795_000_000 * SECOND + offset;
        let op = |l: usize, k: u64, cost: u64, enforce: bool, quota: bool| {
            // One counter per (limit, key), as the limiter's keys would be, and none shared
            // with another case (stores that ignore groups keep cases apart by key).
            let key = CounterKey(group.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((l as u64) << 8 | k));
            let mut op = LimitOp::new(key, limits[l], cost, enforce);
            op.group = group;
            op.quota = quota;
            op
        };
        for (gap, step) in steps {
            now += gap;
            match step {
                Step::Apply { ops, rule } => {
                    let make = || -> Vec<LimitOp> {
                        ops.iter()
                            .map(|&(l, k, c, e, q)| op(l, k, c, e, q))
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
                Step::Lease {
                    limit,
                    key,
                    unused,
                    want,
                } => {
                    let op = op(limit, key, 0, true, false);
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
    });
    if let Err(e) = result {
        panic!(
            "{} does not decide like the memory store: {e}",
            store.kind()
        );
    }
}
