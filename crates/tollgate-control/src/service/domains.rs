//! Domains: listing, reading, creating, describing and deleting them.

use super::policies::record;
use super::*;

impl ControlPlane {
    /// One page of domains (database and file), by name.
    /// Only the domains in the actor's scope are listed.
    pub async fn list_domains(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
        actor: &Actor,
    ) -> Result<Page<Domain>, ControlError> {
        let after = decode_cursor(cursor)?;
        let limit = page_size(limit)?;
        let rows = match &actor.scope {
            Scope::All => {
                let sql = format!("{DOMAIN_COLUMNS} WHERE d.name > $1 ORDER BY d.name LIMIT $2");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&after)
                    .bind(limit + 1)
                    .fetch_all(self.db.pool())
                    .await?
            }
            Scope::Domains(names) if names.is_empty() => Vec::new(),
            Scope::Domains(names) => {
                // A scope names at most `Scope::MAX_DOMAINS` domains: one placeholder each.
                let placeholders = (0..names.len())
                    .map(|i| format!("${}", i + 3))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "{DOMAIN_COLUMNS} WHERE d.name > $1 AND d.name IN ({placeholders}) \
                     ORDER BY d.name LIMIT $2"
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&after)
                    .bind(limit + 1);
                for name in names {
                    query = query.bind(name);
                }
                query.fetch_all(self.db.pool()).await?
            }
        };
        let mut items = rows
            .iter()
            .map(domain_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        for (name, file) in self.files.read().map(|f| f.clone()).unwrap_or_default() {
            if name > after && actor.may_read(&name) {
                items.push(self.file_domain(&name, &file));
            }
        }
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(paginate(items, limit, |d| &d.name))
    }

    fn file_domain(&self, name: &str, file: &str) -> Domain {
        Domain {
            name: name.to_owned(),
            description: String::new(),
            source: DomainSource::File,
            file: Some(file.to_owned()),
            policy_count: 0,
            revision: 0,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    /// One domain.
    pub async fn get_domain(&self, name: &str, actor: &Actor) -> Result<Domain, ControlError> {
        actor.require_read(name)?;
        if let Some(file) = self.file_of(name) {
            return Ok(self.file_domain(name, &file));
        }
        let sql = format!("{DOMAIN_COLUMNS} WHERE d.name = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("domain '{name}'")))?;
        domain_from_row(&row)
    }

    /// Creates a domain.
    pub async fn create_domain(
        &self,
        new: &NewDomain,
        actor: &Actor,
    ) -> Result<Domain, ControlError> {
        let audit = Audit::new(actor, "domain.create", new.name.clone());
        self.audited(&audit, async {
            actor.require_domain_admin(&new.name)?;
            let mut errors = Vec::new();
            if let Err(e) = document::check_domain_name(&new.name) {
                errors.push(e);
            }
            if let Err(e) = check_description(&new.description) {
                errors.push(e);
            }
            if !errors.is_empty() {
                return Err(ControlError::Invalid { errors });
            }
            if self.file_of(&new.name).is_some() {
                return Err(self.file_owned(&new.name));
            }
            let Write { mut tx, revision } = self.begin_write().await?;
            let now = now_ms();
            let inserted = sqlx::query(
                "INSERT INTO domains (name, description, revision, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&new.name)
            .bind(&new.description)
            .bind(revision)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Err(ControlError::Conflict(format!(
                    "domain '{}' already exists",
                    new.name
                )));
            }
            self.commit_write(tx, revision, &audit).await?;
            tracing::info!(domain = %new.name, revision, actor = %actor.name, via = actor.via, "domain created");
            self.get_domain(&new.name, actor).await
        })
        .await
    }

    /// Changes a domain's description.
    pub async fn update_domain(
        &self,
        name: &str,
        update: &DomainUpdate,
        precondition: Precondition,
        actor: &Actor,
    ) -> Result<Domain, ControlError> {
        let audit = Audit::new(actor, "domain.update", name.to_owned());
        self.audited(&audit, async {
            actor.require_domain_admin(name)?;
            check_description(&update.description)
                .map_err(|e| ControlError::Invalid { errors: vec![e] })?;
            if self.file_of(name).is_some() {
                return Err(self.file_owned(name));
            }
            let Write { mut tx, revision } = self.begin_write().await?;
            let current = domain_revision(&mut tx, name).await?;
            check_precondition(precondition, current, &format!("domain '{name}'"))?;
            sqlx::query(
                "UPDATE domains SET description = $1, revision = $2, updated_at = $3 WHERE name = $4",
            )
            .bind(&update.description)
            .bind(revision)
            .bind(now_ms())
            .bind(name)
            .execute(&mut *tx)
            .await?;
            self.commit_write(tx, revision, &audit).await?;
            tracing::info!(domain = %name, revision, actor = %actor.name, via = actor.via, "domain updated");
            self.get_domain(name, actor).await
        })
        .await
    }

    /// Deletes a domain. One that still has policies is deleted only with `cascade`
    /// (each policy's deletion is recorded in its history).
    pub async fn delete_domain(
        &self,
        name: &str,
        precondition: Precondition,
        cascade: bool,
        actor: &Actor,
    ) -> Result<(), ControlError> {
        let audit = Audit::new(actor, "domain.delete", name.to_owned());
        self.audited(&audit, async {
            actor.require_domain_admin(name)?;
            if self.file_of(name).is_some() {
                return Err(self.file_owned(name));
            }
            let Write {
                mut tx,
                mut revision,
            } = self.begin_write().await?;
            let current = domain_revision(&mut tx, name).await?;
            check_precondition(precondition, current, &format!("domain '{name}'"))?;
            let rows =
                sqlx::query("SELECT domain, name, spec FROM policies WHERE domain = $1 ORDER BY name")
                    .bind(name)
                    .fetch_all(&mut *tx)
                    .await?;
            if !rows.is_empty() && !cascade {
                return Err(ControlError::Conflict(format!(
                    "domain '{name}' still has {} policies: delete them first, or delete with cascade=true",
                    rows.len()
                )));
            }
            for (i, row) in rows.iter().enumerate() {
                if i > 0 {
                    revision = bump(&mut tx).await?;
                }
                let policy: String = row.try_get("name")?;
                let before: String = row.try_get("spec")?;
                record(
                    &mut tx,
                    revision,
                    name,
                    &policy,
                    ChangeAction::Deleted,
                    actor,
                    None,
                    Some(&before),
                )
                .await?;
            }
            sqlx::query("DELETE FROM policies WHERE domain = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM domains WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            self.commit_write(tx, revision, &audit).await?;
            tracing::info!(domain = %name, revision, policies = rows.len(), actor = %actor.name, via = actor.via, "domain deleted");
            Ok(())
        })
        .await
    }
}

fn check_description(text: &str) -> Result<(), FieldError> {
    if text.chars().count() > crate::model::MAX_DESCRIPTION_LEN || text.contains('\0') {
        return Err(FieldError {
            field: "description".into(),
            message: format!(
                "must be at most {} characters, without NUL",
                crate::model::MAX_DESCRIPTION_LEN
            ),
        });
    }
    Ok(())
}
