//! `consistency: local | global | leased` across several limiters ("nodes") sharing one
//! store. The shared store here is the in-memory one presented as shared, so the tests are
//! exact and deterministic; the same scenarios run over Redis in tollgate-server's tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use tollgate_core::store::{LeaseFuture, StoreFuture};
use tollgate_core::{
    CommitRule, LimitOp, Limiter, LimiterConfig, ManualClock, MemoryStore, Nanos, PolicySet,
    SECOND, Store,
};

use crate::support::{check, check_hits, now_or_never};

/// An in-memory store that says it is shared, so limiters treat it like Redis. It counts
/// the calls that would be round trips and the tokens it leased; a `slow` one makes every
/// lease wait one poll, so that several checks can be in flight at once.
#[derive(Default)]
pub(crate) struct Shared {
    store: MemoryStore,
    calls: AtomicU64,
    granted: AtomicU64,
    slow: bool,
}

impl Store for Shared {
    fn apply<'a>(
        &'a self,
        ops: &'a mut [LimitOp],
        now: Nanos,
        rule: CommitRule,
    ) -> StoreFuture<'a> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.store.apply(ops, now, rule)
    }
    fn lease<'a>(&'a self, op: &'a LimitOp, unused: u64, want: u64, now: Nanos) -> LeaseFuture<'a> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            if self.slow {
                YieldOnce(false).await;
            }
            let grant = self.store.lease_sync(op, unused, want, now);
            self.granted.fetch_add(grant.granted, Ordering::Relaxed);
            Ok(grant)
        })
    }
    fn is_shared(&self) -> bool {
        true
    }
    fn kind(&self) -> &'static str {
        "shared-memory"
    }
}

const POLICIES: &str = "domain: api
descriptors:
  - key: global
    rate_limit: {unit: minute, requests_per_unit: 100}
  - key: leased
    rate_limit: {unit: minute, requests_per_unit: 100, consistency: leased}
  - key: leased_gcra
    rate_limit: {unit: minute, requests_per_unit: 100, algorithm: gcra, consistency: leased}
  - key: local
    rate_limit: {unit: minute, requests_per_unit: 10, consistency: local}
  - key: tight
    rate_limit: {unit: minute, requests_per_unit: 3}
";

/// `n` limiters sharing one store and one clock.
fn nodes(n: usize) -> (Vec<Limiter>, Arc<ManualClock>) {
    let store: Arc<dyn Store> = Arc::new(Shared::default());
    // Mid-window, so one minute's window holds the whole test.
    let clock = Arc::new(ManualClock::new(1_700_000_000 * SECOND + 10 * SECOND));
    let limiters = (0..n)
        .map(|_| {
            let policies = PolicySet::from_files([("api.yaml", POLICIES)]).expect("valid policies");
            Limiter::new(
                policies,
                store.clone(),
                clock.clone(),
                LimiterConfig::default(),
            )
        })
        .collect();
    (limiters, clock)
}

fn admitted(l: &Limiter, key: &str) -> bool {
    check(l, "api", &[&[(key, "x")]]).allowed
}

#[test]
fn global_is_exact_across_nodes() {
    let (nodes, _) = nodes(3);
    let total = (0..300)
        .filter(|i| admitted(&nodes[i % 3], "global"))
        .count();
    assert_eq!(total, 100);
}

#[test]
fn local_counts_each_node_on_its_own() {
    let (nodes, _) = nodes(3);
    let total = (0..90).filter(|i| admitted(&nodes[i % 3], "local")).count();
    assert_eq!(total, 30, "3 nodes × 10");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Leased never admits more than the limit, whatever the interleaving, and loses at
    /// most what the nodes hold: per node one lease plus the prefetched half.
    #[test]
    fn leased_never_exceeds_the_limit(
        order in prop::collection::vec((0usize..3, 1u64..4), 1..400),
        gcra in any::<bool>(),
    ) {
        let (nodes, _) = nodes(3);
        let key = if gcra { "leased_gcra" } else { "leased" };
        let mut admitted = 0u64;
        let mut demand = 0u64;
        for &(node, hits) in &order {
            demand += hits;
            if check_hits(&nodes[node], "api", &[&[(key, "x")]], hits).allowed {
                admitted += hits;
            }
        }
        prop_assert!(admitted <= 100, "{} admitted", admitted);
        // 100 / 10 = 10 tokens per lease; a node holds at most 15 (+ one request's cost).
        let stranded = 3 * (15 + 3);
        prop_assert!(admitted + stranded >= demand.min(100), "{} admitted of {}", admitted, demand);
    }
}

#[test]
fn leases_cost_one_round_trip_per_lease_not_per_request() {
    let store = Arc::new(Shared::default());
    let clock = Arc::new(ManualClock::new(1_700_000_000 * SECOND));
    let policies = PolicySet::from_files([(
        "hot.yaml",
        "domain: hot\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 100000, consistency: leased}\n",
    )])
    .expect("valid policy");
    let l = Limiter::new(
        policies,
        store.clone(),
        clock.clone(),
        LimiterConfig::default(),
    );
    let mut admitted = 0u64;
    for i in 0..50_000u64 {
        if i % 10_000 == 0 {
            clock.advance(SECOND / 10);
        }
        admitted += u64::from(check(&l, "hot", &[&[("k", "x")]]).allowed);
    }
    let trips = store.calls.load(Ordering::Relaxed);
    assert_eq!(admitted, 50_000);
    // 10 000 tokens per lease: a handful of round trips for 50 000 decisions.
    assert!(trips * 1_000 <= 50_000, "{trips} round trips");
}

#[test]
fn a_policy_sets_its_own_lease_size() {
    let store = Arc::new(Shared::default());
    let clock = Arc::new(ManualClock::new(1_700_000_000 * SECOND + 10 * SECOND));
    let trips = |key: &str, lease: &str| {
        let yaml = format!(
            "domain: api\ndescriptors:\n  - key: {key}\n    rate_limit: {{unit: minute, requests_per_unit: 1000, consistency: leased{lease}}}\n"
        );
        let policies = PolicySet::from_files([("api.yaml", yaml.as_str())]).expect("valid policy");
        let l = Limiter::new(
            policies,
            store.clone(),
            clock.clone(),
            LimiterConfig::default(),
        );
        let before = store.calls.load(Ordering::Relaxed);
        let admitted = (0..1_000)
            .filter(|_| check(&l, "api", &[&[(key, "x")]]).allowed)
            .count();
        assert_eq!(admitted, 1_000);
        store.calls.load(Ordering::Relaxed) - before
    };
    // The default lease is a tenth of the burst: about 10 round trips for 1 000 decisions
    // (plus refills); a lease of 500 needs about 2.
    let default = trips("a", "");
    let large = trips("b", ", lease: 500");
    assert!((10..=15).contains(&default), "{default}");
    assert!(large <= 3, "{large}");
}

#[test]
fn a_denial_elsewhere_gives_leased_and_local_tokens_back() {
    let (nodes, _) = nodes(1);
    let l = &nodes[0];
    let both: [&[(&str, &str)]; 3] = [&[("leased", "x")], &[("local", "x")], &[("tight", "x")]];
    for _ in 0..3 {
        assert!(check(l, "api", &both).allowed);
    }
    // `tight` (3/min, global) now denies; the leased and local limits must not be charged.
    for _ in 0..20 {
        assert!(!check(l, "api", &both).allowed);
    }
    let local_left = (0..20).filter(|_| admitted(l, "local")).count();
    assert_eq!(local_left, 7, "10 - the 3 admitted requests");
    let leased_left = (0..200).filter(|_| admitted(l, "leased")).count();
    assert_eq!(leased_left, 97, "100 - the 3 admitted requests");
}

#[test]
fn without_a_shared_store_every_consistency_is_exact() {
    let policies = PolicySet::from_files([("api.yaml", POLICIES)]).expect("valid policies");
    let clock = Arc::new(ManualClock::new(1_700_000_000 * SECOND + 10 * SECOND));
    let l = Limiter::new(
        policies,
        Arc::new(MemoryStore::default()),
        clock,
        LimiterConfig::default(),
    );
    let leased = (0..150).filter(|_| admitted(&l, "leased")).count();
    assert_eq!(leased, 100);
    assert!(now_or_never(async { true }));
}

/// Waits one poll, so that several checks are in flight at the same time.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[test]
fn concurrent_misses_fetch_one_lease_not_one_each() {
    let store = Arc::new(Shared {
        slow: true,
        ..Shared::default()
    });
    let clock = Arc::new(ManualClock::new(1_700_000_000 * SECOND + 10 * SECOND));
    let policies = PolicySet::from_files([(
        "api.yaml",
        "domain: api\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute, requests_per_unit: 1000, consistency: leased}\n",
    )])
    .expect("valid policy");
    let l = Limiter::new(policies, store.clone(), clock, LimiterConfig::default());
    let entries = [tollgate_core::Entry {
        key: "k",
        value: "x",
    }];
    let descriptors = [tollgate_core::Descriptor {
        entries: &entries,
        hits: None,
        limit_override: None,
    }];
    let request = tollgate_core::CheckRequest {
        domain: "api",
        descriptors: &descriptors,
        hits: 1,
    };
    // 16 checks in flight at once, all finding no lease: polled round robin until done.
    let mut checks: Vec<_> = (0..16).map(|_| Some(Box::pin(l.check(&request)))).collect();
    let mut admitted = 0u64;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for _ in 0..10 {
        for slot in checks.iter_mut() {
            if let Some(check) = slot
                && let std::task::Poll::Ready(d) = check.as_mut().poll(&mut cx)
            {
                admitted += u64::from(d.expect("valid request").allowed);
                *slot = None;
            }
        }
    }
    assert!(checks.iter().all(Option::is_none), "every check finished");
    assert_eq!(admitted, 16);
    // One full lease (1000 / 10) for the first, one token each for the other 15: the node
    // holds at most one lease, not sixteen.
    let held = store.granted.load(Ordering::Relaxed) - admitted;
    assert!(held <= 100, "{held} tokens stranded on the node");
}

#[test]
fn expired_leases_go_back_to_the_store_for_other_nodes() {
    let store: Arc<dyn Store> = Arc::new(Shared::default());
    let clock = Arc::new(ManualClock::new(1_700_000_000 * SECOND));
    // 100 per day: nothing refills while the test runs.
    let yaml = "domain: api\ndescriptors:\n  - key: k\n    rate_limit: {unit: day, requests_per_unit: 100, algorithm: gcra, consistency: leased}\n";
    let node = || {
        let policies = PolicySet::from_files([("api.yaml", yaml)]).expect("valid policy");
        Limiter::new(
            policies,
            store.clone(),
            clock.clone(),
            LimiterConfig::default(),
        )
    };
    let (a, b) = (node(), node());
    assert!(admitted(&a, "k"), "a leases 10 and spends 1");
    clock.advance(2 * SECOND);
    assert_eq!(now_or_never(a.return_expired_leases()), 9);
    let by_b = (0..200).filter(|_| admitted(&b, "k")).count();
    assert_eq!(by_b, 99, "everything a did not spend");
}

#[test]
fn a_stopping_node_hands_back_the_leases_it_holds() {
    let store: Arc<dyn Store> = Arc::new(Shared::default());
    let clock = Arc::new(ManualClock::new(1_700_000_000 * SECOND));
    // 100 per day on a window: a live lease (nothing expired) is handed back all the same.
    let yaml = "domain: api\ndescriptors:\n  - key: k\n    rate_limit: {unit: day, requests_per_unit: 100, consistency: leased}\n";
    let node = || {
        let policies = PolicySet::from_files([("api.yaml", yaml)]).expect("valid policy");
        Limiter::new(
            policies,
            store.clone(),
            clock.clone(),
            LimiterConfig::default(),
        )
    };
    let (a, b) = (node(), node());
    assert!(admitted(&a, "k"), "a leases 10 and spends 1");
    assert_eq!(
        now_or_never(a.return_expired_leases()),
        0,
        "its lease is live"
    );
    assert_eq!(now_or_never(a.return_all_leases()), 9);
    assert_eq!(
        now_or_never(a.return_all_leases()),
        0,
        "nothing is handed back twice"
    );
    let by_b = (0..200).filter(|_| admitted(&b, "k")).count();
    assert_eq!(by_b, 99, "everything a did not spend");
}
