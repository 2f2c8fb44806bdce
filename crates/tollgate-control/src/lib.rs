//! Tollgate's control plane: the policy store on SQL (SQLite by default, PostgreSQL for
//! many nodes), its versioned migrations, and [`ControlPlane`], the one domain service the
//! REST and GraphQL admin APIs and the CLI go through.
//!
//! - [`model`]: the resources (domains, policies, history) as the APIs show them.
//! - [`document`]: policies ⇄ envoyproxy/ratelimit policy documents; validation by the core.
//! - [`db`]: connecting to SQLite or PostgreSQL.
//! - [`migrations`]: embedded migrations, status, `up`, `--dry-run`.
//! - [`service`]: [`ControlPlane`]: reads, writes, optimistic concurrency, history.
//! - [`follow`]: learning of other nodes' changes (PostgreSQL `LISTEN/NOTIFY`).
//! - [`auth`]: roles, domain scopes, and the [`Actor`] every call is checked against.
//! - [`keys`]: API keys (hashed, revocable, expiring); [`jwt`]: bearer tokens.
//! - [`audit`]: the append-only audit log.

pub mod audit;
pub mod auth;
pub mod db;
pub mod document;
pub mod follow;
pub mod jwt;
pub mod keys;
pub mod migrations;
pub mod model;
pub mod service;

pub use auth::{Actor, Principal, Role, Scope};
pub use db::{Backend, Database};
pub use document::{FieldError, PolicyDocument};
pub use keys::AuthFailure;
pub use service::{ApplyReport, ControlPlane, Precondition, Snapshot, Written};

/// Everything that can go wrong in the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request is malformed; each error names its field.
    #[error("invalid request: {}", summary(.errors))]
    Invalid {
        /// What is wrong, field by field.
        errors: Vec<FieldError>,
    },
    /// The caller may not do this (its role or domain scope does not allow it).
    #[error("{0}")]
    Forbidden(String),
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the current state (exists already, owned by a file,
    /// collides with another policy).
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` named a revision that is no longer current.
    #[error("{what} changed: it is at revision {}, not the one given", current.map_or_else(|| "(deleted)".to_owned(), |c| c.to_string()))]
    PreconditionFailed {
        /// The resource.
        what: String,
        /// Its current revision (none if it no longer exists).
        current: Option<i64>,
    },
    /// Bad configuration (database URL).
    #[error("{0}")]
    Config(String),
    /// The database cannot be reached.
    #[error("cannot connect to the policy database at {url}: {source}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// Why.
        source: sqlx::Error,
    },
    /// The schema is not the one this release expects.
    #[error("{0}")]
    Schema(String),
    /// Stored data this release cannot read.
    #[error("policy store holds data this release cannot read: {0}")]
    Corrupt(String),
    /// A database call failed.
    #[error("policy database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

fn summary(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ControlError {
    /// This error as a GraphQL error: the message (internal details only in the logs), a
    /// stable `code` extension (`BAD_USER_INPUT`, `FORBIDDEN`, `NOT_FOUND`, `CONFLICT`,
    /// `STALE_REVISION`, `UNAVAILABLE`, `INTERNAL`) and, for invalid input, `errors` with
    /// each field, as REST's problem details list them.
    pub fn into_graphql(self) -> async_graphql::Error {
        use async_graphql::ErrorExtensions;
        let e = self;
        let code = match &e {
            ControlError::Invalid { .. } => "BAD_USER_INPUT",
            ControlError::NotFound(_) => "NOT_FOUND",
            ControlError::Forbidden(_) => "FORBIDDEN",
            ControlError::Conflict(_) => "CONFLICT",
            ControlError::PreconditionFailed { .. } => "STALE_REVISION",
            ControlError::Database(_) | ControlError::Connect { .. } => "UNAVAILABLE",
            _ => "INTERNAL",
        };
        let message = match &e {
            ControlError::Database(_) | ControlError::Connect { .. } => {
                tracing::error!(error = %e, "policy database call failed");
                "the policy database did not answer; retry later".to_owned()
            }
            ControlError::Corrupt(_)
            | ControlError::Migrate(_)
            | ControlError::Schema(_)
            | ControlError::Config(_) => {
                tracing::error!(error = %e, "admin request failed");
                "the server failed to handle this request; see its logs".to_owned()
            }
            _ => e.to_string(),
        };
        let errors = match &e {
            ControlError::Invalid { errors } => errors.clone(),
            _ => Vec::new(),
        };
        async_graphql::Error::new(message).extend_with(|_, ext| {
            ext.set("code", code);
            if !errors.is_empty() {
                let list: Vec<async_graphql::Value> = errors
                    .iter()
                    .map(|f| {
                        let mut m = async_graphql::indexmap::IndexMap::new();
                        m.insert(
                            async_graphql::Name::new("field"),
                            async_graphql::Value::from(f.field.clone()),
                        );
                        m.insert(
                            async_graphql::Name::new("message"),
                            async_graphql::Value::from(f.message.clone()),
                        );
                        async_graphql::Value::Object(m)
                    })
                    .collect();
                ext.set("errors", async_graphql::Value::List(list));
            }
        })
    }
}
