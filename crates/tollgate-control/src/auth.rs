//! Who may do what: roles, domain scopes, and the [`Actor`] every service call carries.
//!
//! Authorization lives here and in [`crate::ControlPlane`], not in the HTTP layers, so REST,
//! GraphQL and the CLI cannot disagree. A caller is authenticated by an API key
//! ([`crate::keys`]) or a JWT ([`crate::jwt`]); both yield a [`Principal`].
//!
//! | role | may |
//! | --- | --- |
//! | `viewer` | read the domains in its scope |
//! | `editor` | also write policies of the domains in its scope (not create or delete domains) |
//! | `admin` | also create, change and delete the domains in its scope; with scope `*`, manage keys and read the audit log |
//!
//! A request about a domain outside the caller's scope is refused the same way whether the
//! domain exists or not, so scopes do not reveal other tenants' domains.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ControlError;

/// What a principal may do within its scope.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    async_graphql::Enum,
)]
#[serde(rename_all = "lowercase")]
#[graphql(rename_items = "lowercase")]
pub enum Role {
    /// Read-only.
    Viewer,
    /// Reads, and writes policies.
    Editor,
    /// Everything, including domains; with scope `*` also keys and the audit log.
    Admin,
}

impl Role {
    /// The role's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    /// Parses a stored or typed role name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The domains a principal may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every domain (written `*`).
    All,
    /// These domains only.
    Domains(BTreeSet<String>),
}

impl Scope {
    /// Most domains one key or token may name.
    pub const MAX_DOMAINS: usize = 100;

    /// A scope from a list of names, where `*` means every domain.
    pub fn from_names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: BTreeSet<String> = names.into_iter().map(Into::into).collect();
        if names.contains("*") {
            Scope::All
        } else {
            Scope::Domains(names)
        }
    }

    /// The scope as a list of names (`["*"]` for every domain).
    pub fn names(&self) -> Vec<String> {
        match self {
            Scope::All => vec!["*".to_owned()],
            Scope::Domains(d) => d.iter().cloned().collect(),
        }
    }

    /// Whether `domain` is in the scope.
    pub fn contains(&self, domain: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Domains(d) => d.contains(domain),
        }
    }
}

/// An authenticated identity: who, with which role, over which domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// For humans and the audit log: `key:<id>` or the token's subject.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Where it may do it.
    pub scope: Scope,
}

impl Principal {
    /// This principal making calls through `via` from `remote`.
    pub fn acting(self, via: &'static str, remote: impl Into<String>) -> Actor {
        Actor {
            name: self.name,
            via,
            role: self.role,
            scope: self.scope,
            remote: remote.into(),
        }
    }
}

/// Who makes a call, through which interface, from where: recorded in the history and the
/// audit log, and checked by every [`crate::ControlPlane`] method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The principal (an API key's `key:<id>`, a token's subject, or `anonymous`).
    pub name: String,
    /// The interface: `rest`, `graphql`, `apply`, `cli`.
    pub via: &'static str,
    /// Its role.
    pub role: Role,
    /// Its domains.
    pub scope: Scope,
    /// Where the call came from (the peer's address, or `local`).
    pub remote: String,
}

impl Actor {
    /// A caller trusted without authentication, with every right on every domain: the
    /// node itself (startup, policy sync), the CLI working on its own database, an admin
    /// listener explicitly configured without authentication (loopback only), tests.
    pub fn unauthenticated_admin(via: &'static str) -> Self {
        Self {
            name: "anonymous".into(),
            via,
            role: Role::Admin,
            scope: Scope::All,
            remote: "local".into(),
        }
    }

    /// Whether this actor may read `domain`.
    pub fn may_read(&self, domain: &str) -> bool {
        self.scope.contains(domain)
    }

    /// Refuses unless this actor may read `domain`.
    pub fn require_read(&self, domain: &str) -> Result<(), ControlError> {
        if self.may_read(domain) {
            Ok(())
        } else {
            Err(self.refused(&format!("read domain '{domain}'")))
        }
    }

    /// Refuses unless this actor may write policies of `domain`.
    pub fn require_edit(&self, domain: &str) -> Result<(), ControlError> {
        if self.role >= Role::Editor && self.scope.contains(domain) {
            Ok(())
        } else {
            Err(self.refused(&format!("change policies of domain '{domain}'")))
        }
    }

    /// Refuses unless this actor may create, change or delete `domain` itself.
    pub fn require_domain_admin(&self, domain: &str) -> Result<(), ControlError> {
        if self.role == Role::Admin && self.scope.contains(domain) {
            Ok(())
        } else {
            Err(self.refused(&format!("create, change or delete domain '{domain}'")))
        }
    }

    /// Refuses unless this actor is an admin of every domain (keys, audit log).
    pub fn require_admin(&self, what: &str) -> Result<(), ControlError> {
        if self.role == Role::Admin && self.scope == Scope::All {
            Ok(())
        } else {
            Err(self.refused(what))
        }
    }

    fn refused(&self, what: &str) -> ControlError {
        let scope = self.scope.names().join(", ");
        ControlError::Forbidden(format!(
            "{} (role {}, domains {scope}) may not {what}",
            self.name, self.role
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(role: Role, domains: &[&str]) -> Actor {
        Principal {
            name: "t".into(),
            role,
            scope: Scope::from_names(domains.iter().copied()),
        }
        .acting("test", "local")
    }

    #[test]
    fn roles_grow_by_level_and_scopes_bound_them() {
        let viewer = actor(Role::Viewer, &["a"]);
        assert!(viewer.require_read("a").is_ok());
        assert!(viewer.require_read("b").is_err());
        assert!(viewer.require_edit("a").is_err());

        let editor = actor(Role::Editor, &["a"]);
        assert!(editor.require_edit("a").is_ok());
        assert!(editor.require_edit("b").is_err());
        assert!(editor.require_domain_admin("a").is_err());

        let scoped_admin = actor(Role::Admin, &["a"]);
        assert!(scoped_admin.require_domain_admin("a").is_ok());
        assert!(scoped_admin.require_domain_admin("b").is_err());
        assert!(scoped_admin.require_admin("manage keys").is_err());

        let admin = actor(Role::Admin, &["*", "a"]);
        assert_eq!(admin.scope, Scope::All);
        assert!(admin.require_admin("manage keys").is_ok());
        assert!(admin.require_domain_admin("anything").is_ok());
    }

    #[test]
    fn a_refusal_names_the_caller_and_the_act_but_nothing_else() {
        let err = actor(Role::Viewer, &["a"]).require_edit("b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t (role viewer, domains a) may not change policies of domain 'b'"
        );
    }

    #[test]
    fn role_names_round_trip() {
        for role in [Role::Viewer, Role::Editor, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
