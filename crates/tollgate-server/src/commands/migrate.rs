//! `tollgate migrate status | up [--dry-run]`.

use std::process::ExitCode;

use tollgate_control::Database;
use tollgate_control::migrations::{self, MigrationState};

use crate::cli::{MigrateArgs, MigrateCommand};

/// Runs the command; the exit code says whether the schema is (now) current.
pub async fn run(args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    let url = crate::configuration::database_url(&args.database)?;
    let shown = tollgate_control::db::redact(&url);
    let db = Database::connect(&url).await?;
    let result = match &args.command {
        MigrateCommand::Status => status(&db, &shown).await,
        MigrateCommand::Up { dry_run: true } => {
            let sql = migrations::pending_sql(&db).await?;
            if sql.is_empty() {
                println!("{shown}: nothing to apply");
            } else {
                print!("{sql}");
            }
            Ok(ExitCode::SUCCESS)
        }
        MigrateCommand::Up { dry_run: false } => {
            let applied = migrations::up(&db).await?;
            if applied.is_empty() {
                println!("{shown}: up to date, nothing applied");
            } else {
                for v in &applied {
                    println!("applied {v}");
                }
                println!("{shown}: up to date");
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    db.close().await;
    result
}

async fn status(db: &Database, shown: &str) -> anyhow::Result<ExitCode> {
    let status = migrations::status(db).await?;
    println!("{shown} ({})", db.backend().as_str());
    for s in &status {
        let state = match s.state {
            MigrationState::Applied => "applied",
            MigrationState::Pending => "PENDING",
            MigrationState::Modified => "MODIFIED",
            MigrationState::Dirty => "DIRTY",
            MigrationState::Unknown => "UNKNOWN",
        };
        println!("  {:>14}  {state:<8}  {}", s.version, s.description);
    }
    match migrations::require_current(&status) {
        Ok(()) => {
            println!("schema is current");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}
