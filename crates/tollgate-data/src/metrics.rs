//! Prometheus metrics. Label values are bounded: a domain label is either a configured
//! domain or `_unknown`, never a value a caller sent, and no label carries descriptor values.
//!
//! Handles are registered once per domain and looked up on the decision path, so recording
//! a decision is a few atomic adds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tollgate_core::PolicySet;

/// The label for requests naming a domain with no policies.
pub const UNKNOWN_DOMAIN: &str = "_unknown";

/// Counters of one domain.
#[derive(Clone)]
pub struct DomainMetrics {
    allowed: Counter,
    denied: Counter,
    shadow_denied: Counter,
    totals: Arc<DomainTotals>,
}

/// A domain's decisions since it was first configured, readable in-process (the
/// Prometheus counters cannot be read back): what the dashboard's rate chart samples.
#[derive(Debug, Default)]
pub struct DomainTotals {
    /// Decisions admitted.
    pub allowed: AtomicU64,
    /// Decisions denied.
    pub denied: AtomicU64,
    /// Descriptors a shadow-mode policy would have denied.
    pub shadow_denied: AtomicU64,
}

impl DomainMetrics {
    fn register(domain: &str, totals: Arc<DomainTotals>) -> Self {
        let d = domain.to_owned();
        Self {
            allowed: counter!("tollgate_decisions_total", "domain" => d.clone(), "result" => "allowed"),
            denied: counter!("tollgate_decisions_total", "domain" => d.clone(), "result" => "denied"),
            shadow_denied: counter!("tollgate_shadow_denials_total", "domain" => d),
            totals,
        }
    }
}

/// The metrics the server records, with per-domain handles swapped on policy changes.
pub struct Metrics {
    handle: PrometheusHandle,
    domains: ArcSwap<HashMap<Arc<str>, DomainMetrics>>,
    unknown: DomainMetrics,
    latency: Histogram,
}

impl Metrics {
    /// Installs the Prometheus recorder (once per process) and registers every metric.
    pub fn install() -> anyhow::Result<Arc<Self>> {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("tollgate_decision_duration_seconds".into()),
                &[
                    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
                    0.005, 0.025, 0.1,
                ],
            )?
            .install_recorder()?;
        describe_counter!(
            "tollgate_decisions_total",
            "Rate-limit decisions by domain and result."
        );
        describe_counter!(
            "tollgate_shadow_denials_total",
            "Descriptors a shadow-mode policy would have denied, by domain."
        );
        describe_counter!(
            "tollgate_rejected_requests_total",
            "Check requests refused as malformed, by reason."
        );
        describe_histogram!(
            "tollgate_decision_duration_seconds",
            Unit::Seconds,
            "Time to answer POST /v1/check, from body to response."
        );
        describe_counter!(
            "tollgate_connections_total",
            "Connections accepted, by listener (http, grpc)."
        );
        describe_counter!(
            "tollgate_grpc_requests_total",
            "gRPC calls by method and status code."
        );
        describe_gauge!(
            "tollgate_store_keys",
            "Counters held by the in-memory store."
        );
        describe_counter!(
            "tollgate_store_overflows_total",
            "New counters the in-memory store decided but could not keep (max_keys reached)."
        );
        Ok(Arc::new(Self {
            handle,
            domains: ArcSwap::from_pointee(HashMap::new()),
            unknown: DomainMetrics::register(UNKNOWN_DOMAIN, Arc::default()),
            latency: histogram!("tollgate_decision_duration_seconds"),
        }))
    }

    /// Registers handles for the domains of `policies` (call after every policy change).
    pub fn set_domains(&self, policies: &PolicySet) {
        let before = self.domains.load();
        let map = policies
            .domains()
            .map(|d| {
                // A domain that stays keeps its totals: the rates sampled from them go on.
                let totals = before
                    .get(d.name())
                    .map_or_else(Arc::default, |m| m.totals.clone());
                (d.name().clone(), DomainMetrics::register(d.name(), totals))
            })
            .collect();
        self.domains.store(Arc::new(map));
    }

    /// Each configured domain's totals so far: `(domain, allowed, denied, shadow denied)`.
    pub fn domain_totals(&self) -> Vec<(Arc<str>, u64, u64, u64)> {
        self.domains
            .load()
            .iter()
            .map(|(name, m)| {
                let t = &m.totals;
                (
                    name.clone(),
                    t.allowed.load(Ordering::Relaxed),
                    t.denied.load(Ordering::Relaxed),
                    t.shadow_denied.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Records one decision.
    pub fn decision(&self, domain: Option<&str>, allowed: bool, shadow_denials: u64) {
        let domains = self.domains.load();
        let m = domain.and_then(|d| domains.get(d)).unwrap_or(&self.unknown);
        if allowed {
            m.allowed.increment(1);
            m.totals.allowed.fetch_add(1, Ordering::Relaxed);
        } else {
            m.denied.increment(1);
            m.totals.denied.fetch_add(1, Ordering::Relaxed);
        }
        if shadow_denials > 0 {
            m.shadow_denied.increment(shadow_denials);
            m.totals
                .shadow_denied
                .fetch_add(shadow_denials, Ordering::Relaxed);
        }
    }

    /// Records how long one decision took to answer.
    pub fn observe_latency(&self, took: Duration) {
        self.latency.record(took.as_secs_f64());
    }

    /// Records a policy reload.
    pub fn reloaded(&self, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        counter!("tollgate_policy_reloads_total", "result" => result).increment(1);
    }

    /// Records a gRPC call and its status code (`ok`, `invalid_argument`).
    pub fn grpc_call(&self, method: &'static str, code: &'static str) {
        counter!("tollgate_grpc_requests_total", "method" => method, "code" => code).increment(1);
    }

    /// Records a refused request.
    pub fn rejected(&self, reason: &'static str) {
        counter!("tollgate_rejected_requests_total", "reason" => reason).increment(1);
    }

    /// Folds recorded histogram samples into their buckets. Must run periodically: until it
    /// does, samples accumulate in memory.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}
