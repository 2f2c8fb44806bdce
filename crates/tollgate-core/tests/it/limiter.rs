//! The limiter end to end over the in-memory store.

use std::sync::Arc;

use tollgate_core::{
    CheckRequest, Descriptor, Entry, LimitOverride, Limiter, LimiterConfig, ManualClock,
    MemoryStore, PolicySet, RequestError, SECOND, Unit,
};

use crate::support::{check, check_hits, limiter, now_or_never};

const API: &str = "domain: api
descriptors:
  - key: user
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: plan
    rate_limit: {unit: day, requests_per_unit: 100}
  - key: burst
    rate_limit: {unit: second, requests_per_unit: 10, algorithm: gcra, burst: 3}
  - key: smooth
    rate_limit: {unit: minute, requests_per_unit: 6, algorithm: sliding_window}
";

#[test]
fn hits_above_one_are_charged_in_full() {
    let (l, _) = limiter(API);
    let d = check_hits(&l, "api", &[&[("user", "1")]], 4);
    assert!(d.allowed);
    assert_eq!(d.statuses[0].remaining, 6);
    assert!(check_hits(&l, "api", &[&[("user", "1")]], 6).allowed);
    let d = check_hits(&l, "api", &[&[("user", "1")]], 1);
    assert!(!d.allowed);
    assert_eq!(d.statuses[0].remaining, 0);
}

#[test]
fn a_request_costlier_than_the_limit_is_denied_without_a_retry_time() {
    let (l, _) = limiter(API);
    let d = check_hits(&l, "api", &[&[("user", "1")]], 11);
    assert!(!d.allowed);
    assert_eq!(d.statuses[0].retry_after, None);
}

#[test]
fn a_per_second_denial_does_not_burn_the_daily_quota() {
    let (l, clock) = limiter(API);
    let both: [&[(&str, &str)]; 2] = [&[("user", "1")], &[("plan", "free")]];
    for _ in 0..10 {
        assert!(check(&l, "api", &both).allowed);
    }
    for _ in 0..50 {
        let d = check(&l, "api", &both);
        assert!(!d.allowed);
        assert!(d.statuses[1].allowed);
        assert_eq!(d.statuses[1].remaining, 90, "reported as not consumed");
    }
    clock.advance(SECOND);
    let d = check(&l, "api", &both);
    assert!(d.allowed);
    assert_eq!(d.statuses[1].remaining, 89, "the 50 denials took nothing");
}

#[test]
fn gcra_allows_the_burst_then_the_rate() {
    let (l, clock) = limiter(API);
    for _ in 0..3 {
        assert!(check(&l, "api", &[&[("burst", "k")]]).allowed);
    }
    let d = check(&l, "api", &[&[("burst", "k")]]);
    assert!(!d.allowed);
    assert_eq!(d.statuses[0].retry_after, Some(u128::from(SECOND / 10)));
    clock.advance(SECOND / 10);
    assert!(check(&l, "api", &[&[("burst", "k")]]).allowed);
}

#[test]
fn sliding_window_weighs_the_previous_minute() {
    let (l, clock) = limiter(API);
    // Align to the start of a minute, spend all 6, then look half-way through the next one.
    let now = clock_now(&clock);
    clock.set(now - now % (60 * SECOND));
    assert!(check_hits(&l, "api", &[&[("smooth", "k")]], 6).allowed);
    clock.advance(90 * SECOND);
    let d = check_hits(&l, "api", &[&[("smooth", "k")]], 4);
    assert!(!d.allowed, "3 of the previous 6 still count");
    assert!(check_hits(&l, "api", &[&[("smooth", "k")]], 3).allowed);
}

fn clock_now(c: &ManualClock) -> u64 {
    use tollgate_core::Clock;
    c.now()
}

#[test]
fn per_descriptor_hits_and_overrides() {
    let (l, _) = limiter(API);
    let entries = [Entry {
        key: "user",
        value: "7",
    }];
    let other = [Entry {
        key: "anything",
        value: "x",
    }];
    let descriptors = [
        Descriptor {
            entries: &entries,
            hits: Some(3),
            limit_override: None,
        },
        Descriptor {
            entries: &other,
            hits: None,
            limit_override: Some(LimitOverride {
                requests_per_unit: 1,
                unit: Unit::Minute,
            }),
        },
    ];
    let request = CheckRequest {
        domain: "api",
        descriptors: &descriptors,
        hits: 0,
    };
    let d = now_or_never(l.check(&request)).unwrap();
    assert!(d.allowed);
    assert_eq!(d.statuses[0].remaining, 7);
    assert_eq!(d.statuses[1].remaining, 0);
    assert_eq!(
        d.statuses[1].rule.as_ref().unwrap().rate(),
        Some((1, Unit::Minute))
    );
    let d = now_or_never(l.check(&request)).unwrap();
    assert!(!d.allowed, "the override allows one per minute");
}

#[test]
fn malformed_requests_are_refused_with_the_field_named() {
    let (l, _) = limiter(API);
    let empty_key = [Entry {
        key: "",
        value: "x",
    }];
    let descriptors = [Descriptor {
        entries: &empty_key,
        hits: None,
        limit_override: None,
    }];
    let err = now_or_never(l.check(&CheckRequest {
        domain: "api",
        descriptors: &descriptors,
        hits: 1,
    }))
    .unwrap_err();
    assert_eq!(
        err,
        RequestError::EmptyKey {
            descriptor: 0,
            entry: 0
        }
    );
    assert_eq!(
        err.to_string(),
        "descriptors[0].entries[0].key must not be empty"
    );
    let err = now_or_never(l.check(&CheckRequest {
        domain: "",
        descriptors: &descriptors,
        hits: 1,
    }))
    .unwrap_err();
    assert_eq!(err, RequestError::EmptyDomain);
    let err = now_or_never(l.check(&CheckRequest {
        domain: "api",
        descriptors: &[],
        hits: 1,
    }))
    .unwrap_err();
    assert_eq!(err, RequestError::NoDescriptors);
    let none: [Entry<'_>; 0] = [];
    let descriptors = [Descriptor {
        entries: &none,
        hits: None,
        limit_override: None,
    }];
    let err = now_or_never(l.check(&CheckRequest {
        domain: "api",
        descriptors: &descriptors,
        hits: 1,
    }))
    .unwrap_err();
    assert_eq!(err, RequestError::NoEntries { descriptor: 0 });
}

#[test]
fn replacing_policies_keeps_counters_of_unchanged_limits() {
    let (l, _) = limiter(API);
    for _ in 0..4 {
        assert!(check(&l, "api", &[&[("user", "1")]]).allowed);
    }
    l.replace_policies(PolicySet::from_files([("api.yaml", API)]).unwrap());
    assert_eq!(
        check(&l, "api", &[&[("user", "1")]]).statuses[0].remaining,
        5
    );
    // A raised limit applies at once, to the same counter.
    l.replace_policies(
        PolicySet::from_files([(
            "api.yaml",
            "domain: api\ndescriptors:\n  - key: user\n    rate_limit: {unit: second, requests_per_unit: 20}\n",
        )])
        .unwrap(),
    );
    assert_eq!(
        check(&l, "api", &[&[("user", "1")]]).statuses[0].remaining,
        14
    );
}

#[test]
fn limiters_with_different_seeds_do_not_share_counters_but_equal_seeds_do() {
    let store = Arc::new(MemoryStore::default());
    let clock = Arc::new(ManualClock::new(1_000 * SECOND));
    let make = |seed: u8| {
        let config = LimiterConfig {
            key_seed: [seed; 16],
            ..LimiterConfig::default()
        };
        Limiter::new(
            PolicySet::from_files([("api.yaml", API)]).unwrap(),
            store.clone(),
            clock.clone(),
            config,
        )
    };
    let (a, b, c) = (make(1), make(1), make(2));
    assert_eq!(
        check(&a, "api", &[&[("user", "1")]]).statuses[0].remaining,
        9
    );
    assert_eq!(
        check(&b, "api", &[&[("user", "1")]]).statuses[0].remaining,
        8
    );
    assert_eq!(
        check(&c, "api", &[&[("user", "1")]]).statuses[0].remaining,
        9
    );
}

/// A store that is always down: what `on_store_error` is for.
struct DownStore;

impl tollgate_core::Store for DownStore {
    fn apply<'a>(
        &'a self,
        _ops: &'a mut [tollgate_core::LimitOp],
        _now: u64,
        _rule: tollgate_core::CommitRule,
    ) -> tollgate_core::store::StoreFuture<'a> {
        Box::pin(std::future::ready(Err(
            tollgate_core::StoreError::Unavailable("connection refused".into()),
        )))
    }

    fn lease<'a>(
        &'a self,
        _op: &'a tollgate_core::LimitOp,
        _unused: u64,
        _want: u64,
        _now: u64,
    ) -> tollgate_core::store::LeaseFuture<'a> {
        Box::pin(std::future::ready(Err(
            tollgate_core::StoreError::Unavailable("connection refused".into()),
        )))
    }

    fn kind(&self) -> &'static str {
        "down"
    }
}

#[test]
fn a_failed_store_is_answered_by_each_policys_on_store_error() {
    let policies = PolicySet::from_files([(
        "api.yaml",
        "domain: api
descriptors:
  - key: open
    rate_limit: {unit: second, requests_per_unit: 1, on_store_error: allow}
  - key: closed
    rate_limit: {unit: second, requests_per_unit: 1, on_store_error: deny}
  - key: local
    rate_limit: {unit: second, requests_per_unit: 2, on_store_error: local}
",
    )])
    .unwrap();
    let clock = Arc::new(ManualClock::new(1_000 * SECOND));
    let l = Limiter::new(
        policies,
        Arc::new(DownStore),
        clock,
        LimiterConfig::default(),
    );
    for _ in 0..3 {
        let d = check(&l, "api", &[&[("open", "x")]]);
        assert!(d.allowed, "fail open");
        assert!(d.statuses[0].store_failed);
        assert!(d.store_error.is_some());
    }
    let d = check(&l, "api", &[&[("closed", "x")]]);
    assert!(!d.allowed, "fail closed");
    // The local fallback enforces the limit in this node's memory.
    assert!(check(&l, "api", &[&[("local", "x")]]).allowed);
    assert!(check(&l, "api", &[&[("local", "x")]]).allowed);
    assert!(!check(&l, "api", &[&[("local", "x")]]).allowed);
    // One request mixing them is denied if any fails closed.
    let d = check(&l, "api", &[&[("open", "y")], &[("closed", "y")]]);
    assert!(!d.allowed);
    assert!(d.statuses[0].allowed && !d.statuses[1].allowed);
}

#[test]
fn concurrent_checks_admit_exactly_the_limit_and_batches_stay_atomic() {
    let (l, _) = limiter(
        "domain: race
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 700}
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 500, algorithm: gcra}
",
    );
    // 4 threads × 400 requests, each charging its user (700/min, shared by all threads)
    // and the tenant (500/min): exactly 500 pass, and every pass charged both counters.
    let admitted = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (l, admitted) = (&l, &admitted);
            s.spawn(move || {
                for i in 0..400 {
                    let user = if (t + i) % 2 == 0 { "a" } else { "b" };
                    let d = check(l, "race", &[&[("user", "shared")], &[("tenant", user)]]);
                    if d.allowed {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let admitted = admitted.load(std::sync::atomic::Ordering::Relaxed);
    // Tenants a and b each allow 500; the shared user counter allows 700 in all.
    assert_eq!(admitted, 700);
    let user = check(&l, "race", &[&[("user", "shared")]]);
    assert_eq!(
        user.statuses[0].remaining, 0,
        "the user counter saw exactly the admitted requests"
    );
    assert!(!user.allowed);
    // A cost of 0 reads as 1 (as in Envoy): each probe takes one more from its tenant.
    let left = |tenant| {
        let d = check(&l, "race", &[&[("tenant", tenant)]]);
        assert!(d.allowed);
        d.statuses[0].remaining + 1
    };
    let (a, b) = (left("a"), left("b"));
    assert_eq!(
        (500 - a) + (500 - b),
        700,
        "tenants were charged only for admitted requests"
    );
}

fn limiter_with(yaml: &str, config: LimiterConfig) -> Limiter {
    let policies = PolicySet::from_files([("api.yaml", yaml)]).expect("valid policies");
    let clock = Arc::new(ManualClock::new(1_000 * SECOND));
    Limiter::new(policies, Arc::new(MemoryStore::default()), clock, config)
}

#[test]
fn global_shadow_mode_never_denies_but_reports() {
    let config = LimiterConfig {
        shadow_mode: true,
        ..LimiterConfig::default()
    };
    let l = limiter_with(API, config);
    for i in 0..15 {
        let d = check(&l, "api", &[&[("user", "1")]]);
        assert!(d.allowed && d.statuses[0].allowed);
        assert_eq!(d.statuses[0].shadow_denied, i >= 10, "request {i}");
    }
}

#[test]
fn envoy_counting_charges_denied_requests_too() {
    let config = LimiterConfig {
        commit_rule: tollgate_core::CommitRule::EveryRequestCounts,
        ..LimiterConfig::default()
    };
    let l = limiter_with(API, config);
    let both: [&[(&str, &str)]; 2] = [&[("user", "1")], &[("plan", "free")]];
    for _ in 0..10 {
        assert!(check(&l, "api", &both).allowed);
    }
    for _ in 0..5 {
        assert!(!check(&l, "api", &both).allowed);
    }
    // Unlike Tollgate's default, the five denials were charged to the daily plan too.
    let d = check(&l, "api", &[&[("plan", "free")]]);
    assert_eq!(d.statuses[0].remaining, 100 - 16);
}

#[test]
fn the_local_fallback_enforces_the_limit_divided_by_the_nodes() {
    let policies = PolicySet::from_files([(
        "api.yaml",
        "domain: api
descriptors:
  - key: local
    rate_limit: {unit: minute, requests_per_unit: 10, on_store_error: local}
",
    )])
    .unwrap();
    let clock = Arc::new(ManualClock::new(1_000 * SECOND));
    let config = LimiterConfig {
        nodes: 4,
        ..LimiterConfig::default()
    };
    let l = Limiter::new(policies, Arc::new(DownStore), clock, config);
    let admitted = (0..10)
        .filter(|_| check(&l, "api", &[&[("local", "x")]]).allowed)
        .count();
    assert_eq!(admitted, 2, "10 / 4 nodes, rounded down");
}

#[test]
fn peeking_reports_the_remaining_allowance_and_consumes_nothing() {
    let (l, _) = limiter(API);
    assert_eq!(
        check_hits(&l, "api", &[&[("user", "1")]], 4).statuses[0].remaining,
        6
    );
    let entries = [Entry {
        key: "user",
        value: "1",
    }];
    let descriptors = [Descriptor {
        entries: &entries,
        hits: None,
        limit_override: None,
    }];
    let request = CheckRequest {
        domain: "api",
        descriptors: &descriptors,
        hits: 5,
    };
    for _ in 0..3 {
        let seen = now_or_never(l.peek(&request)).unwrap();
        assert_eq!(seen.statuses[0].remaining, 6);
        assert_eq!(
            seen.statuses[0].rule.as_ref().map(|r| r.name().to_owned()),
            Some("api.user".to_owned())
        );
    }
    assert_eq!(
        check_hits(&l, "api", &[&[("user", "1")]], 1).statuses[0].remaining,
        5
    );
}
