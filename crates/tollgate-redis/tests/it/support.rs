//! Connecting stores to the private servers of `tollgate-testkit`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tollgate_redis::{RedisStore, RedisStoreConfig, StoreClock, StoreUrl};

/// A runtime for tests that drive async stores from proptest's synchronous closures.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test runtime")
}

/// A store on `url` deciding on the caller's (manual) clock, with a roomy deadline.
pub async fn caller_clock_store(url: &str) -> RedisStore {
    let mut config = RedisStoreConfig::new(StoreUrl::parse(url).expect("test URL"));
    config.clock = StoreClock::Caller;
    config.timeout = Duration::from_secs(2);
    RedisStore::connect(config)
        .await
        .expect("connect to the test Redis")
}

/// A group no other test case uses, so cases never see each other's counters.
pub fn fresh_group() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (u64::from(std::process::id()) << 32) | n
}
