//! Criterion benchmarks of the core decision path (no I/O, no HTTP).
//!
//! - `store/*`: one op against the in-memory store with a precomputed key.
//! - `limiter/*`: the whole `Limiter::check`: validation, policy match, key hashing, store,
//!   status assembly, with the system clock.
//! - `*/1m_keys`: the same over 1 000 000 distinct keys (cache misses included).
//! - `*/2_threads`: both cores deciding at once; the figure is time per decision overall.

#![allow(missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tollgate_core::{
    CheckRequest, CounterKey, Descriptor, Entry, Limit, LimitOp, Limiter, LimiterConfig,
    MemoryStore, PolicySet, SECOND, SystemClock,
};

const KEYS: usize = 1_000_000;

fn ready<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("the in-memory store never waits"),
    }
}

fn limiter() -> Limiter {
    limiter_with("{unit: second, requests_per_unit: 1000000000, algorithm: gcra}")
}

/// A limiter whose one policy, on `remote_address`, has the `rate_limit` block `limit`.
fn limiter_with(limit: &str) -> Limiter {
    let yaml =
        format!("domain: bench\ndescriptors:\n  - key: remote_address\n    rate_limit: {limit}\n");
    let policies = PolicySet::from_files([("bench.yaml", yaml.as_str())]).expect("valid policies");
    Limiter::new(
        policies,
        Arc::new(MemoryStore::default()),
        Arc::new(SystemClock),
        LimiterConfig::default(),
    )
}

fn check(l: &Limiter, value: &str) -> bool {
    let entries = [Entry {
        key: "remote_address",
        value,
    }];
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
    ready(l.check(&request)).expect("valid").allowed
}

fn spread(i: u64) -> CounterKey {
    CounterKey(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Runs `per_thread` iterations of `work` on each of two threads; returns the wall time.
fn two_threads(iters: u64, work: impl Fn(u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let work = &work;
            s.spawn(move || {
                for i in 0..iters / 2 {
                    work(t * (iters / 2) + i);
                }
            });
        }
    });
    start.elapsed()
}

fn store(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1));
    let limit = Limit::gcra(1_000_000_000, SECOND, 1_000_000_000).expect("valid");
    let now = 1_700_000_000 * SECOND;
    let s = MemoryStore::default();
    g.bench_function("hot_key", |b| {
        b.iter(|| {
            let mut ops = [LimitOp::new(CounterKey(42), limit, 1, true)];
            s.apply_sync(black_box(&mut ops), now);
            black_box(ops[0].outcome)
        })
    });
    let mut i = 0u64;
    g.bench_function("1m_keys", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS as u64;
            let mut ops = [LimitOp::new(spread(i), limit, 1, true)];
            s.apply_sync(black_box(&mut ops), now);
            black_box(ops[0].outcome)
        })
    });
    g.bench_function("1m_keys/2_threads", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |i| {
                let mut ops = [LimitOp::new(spread(i % KEYS as u64), limit, 1, true)];
                s.apply_sync(&mut ops, now);
                black_box(ops[0].outcome);
            })
        })
    });
    g.finish();
}

fn full_limiter(c: &mut Criterion) {
    let mut g = c.benchmark_group("limiter");
    g.throughput(Throughput::Elements(1));
    let l = limiter();
    g.bench_function("hot_key", |b| {
        b.iter(|| black_box(check(&l, black_box("10.0.0.1"))))
    });
    let values: Vec<String> = (0..KEYS)
        .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let mut i = 0;
    g.bench_function("1m_keys", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(check(&l, &values[i]))
        })
    });
    g.bench_function("1m_keys/2_threads", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |i| {
                black_box(check(&l, &values[i as usize % KEYS]));
            })
        })
    });
    // A monthly calendar quota in a DST zone: the window comes from the cached calendar.
    let quota = limiter_with(
        "{algorithm: quota, period: month, time_zone: America/New_York, requests_per_unit: 4000000000}",
    );
    g.bench_function("quota_hot_key", |b| {
        b.iter(|| black_box(check(&quota, black_box("10.0.0.1"))))
    });
    g.finish();
}

criterion_group!(benches, store, full_limiter);
criterion_main!(benches);
