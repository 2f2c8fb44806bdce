//! The policy store's database: SQLite (one node, zero setup) or PostgreSQL (many nodes),
//! reached through sqlx's `Any` driver so one set of queries serves both. The queries use
//! `$1`-style parameters, which both databases read.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use crate::ControlError;

/// Which database the URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (or `sqlite::memory:`).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend of a database URL, or an error naming the accepted schemes.
    pub fn of(url: &str) -> Result<Self, ControlError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(ControlError::Config(format!(
                "database URL '{}' is neither sqlite:PATH nor postgres://…",
                redact(url)
            )))
        }
    }

    /// Lower-case name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A URL with its password replaced by `***`, fit for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// An open policy database.
#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    url: String,
}

impl Database {
    /// Opens the database at `url`, creating a SQLite file (and its directory) if missing.
    /// Does not touch the schema: see [`crate::migrations`].
    pub async fn connect(url: &str) -> Result<Self, ControlError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(url)?;
        let mut connect_url = url.to_owned();
        if backend == Backend::Sqlite {
            connect_url = sqlite_url(url)?;
        }
        let options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(5))
            // SQLite allows one writer at a time; one connection makes writers queue in the
            // pool instead of failing with SQLITE_BUSY (and `sqlite::memory:` needs it).
            .max_connections(match backend {
                Backend::Sqlite => 1,
                Backend::Postgres => 4,
            });
        let pool = options
            .connect(&connect_url)
            .await
            .map_err(|e| ControlError::Connect {
                url: redact(url),
                source: e,
            })?;
        Ok(Self {
            pool,
            backend,
            url: url.to_owned(),
        })
    }

    /// The connection pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL it was opened with (with its password: not for logs; see [`redact`]).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `sqlite:PATH` or `sqlite://PATH` with `mode=rwc` (create if missing), the parent
/// directory created first.
fn sqlite_url(url: &str) -> Result<String, ControlError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        return Ok(url.to_owned());
    }
    if let Some(parent) = Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| {
            ControlError::Config(format!(
                "cannot create the directory {} for the SQLite database: {e}",
                parent.display()
            ))
        })?;
    }
    // Validate through sqlx's own parser, so a bad option is named here.
    let with_mode = if rest.contains("mode=") {
        format!("sqlite://{rest}")
    } else if rest.contains('?') {
        format!("sqlite://{rest}&mode=rwc")
    } else {
        format!("sqlite://{rest}?mode=rwc")
    };
    sqlx::sqlite::SqliteConnectOptions::from_str(&with_mode)
        .map_err(|e| ControlError::Config(format!("invalid SQLite URL '{url}': {e}")))?;
    Ok(with_mode)
}

/// The SQLite URL of the default database in `data_dir`.
pub fn default_sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("tollgate.db").display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend_and_hide_passwords() {
        assert_eq!(Backend::of("sqlite:x.db").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::of("postgres://u:p@h/db").unwrap(),
            Backend::Postgres
        );
        let err = Backend::of("mysql://u:secret@h/db")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mysql://u:***@h/db"), "{err}");
        assert!(!err.contains("secret"));
    }

    #[test]
    fn sqlite_urls_create_the_file() {
        assert_eq!(sqlite_url("sqlite::memory:").unwrap(), "sqlite::memory:");
        let dir = std::env::temp_dir().join(format!("tg-url-{}", std::process::id()));
        let url = sqlite_url(&format!("sqlite:{}/a/b.db", dir.display())).unwrap();
        assert!(url.ends_with("/a/b.db?mode=rwc"), "{url}");
        assert!(dir.join("a").is_dir());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
