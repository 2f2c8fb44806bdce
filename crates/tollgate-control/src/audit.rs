//! The audit log: every admin mutation (whatever its outcome) and every failed
//! authentication, in the policy store, append-only (the schema's triggers refuse updates
//! and deletions), readable by admins of every domain.
//!
//! A successful mutation writes its entry in its own transaction, so a change cannot
//! commit without its record; a refused or failed one is recorded after the fact.

use std::future::Future;

use sqlx::{Any, Row};

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

/// A new entry, from anywhere (a transaction or the pool).
#[allow(clippy::too_many_arguments)]
async fn insert<'c, E>(
    executor: E,
    actor: &str,
    via: &str,
    action: &str,
    target: &str,
    remote: &str,
    outcome: &str,
    detail: &str,
) -> Result<(), ControlError>
where
    E: sqlx::Executor<'c, Database = Any>,
{
    sqlx::query(
        "INSERT INTO audit_events (at, actor, via, action, target, remote, outcome, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(now_ms())
    .bind(actor)
    .bind(via)
    .bind(action)
    .bind(cut(target))
    .bind(remote)
    .bind(outcome)
    .bind(cut(detail))
    .execute(executor)
    .await?;
    Ok(())
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

    /// Records success, inside the mutation's transaction.
    pub async fn ok<'c, E>(&self, executor: E, detail: &str) -> Result<(), ControlError>
    where
        E: sqlx::Executor<'c, Database = Any>,
    {
        self.write(executor, "ok", detail).await
    }

    /// Records this attempt with `outcome`.
    async fn write<'c, E>(
        &self,
        executor: E,
        outcome: &str,
        detail: &str,
    ) -> Result<(), ControlError>
    where
        E: sqlx::Executor<'c, Database = Any>,
    {
        insert(
            executor,
            &self.actor.name,
            self.actor.via,
            self.action,
            &self.target,
            &self.actor.remote,
            outcome,
            detail,
        )
        .await
    }
}

impl ControlPlane {
    /// Runs a mutation and, if it fails, records how (its success records itself).
    pub(crate) async fn audited<T>(
        &self,
        audit: &Audit<'_>,
        mutation: impl Future<Output = Result<T, ControlError>>,
    ) -> Result<T, ControlError> {
        let result = mutation.await;
        if let Err(e) = &result {
            let written = audit
                .write(self.database().pool(), outcome_of(e), &e.to_string())
                .await;
            if let Err(w) = written {
                tracing::error!(error = %w, action = audit.action, "cannot write the audit log");
            }
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
        insert(
            self.database().pool(),
            "unauthenticated",
            via,
            "authenticate",
            target,
            remote,
            "unauthenticated",
            reason,
        )
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
