//! Helpers shared by the integration tests.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tollgate_core::{
    CheckRequest, Decision, Descriptor, Entry, Limiter, LimiterConfig, ManualClock, MemoryStore,
    PolicySet,
};

/// Drives a future that completes without waiting (the in-memory store never waits).
pub fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the in-memory path must not wait"),
    }
}

/// A limiter over an in-memory store with a manual clock, loaded from one YAML document.
pub fn limiter(yaml: &str) -> (Limiter, Arc<ManualClock>) {
    let policies = PolicySet::from_files([("test.yaml", yaml)]).unwrap_or_else(|e| panic!("{e:?}"));
    let clock = Arc::new(ManualClock::new(1_700_000_000 * tollgate_core::SECOND));
    let limiter = Limiter::new(
        policies,
        Arc::new(MemoryStore::default()),
        clock.clone(),
        LimiterConfig::default(),
    );
    (limiter, clock)
}

/// Checks one request made of descriptors given as `[[(key, value), ...], ...]`.
pub fn check(limiter: &Limiter, domain: &str, descriptors: &[&[(&str, &str)]]) -> Decision {
    check_hits(limiter, domain, descriptors, 1)
}

/// Like [`check`] with a cost.
pub fn check_hits(
    limiter: &Limiter,
    domain: &str,
    descriptors: &[&[(&str, &str)]],
    hits: u64,
) -> Decision {
    with_request(domain, descriptors, hits, |request| {
        now_or_never(limiter.check(request)).expect("valid request")
    })
}

/// What [`check`] would see, without consuming anything ([`Limiter::peek`]).
pub fn peek(limiter: &Limiter, domain: &str, descriptors: &[&[(&str, &str)]]) -> Decision {
    with_request(domain, descriptors, 1, |request| {
        now_or_never(limiter.peek(request)).expect("valid request")
    })
}

/// Calls `f` with the request made of `descriptors` given as `[[(key, value), ...], ...]`.
fn with_request<T>(
    domain: &str,
    descriptors: &[&[(&str, &str)]],
    hits: u64,
    f: impl FnOnce(&CheckRequest<'_>) -> T,
) -> T {
    let entries: Vec<Vec<Entry<'_>>> = descriptors
        .iter()
        .map(|d| d.iter().map(|&(key, value)| Entry { key, value }).collect())
        .collect();
    let descriptors: Vec<Descriptor<'_>> = entries
        .iter()
        .map(|e| Descriptor {
            entries: e,
            hits: None,
            limit_override: None,
        })
        .collect();
    f(&CheckRequest {
        domain,
        descriptors: &descriptors,
        hits,
    })
}

/// The policy name that decided each descriptor (`None` when nothing matched).
pub fn rule_names(d: &Decision) -> Vec<Option<String>> {
    d.statuses
        .iter()
        .map(|s| s.rule.as_ref().map(|r| r.name().to_owned()))
        .collect()
}

/// Reserves `estimate` on `descriptors` as a hold of `kind` for `ttl` nanoseconds.
pub fn reserve(
    limiter: &Limiter,
    domain: &str,
    descriptors: &[&[(&str, &str)]],
    estimate: u64,
    kind: tollgate_core::HoldKind,
    ttl: u64,
) -> tollgate_core::Reservation {
    with_request(domain, descriptors, estimate, |request| {
        now_or_never(limiter.reserve(request, kind, ttl)).expect("a valid reservation")
    })
}

/// Whether `hits` would fit on `descriptors` now, taking nothing ([`Limiter::probe`]).
pub fn probe(
    limiter: &Limiter,
    domain: &str,
    descriptors: &[&[(&str, &str)]],
    hits: u64,
) -> Decision {
    with_request(domain, descriptors, hits, |request| {
        now_or_never(limiter.probe(request)).expect("valid request")
    })
}

/// Charges `hits` to `descriptors`, past their limits if need be ([`Limiter::report`]).
pub fn report(
    limiter: &Limiter,
    domain: &str,
    descriptors: &[&[(&str, &str)]],
    hits: u64,
) -> Decision {
    with_request(domain, descriptors, hits, |request| {
        now_or_never(limiter.report(request)).expect("valid request")
    })
}
