//! `tollgate keys create | list | revoke`: API keys, written straight to the policy
//! database. This is how the first admin key comes to exist: whoever can reach the
//! database is already trusted with everything the key would allow.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use tollgate_control::model::NewApiKey;
use tollgate_control::{Actor, ControlPlane, Database};

use crate::cli::{KeysArgs, KeysCommand};

/// Runs the command against the database the flags (or configuration file) name.
pub async fn run(args: &KeysArgs) -> anyhow::Result<ExitCode> {
    let url = crate::configuration::database_url(&args.database)?;
    let db = Database::connect(&url).await?;
    // A brand-new database (the laptop's first run) is initialised as `serve` would.
    if tollgate_control::migrations::is_empty(&db).await? {
        tollgate_control::migrations::up(&db).await?;
    }
    let status = tollgate_control::migrations::status(&db).await?;
    tollgate_control::migrations::require_current(&status)
        .map_err(|e| anyhow::anyhow!("{e} (run `tollgate migrate up` first)"))?;
    let control = ControlPlane::new(db).await?;
    let actor = Actor {
        name: format!("cli:{}", whoami()),
        ..Actor::unauthenticated_admin("cli")
    };
    let code = match &args.command {
        KeysCommand::Create {
            role,
            domains,
            name,
            expires_in,
        } => {
            let expires_at = expires_in.map(|d| {
                humantime::format_rfc3339_seconds(SystemTime::now() + d.max(Duration::from_secs(1)))
                    .to_string()
            });
            let new = NewApiKey {
                name: name.clone(),
                role: (*role).into(),
                domains: if domains.is_empty() {
                    vec!["*".to_owned()]
                } else {
                    domains.clone()
                },
                expires_at,
            };
            let created = control.create_key(&new, &actor).await?;
            let info = &created.info;
            eprintln!(
                "created key {} ({}, role {}, domains {}{}); it is shown only now:",
                info.id,
                info.name,
                info.role,
                info.domains.join(","),
                info.expires_at
                    .as_deref()
                    .map(|e| format!(", expires {e}"))
                    .unwrap_or_default()
            );
            println!("{}", created.key);
            ExitCode::SUCCESS
        }
        KeysCommand::List => {
            let mut cursor = None;
            println!(
                "{:<20}  {:<7}  {:<20}  {:<24}  {:<24}  NAME",
                "ID", "ROLE", "DOMAINS", "STATE", "LAST USED"
            );
            loop {
                let page = control
                    .list_keys(cursor.as_deref(), Some(500), &actor)
                    .await?;
                for k in &page.items {
                    let state = match (&k.revoked_at, &k.expires_at) {
                        (Some(at), _) => format!("revoked {at}"),
                        (None, Some(at)) => format!("expires {at}"),
                        (None, None) => "active".to_owned(),
                    };
                    println!(
                        "{:<20}  {:<7}  {:<20}  {:<24}  {:<24}  {}",
                        k.id,
                        k.role.as_str(),
                        k.domains.join(","),
                        state,
                        k.last_used_at.as_deref().unwrap_or("never"),
                        k.name
                    );
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            ExitCode::SUCCESS
        }
        KeysCommand::Revoke { id } => {
            control.revoke_key(id, &actor).await?;
            println!("revoked key {id}");
            ExitCode::SUCCESS
        }
    };
    control.close().await;
    Ok(code)
}

/// The local user, for the audit log (`cli:<user>`).
fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned())
}
