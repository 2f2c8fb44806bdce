//! One fresh database per test, on each backend.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use tollgate_control::model::{MatchEntry, PolicySpec, RateLimitSpec, UnitName};
use tollgate_control::{Backend, ControlPlane, Database};
use tollgate_testkit::PostgresDatabase;

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    _postgres: Option<PostgresDatabase>,
    dir: Option<PathBuf>,
}

impl TestDb {
    pub fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let dir = std::env::temp_dir().join(format!(
                    "tollgate-control-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                Self {
                    url: format!("sqlite://{}/policies.db", dir.display()),
                    _postgres: None,
                    dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let pg = PostgresDatabase::create();
                Self {
                    url: pg.url().to_owned(),
                    _postgres: Some(pg),
                    dir: None,
                }
            }
        }
    }

    pub async fn connect(&self) -> Database {
        Database::connect(&self.url).await.expect("connect")
    }

    /// A control plane over a fully migrated database.
    pub async fn control(&self) -> ControlPlane {
        let db = self.connect().await;
        tollgate_control::migrations::up(&db)
            .await
            .expect("migrate");
        ControlPlane::new(db).await.expect("control plane")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

/// A policy limiting each value of `key` to `n` per minute.
pub fn per_minute(key: &str, n: u32) -> PolicySpec {
    PolicySpec {
        descriptor: vec![MatchEntry {
            key: key.to_owned(),
            value: None,
        }],
        rate_limit: RateLimitSpec {
            unit: Some(UnitName::Minute),
            requests_per_unit: Some(n),
            ..RateLimitSpec::default()
        },
        shadow_mode: false,
        quota_mode: false,
        share_threshold: false,
        description: String::new(),
    }
}
