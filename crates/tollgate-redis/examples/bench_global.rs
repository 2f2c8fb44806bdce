//! Decisions per second of the embedded `Limiter` over a shared Redis, without HTTP in
//! front: `CONCURRENCY` tasks on one thread, each deciding in a loop for `SECONDS`.
//!
//! Run: `cargo run --release -p tollgate-redis --example bench_global -- redis://127.0.0.1:6379 [CONCURRENCY=8] [SECONDS=5] [MODE=global]`
//! (`scripts/bench-redis` runs it against its private Redis.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tollgate_core::{
    CheckRequest, Descriptor, Entry, Limiter, LimiterConfig, PolicySet, SystemClock,
};
use tollgate_redis::{RedisStore, RedisStoreConfig, StoreUrl};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let concurrency: usize = args.next().map_or(Ok(8), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(5), |a| a.parse())?;
    let mode = args.next().unwrap_or_else(|| "global".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let store = RedisStore::connect(RedisStoreConfig::new(StoreUrl::parse(&url)?)).await?;
        let seed = store.shared_key_seed().await?;
        let policies = PolicySet::from_files([(
            "bench.yaml",
            format!(
                "domain: bench\ndescriptors:\n  - key: k\n    rate_limit: {{unit: second, requests_per_unit: 1000000000, algorithm: gcra, burst: 1000000000, consistency: {mode}}}\n"
            )
            .as_str(),
        )])
        .map_err(|errors| format!("{errors:?}"))?;
        let config = LimiterConfig { key_seed: seed, ..LimiterConfig::default() };
        let limiter = Arc::new(Limiter::new(policies, Arc::new(store), Arc::new(SystemClock), config));
        let done = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (limiter, done) = (limiter.clone(), done.clone());
                tokio::spawn(async move {
                    let entries = [Entry { key: "k", value: "hot" }];
                    let descriptors = [Descriptor { entries: &entries, hits: None, limit_override: None }];
                    let request = CheckRequest { domain: "bench", descriptors: &descriptors, hits: 1 };
                    // Bounded in time; each iteration is one decision.
                    while Instant::now() < deadline {
                        if let Ok(d) = limiter.check(&request).await
                            && d.store_error.is_none()
                        {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await?;
        }
        let n = done.load(Ordering::Relaxed);
        println!("embedded {mode}: {:.0} decisions/s ({n} in {seconds} s, {concurrency} concurrent)", n as f64 / seconds as f64);
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
