//! A policy's history: every change, newest first.

use super::*;

impl ControlPlane {
    /// A policy's changes, newest first (`cursor` continues a listing).
    pub async fn history(
        &self,
        domain: &str,
        policy: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
        actor: &Actor,
    ) -> Result<Page<PolicyChange>, ControlError> {
        actor.require_read(domain)?;
        let limit = page_size(limit)?;
        let before = decode_position(cursor)?;
        self.require_database_domain(domain).await?;
        let rows = sqlx::query(
            "SELECT revision, domain, policy, action, actor, at, after, before FROM policy_changes \
             WHERE domain = $1 AND policy = $2 AND revision < $3 ORDER BY revision DESC LIMIT $4",
        )
        .bind(domain)
        .bind(policy)
        .bind(before)
        .bind(limit + 1)
        .fetch_all(self.db.pool())
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let action: String = row.try_get("action")?;
            let parse = |column: &str| -> Result<Option<PolicySpec>, ControlError> {
                let text: Option<String> = row.try_get(column)?;
                text.map(|t| spec_of(&t, domain, policy)).transpose()
            };
            items.push(PolicyChange {
                revision: row.try_get("revision")?,
                domain: row.try_get("domain")?,
                policy: row.try_get("policy")?,
                action: ChangeAction::parse(&action)
                    .ok_or_else(|| ControlError::Corrupt(format!("unknown action '{action}'")))?,
                actor: row.try_get("actor")?,
                at: rfc3339(row.try_get("at")?),
                after: parse("after")?,
                before: parse("before")?,
            });
        }
        if items.is_empty() && before == i64::MAX {
            return Err(ControlError::NotFound(format!(
                "history of policy '{policy}' of domain '{domain}'"
            )));
        }
        Ok(paginate_by_position(items, limit, |c| c.revision))
    }
}
