//! Deadlines, the circuit breaker and recovery, with faults injected by a TCP proxy.

use std::net::SocketAddr;
use std::time::Duration;

use tollgate_core::store::CircuitState;
use tollgate_core::{CommitRule, CounterKey, Limit, LimitOp, SECOND, Store, StoreError};
use tollgate_redis::{RedisStore, RedisStoreConfig, StoreUrl};
use tollgate_testkit::{FaultProxy, RedisServer, wait};

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

/// Waits until `store` decides again (the fault is gone), naming `what` if it never does.
async fn answers_again(store: &RedisStore, what: &str) {
    wait::until(what, || async {
        (decide(store).await == Ok(true)).then_some(())
    })
    .await;
}

/// The store's own call counters (ok, error, timeout, refused by the open circuit).
fn calls(store: &RedisStore) -> tollgate_core::StoreCalls {
    store
        .report()
        .calls
        .expect("a Redis store counts its calls")
}

#[tokio::test]
async fn a_slow_store_misses_the_deadline_and_never_hangs() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(target(&server));
    let store = store_behind(&proxy).await;
    assert_eq!(decide(&store).await, Ok(true));
    // Answers come 300 ms late; the 50 ms deadline answers first.
    proxy.set_latency(Duration::from_millis(300));
    let result = wait::finishes("a call to a slow store", decide(&store)).await;
    assert_eq!(result, Err(StoreError::Timeout(50)));
    assert_eq!(calls(&store).timeout, 1);
}

#[tokio::test]
async fn a_black_holed_store_is_answered_by_the_deadline() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(target(&server));
    let store = store_behind(&proxy).await;
    assert_eq!(decide(&store).await, Ok(true));
    // Connections stay open and requests are taken, but nothing ever comes back: only the
    // deadline can end the wait (a refused or cut connection would fail at once instead).
    proxy.set_black_hole(true);
    let result = wait::finishes("a call to a black-holed store", decide(&store)).await;
    assert_eq!(result, Err(StoreError::Timeout(50)));
    let mut timeouts = 1;
    while store.circuit() == CircuitState::Closed {
        let result = wait::finishes("a call to a black-holed store", decide(&store)).await;
        assert_eq!(result, Err(StoreError::Timeout(50)));
        timeouts += 1;
        assert!(
            timeouts <= 10,
            "the circuit did not open after {timeouts} timeouts"
        );
    }
    assert_eq!(calls(&store).timeout, timeouts);
    assert_eq!(calls(&store).error, 0, "no call was refused by the network");

    proxy.set_black_hole(false);
    answers_again(&store, "the store answers again after the black hole").await;
    assert_eq!(store.circuit(), CircuitState::Closed);
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
    // Open: refused without a call to the network, which the store's counters show.
    let before = calls(&store);
    let refused = decide(&store).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(ref m)) if m.contains("circuit open")));
    let after = calls(&store);
    assert_eq!(after.circuit_open, before.circuit_open + 1);
    assert_eq!(
        (after.ok, after.error, after.timeout),
        (before.ok, before.error, before.timeout),
        "an open circuit makes no call"
    );

    proxy.set_down(false);
    answers_again(&store, "the store answers again after the outage").await;
    assert_eq!(store.circuit(), CircuitState::Closed);
    assert!(store.is_available());
}

#[tokio::test]
async fn a_restarted_redis_is_used_again() {
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
    answers_again(&store, "the restarted Redis answers").await;
}
