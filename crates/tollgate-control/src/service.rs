//! The domain service: every read and write of domains and policies, whichever API asks.
//! REST and GraphQL are thin adapters over [`ControlPlane`], so validation, ownership
//! rules, optimistic concurrency and history are written once.
//!
//! Every change bumps the store's revision in the same transaction, which also orders
//! concurrent writers (the revision row is locked until commit). On PostgreSQL the
//! transaction sends `NOTIFY tollgate_policies` with the new revision; every process also
//! learns of its own writes through [`ControlPlane::revisions`].

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use tokio::sync::watch;

use crate::ControlError;
use crate::audit::Audit;
use crate::auth::{Actor, Scope};
use crate::db::{Backend, Database};
use crate::document::{self, FieldError, PolicyDocument};
use crate::model::{
    ChangeAction, Domain, DomainSource, DomainUpdate, NewDomain, Page, Policy, PolicyChange,
    PolicySpec,
};

/// The PostgreSQL channel changes are announced on; the payload is the new revision.
pub const CHANNEL: &str = "tollgate_policies";

/// Largest page a listing returns.
pub const MAX_PAGE: u32 = 500;
/// Page size when none is asked for.
pub const DEFAULT_PAGE: u32 = 100;

/// A write's condition on the current state (`If-Match` / `If-None-Match: *`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precondition {
    /// Write whatever is there.
    #[default]
    None,
    /// Only if the resource exists at this revision.
    Revision(i64),
    /// Only if the resource does not exist.
    Absent,
    /// Only if the resource exists, at any revision (`If-Match: *`).
    Exists,
}

/// Every database domain with its policies, as of one revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The store's revision the snapshot was read at.
    pub revision: i64,
    /// Domain name → its policy document.
    pub domains: Vec<PolicyDocument>,
}

/// The outcome of a write that may create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<T> {
    /// The resource as stored.
    pub value: T,
    /// Whether it was created (rather than replaced).
    pub created: bool,
}

/// The domain service.
#[derive(Debug)]
pub struct ControlPlane {
    db: Database,
    /// Domains owned by policy files: name → file.
    files: RwLock<BTreeMap<String, String>>,
    revision: watch::Sender<i64>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Milliseconds since the epoch as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, ControlError> {
    serde_json::to_string(value).map_err(|e| ControlError::Corrupt(e.to_string()))
}

fn spec_of(text: &str, domain: &str, name: &str) -> Result<PolicySpec, ControlError> {
    serde_json::from_str(text).map_err(|e| {
        ControlError::Corrupt(format!(
            "policy '{name}' of domain '{domain}' is stored as invalid JSON: {e}"
        ))
    })
}

fn policy_from_row(row: &AnyRow) -> Result<Policy, ControlError> {
    let domain: String = row.try_get("domain")?;
    let name: String = row.try_get("name")?;
    let spec = spec_of(&row.try_get::<String, _>("spec")?, &domain, &name)?;
    Ok(Policy {
        descriptor: spec.descriptor,
        rate_limit: spec.rate_limit,
        shadow_mode: spec.shadow_mode,
        share_threshold: spec.share_threshold,
        description: spec.description,
        revision: row.try_get("revision")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
        updated_by: row.try_get("updated_by")?,
        domain,
        name,
    })
}

fn domain_from_row(row: &AnyRow) -> Result<Domain, ControlError> {
    Ok(Domain {
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        source: DomainSource::Database,
        file: None,
        policy_count: row.try_get("policy_count")?,
        revision: row.try_get("revision")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

/// A cursor is the last item's key, hex-encoded so that it is opaque and URL-safe.
fn encode_cursor(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn decode_cursor(cursor: Option<&str>) -> Result<String, ControlError> {
    let Some(cursor) = cursor else {
        return Ok(String::new());
    };
    let bad = || ControlError::Invalid {
        errors: vec![FieldError {
            field: "cursor".into(),
            message: "is not a cursor this API returned".into(),
        }],
    };
    if cursor.is_empty() || cursor.len() % 2 != 0 || cursor.len() > 512 {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2).unwrap_or("zz"), 16))
        .collect();
    // Any well-formed cursor continues after the key it names, ours or not.
    Ok(String::from_utf8_lossy(&bytes.map_err(|_| bad())?).into_owned())
}

pub(crate) fn page_size(limit: Option<u32>) -> Result<i64, ControlError> {
    match limit {
        None => Ok(i64::from(DEFAULT_PAGE)),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(i64::from(n)),
        Some(_) => Err(ControlError::Invalid {
            errors: vec![FieldError {
                field: "limit".into(),
                message: format!("must be between 1 and {MAX_PAGE}"),
            }],
        }),
    }
}

const DOMAIN_COLUMNS: &str = "SELECT d.name, d.description, d.revision, d.created_at, d.updated_at, \
     (SELECT COUNT(*) FROM policies p WHERE p.domain = d.name) AS policy_count FROM domains d";

const POLICY_COLUMNS: &str =
    "SELECT domain, name, spec, revision, created_at, updated_at, updated_by FROM policies";

impl ControlPlane {
    /// A service over `db`, whose schema must be current.
    pub async fn new(db: Database) -> Result<Self, ControlError> {
        let current: i64 = sqlx::query_scalar("SELECT value FROM store_revision WHERE id = 1")
            .fetch_one(db.pool())
            .await?;
        Ok(Self {
            db,
            files: RwLock::new(BTreeMap::new()),
            revision: watch::channel(current).0,
        })
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The latest revision this process has written or heard of; changes as they happen.
    pub fn revisions(&self) -> watch::Receiver<i64> {
        self.revision.subscribe()
    }

    /// Records a revision announced by another node.
    pub fn heard(&self, revision: i64) {
        self.revision.send_if_modified(|r| {
            let newer = revision > *r;
            if newer {
                *r = revision;
            }
            newer
        });
    }

    /// Declares which domains policy files own (name → file); the admin API shows them
    /// read-only and refuses to create database domains of the same name.
    pub fn set_file_domains(&self, files: BTreeMap<String, String>) {
        if let Ok(mut f) = self.files.write() {
            *f = files;
        }
    }

    fn file_of(&self, domain: &str) -> Option<String> {
        self.files.read().ok().and_then(|f| f.get(domain).cloned())
    }

    fn file_owned(&self, domain: &str) -> ControlError {
        let file = self.file_of(domain).unwrap_or_default();
        ControlError::Conflict(format!(
            "domain '{domain}' is defined by the policy file {file}; change it there"
        ))
    }

    /// The store's current revision, read from the database.
    pub(crate) async fn current_revision(&self) -> Result<i64, ControlError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM store_revision WHERE id = 1")
                .fetch_one(self.db.pool())
                .await?,
        )
    }

    /// Every database domain as a policy document, read in one transaction (for the node
    /// itself, which puts them in force: an actor with every domain).
    pub async fn snapshot(&self, actor: &Actor) -> Result<Snapshot, ControlError> {
        actor.require_admin("read every domain")?;
        let mut tx = self.db.pool().begin().await?;
        if self.db.backend() == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let revision: i64 = sqlx::query_scalar("SELECT value FROM store_revision WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM domains ORDER BY name")
            .fetch_all(&mut *tx)
            .await?;
        let rows = sqlx::query("SELECT domain, name, spec FROM policies ORDER BY domain, name")
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut by_domain: BTreeMap<String, Vec<(String, PolicySpec)>> =
            names.into_iter().map(|n| (n, Vec::new())).collect();
        for row in &rows {
            let domain: String = row.try_get("domain")?;
            let name: String = row.try_get("name")?;
            let spec = spec_of(&row.try_get::<String, _>("spec")?, &domain, &name)?;
            by_domain.entry(domain).or_default().push((name, spec));
        }
        let mut domains = Vec::with_capacity(by_domain.len());
        for (domain, policies) in by_domain {
            let document =
                document::assemble(&domain, policies.iter().map(|(n, s)| (n.as_str(), s)))
                    .map_err(|e| ControlError::Corrupt(format!("domain '{domain}': {e}")))?;
            domains.push(document);
        }
        Ok(Snapshot { revision, domains })
    }

    // ---- domains ----

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
        self.audited(&audit, self.create_domain_unaudited(new, actor, &audit))
            .await
    }

    async fn create_domain_unaudited(
        &self,
        new: &NewDomain,
        actor: &Actor,
        audit: &Audit<'_>,
    ) -> Result<Domain, ControlError> {
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
        let mut tx = self.db.pool().begin().await?;
        let revision = bump(&mut tx).await?;
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
        self.announce(&mut tx, revision, audit).await?;
        tx.commit().await?;
        self.heard(revision);
        tracing::info!(domain = %new.name, revision, actor = %actor.name, via = actor.via, "domain created");
        self.get_domain(&new.name, actor).await
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
        self.audited(
            &audit,
            self.update_domain_unaudited(name, update, precondition, actor, &audit),
        )
        .await
    }

    async fn update_domain_unaudited(
        &self,
        name: &str,
        update: &DomainUpdate,
        precondition: Precondition,
        actor: &Actor,
        audit: &Audit<'_>,
    ) -> Result<Domain, ControlError> {
        actor.require_domain_admin(name)?;
        check_description(&update.description)
            .map_err(|e| ControlError::Invalid { errors: vec![e] })?;
        if self.file_of(name).is_some() {
            return Err(self.file_owned(name));
        }
        let mut tx = self.db.pool().begin().await?;
        let revision = bump(&mut tx).await?;
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
        self.announce(&mut tx, revision, audit).await?;
        tx.commit().await?;
        self.heard(revision);
        tracing::info!(domain = %name, revision, actor = %actor.name, via = actor.via, "domain updated");
        self.get_domain(name, actor).await
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
        self.audited(
            &audit,
            self.delete_domain_unaudited(name, precondition, cascade, actor, &audit),
        )
        .await
    }

    async fn delete_domain_unaudited(
        &self,
        name: &str,
        precondition: Precondition,
        cascade: bool,
        actor: &Actor,
        audit: &Audit<'_>,
    ) -> Result<(), ControlError> {
        actor.require_domain_admin(name)?;
        if self.file_of(name).is_some() {
            return Err(self.file_owned(name));
        }
        let mut tx = self.db.pool().begin().await?;
        let mut revision = bump(&mut tx).await?;
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
        self.announce(&mut tx, revision, audit).await?;
        tx.commit().await?;
        self.heard(revision);
        tracing::info!(domain = %name, revision, policies = rows.len(), actor = %actor.name, via = actor.via, "domain deleted");
        Ok(())
    }

    // ---- policies ----

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

    async fn require_database_domain(&self, domain: &str) -> Result<(), ControlError> {
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
        self.audited(
            &audit,
            self.put_policy_unaudited(domain, name, spec, precondition, actor, &audit),
        )
        .await
    }

    async fn put_policy_unaudited(
        &self,
        domain: &str,
        name: &str,
        spec: &PolicySpec,
        precondition: Precondition,
        actor: &Actor,
        audit: &Audit<'_>,
    ) -> Result<Written<Policy>, ControlError> {
        actor.require_edit(domain)?;
        document::check_policy(domain, name, spec)
            .map_err(|errors| ControlError::Invalid { errors })?;
        if self.file_of(domain).is_some() {
            return Err(self.file_owned(domain));
        }
        let mut tx = self.db.pool().begin().await?;
        // First: the revision row's lock orders this write after any concurrent one, so
        // the domain read below is the one this write lands on.
        let revision = bump(&mut tx).await?;
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
        self.announce(&mut tx, revision, audit).await?;
        tx.commit().await?;
        self.heard(revision);
        tracing::info!(%domain, policy = %name, revision, created, actor = %actor.name, via = actor.via, "policy written");
        Ok(Written {
            value: self.get_policy(domain, name, actor).await?,
            created,
        })
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
        self.audited(
            &audit,
            self.delete_policy_unaudited(domain, name, precondition, actor, &audit),
        )
        .await
    }

    async fn delete_policy_unaudited(
        &self,
        domain: &str,
        name: &str,
        precondition: Precondition,
        actor: &Actor,
        audit: &Audit<'_>,
    ) -> Result<(), ControlError> {
        actor.require_edit(domain)?;
        if self.file_of(domain).is_some() {
            return Err(self.file_owned(domain));
        }
        let mut tx = self.db.pool().begin().await?;
        let revision = bump(&mut tx).await?;
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
        self.announce(&mut tx, revision, audit).await?;
        tx.commit().await?;
        self.heard(revision);
        tracing::info!(%domain, policy = %name, revision, actor = %actor.name, via = actor.via, "policy deleted");
        Ok(())
    }

    /// Replaces all of a domain's policies with `policies` in one transaction (creating
    /// the domain if needed): what `tollgate policy apply` does with a file. Unchanged
    /// policies are left alone (no history entry, same revision).
    pub async fn apply_document(
        &self,
        document: &PolicyDocument,
        actor: &Actor,
    ) -> Result<ApplyReport, ControlError> {
        let audit = Audit::new(actor, "document.apply", document.domain.clone());
        self.audited(
            &audit,
            self.apply_document_unaudited(document, actor, &audit),
        )
        .await
    }

    async fn apply_document_unaudited(
        &self,
        document: &PolicyDocument,
        actor: &Actor,
        audit: &Audit<'_>,
    ) -> Result<ApplyReport, ControlError> {
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

        let mut tx = self.db.pool().begin().await?;
        let mut revision = bump(&mut tx).await?;
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
            audit.ok(self.db.pool(), "nothing changed").await?;
            report.revision = self.current_revision().await?;
            return Ok(report);
        }
        touch_domain(&mut tx, domain, revision, now).await?;
        self.announce(&mut tx, revision, audit).await?;
        tx.commit().await?;
        self.heard(revision);
        report.revision = revision;
        tracing::info!(%domain, revision, created = report.created.len(), updated = report.updated.len(),
            deleted = report.deleted.len(), actor = %actor.name, via = actor.via, "policy document applied");
        Ok(report)
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

    /// The last step of every write: its audit entry, and on PostgreSQL the notification
    /// (both part of the transaction).
    async fn announce(
        &self,
        tx: &mut Transaction<'static, Any>,
        revision: i64,
        audit: &Audit<'_>,
    ) -> Result<(), ControlError> {
        audit.ok(&mut **tx, &format!("revision {revision}")).await?;
        if self.db.backend() == Backend::Postgres {
            // Delivered to every listener when (and only if) the transaction commits.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(revision.to_string())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
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

fn check_precondition(
    precondition: Precondition,
    current: i64,
    what: &str,
) -> Result<(), ControlError> {
    match precondition {
        Precondition::Revision(want) if want != current => Err(ControlError::PreconditionFailed {
            what: what.to_owned(),
            current: Some(current),
        }),
        Precondition::Absent => Err(ControlError::Conflict(format!("{what} already exists"))),
        _ => Ok(()),
    }
}

/// A newest-first listing's cursor: the position (revision, id) to continue below.
pub(crate) fn decode_position(cursor: Option<&str>) -> Result<i64, ControlError> {
    match cursor {
        None => Ok(i64::MAX),
        Some(c) => c.parse::<i64>().map_err(|_| ControlError::Invalid {
            errors: vec![FieldError {
                field: "cursor".into(),
                message: "is not a cursor this API returned".into(),
            }],
        }),
    }
}

/// One page of a newest-first listing read with `limit + 1` rows.
pub(crate) fn paginate_by_position<T: async_graphql::OutputType>(
    mut items: Vec<T>,
    limit: i64,
    position: impl Fn(&T) -> i64,
) -> Page<T> {
    let more = items.len() as i64 > limit;
    items.truncate(usize::try_from(limit).unwrap_or(0));
    let next_cursor = more
        .then(|| items.last().map(|i| position(i).to_string()))
        .flatten();
    Page { items, next_cursor }
}

pub(crate) fn paginate<T: async_graphql::OutputType>(
    mut items: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> &str,
) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = more
        .then(|| items.last().map(|i| encode_cursor(key(i))))
        .flatten();
    Page { items, next_cursor }
}

/// Bumps the store's revision and returns the new value. Taken first in every write
/// transaction: on PostgreSQL the row lock serialises writers until commit.
async fn bump(tx: &mut Transaction<'static, Any>) -> Result<i64, ControlError> {
    Ok(sqlx::query_scalar(
        "UPDATE store_revision SET value = value + 1 WHERE id = 1 RETURNING value",
    )
    .fetch_one(&mut **tx)
    .await?)
}

async fn domain_revision(
    tx: &mut Transaction<'static, Any>,
    name: &str,
) -> Result<i64, ControlError> {
    sqlx::query_scalar("SELECT revision FROM domains WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| ControlError::NotFound(format!("domain '{name}'")))
}

async fn touch_domain(
    tx: &mut Transaction<'static, Any>,
    name: &str,
    revision: i64,
    now: i64,
) -> Result<(), ControlError> {
    sqlx::query("UPDATE domains SET revision = $1, updated_at = $2 WHERE name = $3")
        .bind(revision)
        .bind(now)
        .bind(name)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A domain's policies by name, leaving out `except` (`""` leaves out none: policy names
/// are never empty).
async fn policies_of<'c, E>(
    executor: E,
    domain: &str,
    except: &str,
) -> Result<Vec<(String, PolicySpec)>, ControlError>
where
    E: sqlx::Executor<'c, Database = Any>,
{
    let rows = sqlx::query(
        "SELECT name, spec FROM policies WHERE domain = $1 AND name <> $2 ORDER BY name",
    )
    .bind(domain)
    .bind(except)
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|row| {
            let other: String = row.try_get("name")?;
            let spec = spec_of(&row.try_get::<String, _>("spec")?, domain, &other)?;
            Ok((other, spec))
        })
        .collect()
}

/// Whether `spec` can join the domain's other policies: no two on one descriptor, and the
/// whole domain accepted by the core.
fn fits_with(
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
struct Change<'a> {
    revision: i64,
    domain: &'a str,
    name: &'a str,
    actor: &'a Actor,
    now: i64,
}

/// Creates (no `before`) or replaces a policy's row, and records the change.
async fn store_policy(
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
async fn remove_policy(
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
async fn record(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        for key in ["api", "a/b é"] {
            assert_eq!(decode_cursor(Some(&encode_cursor(key))).unwrap(), key);
        }
        assert_eq!(decode_cursor(Some("ff")).unwrap(), "\u{fffd}");
        for bad in ["", "x", "zz", "0"] {
            assert!(decode_cursor(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(None).unwrap(), 100);
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(MAX_PAGE + 1)).is_err());
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
