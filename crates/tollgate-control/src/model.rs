//! The resources of the admin APIs, as clients read and write them. REST (JSON, OpenAPI
//! schemas from `utoipa`) and GraphQL (`async-graphql`) share these types, so the two APIs
//! cannot drift apart.
//!
//! A **policy** is one rule of a domain: the descriptor it matches (a path of `key[=value]`
//! entries, one per level of envoyproxy/ratelimit's descriptor tree) and its `rate_limit`.
//! A domain's policies together form the descriptor tree of a policy file; see
//! [`crate::document`] for the translation both ways.

use async_graphql::{Enum, InputObject, SimpleObject};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest domain or policy name accepted by the admin API.
pub const MAX_NAME_LEN: usize = 128;
/// Longest free-text description.
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// Most entries in one policy's descriptor (envoy trees are a handful of levels deep).
pub const MAX_DESCRIPTOR_ENTRIES: usize = 16;
/// Longest descriptor key or value.
pub const MAX_ENTRY_LEN: usize = 256;
/// Most policies `replaces` may name.
pub const MAX_REPLACES: usize = 16;

/// One level of the descriptor a policy matches.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, SimpleObject, InputObject,
)]
#[graphql(input_name = "MatchEntryInput")]
#[serde(deny_unknown_fields)]
pub struct MatchEntry {
    /// The descriptor entry's key.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"
    )]
    pub key: String,
    /// The value to match; `*` is a wildcard. Absent: any value, each value counted apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"
    )]
    pub value: Option<String>,
}

/// Time unit of `requests_per_unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Enum)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum UnitName {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

/// Decision algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Enum)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum AlgorithmName {
    FixedWindow,
    SlidingWindow,
    Gcra,
    Quota,
    Concurrency,
}

/// The calendar window of `algorithm: quota`, in its `time_zone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Enum)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum PeriodName {
    Day,
    Week,
    Month,
    Year,
}

/// Where counters live (the CAP choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Enum)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ConsistencyName {
    Local,
    Global,
    Leased,
}

/// What a policy does when its store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Enum)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum OnStoreErrorName {
    Allow,
    Deny,
    Local,
}

/// A `rate_limit` block: envoyproxy/ratelimit's fields plus Tollgate's extensions.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    ToSchema,
    SimpleObject,
    InputObject,
)]
#[graphql(input_name = "RateLimitInput")]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Required unless `unlimited`, `algorithm: quota` (which takes `period`) or
    /// `algorithm: concurrency` (which takes `max_in_flight`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitName>,
    /// Requests per unit; 0 always denies (as in envoyproxy/ratelimit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 4294967295_u64)]
    pub requests_per_unit: Option<u32>,
    /// Matched and counted, never limited.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[graphql(default)]
    pub unlimited: bool,
    /// Default `fixed_window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<AlgorithmName>,
    /// With `gcra`: requests admitted at once (default: `requests_per_unit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 4294967295_u64)]
    pub burst: Option<u64>,
    /// Default `global`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<ConsistencyName>,
    /// Default `allow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_store_error: Option<OnStoreErrorName>,
    /// With `consistency: leased`: tokens per lease, between 1 and the burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub lease: Option<u64>,
    /// With `algorithm: quota` (required there): the calendar window counted in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<PeriodName>,
    /// With `algorithm: quota`: the IANA time zone whose calendar draws the windows
    /// (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 64)]
    pub time_zone: Option<String>,
    /// With `algorithm: quota` and `period: month`: the billing day each window starts on
    /// (default the 1st; in a shorter month, its last day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 31)]
    pub anchor_day: Option<u8>,
    /// With `algorithm: concurrency` (required there): the most slots held at once by
    /// leases (`POST /v1/leases`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub max_in_flight: Option<u32>,
    /// Names of policies of the same domain this one replaces when both match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 16)]
    #[graphql(default)]
    pub replaces: Vec<String>,
}

/// What a client writes to create or replace a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, InputObject)]
#[graphql(name = "PolicyInput")]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// The descriptor matched, one entry per tree level (1 to 16 entries).
    #[schema(min_items = 1, max_items = 16)]
    pub descriptor: Vec<MatchEntry>,
    /// The limit.
    pub rate_limit: RateLimitSpec,
    /// Evaluate and count, never deny.
    #[serde(default)]
    #[graphql(default)]
    pub shadow_mode: bool,
    /// envoyproxy/ratelimit's `quota_mode`: over its limit, this policy reports it but
    /// denies a request only when every quota-mode policy the request meets is over too.
    #[serde(default)]
    #[graphql(default)]
    pub quota_mode: bool,
    /// Values matching the last entry's `*` pattern share one counter.
    #[serde(default)]
    #[graphql(default)]
    pub share_threshold: bool,
    /// Free text for operators.
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\u0000]*$")]
    #[graphql(default)]
    pub description: String,
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, SimpleObject)]
#[graphql(complex)]
pub struct Policy {
    /// The domain it belongs to.
    pub domain: String,
    /// Unique within the domain; also the name decisions report and `replaces` refers to.
    pub name: String,
    /// The descriptor matched.
    pub descriptor: Vec<MatchEntry>,
    /// The limit.
    pub rate_limit: RateLimitSpec,
    /// Evaluate and count, never deny.
    pub shadow_mode: bool,
    /// In quota mode (see [`PolicySpec::quota_mode`]).
    pub quota_mode: bool,
    /// Values matching the last entry's `*` pattern share one counter.
    pub share_threshold: bool,
    /// Free text for operators.
    pub description: String,
    /// The policy store's revision at this policy's last change; its `ETag`.
    pub revision: i64,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
    /// Who last changed it.
    pub updated_by: String,
}

impl Policy {
    /// The writable part.
    pub fn spec(&self) -> PolicySpec {
        PolicySpec {
            descriptor: self.descriptor.clone(),
            rate_limit: self.rate_limit.clone(),
            shadow_mode: self.shadow_mode,
            quota_mode: self.quota_mode,
            share_threshold: self.share_threshold,
            description: self.description.clone(),
        }
    }
}

/// Where a domain's policies come from. A domain has exactly one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Enum)]
#[serde(rename_all = "snake_case")]
pub enum DomainSource {
    /// The policy store; managed through the admin API.
    Database,
    /// A policy file; read-only through the admin API (edit the file).
    File,
}

/// A domain: a namespace of policies (envoyproxy/ratelimit's `domain`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, SimpleObject)]
#[graphql(complex)]
pub struct Domain {
    /// The name callers send in `domain`.
    pub name: String,
    /// Free text for operators.
    pub description: String,
    /// Where its policies come from.
    pub source: DomainSource,
    /// For file domains, the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// How many policies it has.
    pub policy_count: i64,
    /// The policy store's revision at the domain's last change (its `ETag`); 0 for files.
    pub revision: i64,
    /// When it was created (RFC 3339); empty for files.
    pub created_at: String,
    /// When it last changed (RFC 3339); empty for files.
    pub updated_at: String,
}

/// What a client writes to create a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, InputObject)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    /// The name callers will send in `domain`.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
    )]
    pub name: String,
    /// Free text for operators.
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\u0000]*$")]
    #[graphql(default)]
    pub description: String,
}

/// What a client writes to change a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, InputObject)]
#[serde(deny_unknown_fields)]
pub struct DomainUpdate {
    /// Free text for operators.
    #[schema(max_length = 1024, pattern = "^[^\\u0000]*$")]
    pub description: String,
}

/// What happened to a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Enum)]
#[serde(rename_all = "snake_case")]
pub enum ChangeAction {
    /// It was created.
    Created,
    /// It was replaced.
    Updated,
    /// It was deleted.
    Deleted,
}

impl ChangeAction {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeAction::Created => "created",
            ChangeAction::Updated => "updated",
            ChangeAction::Deleted => "deleted",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "created" => Some(ChangeAction::Created),
            "updated" => Some(ChangeAction::Updated),
            "deleted" => Some(ChangeAction::Deleted),
            _ => None,
        }
    }
}

/// One entry of a policy's change history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, SimpleObject)]
pub struct PolicyChange {
    /// The policy store's revision of this change.
    pub revision: i64,
    /// The domain.
    pub domain: String,
    /// The policy.
    pub policy: String,
    /// What happened.
    pub action: ChangeAction,
    /// Who did it.
    pub actor: String,
    /// When (RFC 3339).
    pub at: String,
    /// The policy after the change (absent for a deletion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[graphql(skip)]
    pub after: Option<PolicySpec>,
    /// The policy before the change (absent for a creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[graphql(skip)]
    pub before: Option<PolicySpec>,
}

/// An API key as listings show it: never the key itself, which only its creator saw once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, SimpleObject)]
pub struct ApiKey {
    /// The key's public identifier (the part after `tg_`).
    pub id: String,
    /// What the key is for.
    pub name: String,
    /// What the key may do.
    pub role: crate::auth::Role,
    /// The domains it may act on (`*` for every domain).
    pub domains: Vec<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
    /// When it stops working (RFC 3339), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When it was revoked (RFC 3339), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// When it last authenticated a request (RFC 3339; updated at most once a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
}

/// A key to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, InputObject)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// What the key is for (1 to 128 characters).
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\u0000]+$")]
    pub name: String,
    /// What the key may do.
    pub role: crate::auth::Role,
    /// The domains it may act on; `["*"]` for every domain.
    #[schema(value_type = Vec<KeyDomain>, min_items = 1, max_items = 100)]
    pub domains: Vec<String>,
    /// When it stops working (RFC 3339, in the future); never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[graphql(default)]
    pub expires_at: Option<String>,
}

/// One domain a key may act on: a domain name as the admin API creates them, or `*`.
#[derive(ToSchema)]
#[schema(pattern = r"^(\*|[A-Za-z0-9][A-Za-z0-9_.:-]{0,127})$")]
#[allow(dead_code)]
pub struct KeyDomain(String);

/// A key just created: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, SimpleObject)]
pub struct CreatedApiKey {
    /// The key, `tg_<id>_<secret>`: store it now, it cannot be shown again.
    pub key: String,
    /// The key as listings show it.
    pub info: ApiKey,
}

/// One entry of the audit log: an admin mutation, or a failed authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, SimpleObject)]
pub struct AuditEvent {
    /// Position in the log (increasing).
    pub id: i64,
    /// When (RFC 3339).
    pub at: String,
    /// Who (`key:<id>`, a token's subject, `anonymous`, or `unauthenticated`).
    pub actor: String,
    /// Through which interface (`rest`, `graphql`, `cli`, ...).
    pub via: String,
    /// What was attempted (`policy.put`, `domain.delete`, `key.create`, `authenticate`, ...).
    pub action: String,
    /// On what (`domain/policy`, a key id, a request path).
    pub target: String,
    /// From where (the peer address, or `local`).
    pub remote: String,
    /// `ok`, `denied`, `unauthenticated`, `invalid`, `conflict`, `not_found`, `failed`.
    pub outcome: String,
    /// More about the outcome (never a secret).
    pub detail: String,
}

/// One page of a listing, and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// The items, in a stable order.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A [`Page`] as GraphQL shows it (`DomainPage`, `PolicyPage`, ...): the service's pages
/// carry no GraphQL bound, so the schema's resolvers convert at the edge.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(concrete(name = "DomainPage", params(Domain)))]
#[graphql(concrete(name = "PolicyPage", params(Policy)))]
#[graphql(concrete(name = "PolicyChangePage", params(PolicyChange)))]
#[graphql(concrete(name = "ApiKeyPage", params(ApiKey)))]
#[graphql(concrete(name = "AuditEventPage", params(AuditEvent)))]
pub struct PageObject<T: async_graphql::OutputType> {
    /// The items, in a stable order.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T: async_graphql::OutputType> From<Page<T>> for PageObject<T> {
    fn from(page: Page<T>) -> Self {
        Self {
            items: page.items,
            next_cursor: page.next_cursor,
        }
    }
}

/// A service error as a GraphQL error: its public message, its class's `code` extension
/// and, for invalid input, `errors` with each field, as REST's problem details list them.
pub fn graphql_error(e: crate::ControlError) -> async_graphql::Error {
    use async_graphql::ErrorExtensions;
    let code = e.class().code();
    let errors = e.field_errors().to_vec();
    async_graphql::Error::new(e.public_message()).extend_with(|_, ext| {
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

/// GraphQL's nested fields: a domain's policies and a policy's history, resolved through
/// the same [`crate::ControlPlane`] calls REST makes (the schema's data holds an
/// `Arc<ControlPlane>`, each request's data its [`crate::Actor`]).
mod nested {
    use std::sync::Arc;

    use async_graphql::{ComplexObject, Context, Result};

    use super::{Domain, DomainSource, PageObject, Policy, PolicyChange, graphql_error};
    use crate::{Actor, ControlPlane};

    fn service<'a>(ctx: &Context<'a>) -> Result<&'a Arc<ControlPlane>> {
        ctx.data::<Arc<ControlPlane>>()
    }

    /// The request's caller (the admin server puts it in each request's data).
    fn actor<'a>(ctx: &Context<'a>) -> Result<&'a Actor> {
        ctx.data::<Actor>()
    }

    #[ComplexObject]
    impl Domain {
        /// The domain's policies (database domains; empty for file domains).
        async fn policies(
            &self,
            ctx: &Context<'_>,
            cursor: Option<String>,
            #[graphql(validator(minimum = 1, maximum = 500))] limit: Option<u32>,
        ) -> Result<PageObject<Policy>> {
            if self.source == DomainSource::File {
                return Ok(PageObject {
                    items: Vec::new(),
                    next_cursor: None,
                });
            }
            service(ctx)?
                .list_policies(&self.name, cursor.as_deref(), limit, actor(ctx)?)
                .await
                .map(Into::into)
                .map_err(graphql_error)
        }
    }

    #[ComplexObject]
    impl Policy {
        /// The policy's changes, newest first.
        async fn history(
            &self,
            ctx: &Context<'_>,
            cursor: Option<String>,
            #[graphql(validator(minimum = 1, maximum = 500))] limit: Option<u32>,
        ) -> Result<PageObject<PolicyChange>> {
            service(ctx)?
                .history(
                    &self.domain,
                    &self.name,
                    cursor.as_deref(),
                    limit,
                    actor(ctx)?,
                )
                .await
                .map(Into::into)
                .map_err(graphql_error)
        }
    }
}
