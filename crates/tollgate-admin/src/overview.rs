//! The dashboard's overview: each domain's allowed and denied decisions per second over
//! the last minutes on this node, and the health of what the node depends on. A task
//! samples the data plane's per-domain totals once a second into a bounded ring
//! ([`RateHistory`]); `GET /v1/admin/overview` reads it, scoped to the caller's domains.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tollgate_control::Actor;
use tollgate_data::AppState;
use utoipa::ToSchema;

/// How often the totals are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How many samples are kept: five minutes.
pub const SAMPLES_KEPT: usize = 300;

/// One second of one domain.
#[derive(Debug, Clone, Copy, Serialize, ToSchema, PartialEq, Eq)]
pub struct RatePoint {
    /// When the second ended (milliseconds since the epoch).
    pub at_ms: i64,
    /// Decisions admitted in it.
    pub allowed: u64,
    /// Decisions denied in it.
    pub denied: u64,
    /// Descriptors a shadow-mode policy would have denied in it.
    pub shadow_denied: u64,
}

/// One domain's recent rates, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DomainRates {
    /// The domain.
    pub domain: String,
    /// Decisions admitted over the whole history kept.
    pub allowed: u64,
    /// Decisions denied over the whole history kept.
    pub denied: u64,
    /// One point per sample.
    pub points: Vec<RatePoint>,
}

/// What the node depends on.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// The counter store (`memory`, `redis`).
    pub store: String,
    /// Whether it answers (a shared store behind an open circuit breaker does not).
    pub store_available: bool,
    /// Whether this node would take traffic (`/readyz`).
    pub ready: bool,
    /// Why not, when it would not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_ready: Option<String>,
    /// Whether the event broker is connected (absent when events are off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_connected: Option<bool>,
    /// Events waiting in the outbox (absent when events are off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox_backlog: Option<i64>,
}

/// The answer of `GET /v1/admin/overview`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Overview {
    /// Milliseconds between points.
    pub interval_ms: u64,
    /// The node's dependencies.
    pub health: Health,
    /// The domains the caller may read, by name.
    pub domains: Vec<DomainRates>,
}

/// Allowed, denied and shadow-denied, per domain.
type Counts = HashMap<Arc<str>, (u64, u64, u64)>;

#[derive(Debug, Default)]
struct Ring {
    /// The totals at the last sample.
    last: Counts,
    /// Per sample: when, and each domain's counts in that second.
    samples: VecDeque<(i64, Counts)>,
}

/// The last [`SAMPLES_KEPT`] seconds of every domain's decisions.
#[derive(Debug, Default)]
pub struct RateHistory {
    ring: Mutex<Ring>,
}

impl RateHistory {
    /// Records the totals read at `at_ms`: each domain's change since the previous
    /// sample (a domain new since then, or one whose totals went down because it was
    /// configured anew, counts its totals: they were all made since).
    pub fn record(&self, at_ms: i64, totals: &[(Arc<str>, u64, u64, u64)]) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let mut second = HashMap::with_capacity(totals.len());
        let mut last = HashMap::with_capacity(totals.len());
        for (domain, a, d, s) in totals {
            let now = (*a, *d, *s);
            let delta = match ring.last.get(domain) {
                Some(&(pa, pd, ps)) if pa <= *a && pd <= *d && ps <= *s => (a - pa, d - pd, s - ps),
                _ => now,
            };
            second.insert(domain.clone(), delta);
            last.insert(domain.clone(), now);
        }
        ring.last = last;
        if ring.samples.len() == SAMPLES_KEPT {
            ring.samples.pop_front();
        }
        ring.samples.push_back((at_ms, second));
    }

    /// The history of every domain `may_read` accepts, by name.
    pub fn rates(&self, may_read: impl Fn(&str) -> bool) -> Vec<DomainRates> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<&Arc<str>> = ring.last.keys().filter(|d| may_read(d)).collect();
        names.sort();
        names
            .into_iter()
            .map(|domain| {
                let points: Vec<RatePoint> = ring
                    .samples
                    .iter()
                    .map(|(at_ms, second)| {
                        let (allowed, denied, shadow_denied) =
                            second.get(domain).copied().unwrap_or_default();
                        RatePoint {
                            at_ms: *at_ms,
                            allowed,
                            denied,
                            shadow_denied,
                        }
                    })
                    .collect();
                DomainRates {
                    domain: domain.to_string(),
                    allowed: points.iter().map(|p| p.allowed).sum(),
                    denied: points.iter().map(|p| p.denied).sum(),
                    points,
                }
            })
            .collect()
    }

    /// Samples `app`'s totals every [`SAMPLE_EVERY`] on the current runtime, for as long
    /// as the history is referenced elsewhere.
    pub fn spawn_sampler(self: &Arc<Self>, app: Arc<AppState>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let history = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(history) = history.upgrade() else {
                    return;
                };
                history.record(
                    tollgate_control::service::now_ms(),
                    &app.metrics.domain_totals(),
                );
            }
        });
    }
}

/// The overview `actor` may see.
pub fn overview(app: &AppState, history: &RateHistory, actor: &Actor) -> Overview {
    let store = app.limiter.store();
    let ready = app.ready();
    Overview {
        interval_ms: SAMPLE_EVERY.as_millis() as u64,
        health: Health {
            store: store.kind().to_owned(),
            store_available: store.is_available(),
            ready: ready.is_ok(),
            not_ready: ready.err().map(str::to_owned),
            events_connected: app
                .events
                .as_ref()
                .map(|e| e.connected.load(std::sync::atomic::Ordering::Relaxed)),
            outbox_backlog: app
                .events
                .as_ref()
                .map(|e| e.outbox_backlog.load(std::sync::atomic::Ordering::Relaxed)),
        },
        domains: history.rates(|d| actor.require_read(d).is_ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(a: u64, d: u64) -> Vec<(Arc<str>, u64, u64, u64)> {
        vec![(Arc::from("api"), a, d, 0)]
    }

    #[test]
    fn each_point_is_the_change_since_the_previous_sample() {
        let h = RateHistory::default();
        h.record(1_000, &totals(10, 2));
        h.record(2_000, &totals(15, 2));
        h.record(3_000, &totals(15, 9));
        let rates = h.rates(|_| true);
        assert_eq!(rates.len(), 1);
        let p: Vec<(u64, u64)> = rates[0]
            .points
            .iter()
            .map(|p| (p.allowed, p.denied))
            .collect();
        // A domain first seen counts what it has: it was configured since the last sample.
        assert_eq!(p, vec![(10, 2), (5, 0), (0, 7)]);
        assert_eq!((rates[0].allowed, rates[0].denied), (15, 9));
    }

    #[test]
    fn totals_that_went_down_count_from_zero_and_the_ring_is_bounded() {
        let h = RateHistory::default();
        h.record(0, &totals(100, 100));
        h.record(1, &totals(3, 1));
        assert_eq!(h.rates(|_| true)[0].points[1].allowed, 3);
        for i in 0..2 * SAMPLES_KEPT as i64 {
            h.record(i + 2, &totals(3, 1));
        }
        assert_eq!(h.rates(|_| true)[0].points.len(), SAMPLES_KEPT);
    }

    #[test]
    fn only_the_domains_the_caller_may_read_are_shown() {
        let h = RateHistory::default();
        h.record(0, &[(Arc::from("a"), 1, 0, 0), (Arc::from("b"), 1, 0, 0)]);
        let names: Vec<String> = h
            .rates(|d| d == "b")
            .into_iter()
            .map(|r| r.domain)
            .collect();
        assert_eq!(names, ["b"]);
    }
}
