//! Policies: listing, reading, validating, writing and deleting one at a time, with a
//! history entry for every change.

use super::*;

impl ControlPlane {
    /// One page of a domain's policies, by name.
    pub async fn list_policies(
        &self,
        domain: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
        actor: &Actor,
    ) -> Result<Page<Policy>, ControlError> {
        actor.require_read(domain)?;
        let after = decode_cursor(cursor)?;
        let limit = page_size(limit)?;
        self.require_database_domain(domain).await?;
        let sql =
            format!("{POLICY_COLUMNS} WHERE domain = $1 AND name > $2 ORDER BY name LIMIT $3");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(domain)
            .bind(&after)
            .bind(limit + 1)
            .fetch_all(self.db.pool())
            .await?;
        let items = rows
            .iter()
            .map(policy_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(paginate(items, limit, |p| &p.name))
    }

    pub(super) async fn require_database_domain(&self, domain: &str) -> Result<(), ControlError> {
        if self.file_of(domain).is_some() {
            return Err(self.file_owned(domain));
        }
        let found: Option<i64> = sqlx::query_scalar("SELECT revision FROM domains WHERE name = $1")
            .bind(domain)
            .fetch_optional(self.db.pool())
            .await?;
        found
            .map(|_| ())
            .ok_or_else(|| ControlError::NotFound(format!("domain '{domain}'")))
    }

    /// One policy.
    pub async fn get_policy(
        &self,
        domain: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<Policy, ControlError> {
        actor.require_read(domain)?;
        self.require_database_domain(domain).await?;
        let sql = format!("{POLICY_COLUMNS} WHERE domain = $1 AND name = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(domain)
            .bind(name)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| {
                ControlError::NotFound(format!("policy '{name}' of domain '{domain}'"))
            })?;
        policy_from_row(&row)
    }

    /// Checks a policy as [`ControlPlane::put_policy`] would, without saving it: alone, and
    /// together with the domain's other policies.
    pub async fn validate_policy(
        &self,
        domain: &str,
        name: &str,
        spec: &PolicySpec,
        actor: &Actor,
    ) -> Result<(), ControlError> {
        actor.require_read(domain)?;
        document::check_policy(domain, name, spec)
            .map_err(|errors| ControlError::Invalid { errors })?;
        self.require_database_domain(domain).await?;
        let others = policies_of(self.db.pool(), domain, name).await?;
        fits_with(domain, name, spec, &others)
    }

    /// Creates or replaces a policy.
    pub async fn put_policy(
        &self,
        domain: &str,
        name: &str,
        spec: &PolicySpec,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Written<Policy>, ControlError> {
        let audit = Audit::new(actor, "policy.put", format!("{domain}/{name}"));
        self.audited(&audit, async {
            actor.require_edit(domain)?;
            document::check_policy(domain, name, spec)
                .map_err(|errors| ControlError::Invalid { errors })?;
            if self.file_of(domain).is_some() {
                return Err(self.file_owned(domain));
            }
            // First: the revision row's lock orders this write after any concurrent one, so
            // the domain read below is the one this write lands on.
            let Write { mut tx, revision } = self.begin_write().await?;
            domain_revision(&mut tx, domain).await?;
            let existing =
                sqlx::query("SELECT spec, revision FROM policies WHERE domain = $1 AND name = $2")
                    .bind(domain)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            let (before, current) = match &existing {
                Some(row) => (
                    Some(row.try_get::<String, _>("spec")?),
                    Some(row.try_get::<i64, _>("revision")?),
                ),
                None => (None, None),
            };
            let what = format!("policy '{name}' of domain '{domain}'");
            match (precondition, current) {
                (Precondition::Absent, Some(_)) => {
                    return Err(ControlError::Conflict(format!("{what} already exists")));
                }
                (Precondition::Revision(_) | Precondition::Exists, None) => {
                    return Err(ControlError::PreconditionFailed {
                        what,
                        current: None,
                    });
                }
                (Precondition::Revision(want), Some(have)) if want != have => {
                    return Err(ControlError::PreconditionFailed {
                        what,
                        current: Some(have),
                    });
                }
                _ => {}
            }
            let others = policies_of(&mut *tx, domain, name).await?;
            fits_with(domain, name, spec, &others)?;
            let now = now_ms();
            let created = existing.is_none();
            let change = Change {
                revision,
                domain,
                name,
                actor,
                now,
            };
            store_policy(&mut tx, &change, &json(spec)?, before.as_deref()).await?;
            touch_domain(&mut tx, domain, revision, now).await?;
            self.commit_write(tx, revision, &audit).await?;
            tracing::info!(%domain, policy = %name, revision, created, actor = %actor.name, via = actor.via, "policy written");
            Ok(Written {
                value: self.get_policy(domain, name, actor).await?,
                created,
            })
        })
        .await
    }

    /// Deletes a policy.
    pub async fn delete_policy(
        &self,
        domain: &str,
        name: &str,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<(), ControlError> {
        let audit = Audit::new(actor, "policy.delete", format!("{domain}/{name}"));
        self.audited(&audit, async {
            actor.require_edit(domain)?;
            if self.file_of(domain).is_some() {
                return Err(self.file_owned(domain));
            }
            let Write { mut tx, revision } = self.begin_write().await?;
            domain_revision(&mut tx, domain).await?;
            let what = format!("policy '{name}' of domain '{domain}'");
            let row =
                sqlx::query("SELECT spec, revision FROM policies WHERE domain = $1 AND name = $2")
                    .bind(domain)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| ControlError::NotFound(what.clone()))?;
            let current: i64 = row.try_get("revision")?;
            check_precondition(precondition, current, &what)?;
            let before: String = row.try_get("spec")?;
            // Removing a policy cannot make two collide, and envoy ignores unknown names in
            // `replaces`: no domain check is needed.
            let now = now_ms();
            let change = Change {
                revision,
                domain,
                name,
                actor,
                now,
            };
            remove_policy(&mut tx, &change, &before).await?;
            touch_domain(&mut tx, domain, revision, now).await?;
            self.commit_write(tx, revision, &audit).await?;
            tracing::info!(%domain, policy = %name, revision, actor = %actor.name, via = actor.via, "policy deleted");
            Ok(())
        })
        .await
    }
}

/// Whether `spec` can join the domain's other policies: no two on one descriptor, and the
/// whole domain accepted by the core.
pub(super) fn fits_with(
    domain: &str,
    name: &str,
    spec: &PolicySpec,
    others: &[(String, PolicySpec)],
) -> Result<(), ControlError> {
    let all = others
        .iter()
        .map(|(n, s)| (n.as_str(), s))
        .chain(std::iter::once((name, spec)));
    let document = document::assemble(domain, all).map_err(|e| {
        let other = if e.second == name { e.first } else { e.second };
        ControlError::Conflict(format!(
            "policy '{name}' matches the same descriptor as policy '{other}' of domain '{domain}'"
        ))
    })?;
    document::to_core_domain(domain, &document)
        .map(|_| ())
        .map_err(|e| ControlError::Conflict(format!("domain '{domain}' would not load: {e}")))
}

/// One change to one policy: which revision, where, by whom, when.
pub(super) struct Change<'a> {
    pub(super) revision: i64,
    pub(super) domain: &'a str,
    pub(super) name: &'a str,
    pub(super) actor: &'a Actor,
    pub(super) now: i64,
}

/// Creates (no `before`) or replaces a policy's row, and records the change.
pub(super) async fn store_policy(
    tx: &mut Transaction<'static, Any>,
    c: &Change<'_>,
    spec: &str,
    before: Option<&str>,
) -> Result<(), ControlError> {
    let sql = if before.is_none() {
        "INSERT INTO policies (spec, revision, updated_at, updated_by, domain, name, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $3)"
    } else {
        "UPDATE policies SET spec = $1, revision = $2, updated_at = $3, updated_by = $4 \
         WHERE domain = $5 AND name = $6"
    };
    sqlx::query(sql)
        .bind(spec)
        .bind(c.revision)
        .bind(c.now)
        .bind(&c.actor.name)
        .bind(c.domain)
        .bind(c.name)
        .execute(&mut **tx)
        .await?;
    let action = if before.is_none() {
        ChangeAction::Created
    } else {
        ChangeAction::Updated
    };
    record(
        tx,
        c.revision,
        c.domain,
        c.name,
        action,
        c.actor,
        Some(spec),
        before,
    )
    .await
}

/// Deletes a policy's row, and records the change.
pub(super) async fn remove_policy(
    tx: &mut Transaction<'static, Any>,
    c: &Change<'_>,
    before: &str,
) -> Result<(), ControlError> {
    sqlx::query("DELETE FROM policies WHERE domain = $1 AND name = $2")
        .bind(c.domain)
        .bind(c.name)
        .execute(&mut **tx)
        .await?;
    record(
        tx,
        c.revision,
        c.domain,
        c.name,
        ChangeAction::Deleted,
        c.actor,
        None,
        Some(before),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn record(
    tx: &mut Transaction<'static, Any>,
    revision: i64,
    domain: &str,
    policy: &str,
    action: ChangeAction,
    actor: &Actor,
    after: Option<&str>,
    before: Option<&str>,
) -> Result<(), ControlError> {
    sqlx::query(
        "INSERT INTO policy_changes (revision, domain, policy, action, actor, at, after, before, via) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(revision)
    .bind(domain)
    .bind(policy)
    .bind(action.as_str())
    .bind(&actor.name)
    .bind(now_ms())
    .bind(after)
    .bind(before)
    .bind(actor.via)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
