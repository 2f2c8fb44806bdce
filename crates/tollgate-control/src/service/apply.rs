//! Whole policy documents: applying one to a domain (every difference in one write) and
//! reading a domain back as one.

use super::*;

use super::policies::{Change, remove_policy, store_policy};

impl ControlPlane {
    /// Replaces all of a domain's policies with `policies` in one transaction (creating
    /// the domain if needed): what `tollgate policy apply` does with a file. Unchanged
    /// policies are left alone (no history entry, same revision).
    pub async fn apply_document(
        &self,
        document: &PolicyDocument,
        actor: &Actor,
    ) -> Result<ApplyReport, ControlError> {
        let audit = Audit::new(actor, "document.apply", document.domain.clone());
        self.audited(&audit, async {
            let domain = document.domain.as_str();
            actor.require_edit(domain)?;
            document::check_domain_name(domain).map_err(|e| ControlError::Invalid {
                errors: vec![FieldError {
                    field: "domain".into(),
                    message: e.message,
                }],
            })?;
            if self.file_of(domain).is_some() {
                return Err(self.file_owned(domain));
            }
            let wanted = document::flatten(document);
            let mut errors = Vec::new();
            for (name, spec) in &wanted {
                if let Err(es) = document::check_policy(domain, name, spec) {
                    errors.extend(es.into_iter().map(|e| FieldError {
                        field: format!("policy '{name}': {}", e.field),
                        message: e.message,
                    }));
                }
            }
            if !errors.is_empty() {
                return Err(ControlError::Invalid { errors });
            }
            document::assemble(domain, wanted.iter().map(|(n, s)| (n.as_str(), s)))
                .map_err(|e| ControlError::Conflict(e.to_string()))?;

            // Creating the domain takes more than editing it: check before anything is
            // written (and again inside the write, in case it was deleted meanwhile).
            let existed: Option<i64> =
                sqlx::query_scalar("SELECT revision FROM domains WHERE name = $1")
                    .bind(domain)
                    .fetch_optional(self.db.pool())
                    .await?;
            if existed.is_none() {
                actor.require_domain_admin(domain)?;
            }
            let Write {
                mut tx,
                mut revision,
            } = self.begin_write().await?;
            let now = now_ms();
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT revision FROM domains WHERE name = $1")
                    .bind(domain)
                    .fetch_optional(&mut *tx)
                    .await?;
            let mut report = ApplyReport {
                domain: domain.to_owned(),
                domain_created: exists.is_none(),
                ..ApplyReport::default()
            };
            if exists.is_none() {
                actor.require_domain_admin(domain)?;
                sqlx::query(
                    "INSERT INTO domains (name, description, revision, created_at, updated_at) \
                     VALUES ($1, '', $2, $3, $3)",
                )
                .bind(domain)
                .bind(revision)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            let current: BTreeMap<String, String> =
                sqlx::query("SELECT name, spec FROM policies WHERE domain = $1")
                    .bind(domain)
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|r| Ok((r.try_get("name")?, r.try_get("spec")?)))
                    .collect::<Result<_, sqlx::Error>>()?;
            // The first change uses the revision taken above; each further one gets its own.
            let mut fresh = false;
            for (name, before) in &current {
                if !wanted.iter().any(|(n, _)| n == name) {
                    if std::mem::replace(&mut fresh, true) {
                        revision = bump(&mut tx).await?;
                    }
                    let change = Change {
                        revision,
                        domain,
                        name,
                        actor,
                        now,
                    };
                    remove_policy(&mut tx, &change, before).await?;
                    report.deleted.push(name.clone());
                }
            }
            for (name, spec) in &wanted {
                let text = json(spec)?;
                let before = current.get(name);
                if before.is_some_and(|b| spec_of(b, domain, name).ok().as_ref() == Some(spec)) {
                    report.unchanged.push(name.clone());
                    continue;
                }
                if std::mem::replace(&mut fresh, true) {
                    revision = bump(&mut tx).await?;
                }
                let change = Change {
                    revision,
                    domain,
                    name,
                    actor,
                    now,
                };
                store_policy(&mut tx, &change, &text, before.map(String::as_str)).await?;
                if before.is_some() {
                    report.updated.push(name.clone());
                } else {
                    report.created.push(name.clone());
                }
            }
            if !report.changed() {
                // Nothing to do: leave the store's revision where it was.
                tx.rollback().await?;
                self.record_unchanged(&audit, "nothing changed").await?;
                report.revision = self.current_revision().await?;
                return Ok(report);
            }
            touch_domain(&mut tx, domain, revision, now).await?;
            self.commit_write(tx, revision, &audit).await?;
            report.revision = revision;
            tracing::info!(%domain, revision, created = report.created.len(), updated = report.updated.len(),
                deleted = report.deleted.len(), actor = %actor.name, via = actor.via, "policy document applied");
            Ok(report)
        })
        .await
    }

    /// A database domain's policies as a policy document.
    pub async fn document(
        &self,
        domain: &str,
        actor: &Actor,
    ) -> Result<PolicyDocument, ControlError> {
        actor.require_read(domain)?;
        self.require_database_domain(domain).await?;
        let policies = policies_of(self.db.pool(), domain, "").await?;
        document::assemble(domain, policies.iter().map(|(n, s)| (n.as_str(), s)))
            .map_err(|e| ControlError::Corrupt(e.to_string()))
    }
}

/// What [`ControlPlane::apply_document`] did.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct ApplyReport {
    /// The domain.
    pub domain: String,
    /// Whether the domain was created.
    pub domain_created: bool,
    /// Policies created.
    pub created: Vec<String>,
    /// Policies replaced.
    pub updated: Vec<String>,
    /// Policies deleted.
    pub deleted: Vec<String>,
    /// Policies left as they were.
    pub unchanged: Vec<String>,
    /// The store's revision after the apply.
    pub revision: i64,
}

impl ApplyReport {
    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        self.domain_created
            || !(self.created.is_empty() && self.updated.is_empty() && self.deleted.is_empty())
    }
}
