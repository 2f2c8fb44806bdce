//! The control plane inside `serve`: opening the policy database (and its schema), the
//! two sources policies come from (files and the database), and keeping the limiter's
//! policies equal to their union as either changes.
//!
//! Each domain has one source. A database domain named like a file domain is refused by the
//! admin API; one that appears anyway (a file added later, or another node's write) makes
//! the union invalid, and then the change is rejected and the policies in force stay.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tollgate_control::migrations;
use tollgate_control::{ControlPlane, Database, PolicyDocument};
use tollgate_core::{PolicyError, PolicySet};

use tollgate_data::AppState;

/// Opens the policy database and checks its schema.
///
/// A brand-new, empty database is initialised (nothing to lose, nobody else using it);
/// one with pending migrations is migrated only with `migrate`, and one whose schema is
/// newer than this release is refused.
pub async fn open(url: &str, migrate: bool) -> anyhow::Result<Arc<ControlPlane>> {
    let shown = tollgate_control::db::redact(url);
    let db = Database::connect(url).await.with_context(|| {
        format!("cannot open the policy database {shown} (choose one with --database)")
    })?;
    let status = migrations::status(&db).await?;
    if migrations::require_current(&status).is_err() {
        let fresh = migrations::is_empty(&db).await?;
        if fresh || migrate {
            let applied = migrations::up(&db).await?;
            tracing::info!(database = %shown, ?applied, fresh, "policy database migrated");
        } else {
            migrations::require_current(&status)
                .with_context(|| format!("policy database {shown}"))?;
        }
    }
    let control = ControlPlane::new(db).await?;
    tracing::info!(database = %shown, backend = control.backend().as_str(), "policy database ready");
    Ok(Arc::new(control))
}

/// The texts policies are built from.
#[derive(Debug, Default)]
pub struct PolicySources {
    /// Policy files as `(name, contents)`.
    pub files: Vec<(String, String)>,
    /// Database domains, as of `revision`.
    pub database: Vec<PolicyDocument>,
    /// The policy store's revision `database` was read at.
    pub revision: i64,
}

impl PolicySources {
    /// The union of both sources as one policy set, or every error (a domain defined by
    /// both is one).
    pub fn build(&self) -> Result<PolicySet, Vec<PolicyError>> {
        let database: Vec<(String, String)> = self
            .database
            .iter()
            .map(|d| {
                (
                    format!("{DATABASE_SOURCE}{}>", d.domain),
                    tollgate_control::document::document_text(d),
                )
            })
            .collect();
        PolicySet::from_files(
            self.files
                .iter()
                .chain(&database)
                .map(|(n, t)| (n.as_str(), t.as_str())),
        )
    }
}

/// Who the policy sync acts as: the node itself.
static SYNC: std::sync::LazyLock<tollgate_control::Actor> =
    std::sync::LazyLock::new(|| tollgate_control::Actor::unauthenticated_admin("sync"));

/// The name database domains carry as their source in a built [`PolicySet`].
const DATABASE_SOURCE: &str = "<database domain ";

/// Domain name → file, for the domains of `policies` that files define.
pub fn file_domains(policies: &PolicySet) -> BTreeMap<String, String> {
    policies
        .domains()
        .filter(|d| !d.source().starts_with(DATABASE_SOURCE))
        .map(|d| (d.name().to_string(), d.source().to_owned()))
        .collect()
}

/// Both sources and the control plane, shared by the reload and sync tasks.
pub struct PolicyControl {
    /// The domain service.
    pub control: Arc<ControlPlane>,
    /// What the policies in force were built from.
    pub sources: Mutex<PolicySources>,
}

/// Why new policies were not put in force.
#[derive(Debug)]
pub struct Rejected(pub Vec<PolicyError>);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.0.iter().map(|e| format!("  {e}")).collect();
        write!(f, "invalid policies:\n{}", list.join("\n"))
    }
}

impl PolicyControl {
    /// Changes one source with `change`, rebuilds, and swaps the result in; on failure the
    /// sources and the policies in force stay as they were.
    pub fn update(
        &self,
        state: &AppState,
        change: impl FnOnce(&mut PolicySources),
    ) -> Result<Vec<String>, Rejected> {
        let mut sources = match self.sources.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next = PolicySources {
            files: sources.files.clone(),
            database: sources.database.clone(),
            revision: sources.revision,
        };
        change(&mut next);
        let policies = next.build().map_err(Rejected)?;
        let domains: Vec<String> = policies.domains().map(|d| d.name().to_string()).collect();
        self.control.set_file_domains(file_domains(&policies));
        state.metrics.set_domains(&policies);
        state.limiter.replace_policies(policies);
        *sources = next;
        Ok(domains)
    }
}

/// Keeps the database's domains in force: whenever the store's revision moves (a write on
/// this node, a notification from another, a re-read after a lost connection), reads a
/// snapshot and swaps the policies in.
pub fn spawn_sync(state: Arc<AppState>, control: Arc<PolicyControl>) {
    tokio::spawn(tollgate_control::follow::follow(control.control.clone()));
    tokio::spawn(async move {
        let mut revisions = control.control.revisions();
        loop {
            if revisions.changed().await.is_err() {
                return;
            }
            let wanted = *revisions.borrow_and_update();
            let have = control.sources.lock().map_or(0, |s| s.revision);
            if wanted <= have {
                continue;
            }
            let snapshot = match control.control.snapshot(&SYNC).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the policy store; the policies in force stay");
                    continue;
                }
            };
            let revision = snapshot.revision;
            match control.update(&state, |s| {
                s.database = snapshot.domains;
                s.revision = revision;
            }) {
                Ok(domains) => {
                    state.metrics.reloaded(true);
                    tracing::info!(revision, ?domains, "policies from the database in force");
                }
                Err(e) => {
                    state.metrics.reloaded(false);
                    tracing::error!(revision, error = %e, "policies from the database rejected; the previous ones stay in force");
                }
            }
        }
    });
}
