//! One conformance suite for every store: the same random batches run against the in-memory
//! store and against Redis (single node and Cluster) must get identical outcomes, states
//! included, under both commit rules.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tollgate_core::{CommitRule, CounterKey, Limit, LimitOp, MemoryStore, SECOND, Store};
use tollgate_testkit::{RedisCluster, RedisServer};

use crate::support::{caller_clock_store, fresh_group, runtime};

/// Limits with the periods policies produce (whole seconds) plus one that divides a second.
fn limits() -> Vec<Limit> {
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

/// (gap in ns before the batch, [(limit index, key, cost, enforce)], then maybe a lease:
/// (limit index, key, unused tokens given back, tokens wanted)).
type Batch = (
    u64,
    Vec<(usize, u64, u64, bool)>,
    Option<(usize, u64, u64, u64)>,
);

fn batches() -> impl Strategy<Value = Vec<Batch>> {
    let gap = prop_oneof![0u64..1_000, 0u64..300_000_000, 0u64..20 * SECOND];
    let op = (0usize..8, 0u64..3, 0u64..4, prop::bool::weighted(0.85));
    let lease = prop::option::weighted(0.4, (0usize..8, 0u64..3, 0u64..3, 1u64..6));
    prop::collection::vec((gap, prop::collection::vec(op, 1..4), lease), 1..40)
}

fn run_conformance(url: &str, cases: u32) {
    let rt = runtime();
    let redis = rt.block_on(caller_clock_store(url));
    let limits = limits();
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let result = runner.run(
        &(batches(), any::<bool>(), 0u64..SECOND),
        |(batches, every, offset)| {
            let rule = if every {
                CommitRule::EveryRequestCounts
            } else {
                CommitRule::AllOrNothing
            };
            let memory = MemoryStore::default();
            let group = fresh_group();
            // A realistic wall-clock time (late 2026) plus a random sub-second offset.
            let mut now = 1_795_000_000 * SECOND + offset;
            for (gap, batch, lease) in batches {
                now += gap;
                let make = || -> Vec<LimitOp> {
                    batch
                        .iter()
                        .map(|&(l, k, cost, enforce)| {
                            // One counter per (limit, key), as the limiter's keys would be.
                            let key = CounterKey((l as u64) << 8 | k);
                            let mut op = LimitOp::new(key, limits[l], cost, enforce);
                            op.group = group;
                            op
                        })
                        .collect()
                };
                let mut expected = make();
                memory.apply_with(&mut expected, now, rule);
                let mut got = make();
                rt.block_on(redis.apply(&mut got, now, rule))
                    .map_err(|e| TestCaseError::fail(format!("store error: {e}")))?;
                for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
                    prop_assert_eq!(
                        e.outcome,
                        g.outcome,
                        "op {} of {:?} at {} ({:?})",
                        i,
                        batch,
                        now,
                        rule
                    );
                }
                if let Some((l, k, unused, want)) = lease {
                    let mut op = LimitOp::new(CounterKey((l as u64) << 8 | k), limits[l], 0, true);
                    op.group = group;
                    let expected = memory.lease_sync(&op, unused, want, now);
                    let got = rt
                        .block_on(redis.lease(&op, unused, want, now))
                        .map_err(|e| TestCaseError::fail(format!("store error: {e}")))?;
                    prop_assert_eq!(expected, got, "lease {:?} at {}", (l, k, unused, want), now);
                }
            }
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn redis_decides_exactly_like_the_memory_store() {
    let server = RedisServer::start();
    run_conformance(&server.url(), 96);
}

#[test]
fn redis_cluster_decides_exactly_like_the_memory_store() {
    let cluster = RedisCluster::start();
    run_conformance(&cluster.url(), 32);
}

#[test]
fn the_store_clock_decides_when_asked_to() {
    let server = RedisServer::start();
    let rt = runtime();
    rt.block_on(async {
        let url = tollgate_redis::StoreUrl::parse(&server.url()).unwrap();
        let store = tollgate_redis::RedisStore::connect(tollgate_redis::RedisStoreConfig::new(url))
            .await
            .unwrap();
        let limit = Limit::fixed_window(2, 3_600 * SECOND).unwrap();
        let mut admitted = 0;
        for _ in 0..3 {
            // The caller's `now` is nonsense on purpose: the store's TIME must be used.
            let mut ops = [LimitOp::new(CounterKey(1), limit, 1, true)];
            store
                .apply(&mut ops, 7, CommitRule::AllOrNothing)
                .await
                .unwrap();
            let outcome = ops[0].outcome.unwrap();
            assert!(outcome.reset_after <= 3_600 * SECOND);
            assert!(
                outcome.state.0[0] > 1_700_000_000 * SECOND,
                "window end in store time"
            );
            admitted += u32::from(outcome.allowed);
        }
        assert_eq!(admitted, 2);
    });
}

#[test]
fn a_flushed_script_cache_is_reloaded() {
    let server = RedisServer::start();
    let rt = runtime();
    rt.block_on(async {
        let store = caller_clock_store(&server.url()).await;
        let limit = Limit::fixed_window(5, SECOND).unwrap();
        let mut ops = [LimitOp::new(CounterKey(9), limit, 1, true)];
        store
            .apply(&mut ops, 10 * SECOND, CommitRule::AllOrNothing)
            .await
            .unwrap();
        server.command(&["SCRIPT", "FLUSH"]);
        let mut ops = [LimitOp::new(CounterKey(9), limit, 1, true)];
        store
            .apply(&mut ops, 10 * SECOND, CommitRule::AllOrNothing)
            .await
            .unwrap();
        assert_eq!(ops[0].outcome.unwrap().remaining, 3);
    });
}

#[test]
fn nodes_sharing_a_store_share_one_key_seed() {
    let server = RedisServer::start();
    let rt = runtime();
    rt.block_on(async {
        let a = caller_clock_store(&server.url()).await;
        let b = caller_clock_store(&server.url()).await;
        let seed = a.shared_key_seed().await.unwrap();
        assert_eq!(b.shared_key_seed().await.unwrap(), seed);
        assert_ne!(seed, [0u8; 16]);
    });
}
