//! Versioned schema migrations, one directory per database (`migrations/sqlite`,
//! `migrations/postgres`), embedded in the binary. sqlx's migrator applies them and
//! records each in `_sqlx_migrations` with its checksum; on PostgreSQL it holds an advisory
//! lock while it works, so nodes starting together apply each migration once.
//!
//! The rules for writing them (expand, then contract, across releases) are in
//! `docs/design/migrations.md`.

use serde::Serialize;
use sqlx::migrate::{Migrate, Migrator};

use crate::ControlError;
use crate::db::{Backend, Database};

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The table sqlx records applied migrations in.
const TABLE: &str = "_sqlx_migrations";

/// The migrations this binary knows for `backend`.
pub fn migrator(backend: Backend) -> &'static Migrator {
    match backend {
        Backend::Sqlite => &SQLITE,
        Backend::Postgres => &POSTGRES,
    }
}

/// Where one migration stands in a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    /// Applied, with the checksum this binary has.
    Applied,
    /// Not applied yet.
    Pending,
    /// Applied, but its SQL differs from this binary's (someone edited a shipped migration).
    Modified,
    /// Failed half-way (a migration that cannot run in a transaction).
    Dirty,
    /// Applied by a newer release: this binary does not know it.
    Unknown,
}

/// One line of `tollgate migrate status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationStatus {
    /// The version (the file name's number).
    pub version: i64,
    /// What it does (from the file name).
    pub description: String,
    /// Where it stands.
    pub state: MigrationState,
}

/// The status of every migration, known or found in the database, in version order.
pub async fn status(db: &Database) -> Result<Vec<MigrationStatus>, ControlError> {
    let migrator = migrator(db.backend());
    let (applied, dirty) = if table_exists(db).await? {
        let mut conn = db.pool().acquire().await?;
        let applied = conn.list_applied_migrations(TABLE).await?;
        let dirty = conn.dirty_version(TABLE).await?;
        (applied, dirty)
    } else {
        (Vec::new(), None)
    };
    let mut out = Vec::new();
    for m in migrator.iter() {
        let state = match applied.iter().find(|a| a.version == m.version) {
            _ if dirty == Some(m.version) => MigrationState::Dirty,
            Some(a) if a.checksum == m.checksum => MigrationState::Applied,
            Some(_) => MigrationState::Modified,
            None => MigrationState::Pending,
        };
        out.push(MigrationStatus {
            version: m.version,
            description: m.description.to_string(),
            state,
        });
    }
    for a in &applied {
        if !migrator.version_exists(a.version) {
            out.push(MigrationStatus {
                version: a.version,
                description: "(unknown to this release)".into(),
                state: MigrationState::Unknown,
            });
        }
    }
    if let Some(v) = dirty
        && !out.iter().any(|s| s.version == v)
    {
        out.push(MigrationStatus {
            version: v,
            description: "(unknown to this release)".into(),
            state: MigrationState::Dirty,
        });
    }
    out.sort_by_key(|s| s.version);
    Ok(out)
}

async fn table_exists(db: &Database) -> Result<bool, ControlError> {
    let sql = match db.backend() {
        Backend::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
        }
    };
    let count: i64 = sqlx::query_scalar(sql).fetch_one(db.pool()).await?;
    Ok(count > 0)
}

/// Whether the database holds no tables at all (a brand-new SQLite file, say).
pub async fn is_empty(db: &Database) -> Result<bool, ControlError> {
    let sql = match db.backend() {
        Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
        Backend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()"
        }
    };
    let count: i64 = sqlx::query_scalar(sql).fetch_one(db.pool()).await?;
    Ok(count == 0)
}

/// Fails unless the schema is exactly what this binary expects, naming what to run.
pub fn require_current(status: &[MigrationStatus]) -> Result<(), ControlError> {
    let by = |state| {
        status
            .iter()
            .filter(|s| s.state == state)
            .map(|s| s.version.to_string())
            .collect::<Vec<_>>()
    };
    let (unknown, dirty, modified, pending) = (
        by(MigrationState::Unknown),
        by(MigrationState::Dirty),
        by(MigrationState::Modified),
        by(MigrationState::Pending),
    );
    if !unknown.is_empty() {
        return Err(ControlError::Schema(format!(
            "the database schema is newer than this release (migrations {} are unknown to it): \
             run a release that knows them",
            unknown.join(", ")
        )));
    }
    if !dirty.is_empty() {
        return Err(ControlError::Schema(format!(
            "migration {} failed half-way and left the schema dirty: repair it by hand, \
             then delete its row from _sqlx_migrations",
            dirty.join(", ")
        )));
    }
    if !modified.is_empty() {
        return Err(ControlError::Schema(format!(
            "migrations {} were applied with different SQL than this release ships: \
             shipped migrations must never be edited",
            modified.join(", ")
        )));
    }
    if !pending.is_empty() {
        return Err(ControlError::Schema(format!(
            "the database has unapplied migrations ({}): run `tollgate migrate up` \
             (or start with --migrate)",
            pending.join(", ")
        )));
    }
    Ok(())
}

/// Applies every pending migration and returns the versions this call applied.
///
/// Holds the migrator's lock (a PostgreSQL advisory lock; SQLite serialises writers
/// itself) from before it reads what is applied until it is done, on a connection of its
/// own that is closed afterwards, so a failure cannot leave the lock held in the pool.
pub async fn up(db: &Database) -> Result<Vec<i64>, ControlError> {
    require_no_surprises(&status(db).await?)?;
    let known = migrator(db.backend());
    let unlocked = Migrator {
        migrations: std::borrow::Cow::Borrowed(&known.migrations[..]),
        locking: false,
        ..Migrator::DEFAULT
    };
    let mut conn = db.pool().acquire().await?.detach();
    conn.lock().await?;
    let result = async {
        conn.ensure_migrations_table(TABLE).await?;
        let before = conn.list_applied_migrations(TABLE).await?;
        unlocked.run(&mut conn).await?;
        let after = conn.list_applied_migrations(TABLE).await?;
        Ok::<_, ControlError>(
            after
                .iter()
                .map(|m| m.version)
                .filter(|v| !before.iter().any(|b| b.version == *v))
                .collect(),
        )
    }
    .await;
    let unlocked = conn.unlock().await;
    let _ = sqlx::Connection::close(conn).await;
    let applied = result?;
    unlocked?;
    Ok(applied)
}

fn require_no_surprises(status: &[MigrationStatus]) -> Result<(), ControlError> {
    let ok = status
        .iter()
        .all(|s| matches!(s.state, MigrationState::Applied | MigrationState::Pending));
    if ok { Ok(()) } else { require_current(status) }
}

/// The SQL `up` would run, with a header per migration (`--dry-run`).
pub async fn pending_sql(db: &Database) -> Result<String, ControlError> {
    let status = status(db).await?;
    require_no_surprises(&status)?;
    let mut out = String::new();
    for m in migrator(db.backend()).iter() {
        if status
            .iter()
            .any(|s| s.version == m.version && s.state == MigrationState::Pending)
        {
            out.push_str(&format!("-- migration {} {}\n", m.version, m.description));
            out.push_str(m.sql.as_str().trim_end());
            out.push_str("\n\n");
        }
    }
    Ok(out)
}

/// Applies migrations up to and including `target` only: for tests that seed a database
/// at an earlier version.
pub async fn up_to(db: &Database, target: i64) -> Result<(), ControlError> {
    migrator(db.backend()).run_to(target, db.pool()).await?;
    Ok(())
}
