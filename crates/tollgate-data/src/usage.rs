//! Data-plane events: what each policy admitted and denied, its heaviest descriptor values,
//! and the denials themselves, kept off the decision's clock.
//!
//! A decision touches only its worker's shard (an uncontended mutex): it counts per policy
//! and offers the descriptor's value to the policy's [`SpaceSaving`] summary. Every interval
//! a task folds the shards into one [`UsageAggregate`] per (domain, policy). Denials go out
//! one by one up to a rate per second, then one in `denial_sample`, each saying how many were
//! left out before it. Events reach the publisher through a bounded queue: when it is full an
//! event is dropped and counted, never waited for, and the next aggregates say how many.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use foldhash::fast::FixedState;
use tokio::sync::mpsc;
use tollgate_core::heavy_hitters::{HeavyHitter, SpaceSaving};
use tollgate_core::{CheckRequest, Decision, Rule};

/// Shards a node's decisions are spread over (one per worker thread, as long as there
/// are at most this many).
const SHARDS: usize = 32;

/// How usage is summarised and denials sampled.
#[derive(Debug, Clone)]
pub struct UsageConfig {
    /// How often aggregates are made (and published).
    pub interval: Duration,
    /// Counters of each policy's heavy-hitter summary.
    pub sketch_counters: usize,
    /// Heavy hitters reported per policy.
    pub top_k: usize,
    /// Denials published one by one per second, per node.
    pub denial_rate: u64,
    /// Past the rate, one denial in this many is published.
    pub denial_sample: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            sketch_counters: 256,
            top_k: 10,
            denial_rate: 100,
            denial_sample: 100,
        }
    }
}

/// An event from the data plane to the publisher.
#[derive(Debug, Clone)]
pub enum DataEvent {
    /// One denied request.
    Denial(DenialEvent),
    /// One policy's usage over an interval.
    Usage(UsageAggregate),
}

/// A denied request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DenialEvent {
    /// When, milliseconds since the epoch.
    pub at_ms: i64,
    /// The request's id.
    pub request_id: String,
    /// The domain.
    pub domain: String,
    /// The request's cost.
    pub hits: u64,
    /// Every descriptor of the request with its status.
    pub descriptors: Vec<DeniedDescriptor>,
    /// Denials left out by sampling since the previous one published.
    pub omitted_before: u64,
}

/// One descriptor of a [`DenialEvent`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeniedDescriptor {
    /// Its entries as `key=value`.
    pub entries: Vec<String>,
    /// The policy that matched, if any.
    pub policy: Option<String>,
    /// Whether this descriptor's limit admitted the request.
    pub allowed: bool,
    /// What is left of the limit.
    pub remaining: u64,
    /// Milliseconds until the request could pass, when this limit denied it.
    pub retry_after_ms: Option<u64>,
}

/// One policy's usage over one interval on this node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UsageAggregate {
    /// The domain.
    pub domain: String,
    /// The policy's name.
    pub policy: String,
    /// Start of the interval, milliseconds since the epoch (inclusive).
    pub start_ms: i64,
    /// End of the interval (exclusive).
    pub end_ms: i64,
    /// Decisions this policy admitted.
    pub allowed: u64,
    /// Decisions this policy denied (or, in quota mode, found over).
    pub denied: u64,
    /// Decisions a shadow-mode policy would have denied.
    pub shadow_denied: u64,
    /// Hits (costs) of the admitted decisions.
    pub hits_allowed: u64,
    /// Hits of the denied decisions.
    pub hits_denied: u64,
    /// The heaviest descriptor values by hits, heaviest first.
    pub heavy_hitters: Vec<HeavyHitter>,
    /// Bound on every heavy hitter's over-count (`count - true <= error_bound`).
    pub error_bound: u64,
    /// Events this node dropped in the interval because the queue was full (node-wide:
    /// the same on every aggregate of the interval).
    pub events_dropped: u64,
    /// Denials left out by sampling in the interval (node-wide).
    pub denials_omitted: u64,
}

#[derive(Debug)]
struct PolicyUsage {
    domain: Arc<str>,
    policy: Box<str>,
    allowed: u64,
    denied: u64,
    shadow_denied: u64,
    hits_allowed: u64,
    hits_denied: u64,
    hitters: SpaceSaving,
}

#[derive(Debug, Default)]
struct Shard {
    policies: HashMap<u64, PolicyUsage, FixedState>,
}

/// The latest complete interval, for the admin API.
#[derive(Debug, Clone, Default)]
pub struct UsageSnapshot {
    /// Start of the interval (0 before the first one ends).
    pub start_ms: i64,
    /// End of the interval.
    pub end_ms: i64,
    /// One aggregate per policy that saw decisions, by domain then policy.
    pub policies: Vec<UsageAggregate>,
}

/// Lets denials through one by one up to a rate per second, then one in `sample`.
#[derive(Debug)]
struct DenialSampler {
    rate: u64,
    sample: u64,
    second: AtomicU64,
    in_second: AtomicU64,
    omitted: AtomicU64,
    omitted_in_interval: AtomicU64,
}

impl DenialSampler {
    /// `Some(left out since the last one)` when this denial is published.
    fn admit(&self, now_s: u64) -> Option<u64> {
        let second = self.second.load(Ordering::Relaxed);
        if second != now_s
            && self
                .second
                .compare_exchange(second, now_s, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.in_second.store(0, Ordering::Relaxed);
        }
        let n = self.in_second.fetch_add(1, Ordering::Relaxed);
        if n < self.rate || (n - self.rate).is_multiple_of(self.sample.max(1)) {
            return Some(self.omitted.swap(0, Ordering::Relaxed));
        }
        self.omitted.fetch_add(1, Ordering::Relaxed);
        self.omitted_in_interval.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// How the event broker is doing, as `/readyz` and `/metrics` tell it (set by the
/// publisher, read by the data plane).
#[derive(Debug, Default)]
pub struct EventsHealth {
    /// Whether the broker answers.
    pub connected: std::sync::atomic::AtomicBool,
    /// Outbox rows waiting to be published (-1: not read yet).
    pub outbox_backlog: std::sync::atomic::AtomicI64,
}

impl EventsHealth {
    /// A line for `/readyz` when events are impaired (they never make a node unready).
    pub fn detail(&self) -> Option<String> {
        if self.connected.load(Ordering::Relaxed) {
            return None;
        }
        let backlog = self.outbox_backlog.load(Ordering::Relaxed).max(0);
        Some(format!(
            "events: broker unreachable; decisions are served, {backlog} outbox rows wait"
        ))
    }
}

/// Counts decisions per policy and feeds the event queue.
#[derive(Debug)]
pub struct UsageRecorder {
    config: UsageConfig,
    shards: Box<[Mutex<Shard>]>,
    queue: Option<mpsc::Sender<DataEvent>>,
    queued: AtomicU64,
    dropped: AtomicU64,
    dropped_in_interval: AtomicU64,
    denials: DenialSampler,
    interval_start_ms: AtomicU64,
    last: ArcSwap<UsageSnapshot>,
    hasher: FixedState,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

impl UsageRecorder {
    /// A recorder; `queue` is where events go (`None`: only the admin API reads usage).
    pub fn new(config: UsageConfig, queue: Option<mpsc::Sender<DataEvent>>) -> Self {
        let denials = DenialSampler {
            rate: config.denial_rate,
            sample: config.denial_sample,
            second: AtomicU64::new(0),
            in_second: AtomicU64::new(0),
            omitted: AtomicU64::new(0),
            omitted_in_interval: AtomicU64::new(0),
        };
        Self {
            config,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            queue,
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            dropped_in_interval: AtomicU64::new(0),
            denials,
            interval_start_ms: AtomicU64::new(u64::try_from(now_ms()).unwrap_or(0)),
            last: ArcSwap::default(),
            hasher: FixedState::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &UsageConfig {
        &self.config
    }

    /// Events dropped since start because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The latest complete interval.
    pub fn last(&self) -> Arc<UsageSnapshot> {
        self.last.load_full()
    }

    /// Events handed to the queue since start (the publisher's count catches up with it
    /// once it has published them all).
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    fn send(&self, event: DataEvent) {
        let Some(queue) = &self.queue else { return };
        if queue.try_send(event).is_ok() {
            self.queued.fetch_add(1, Ordering::Relaxed);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.dropped_in_interval.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("tollgate_events_dropped_total").increment(1);
        }
    }

    /// Counts one decision; a denial may become an event.
    pub fn record(&self, request_id: &str, request: &CheckRequest<'_>, decision: &Decision) {
        let Some(domain) = &decision.domain else {
            return;
        };
        if let Ok(mut shard) = self.shards[shard_index()].lock() {
            for (descriptor, status) in request.descriptors.iter().zip(&decision.statuses) {
                let Some(rule @ Rule::Policy(_)) = &status.rule else {
                    continue;
                };
                let name = rule.name();
                let mut h = self.hasher.build_hasher();
                h.write(domain.as_bytes());
                h.write_u8(0xff);
                h.write(name.as_bytes());
                let key = h.finish();
                let usage = shard.policies.entry(key).or_insert_with(|| PolicyUsage {
                    domain: domain.clone(),
                    policy: name.into(),
                    allowed: 0,
                    denied: 0,
                    shadow_denied: 0,
                    hits_allowed: 0,
                    hits_denied: 0,
                    hitters: SpaceSaving::new(self.config.sketch_counters),
                });
                let hits = descriptor.hits.unwrap_or(request.hits).max(1);
                if status.allowed {
                    usage.allowed += 1;
                    usage.hits_allowed = usage.hits_allowed.saturating_add(hits);
                } else {
                    usage.denied += 1;
                    usage.hits_denied = usage.hits_denied.saturating_add(hits);
                }
                usage.shadow_denied += u64::from(status.shadow_denied);
                let mut h = self.hasher.build_hasher();
                for e in descriptor.entries {
                    h.write(e.key.as_bytes());
                    h.write_u8(0xfe);
                    h.write(e.value.as_bytes());
                    h.write_u8(0xff);
                }
                usage.hitters.offer(h.finish(), hits, || {
                    let mut label = String::new();
                    for (i, e) in descriptor.entries.iter().enumerate() {
                        if i > 0 {
                            label.push(',');
                        }
                        label.push_str(e.key);
                        label.push('=');
                        label.push_str(e.value);
                    }
                    label
                });
            }
        }
        if !decision.allowed && self.queue.is_some() {
            let now = now_ms();
            if let Some(omitted_before) = self.denials.admit(u64::try_from(now / 1000).unwrap_or(0))
            {
                self.send(DataEvent::Denial(denial(
                    request_id,
                    request,
                    decision,
                    now,
                    omitted_before,
                )));
            }
        }
    }

    /// Ends the current interval: folds every shard into aggregates, keeps them for the
    /// admin API and queues them as events.
    pub fn flush(&self) -> Arc<UsageSnapshot> {
        let end_ms = now_ms();
        let start_ms = i64::try_from(
            self.interval_start_ms
                .swap(u64::try_from(end_ms).unwrap_or(0), Ordering::Relaxed),
        )
        .unwrap_or(0);
        let mut merged: HashMap<u64, PolicyUsage, FixedState> = HashMap::default();
        for shard in &self.shards {
            let taken = match shard.lock() {
                Ok(mut s) => std::mem::take(&mut s.policies),
                Err(_) => continue,
            };
            for (key, usage) in taken {
                match merged.get_mut(&key) {
                    Some(m) => {
                        m.allowed += usage.allowed;
                        m.denied += usage.denied;
                        m.shadow_denied += usage.shadow_denied;
                        m.hits_allowed = m.hits_allowed.saturating_add(usage.hits_allowed);
                        m.hits_denied = m.hits_denied.saturating_add(usage.hits_denied);
                        m.hitters.merge(&usage.hitters);
                    }
                    None => {
                        merged.insert(key, usage);
                    }
                }
            }
        }
        let events_dropped = self.dropped_in_interval.swap(0, Ordering::Relaxed);
        let denials_omitted = self.denials.omitted_in_interval.swap(0, Ordering::Relaxed);
        let mut policies: Vec<UsageAggregate> = merged
            .into_values()
            .map(|u| UsageAggregate {
                domain: u.domain.to_string(),
                policy: u.policy.into(),
                start_ms,
                end_ms,
                allowed: u.allowed,
                denied: u.denied,
                shadow_denied: u.shadow_denied,
                hits_allowed: u.hits_allowed,
                hits_denied: u.hits_denied,
                heavy_hitters: u.hitters.top(self.config.top_k),
                error_bound: u.hitters.error_bound(),
                events_dropped,
                denials_omitted,
            })
            .collect();
        policies.sort_by(|a, b| (&a.domain, &a.policy).cmp(&(&b.domain, &b.policy)));
        for aggregate in &policies {
            self.send(DataEvent::Usage(aggregate.clone()));
        }
        let snapshot = Arc::new(UsageSnapshot {
            start_ms,
            end_ms,
            policies,
        });
        self.last.store(snapshot.clone());
        snapshot
    }
}

fn denial(
    request_id: &str,
    request: &CheckRequest<'_>,
    decision: &Decision,
    at_ms: i64,
    omitted_before: u64,
) -> DenialEvent {
    DenialEvent {
        at_ms,
        request_id: request_id.to_owned(),
        domain: request.domain.to_owned(),
        hits: request.hits.max(1),
        descriptors: request
            .descriptors
            .iter()
            .zip(&decision.statuses)
            .map(|(d, s)| DeniedDescriptor {
                entries: d
                    .entries
                    .iter()
                    .map(|e| format!("{}={}", e.key, e.value))
                    .collect(),
                policy: s.rule.as_ref().map(|r| r.name().to_owned()),
                allowed: s.allowed,
                remaining: s.remaining,
                retry_after_ms: s
                    .retry_after
                    .map(|r| u64::try_from(r / 1_000_000).unwrap_or(u64::MAX)),
            })
            .collect(),
        omitted_before,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_pass_up_to_the_rate_then_one_in_the_sample_counting_the_rest() {
        let s = DenialSampler {
            rate: 3,
            sample: 4,
            second: AtomicU64::new(0),
            in_second: AtomicU64::new(0),
            omitted: AtomicU64::new(0),
            omitted_in_interval: AtomicU64::new(0),
        };
        let admitted: Vec<Option<u64>> = (0..12).map(|_| s.admit(7)).collect();
        assert_eq!(
            admitted,
            vec![
                Some(0),
                Some(0),
                Some(0),
                Some(0),
                None,
                None,
                None,
                Some(3),
                None,
                None,
                None,
                Some(3)
            ]
        );
        // A new second starts with the rate again; what was left out is still told.
        assert_eq!(s.admit(8), Some(0));
        assert_eq!(s.omitted_in_interval.load(Ordering::Relaxed), 6);
    }
}
