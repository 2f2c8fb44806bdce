//! The store conformance suite (`tollgate_testkit::conformance`) for Redis, single node
//! and Cluster, plus what only Redis has: its own clock, its script cache, the shared seed.

use tollgate_core::{CommitRule, CounterKey, Limit, LimitOp, MemoryStore, SECOND, Store};
use tollgate_testkit::{RedisCluster, RedisServer, conformance};

use crate::support::{caller_clock_store, fresh_group, runtime};

#[test]
fn redis_decides_exactly_like_the_memory_store() {
    let server = RedisServer::start();
    let rt = runtime();
    let redis = rt.block_on(caller_clock_store(&server.url()));
    conformance::check_store(&redis, &rt, 256, fresh_group);
    conformance::check_deep_bucket(&redis, &rt, fresh_group());
}

#[test]
fn redis_cluster_decides_exactly_like_the_memory_store() {
    let cluster = RedisCluster::start();
    let rt = runtime();
    let redis = rt.block_on(caller_clock_store(&cluster.url()));
    conformance::check_store(&redis, &rt, 32, fresh_group);
    conformance::check_deep_bucket(&redis, &rt, fresh_group());
}

#[test]
fn the_memory_store_passes_the_suite_it_defines() {
    // The entry point any store runs; for the reference itself it checks the suite.
    let rt = runtime();
    conformance::check_store(&MemoryStore::default(), &rt, 16, fresh_group);
    conformance::check_deep_bucket(&MemoryStore::default(), &rt, fresh_group());
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
            assert!(outcome.reset_after <= u128::from(3_600 * SECOND));
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
