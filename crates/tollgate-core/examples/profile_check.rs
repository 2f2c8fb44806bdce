//! Loops `Limiter::check` on one hot key, for profilers (`valgrind --tool=callgrind`).
#![allow(missing_docs)]
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tollgate_core::*;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let policies = PolicySet::from_files([(
        "bench.yaml",
        "domain: bench\ndescriptors:\n  - key: remote_address\n    rate_limit: {unit: second, requests_per_unit: 1000000000, algorithm: gcra}\n",
    )])
    .expect("valid");
    let l = Limiter::new(
        policies,
        Arc::new(MemoryStore::default()),
        Arc::new(SystemClock),
        LimiterConfig::default(),
    );
    let mut allowed = 0;
    for _ in 0..n {
        let entries = [Entry {
            key: "remote_address",
            value: "10.0.0.1",
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
        if let Poll::Ready(Ok(d)) =
            pin!(l.check(&request)).poll(&mut Context::from_waker(Waker::noop()))
        {
            allowed += usize::from(d.allowed);
        }
    }
    println!("{allowed}");
}
