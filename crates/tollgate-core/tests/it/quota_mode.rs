//! envoyproxy/ratelimit's `quota_mode`: a quota-mode descriptor over its limit reports
//! `allowed: false` but denies the request only when every quota-mode descriptor of the
//! request is over; a regular descriptor over its limit denies as always. A denied request
//! consumes nothing; an admitted one charges every limit that admitted it, and a quota
//! limit that was over is not charged (it had no room).

use std::sync::Arc;

use tollgate_core::{
    Decision, Limiter, LimiterConfig, ManualClock, MemoryStore, PolicySet, SECOND, Store,
};

use crate::consistency::Shared;
use crate::support::{check, peek};

const POLICIES: &str = "domain: api
descriptors:
  - key: regular
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: wide
    rate_limit: {unit: minute, requests_per_unit: 100}
  - key: quota_a
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: quota_b
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: local_quota
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1, consistency: local}
  - key: open
    rate_limit: {unlimited: true}
";

fn limiter_over(store: Arc<dyn Store>, quota_mode: bool) -> Limiter {
    let policies = PolicySet::from_files([("api.yaml", POLICIES)]).expect("valid policies");
    // Mid-window, so one minute's window holds the whole test.
    let clock = Arc::new(ManualClock::new(1_700_000_000 * SECOND + 10 * SECOND));
    let config = LimiterConfig {
        quota_mode,
        ..LimiterConfig::default()
    };
    Limiter::new(policies, store, clock, config)
}

fn memory(quota_mode: bool) -> Limiter {
    limiter_over(Arc::new(MemoryStore::default()), quota_mode)
}

/// What is left of `key`'s limit, read without consuming anything.
fn left(l: &Limiter, key: &str) -> u64 {
    peek(l, "api", &[&[(key, "x")]]).statuses[0].remaining
}

fn ask(l: &Limiter, keys: &[&str]) -> Decision {
    let descriptors: Vec<[(&str, &str); 1]> = keys.iter().map(|&k| [(k, "x")]).collect();
    let descriptors: Vec<&[(&str, &str)]> = descriptors.iter().map(|d| d.as_slice()).collect();
    check(l, "api", &descriptors)
}

/// The status of `key` in a decision for `keys`.
fn status<'a>(d: &'a Decision, keys: &[&str], key: &str) -> &'a tollgate_core::DescriptorStatus {
    &d.statuses[keys.iter().position(|&k| k == key).expect("key asked")]
}

#[test]
fn a_lone_quota_descriptor_over_its_limit_denies_and_consumes_nothing() {
    // Every quota-mode descriptor of the request is over: the request is over.
    for keys in [["regular", "quota_a"], ["quota_a", "regular"]] {
        let l = memory(false);
        assert!(ask(&l, &keys).allowed, "{keys:?}");
        let second = ask(&l, &keys);
        assert!(!second.allowed, "{keys:?}");
        let quota = status(&second, &keys, "quota_a");
        assert!(quota.quota_mode && !quota.allowed, "{quota:?}");
        assert!(status(&second, &keys, "regular").allowed);
        assert_eq!(
            left(&l, "regular"),
            1,
            "{keys:?}: the denied request took nothing"
        );
    }
}

#[test]
fn quota_descriptors_deny_only_together() {
    for keys in [
        ["quota_a", "quota_b", "wide"],
        ["wide", "quota_b", "quota_a"],
    ] {
        let l = memory(false);
        assert!(ask(&l, &keys).allowed, "{keys:?}");
        // quota_a is over, quota_b is not: admitted, and each status says its own.
        for round in 0..2 {
            let d = ask(&l, &keys);
            assert!(d.allowed, "{keys:?} round {round}");
            assert!(!status(&d, &keys, "quota_a").allowed);
            assert!(status(&d, &keys, "quota_b").allowed);
            assert!(!status(&d, &keys, "quota_a").shadow_denied);
        }
        assert_eq!(left(&l, "quota_a"), 0);
        assert_eq!(left(&l, "quota_b"), 0, "charged each time it admitted");
        assert_eq!(left(&l, "wide"), 97);
        // Both over: denied, and the regular limit is not charged.
        let d = ask(&l, &keys);
        assert!(!d.allowed, "{keys:?}");
        assert_eq!(
            left(&l, "wide"),
            97,
            "{keys:?}: a denied request consumes nothing"
        );
    }
}

#[test]
fn a_regular_descriptor_over_its_limit_denies_whatever_the_quota_says() {
    for keys in [["regular", "quota_b"], ["quota_b", "regular"]] {
        let l = memory(false);
        assert!(ask(&l, &keys).allowed);
        assert!(ask(&l, &keys).allowed);
        let d = ask(&l, &keys);
        assert!(!d.allowed, "{keys:?}");
        assert!(status(&d, &keys, "quota_b").allowed);
        assert_eq!(left(&l, "quota_b"), 1, "{keys:?}: nothing consumed");
    }
}

#[test]
fn global_quota_mode_puts_every_limit_in_one_quota_group() {
    let l = memory(true);
    assert!(ask(&l, &["regular", "wide"]).allowed);
    assert!(ask(&l, &["regular", "wide"]).allowed);
    let d = ask(&l, &["regular", "wide"]);
    assert!(d.allowed, "regular is over, wide is not");
    assert!(!d.statuses[0].allowed && d.statuses[0].quota_mode);
    // Alone, an over limit is every quota descriptor of the request.
    assert!(!ask(&l, &["regular"]).allowed);
    // As upstream counts it, a descriptor that matches nothing passes as a quota one...
    assert!(ask(&l, &["regular", "nothing"]).allowed);
    // ...but an unlimited one does not count at all.
    assert!(!ask(&l, &["regular", "open"]).allowed);
}

#[test]
fn quota_groups_span_local_and_shared_counters() {
    let l = limiter_over(Arc::new(Shared::default()), false);
    let keys = ["local_quota", "quota_b", "wide"];
    // Use up quota_b (in the shared store).
    for _ in 0..3 {
        assert!(ask(&l, &["quota_b"]).allowed);
    }
    // local_quota (this node's memory) admits: the group is satisfied, quota_b is over.
    let d = ask(&l, &keys);
    assert!(d.allowed);
    assert!(status(&d, &keys, "local_quota").allowed);
    assert!(!status(&d, &keys, "quota_b").allowed);
    assert_eq!(left(&l, "local_quota"), 0);
    assert_eq!(left(&l, "wide"), 99);
    // Now both are over: denied, and neither the shared nor the local counters move.
    let d = ask(&l, &keys);
    assert!(!d.allowed);
    assert_eq!(left(&l, "wide"), 99, "a denied request consumes nothing");
}

#[test]
fn a_quota_group_satisfied_in_the_shared_store_lets_the_local_member_be_over() {
    let l = limiter_over(Arc::new(Shared::default()), false);
    let keys = ["quota_b", "local_quota", "wide"];
    assert!(ask(&l, &keys).allowed);
    // local_quota is over; quota_b (shared) still admits: admitted, quota_b charged.
    let d = ask(&l, &keys);
    assert!(d.allowed);
    assert!(!status(&d, &keys, "local_quota").allowed);
    assert_eq!(left(&l, "quota_b"), 1);
    assert_eq!(left(&l, "local_quota"), 0);
    assert_eq!(left(&l, "wide"), 98);
}
