//! Publishes the data plane's events (denials, usage aggregates) from the bounded queue
//! the workers fill. Best effort: up to `IN_FLIGHT` publishes await their acknowledgement
//! at once; a failed one is counted (`tollgate_events_publish_failures_total`) and not
//! retried, and while the broker is slow the queue fills and the workers drop (and count)
//! what does not fit. A worker never waits for the broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tollgate_data::usage::DataEvent;

use crate::broker::Broker;
use crate::cloudevent::{self, EventType};
use crate::subject;

/// Publishes awaiting their acknowledgement at once.
const IN_FLIGHT: usize = 1024;

/// Names the events of one process: `source` and the id prefix.
#[derive(Debug, Clone)]
pub struct Origin {
    /// `/tollgate/node/<node>`.
    pub source: String,
    /// A random prefix per process, so ids never repeat across restarts.
    pub boot: String,
}

impl Origin {
    /// The origin of node `node`, with a fresh boot id.
    pub fn new(node: &str) -> Self {
        let mut bytes = [0u8; 6];
        // Without randomness ids would still be unique per sequence, not across restarts:
        // fall back to the clock.
        if getrandom::fill(&mut bytes).is_err() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            bytes.copy_from_slice(&now.to_le_bytes()[..6]);
        }
        Self {
            source: format!("/tollgate/node/{node}"),
            boot: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// The subject, id and bytes of a data-plane event.
pub fn message(
    origin: &Origin,
    seq: u64,
    event: &DataEvent,
) -> Result<(EventType, String, String, Vec<u8>), serde_json::Error> {
    match event {
        DataEvent::Denial(d) => {
            let id = format!("{}-d{seq}", origin.boot);
            let bytes = cloudevent::encode(
                EventType::Denial,
                &id,
                &origin.source,
                Some(&d.domain),
                d.at_ms,
                d,
            )?;
            Ok((
                EventType::Denial,
                subject::subject(EventType::Denial, Some(&d.domain)),
                id,
                bytes,
            ))
        }
        DataEvent::Usage(u) => {
            // Stable for the aggregate: a republished one is a duplicate.
            let id = format!(
                "{}-u{}-{}-{}",
                origin.boot,
                u.start_ms,
                subject::token(Some(&u.domain)),
                subject::token(Some(&u.policy))
            );
            let bytes = cloudevent::encode(
                EventType::Usage,
                &id,
                &origin.source,
                Some(&u.domain),
                u.end_ms,
                u,
            )?;
            Ok((
                EventType::Usage,
                subject::subject(EventType::Usage, Some(&u.domain)),
                id,
                bytes,
            ))
        }
    }
}

/// Counts of what the publisher did, for tests and the closing log line.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Acknowledged by JetStream.
    pub published: AtomicU64,
    /// Failed (not retried).
    pub failed: AtomicU64,
}

/// Publishes until the queue closes.
pub async fn run(
    mut queue: mpsc::Receiver<DataEvent>,
    broker: Arc<Broker>,
    origin: Origin,
    stats: Arc<PublisherStats>,
) {
    let mut in_flight = FuturesUnordered::new();
    let mut seq = 0u64;
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            event = queue.recv(), if open && in_flight.len() < IN_FLIGHT => {
                let Some(event) = event else { open = false; continue };
                seq += 1;
                let (kind, subject, id, bytes) = match message(&origin, seq, &event) {
                    Ok(m) => m,
                    Err(e) => { tracing::error!(error = %e, "cannot encode an event"); continue; }
                };
                let started = Instant::now();
                match broker.send(subject, &id, bytes).await {
                    Ok(ack) => in_flight.push(async move { (kind, started, ack.await.map(|_| ()).map_err(|e| e.to_string())) }),
                    Err(e) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("tollgate_events_publish_failures_total", "type" => kind.token()).increment(1);
                        tracing::debug!(error = %e, "data-plane event not published");
                    }
                }
            }
            Some((kind, started, result)) = in_flight.next(), if !in_flight.is_empty() => {
                match result {
                    Ok(()) => {
                        stats.published.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("tollgate_events_published_total", "type" => kind.token()).increment(1);
                        metrics::histogram!("tollgate_events_publish_seconds", "stream" => "usage").record(started.elapsed().as_secs_f64());
                    }
                    Err(e) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("tollgate_events_publish_failures_total", "type" => kind.token()).increment(1);
                        tracing::debug!(error = %e, "data-plane event not acknowledged");
                    }
                }
            }
        }
    }
}
