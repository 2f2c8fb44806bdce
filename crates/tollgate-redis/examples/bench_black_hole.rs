//! How long answers take while the store is a black hole (connections accepted, nothing
//! ever answered), for every kind of policy: `on_store_error` allow, deny, local, and a
//! leased policy that needs a lease. The deadline (`--store-timeout`) must bound every
//! answer: each is checked against twice the deadline, and the run fails if one is later.
//! A latency target, so it lives here and not in the pass/fail tests.
//!
//! Run: `cargo run --release -p tollgate-redis --example bench_black_hole -- redis://127.0.0.1:6379 [TIMEOUT_MS=50] [PER_KIND=20]`
//! (`scripts/bench-redis` runs it against its private Redis.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_core::{
    CheckRequest, Descriptor, Entry, Limiter, LimiterConfig, PolicySet, Store, SystemClock,
};
use tollgate_redis::{RedisStore, RedisStoreConfig, StoreUrl};
use tollgate_testkit::FaultProxy;

const POLICIES: &str = "domain: bench
descriptors:
  - key: allow
    rate_limit: {unit: day, requests_per_unit: 1000000, on_store_error: allow}
  - key: deny
    rate_limit: {unit: day, requests_per_unit: 1000000, on_store_error: deny}
  - key: local
    rate_limit: {unit: day, requests_per_unit: 1000000, on_store_error: local}
  - key: leased
    rate_limit: {unit: day, requests_per_unit: 1000000, algorithm: gcra, consistency: leased}
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let timeout_ms: u64 = args.next().map_or(Ok(50), |a| a.parse())?;
    let per_kind: usize = args.next().map_or(Ok(20), |a| a.parse())?;
    let target: SocketAddr = url
        .trim_start_matches("redis://")
        .parse()
        .map_err(|e| format!("{url}: a redis://HOST:PORT on loopback is needed: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bound = Duration::from_millis(2 * timeout_ms);
    let mut worst = Duration::ZERO;
    // One store per kind, so that each meets the black hole with its circuit closed.
    for key in ["allow", "deny", "local", "leased"] {
        let max = runtime.block_on(one_kind(key, target, timeout_ms, per_kind, bound))?;
        worst = worst.max(max);
    }
    if worst > bound {
        return Err(
            format!("an answer took {worst:?}, past twice the {timeout_ms} ms deadline").into(),
        );
    }
    Ok(())
}

async fn one_kind(
    key: &'static str,
    target: SocketAddr,
    timeout_ms: u64,
    per_kind: usize,
    bound: Duration,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let proxy = FaultProxy::start(target);
    let mut config = RedisStoreConfig::new(StoreUrl::parse(&format!("redis://{}", proxy.addr()))?);
    config.timeout = Duration::from_millis(timeout_ms);
    let store = Arc::new(RedisStore::connect(config).await?);
    let seed = store.shared_key_seed().await?;
    let policies = PolicySet::from_files([("bench.yaml", POLICIES)])
        .map_err(|errors| format!("{errors:?}"))?;
    let config = LimiterConfig {
        key_seed: seed,
        ..LimiterConfig::default()
    };
    let limiter = Limiter::new(policies, store.clone(), Arc::new(SystemClock), config);
    let decide = |value: String| {
        let limiter = &limiter;
        async move {
            let entries = [Entry { key, value: &value }];
            let descriptors = [Descriptor {
                entries: &entries,
                hits: None,
                limit_override: None,
            }];
            let request = CheckRequest {
                domain: "bench",
                descriptors: &descriptors,
                hits: 1,
            };
            let started = Instant::now();
            let decision = limiter.check(&request).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((decision, started.elapsed()))
        }
    };
    let (d, _) = decide("warm".into()).await?;
    if d.store_error.is_some() {
        return Err(format!("{key}: the store failed before the black hole").into());
    }
    proxy.set_black_hole(true);
    let timeouts = |s: &RedisStore| s.report().calls.map_or(0, |c| c.timeout);
    let mut latencies = Vec::with_capacity(per_kind);
    for i in 0..per_kind {
        // A fresh value each time: nothing cached, no lease held.
        let (d, took) = decide(format!("fresh-{i}")).await?;
        if d.store_error.is_none() {
            return Err(format!("{key}: answered by a black-holed store?").into());
        }
        latencies.push(took);
    }
    let deadline_answers = timeouts(&store);
    latencies.sort();
    let max = latencies.last().copied().unwrap_or_default();
    println!(
        "black hole, {key:<6}: {per_kind} answers, p50 {:?}, max {:?} (bound {bound:?}); {deadline_answers} ended by the deadline, the rest by the open circuit",
        latencies[latencies.len() / 2],
        max,
    );
    Ok(max)
}
