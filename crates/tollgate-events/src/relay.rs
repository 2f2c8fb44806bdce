//! The outbox relay: publishes the control plane's unsent rows to JetStream, in order,
//! each with `Nats-Msg-Id` = its row id, marking a row sent only after the broker
//! acknowledged it. Wakes when this process commits a change, and every second for what
//! other nodes wrote. With the broker down it keeps the rows, reports the backlog
//! (`tollgate_outbox_backlog`, `/readyz`) and retries; when the broker is back the rows go
//! out oldest first.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tollgate_control::ControlPlane;
use tollgate_control::outbox::OutboxEvent;

use crate::broker::Broker;
use crate::cloudevent::{self, EventType};
use crate::subject;

/// Rows per relay pass.
const BATCH: i64 = 256;
/// How often the outbox is looked at without a local change.
const POLL: Duration = Duration::from_secs(1);
/// After a local change, how long the relay waits for more before a pass: changes made in
/// a burst then share one pass and one commit marking them sent (on SQLite each commit
/// costs the admin API a write of its own).
const COALESCE: Duration = Duration::from_millis(20);
/// Sent rows are kept this long (for inspection), then deleted.
pub const KEEP_SENT_MS: i64 = 24 * 3600 * 1000;
/// Rows nobody published are kept this long (a broker outage, events off everywhere).
pub const KEEP_UNSENT_MS: i64 = 7 * 24 * 3600 * 1000;

/// The `source` of every outbox event.
pub const SOURCE: &str = "/tollgate/control";

/// The message an outbox row becomes: its subject and CloudEvent bytes.
pub fn message(row: &OutboxEvent) -> Result<(String, Vec<u8>), String> {
    let kind = match row.kind.as_str() {
        "audit" => EventType::Audit,
        "change" => EventType::Change,
        other => return Err(format!("outbox row {} has unknown type '{other}'", row.id)),
    };
    let data = RawValue::from_string(row.data.clone())
        .map_err(|e| format!("outbox row {} holds invalid JSON: {e}", row.id))?;
    let id = row.id.to_string();
    let bytes = cloudevent::encode(kind, &id, SOURCE, row.domain.as_deref(), row.at, &data)
        .map_err(|e| e.to_string())?;
    Ok((subject::subject(kind, row.domain.as_deref()), bytes))
}

/// Publishes one row and waits for its acknowledgement.
async fn publish(broker: &Broker, row: OutboxEvent) -> Result<(), String> {
    let (subject, bytes) = message(&row)?;
    let started = Instant::now();
    broker
        .publish(subject, &row.id.to_string(), bytes)
        .await
        .map_err(|e| e.to_string())?;
    metrics::histogram!("tollgate_events_publish_seconds", "stream" => "control")
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("tollgate_events_published_total", "type" => row.kind.clone()).increment(1);
    Ok(())
}

/// Deletes what the outbox no longer needs; warns about unpublished rows it gave up on.
pub async fn prune(control: &ControlPlane) {
    match control.prune_outbox(KEEP_SENT_MS, KEEP_UNSENT_MS).await {
        Ok((_, 0)) => {}
        Ok((_, unsent)) => tracing::warn!(
            rows = unsent,
            "outbox rows older than 7 days were never published (no node relays them, or the broker was away); deleted"
        ),
        Err(e) => tracing::debug!(error = %e, "cannot prune the outbox"),
    }
}

/// Relays until the runtime stops.
pub async fn run(control: Arc<ControlPlane>, broker: Arc<Broker>) {
    let mut last_prune = Instant::now();
    let mut failing = false;
    loop {
        loop {
            let pass = control
                .relay_outbox(BATCH, |row| {
                    let broker = broker.clone();
                    async move { publish(&broker, row).await }
                })
                .await;
            match pass {
                Ok(pass) => {
                    if let Some(error) = pass.error {
                        if !failing {
                            tracing::warn!(%error, published = pass.published, "outbox relay cannot publish; rows wait and are retried");
                        }
                        failing = true;
                        break;
                    }
                    if failing && pass.published > 0 {
                        tracing::info!("outbox relay publishing again");
                        failing = false;
                    }
                    // A full batch means more may wait; a short one, that this relay is done
                    // (or another relay holds the rest).
                    if pass.published < usize::try_from(BATCH).unwrap_or(usize::MAX) {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay cannot read the outbox");
                    break;
                }
            }
        }
        match control.outbox_backlog().await {
            Ok(backlog) => {
                metrics::gauge!("tollgate_outbox_backlog").set(backlog.rows as f64);
                metrics::gauge!("tollgate_outbox_oldest_age_seconds")
                    .set(backlog.oldest_age_ms as f64 / 1000.0);
                broker
                    .health()
                    .outbox_backlog
                    .store(backlog.rows, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the outbox backlog"),
        }
        if last_prune.elapsed() > Duration::from_secs(60) {
            last_prune = Instant::now();
            prune(&control).await;
        }
        tokio::select! {
            () = control.outbox_notified() => tokio::time::sleep(COALESCE).await,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}
