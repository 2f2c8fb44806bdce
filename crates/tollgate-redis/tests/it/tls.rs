//! `rediss://`: TLS to the store, trusting a private CA.

use tollgate_core::{CommitRule, CounterKey, Limit, LimitOp, SECOND, Store};
use tollgate_redis::{RedisStore, RedisStoreConfig, StoreUrl};
use tollgate_testkit::RedisServer;

async fn decide(store: &RedisStore) -> Result<bool, tollgate_core::StoreError> {
    let limit = Limit::fixed_window(10, SECOND).expect("valid limit");
    let mut ops = [LimitOp::new(CounterKey(3), limit, 1, true)];
    store.apply(&mut ops, 0, CommitRule::AllOrNothing).await?;
    Ok(ops[0].outcome.is_some_and(|o| o.allowed))
}

#[tokio::test]
async fn rediss_works_with_the_stores_ca_and_fails_without_it() {
    let (server, ca) = RedisServer::start_tls();
    assert!(server.url().starts_with("rediss://"));
    let url = StoreUrl::parse(&server.url()).unwrap();

    let mut trusted = RedisStoreConfig::new(url.clone());
    trusted.ca_pem = Some(ca);
    let store = RedisStore::connect(trusted).await.unwrap();
    assert_eq!(decide(&store).await, Ok(true), "decides over TLS");
    assert_eq!(store.shared_key_seed().await.unwrap().len(), 16);

    // The system roots do not know the test CA: the handshake fails, and says so.
    let untrusted = RedisStore::connect(RedisStoreConfig::new(url))
        .await
        .unwrap();
    let err = decide(&untrusted).await.unwrap_err().to_string();
    assert!(err.contains("certificate"), "{err}");
}
