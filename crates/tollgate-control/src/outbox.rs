//! The transactional outbox: control-plane events written in the same transaction as
//! the change they describe, so an event exists if and only if its change committed.
//!
//! A relay (`tollgate-events`) hands each unsent row to a publisher and marks it sent once
//! the broker acknowledged it. Delivery is at least once: a relay that dies between the
//! acknowledgement and the mark publishes the row again, with the same id, which the
//! broker's duplicate window absorbs.
//!
//! Several nodes sharing PostgreSQL relay at once: each claims a batch with `FOR UPDATE
//! SKIP LOCKED`, and publishes a domain's rows only while no earlier unsent row of that
//! domain is held by another relay, so each domain's events go out in id order (which for
//! changes is commit order: every change takes the store revision's row lock first). On
//! SQLite one node owns the file and its relay is the only one.

use std::future::Future;

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::ControlError;
use crate::db::Backend;
use crate::service::{ControlPlane, now_ms};

/// What an outbox row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// An audit log entry (every admin mutation, whatever its outcome; failed sign-ins).
    Audit,
    /// A committed change of a domain, policy or API key.
    Change,
}

impl EventKind {
    /// Its name in the `type` column and in subjects.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Audit => "audit",
            EventKind::Change => "change",
        }
    }
}

/// The data of an `audit` event: the entry as the audit log holds it, with its id.
#[derive(Debug, Serialize)]
pub(crate) struct AuditData<'a> {
    pub(crate) id: i64,
    pub(crate) at: String,
    #[serde(flatten)]
    pub(crate) entry: &'a crate::audit::Entry<'a>,
}

/// The data of a `change` event.
#[derive(Debug, Serialize)]
pub(crate) struct ChangeData<'a> {
    pub(crate) action: &'a str,
    pub(crate) target: &'a str,
    /// The store revision the change took (domains and policies; not API keys).
    pub(crate) revision: Option<i64>,
    pub(crate) actor: &'a str,
    pub(crate) via: &'a str,
    pub(crate) at: String,
    /// The audit entry that records it.
    pub(crate) audit_id: i64,
}

/// Writes one event on `conn`, which must be the change's own transaction.
pub(crate) async fn enqueue(
    conn: &mut AnyConnection,
    kind: EventKind,
    domain: Option<&str>,
    data: &impl Serialize,
    at: i64,
) -> Result<(), ControlError> {
    let data = serde_json::to_string(data).map_err(|e| ControlError::Corrupt(e.to_string()))?;
    sqlx::query("INSERT INTO event_outbox (type, domain, data, at) VALUES ($1, $2, $3, $4)")
        .bind(kind.as_str())
        .bind(domain)
        .bind(data)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

/// One unsent row, as a relay reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The row's id: the message id the broker de-duplicates on.
    pub id: i64,
    /// `audit` or `change`.
    pub kind: String,
    /// The domain it is about, if any.
    pub domain: Option<String>,
    /// The event's data, JSON.
    pub data: String,
    /// When it was written, milliseconds since the epoch.
    pub at: i64,
}

/// What one relay pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayPass {
    /// Rows published and marked sent.
    pub published: usize,
    /// Rows claimed but left for later: an earlier row of their domain was held by another
    /// relay, or the publisher failed before them.
    pub deferred: usize,
    /// The publisher's error, if it failed (the pass stops at the first failure).
    pub error: Option<String>,
}

/// The outbox's backlog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Unsent rows.
    pub rows: i64,
    /// Milliseconds since the oldest unsent row was written (0 when none).
    pub oldest_age_ms: i64,
}

impl ControlPlane {
    /// Wakes the relay: rows were committed.
    pub(crate) fn outbox_written(&self) {
        self.outbox_signal.notify_one();
    }

    /// Resolves when this process has committed outbox rows since the last call (or at
    /// once, if it did before anyone waited).
    pub async fn outbox_notified(&self) {
        self.outbox_signal.notified().await;
    }

    /// How many rows wait, and for how long the oldest has.
    pub async fn outbox_backlog(&self) -> Result<Backlog, ControlError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(MIN(at), 0) AS oldest FROM event_outbox WHERE sent_at IS NULL",
        )
        .fetch_one(self.database().pool())
        .await?;
        let rows: i64 = row.try_get("n")?;
        let oldest: i64 = row.try_get("oldest")?;
        Ok(Backlog {
            rows,
            oldest_age_ms: if rows == 0 {
                0
            } else {
                (now_ms() - oldest).max(0)
            },
        })
    }

    /// Publishes up to `batch` unsent rows in id order, one at a time, each marked sent
    /// only after `publish` succeeded for it. Stops at the first failure.
    pub async fn relay_outbox<F, Fut>(
        &self,
        batch: i64,
        mut publish: F,
    ) -> Result<RelayPass, ControlError>
    where
        F: FnMut(OutboxEvent) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let pool = self.database().pool();
        let postgres = self.backend() == Backend::Postgres;
        // PostgreSQL: the claim's row locks last until the transaction ends. SQLite: read
        // without a transaction, so admin writes are not blocked while the broker answers.
        let mut tx = if postgres {
            Some(pool.begin().await?)
        } else {
            None
        };
        let claim = if postgres {
            "SELECT id, type, domain, data, at FROM event_outbox WHERE sent_at IS NULL \
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
        } else {
            "SELECT id, type, domain, data, at FROM event_outbox WHERE sent_at IS NULL \
             ORDER BY id LIMIT $1"
        };
        let query = sqlx::query(claim).bind(batch);
        let rows = match tx.as_mut() {
            Some(tx) => query.fetch_all(&mut **tx).await?,
            None => query.fetch_all(pool).await?,
        };
        let claimed = rows
            .iter()
            .map(|row| {
                Ok(OutboxEvent {
                    id: row.try_get("id")?,
                    kind: row.try_get("type")?,
                    domain: row.try_get("domain")?,
                    data: row.try_get("data")?,
                    at: row.try_get("at")?,
                })
            })
            .collect::<Result<Vec<_>, ControlError>>()?;
        let claimed_count = claimed.len();
        let Some(last) = claimed.last().map(|e| e.id) else {
            if let Some(tx) = tx {
                tx.commit().await?;
            }
            return Ok(RelayPass::default());
        };
        let ready = if postgres {
            // Every unsent row up to the claim's last, held by this relay or another.
            let query = sqlx::query(
                "SELECT id, domain FROM event_outbox WHERE sent_at IS NULL AND id <= $1 ORDER BY id",
            )
            .bind(last);
            let rows = match tx.as_mut() {
                Some(tx) => query.fetch_all(&mut **tx).await?,
                None => query.fetch_all(pool).await?,
            };
            let unsent = rows
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get::<i64, _>("id")?,
                        r.try_get::<Option<String>, _>("domain")?,
                    ))
                })
                .collect::<Result<Vec<_>, ControlError>>()?;
            in_domain_order(claimed, &unsent)
        } else {
            claimed
        };
        let mut pass = RelayPass {
            deferred: claimed_count - ready.len(),
            ..RelayPass::default()
        };
        let mut sent = Vec::with_capacity(ready.len());
        let total = ready.len();
        for event in ready {
            let id = event.id;
            match publish(event).await {
                Ok(()) => sent.push(id),
                Err(e) => {
                    pass.error = Some(e);
                    break;
                }
            }
        }
        pass.published = sent.len();
        pass.deferred += total - sent.len();
        if !sent.is_empty() {
            // Integers only: nothing a caller controls reaches the statement's text.
            let ids = sent
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let mark = format!("UPDATE event_outbox SET sent_at = $1 WHERE id IN ({ids})");
            let query = sqlx::query(sqlx::AssertSqlSafe(mark)).bind(now_ms());
            match tx.as_mut() {
                Some(tx) => query.execute(&mut **tx).await?,
                None => query.execute(pool).await?,
            };
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
        Ok(pass)
    }

    /// Deletes rows sent more than `sent_ms` ago and rows never sent that were written more
    /// than `unsent_ms` ago (nobody relays them); returns how many of each.
    pub async fn prune_outbox(
        &self,
        sent_ms: i64,
        unsent_ms: i64,
    ) -> Result<(u64, u64), ControlError> {
        let now = now_ms();
        let sent =
            sqlx::query("DELETE FROM event_outbox WHERE sent_at IS NOT NULL AND sent_at < $1")
                .bind(now - sent_ms)
                .execute(self.database().pool())
                .await?
                .rows_affected();
        let unsent = sqlx::query("DELETE FROM event_outbox WHERE sent_at IS NULL AND at < $1")
            .bind(now - unsent_ms)
            .execute(self.database().pool())
            .await?
            .rows_affected();
        Ok((sent, unsent))
    }
}

/// The claimed rows a relay may publish now, in id order: a domain's rows up to the first
/// unsent row of that domain this relay does not hold (another relay's, to go first).
fn in_domain_order(
    claimed: Vec<OutboxEvent>,
    unsent: &[(i64, Option<String>)],
) -> Vec<OutboxEvent> {
    use std::collections::HashSet;
    let mine: HashSet<i64> = claimed.iter().map(|e| e.id).collect();
    let mut blocked: HashSet<Option<&str>> = HashSet::new();
    let mut ready: HashSet<i64> = HashSet::new();
    for (id, domain) in unsent {
        let domain = domain.as_deref();
        if mine.contains(id) && !blocked.contains(&domain) {
            ready.insert(*id);
        } else {
            blocked.insert(domain);
        }
    }
    claimed
        .into_iter()
        .filter(|e| ready.contains(&e.id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, domain: Option<&str>) -> OutboxEvent {
        OutboxEvent {
            id,
            kind: "audit".into(),
            domain: domain.map(str::to_owned),
            data: "{}".into(),
            at: 0,
        }
    }

    #[test]
    fn a_domain_waits_behind_a_row_another_relay_holds() {
        // Rows 1..=6; this relay holds 1, 3, 4, 6; another holds 2 (domain a) and 5 (b).
        let unsent = [
            (1, Some("a".to_owned())),
            (2, Some("a".to_owned())),
            (3, Some("b".to_owned())),
            (4, Some("a".to_owned())),
            (5, Some("b".to_owned())),
            (6, None),
        ];
        let claimed = vec![
            event(1, Some("a")),
            event(3, Some("b")),
            event(4, Some("a")),
            event(6, None),
        ];
        let ready: Vec<i64> = in_domain_order(claimed, &unsent)
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ready, vec![1, 3, 6]);
    }

    #[test]
    fn a_sole_relay_publishes_everything_it_claimed() {
        let unsent = [(7, Some("a".to_owned())), (8, None)];
        let ready = in_domain_order(vec![event(7, Some("a")), event(8, None)], &unsent);
        assert_eq!(ready.len(), 2);
    }
}
