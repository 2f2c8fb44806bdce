//! Deadlines, the circuit breaker and recovery, with faults injected by a TCP proxy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tollgate_core::store::CircuitState;
use tollgate_core::{CommitRule, CounterKey, Limit, LimitOp, SECOND, Store, StoreError};
use tollgate_redis::{RedisStore, RedisStoreConfig, StoreUrl};
use tollgate_testkit::{FaultProxy, RedisServer};

async fn store_behind(proxy: &FaultProxy) -> RedisStore {
    let url = StoreUrl::parse(&format!("redis://{}", proxy.addr())).expect("proxy URL");
    let mut config = RedisStoreConfig::new(url);
    config.timeout = Duration::from_millis(50);
    config.connect_timeout = Duration::from_millis(100);
    RedisStore::connect(config).await.expect("lazy connect")
}

async fn decide(store: &RedisStore) -> Result<bool, StoreError> {
    let limit = Limit::fixed_window(1_000_000, SECOND).expect("valid limit");
    let mut ops = [LimitOp::new(CounterKey(5), limit, 1, true)];
    store.apply(&mut ops, 0, CommitRule::AllOrNothing).await?;
    Ok(ops[0].outcome.is_some_and(|o| o.allowed))
}

fn target(server: &RedisServer) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port()))
}

#[tokio::test]
async fn a_slow_store_misses_the_deadline_and_never_hangs() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(target(&server));
    let store = store_behind(&proxy).await;
    assert_eq!(decide(&store).await, Ok(true));
    proxy.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    let result = decide(&store).await;
    assert_eq!(result, Err(StoreError::Timeout(50)));
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_dead_store_opens_the_circuit_and_recovery_closes_it() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(target(&server));
    let store = store_behind(&proxy).await;
    assert_eq!(decide(&store).await, Ok(true));

    proxy.set_down(true);
    let mut failures = 0;
    while store.circuit() == CircuitState::Closed {
        assert!(decide(&store).await.is_err());
        failures += 1;
        assert!(
            failures <= 10,
            "the circuit did not open after {failures} failures"
        );
    }
    assert!(!store.is_available());
    // Open: refused without waiting for the network (well inside the 50 ms deadline; the
    // margin is for a loaded machine, not a speed claim).
    let started = Instant::now();
    let refused = decide(&store).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(ref m)) if m.contains("circuit open")));
    assert!(started.elapsed() < Duration::from_millis(40));

    proxy.set_down(false);
    let healed = Instant::now();
    loop {
        if decide(&store).await == Ok(true) {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(1),
            "not recovered within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.circuit(), CircuitState::Closed);
    assert!(store.is_available());
}

#[tokio::test]
async fn a_restarted_redis_is_used_again_within_a_second() {
    let mut server = RedisServer::start();
    let port = server.port();
    let url = StoreUrl::parse(&server.url()).unwrap();
    let store = RedisStore::connect(RedisStoreConfig::new(url))
        .await
        .unwrap();
    assert_eq!(decide(&store).await, Ok(true));
    server.kill();
    assert!(decide(&store).await.is_err());
    let _restarted = RedisServer::start_on(port, &[]);
    let back = Instant::now();
    loop {
        if decide(&store).await == Ok(true) {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(1),
            "not recovered within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
