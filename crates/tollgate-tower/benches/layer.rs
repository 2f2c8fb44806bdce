//! What the embedded layer adds to a request: the same handler called through tower with
//! and without [`RateLimitLayer`] over an in-memory limiter, one descriptor from a header,
//! a limit no request reaches.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tollgate_tower::{RateLimitLayer, Source, embedded};
use tower::{Layer, Service, ServiceExt, service_fn};

const POLICIES: &str = "domain: bench
descriptors:
  - key: api_key
    rate_limit: {unit: second, requests_per_unit: 1000000000}
";

fn request() -> Request<()> {
    Request::builder()
        .uri("/items")
        .header("x-api-key", "k-0123456789")
        .body(())
        .expect("request")
}

fn layer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let handler = service_fn(|_: Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(()))
    });
    let policies = embedded::policies([("bench.yaml", POLICIES)]).expect("policies");
    let limiter = embedded::memory(policies);
    let limited = RateLimitLayer::embedded(Arc::clone(&limiter), "bench")
        .descriptor([("api_key", Source::header("x-api-key"))])
        .layer(handler);
    let mut group = c.benchmark_group("tower_layer");
    group.bench_function("bare_handler", |b| {
        b.iter(|| {
            let mut svc = handler;
            runtime.block_on(async {
                let svc = svc.ready().await.expect("ready");
                black_box(svc.call(request()).await.expect("answer"))
            })
        })
    });
    group.bench_function("embedded_layer", |b| {
        b.iter(|| {
            let mut svc = limited.clone();
            runtime.block_on(async {
                let svc = svc.ready().await.expect("ready");
                black_box(svc.call(request()).await.expect("answer"))
            })
        })
    });
    // The limiter alone, for what the layer adds around it.
    let entries = [tollgate_core::Entry {
        key: "api_key",
        value: "k-0123456789",
    }];
    let descriptors = [tollgate_core::Descriptor {
        entries: &entries,
        hits: None,
        limit_override: None,
    }];
    let check = tollgate_core::CheckRequest {
        domain: "bench",
        descriptors: &descriptors,
        hits: 1,
    };
    group.bench_function("limiter_check_now", |b| {
        b.iter(|| black_box(limiter.check_now(black_box(&check))))
    });
    // Over Redis when TOLLGATE_BENCH_REDIS names one (scripts/bench-microservices starts a
    // private redis-server): the layer plus one store round trip per request.
    if let Ok(url) = std::env::var("TOLLGATE_BENCH_REDIS") {
        let policies = embedded::policies([("bench.yaml", POLICIES)]).expect("policies");
        let limiter = runtime
            .block_on(embedded::redis(policies, &url))
            .expect("redis");
        let over_redis = RateLimitLayer::embedded(limiter, "bench")
            .descriptor([("api_key", Source::header("x-api-key"))])
            .layer(handler);
        group.bench_function("embedded_redis_layer", |b| {
            b.iter(|| {
                let mut svc = over_redis.clone();
                runtime.block_on(async {
                    let svc = svc.ready().await.expect("ready");
                    black_box(svc.call(request()).await.expect("answer"))
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, layer);
criterion_main!(benches);
