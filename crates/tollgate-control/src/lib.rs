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
//! - [`outbox`]: events written with the changes they describe, for a relay to publish.

pub mod audit;
pub mod auth;
pub mod db;
pub mod document;
pub mod follow;
pub mod jwt;
pub mod keys;
pub mod migrations;
pub mod model;
pub mod outbox;
pub mod service;

pub use auth::{Actor, Principal, Role, Scope};
pub use db::{Backend, Database};
pub use document::{FieldError, PolicyDocument};
pub use keys::AuthFailure;
pub use service::{ApplyReport, ControlPlane, Precondition, Snapshot, Written};
// ErrorClass is defined below, next to ControlError.

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

/// What kind of failure a [`ControlError`] is: the one classification every interface
/// renders (REST as problem types and statuses, GraphQL as `extensions.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request is invalid; `errors` may name each field.
    Invalid,
    /// The caller may not do this.
    Forbidden,
    /// The thing does not exist (or is outside the caller's scope).
    NotFound,
    /// The change conflicts with the current state.
    Conflict,
    /// A precondition (`If-Match`) named a revision that is no longer current.
    Stale,
    /// The policy database did not answer; retrying later may work.
    Unavailable,
    /// A failure of the server itself; the details are in its logs only.
    Internal,
}

impl ErrorClass {
    /// A stable name for clients to switch on (GraphQL's `extensions.code`).
    pub fn code(self) -> &'static str {
        match self {
            ErrorClass::Invalid => "BAD_USER_INPUT",
            ErrorClass::Forbidden => "FORBIDDEN",
            ErrorClass::NotFound => "NOT_FOUND",
            ErrorClass::Conflict => "CONFLICT",
            ErrorClass::Stale => "STALE_REVISION",
            ErrorClass::Unavailable => "UNAVAILABLE",
            ErrorClass::Internal => "INTERNAL",
        }
    }
}

impl ControlError {
    /// Its class.
    pub fn class(&self) -> ErrorClass {
        match self {
            ControlError::Invalid { .. } => ErrorClass::Invalid,
            ControlError::NotFound(_) => ErrorClass::NotFound,
            ControlError::Forbidden(_) => ErrorClass::Forbidden,
            ControlError::Conflict(_) => ErrorClass::Conflict,
            ControlError::PreconditionFailed { .. } => ErrorClass::Stale,
            ControlError::Database(_) | ControlError::Connect { .. } => ErrorClass::Unavailable,
            ControlError::Config(_)
            | ControlError::Schema(_)
            | ControlError::Corrupt(_)
            | ControlError::Migrate(_) => ErrorClass::Internal,
        }
    }

    /// What the caller is told. Failures of the server or its database are logged here,
    /// once, with their details, and the caller gets a generic message.
    pub fn public_message(&self) -> String {
        match self.class() {
            ErrorClass::Unavailable => {
                tracing::error!(error = %self, "policy database call failed");
                "the policy database did not answer; retry later".to_owned()
            }
            ErrorClass::Internal => {
                tracing::error!(error = %self, "admin request failed");
                "the server failed to handle this request; see its logs".to_owned()
            }
            _ => self.to_string(),
        }
    }

    /// The fields at fault, for invalid requests.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ControlError::Invalid { errors } => errors,
            _ => &[],
        }
    }
}
