//! The audit log: every admin mutation (whatever its outcome) and every failed
//! authentication, in the policy store, append-only (the schema's triggers refuse updates
//! and deletions), readable by admins of every domain.
//!
//! A successful mutation writes its entry in its own transaction, so a change cannot
//! commit without its record; a refused or failed one is recorded after the fact.

use std::future::Future;

use sqlx::{AnyConnection, Row};

use crate::ControlError;
use crate::auth::Actor;
use crate::model::{AuditEvent, Page};
use crate::service::{
    ControlPlane, decode_position, now_ms, page_size, paginate_by_position, rfc3339,
};

/// Longest detail stored (longer ones are cut at a character boundary).
const MAX_DETAIL: usize = 512;

/// One audited attempt: who tries what, on what.
#[derive(Debug)]
pub struct Audit<'a> {
    actor: &'a Actor,
    action: &'static str,
    target: String,
}

/// What the audit log says about an error.
fn outcome_of(e: &ControlError) -> &'static str {
    match e {
        ControlError::Forbidden(_) => "denied",
        ControlError::Invalid { .. } => "invalid",
        ControlError::NotFound(_) => "not_found",
        ControlError::Conflict(_) | ControlError::PreconditionFailed { .. } => "conflict",
        _ => "failed",
    }
}

fn cut(text: &str) -> &str {
    if text.len() <= MAX_DETAIL {
        return text;
    }
    let mut end = MAX_DETAIL;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One row of the audit log, as written (and, with its id, as its `audit` event's data).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct Entry<'a> {
    /// Milliseconds since the epoch; the event shows it as RFC 3339 beside the id.
    #[serde(skip)]
    pub(crate) at: i64,
    pub(crate) actor: &'a str,
    pub(crate) via: &'a str,
    pub(crate) action: &'a str,
    pub(crate) target: &'a str,
    pub(crate) remote: &'a str,
    pub(crate) outcome: &'a str,
    pub(crate) detail: &'a str,
}

impl Entry<'_> {
    /// The domain an entry is about: the target's first part, except for API keys and
    /// authentication, which are about no domain.
    pub(crate) fn domain(&self) -> Option<&str> {
        if self.action.starts_with("key.") || self.action == "authenticate" {
            return None;
        }
        self.target.split('/').next().filter(|d| !d.is_empty())
    }
}

/// Writes `entry` on `conn` (a transaction's connection) and its `audit` event in the
/// outbox beside it; returns the entry's id.
pub(crate) async fn insert(
    conn: &mut AnyConnection,
    entry: &Entry<'_>,
) -> Result<i64, ControlError> {
    let entry = Entry {
        target: cut(entry.target),
        detail: cut(entry.detail),
        ..*entry
    };
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO audit_events (at, actor, via, action, target, remote, outcome, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(entry.at)
    .bind(entry.actor)
    .bind(entry.via)
    .bind(entry.action)
    .bind(entry.target)
    .bind(entry.remote)
    .bind(entry.outcome)
    .bind(entry.detail)
    .fetch_one(&mut *conn)
    .await?;
    let data = crate::outbox::AuditData {
        id,
        at: rfc3339(entry.at),
        entry: &entry,
    };
    crate::outbox::enqueue(
        conn,
        crate::outbox::EventKind::Audit,
        entry.domain(),
        &data,
        entry.at,
    )
    .await?;
    Ok(id)
}

impl<'a> Audit<'a> {
    /// `actor` attempting `action` (`policy.put`, `key.revoke`, ...) on `target`.
    pub fn new(actor: &'a Actor, action: &'static str, target: String) -> Self {
        Self {
            actor,
            action,
            target,
        }
    }

    fn entry<'e>(&'e self, outcome: &'e str, detail: &'e str, at: i64) -> Entry<'e> {
        Entry {
            at,
            actor: &self.actor.name,
            via: self.actor.via,
            action: self.action,
            target: &self.target,
            remote: &self.actor.remote,
            outcome,
            detail,
        }
    }
}

impl ControlPlane {
    /// Records success inside the mutation's transaction: the audit entry, its `audit`
    /// event and the `change` event (with the store revision the change
    /// took, if it took one), all committed with the change or not at all.
    pub(crate) async fn record_ok(
        &self,
        conn: &mut AnyConnection,
        audit: &Audit<'_>,
        detail: &str,
        revision: Option<i64>,
    ) -> Result<(), ControlError> {
        let at = now_ms();
        let entry = audit.entry("ok", detail, at);
        let id = insert(conn, &entry).await?;
        let change = crate::outbox::ChangeData {
            action: entry.action,
            target: entry.target,
            revision,
            actor: entry.actor,
            via: entry.via,
            at: rfc3339(at),
            audit_id: id,
        };
        crate::outbox::enqueue(
            conn,
            crate::outbox::EventKind::Change,
            entry.domain(),
            &change,
            at,
        )
        .await
    }

    /// Records a success that changed nothing (an audit entry, no `change` event).
    pub(crate) async fn record_unchanged(
        &self,
        audit: &Audit<'_>,
        detail: &str,
    ) -> Result<(), ControlError> {
        self.record_alone(&audit.entry("ok", detail, now_ms()))
            .await
    }

    /// Writes an entry and its event in a transaction of their own.
    async fn record_alone(&self, entry: &Entry<'_>) -> Result<(), ControlError> {
        let mut tx = self.database().pool().begin().await?;
        insert(&mut tx, entry).await?;
        tx.commit().await?;
        self.outbox_written();
        Ok(())
    }

    /// Runs a mutation and, if it fails, records how (its success records itself).
    pub(crate) async fn audited<T>(
        &self,
        audit: &Audit<'_>,
        mutation: impl Future<Output = Result<T, ControlError>>,
    ) -> Result<T, ControlError> {
        let result = mutation.await;
        match &result {
            Err(e) => {
                let detail = e.to_string();
                let entry = audit.entry(outcome_of(e), &detail, now_ms());
                if let Err(w) = self.record_alone(&entry).await {
                    tracing::error!(error = %w, action = audit.action, "cannot write the audit log");
                }
            }
            Ok(_) => self.outbox_written(),
        }
        result
    }

    /// Records a failed authentication: the credential's public part at most, never a
    /// secret.
    pub async fn record_auth_failure(
        &self,
        via: &'static str,
        target: &str,
        remote: &str,
        reason: &str,
    ) -> Result<(), ControlError> {
        self.record_alone(&Entry {
            at: now_ms(),
            actor: "unauthenticated",
            via,
            action: "authenticate",
            target,
            remote,
            outcome: "unauthenticated",
            detail: reason,
        })
        .await
    }

    /// The audit log, newest first (`cursor` continues a listing; `action` filters).
    pub async fn audit_log(
        &self,
        action: Option<&str>,
        cursor: Option<&str>,
        limit: Option<u32>,
        actor: &Actor,
    ) -> Result<Page<AuditEvent>, ControlError> {
        actor.require_admin("read the audit log")?;
        let limit = page_size(limit)?;
        if action.is_some_and(|a| a.len() > 64) {
            return Err(ControlError::Invalid {
                errors: vec![crate::FieldError {
                    field: "action".into(),
                    message: "must be at most 64 characters".into(),
                }],
            });
        }
        let before = decode_position(cursor)?;
        let rows = sqlx::query(
            "SELECT id, at, actor, via, action, target, remote, outcome, detail FROM audit_events \
             WHERE id < $1 AND ($2 = '' OR action = $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(before)
        .bind(action.unwrap_or(""))
        .bind(limit + 1)
        .fetch_all(self.database().pool())
        .await?;
        let items = rows
            .iter()
            .map(|row| {
                Ok(AuditEvent {
                    id: row.try_get("id")?,
                    at: rfc3339(row.try_get("at")?),
                    actor: row.try_get("actor")?,
                    via: row.try_get("via")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    remote: row.try_get("remote")?,
                    outcome: row.try_get("outcome")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect::<Result<Vec<_>, ControlError>>()?;
        Ok(paginate_by_position(items, limit, |e| e.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_details_are_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_DETAIL);
        let short = cut(&text);
        assert!(short.len() <= MAX_DETAIL);
        assert!(text.starts_with(short));
        assert_eq!(cut("short"), "short");
    }
}
