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
    group.finish();
}

criterion_group!(benches, layer);
criterion_main!(benches);
