//! Throwaway PostgreSQL databases on the test server: one per test, dropped afterwards.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The server tests use: `TOLLGATE_TEST_POSTGRES`, or the local one with trust auth.
pub fn server_url() -> String {
    std::env::var("TOLLGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database created for one test on the test PostgreSQL server, dropped with its
/// connections when this is dropped.
#[derive(Debug)]
pub struct PostgresDatabase {
    name: String,
    url: String,
}

/// Runs `f` on a runtime of its own in a thread of its own, so that fixtures work the same
/// from synchronous tests and from inside a test's runtime.
fn blocking<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the PostgreSQL fixture")
            .block_on(f)
    })
    .join()
    .expect("the PostgreSQL fixture's thread panicked")
}

fn with_database(server: &str, database: &str) -> String {
    match server.rsplit_once('/') {
        Some((base, _))
            if base.contains("://") && base.len() > base.find("://").unwrap_or(0) + 3 =>
        {
            format!("{base}/{database}")
        }
        _ => format!("{server}/{database}"),
    }
}

impl PostgresDatabase {
    /// Creates an empty database. Panics, saying how to get a server, when none answers.
    pub fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tollgate_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let server = server_url();
        let sql = format!("CREATE DATABASE {name}");
        let server_for_task = server.clone();
        let created = blocking(async move {
            let mut conn = PgConnection::connect(&server_for_task).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await?;
            conn.close().await
        });
        if let Err(e) = created {
            panic!(
                "PostgreSQL is needed at {server} (a user that may CREATE DATABASE): {e}. \
                 Start the local server (Debian: `apt install postgresql && service postgresql start`, \
                 trust auth on 127.0.0.1) or point TOLLGATE_TEST_POSTGRES at one."
            );
        }
        let url = with_database(&server, &name);
        Self { name, url }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let server = server_url();
        let dropped = blocking(async move {
            let mut conn = PgConnection::connect(&server).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await?;
            conn.close().await
        });
        if let Err(e) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_replace_the_servers() {
        assert_eq!(
            with_database("postgres://u@h:1/postgres", "x"),
            "postgres://u@h:1/x"
        );
    }
}
