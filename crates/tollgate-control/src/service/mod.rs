//! The domain service: every read and write of domains and policies, whichever API asks.
//! REST and GraphQL are thin adapters over [`ControlPlane`], so validation, ownership
//! rules, optimistic concurrency and history are written once.
//!
//! One module per concept: `domains`, `policies`, `apply` (whole documents), `history`;
//! API keys and the audit log are in [`crate::keys`] and [`crate::audit`]. Every public
//! method takes the [`Actor`] and checks it before it touches the database.
//!
//! Every write goes through one pair of steps: `begin_write` opens the transaction and
//! takes the next store revision first (the revision row's lock orders concurrent
//! writers), `commit_write` writes the audit entry and, on PostgreSQL, `NOTIFY
//! tollgate_policies` with the new revision in the same transaction, commits, and tells
//! this process ([`ControlPlane::revisions`]). Failures and refusals are audited by
//! `audited` after the transaction is gone.

mod apply;
mod domains;
mod history;
mod policies;

pub use apply::ApplyReport;

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

/// A write begun by [`ControlPlane::begin_write`]: its transaction and the revision it
/// took first (a write of several changes takes one more per further change, with
/// [`bump`]).
struct Write {
    tx: Transaction<'static, Any>,
    revision: i64,
}

/// The domain service.
#[derive(Debug)]
pub struct ControlPlane {
    db: Database,
    /// Domains owned by policy files: name → file.
    files: RwLock<BTreeMap<String, String>>,
    revision: watch::Sender<i64>,
    /// Wakes the outbox relay after this process commits rows.
    pub(crate) outbox_signal: tokio::sync::Notify,
}

/// Milliseconds since the Unix epoch, as the control plane stamps what it stores.
pub fn now_ms() -> i64 {
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
        quota_mode: spec.quota_mode,
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
            outbox_signal: tokio::sync::Notify::new(),
        })
    }

    /// The database (for this crate: outside it, every access goes through a method that
    /// checks its caller).
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// Closes the database's connections (commands that are done with it).
    pub async fn close(&self) {
        self.db.close().await;
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

    /// The first step of every write to domains and policies: a transaction whose first
    /// statement takes the next store revision (the revision row's lock orders concurrent
    /// writers, so what the write reads next is what it lands on).
    async fn begin_write(&self) -> Result<Write, ControlError> {
        let mut tx = self.db.pool().begin().await?;
        let revision = bump(&mut tx).await?;
        Ok(Write { tx, revision })
    }

    /// The last step of every write, the one place where a change becomes visible: its
    /// audit entry and, on PostgreSQL, the notification to other nodes are written in the
    /// transaction, which then commits; this node's sync task hears `revision` at once.
    async fn commit_write(
        &self,
        mut tx: Transaction<'static, Any>,
        revision: i64,
        audit: &Audit<'_>,
    ) -> Result<(), ControlError> {
        self.record_ok(
            &mut tx,
            audit,
            &format!("revision {revision}"),
            Some(revision),
        )
        .await?;
        if self.db.backend() == Backend::Postgres {
            // Delivered to every listener when (and only if) the transaction commits.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(revision.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.heard(revision);
        Ok(())
    }
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
pub(crate) fn paginate_by_position<T>(
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

pub(crate) fn paginate<T>(mut items: Vec<T>, limit: i64, key: impl Fn(&T) -> &str) -> Page<T> {
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
