//! "Who is using what?": each policy's decisions over the latest complete interval on
//! this node, with its heavy hitters (the descriptor values with the most hits, and how far
//! each count may be over). REST's `GET /v1/admin/usage` and GraphQL's `usage` both answer
//! with this. Heavy hitters are shown here and in usage events, never as metric labels
//! (their values are unbounded).

use serde::{Deserialize, Serialize};
use tollgate_control::Actor;
use tollgate_control::service::rfc3339;
use tollgate_data::AppState;
use utoipa::{IntoParams, ToSchema};

/// The query of `GET /v1/admin/usage`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Only this domain.
    #[param(min_length = 1, max_length = 256)]
    pub domain: Option<String>,
}

/// One heavy hitter.
#[derive(Debug, Clone, Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct HeavyHitterView {
    /// The descriptor's entries, `key=value` joined by `,`.
    pub value: String,
    /// Its hits, possibly over-counted by up to `error`.
    pub count: u64,
    /// How much of `count` may belong to other values: the true count is at least
    /// `count - error`.
    pub error: u64,
}

/// One policy's usage.
#[derive(Debug, Clone, Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct PolicyUsageView {
    /// The domain.
    pub domain: String,
    /// The policy.
    pub policy: String,
    /// Decisions it admitted.
    pub allowed: u64,
    /// Decisions it denied.
    pub denied: u64,
    /// Decisions it would have denied in shadow mode.
    pub shadow_denied: u64,
    /// Hits it admitted.
    pub hits_allowed: u64,
    /// Hits it denied.
    pub hits_denied: u64,
    /// The most any heavy hitter's count is over its true count.
    pub error_bound: u64,
    /// The heaviest values, heaviest first.
    pub heavy_hitters: Vec<HeavyHitterView>,
}

/// Usage over the latest complete interval, on this node.
#[derive(Debug, Clone, Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct UsageView {
    /// Whether this node keeps usage (`--usage` or `--events`).
    pub enabled: bool,
    /// The interval's length in milliseconds.
    pub interval_ms: u64,
    /// When the interval started (RFC 3339); absent before the first one ends.
    pub start: Option<String>,
    /// When it ended.
    pub end: Option<String>,
    /// One per policy that decided something, by domain then policy.
    pub policies: Vec<PolicyUsageView>,
}

/// The usage `actor` may read (its domains only), of `domain` if given.
pub fn usage(
    app: &AppState,
    domain: Option<&str>,
    actor: &Actor,
) -> Result<UsageView, tollgate_control::ControlError> {
    if let Some(d) = domain {
        if d.is_empty() || d.chars().count() > 256 {
            return Err(tollgate_control::ControlError::Invalid {
                errors: vec![tollgate_control::FieldError {
                    field: "domain".into(),
                    message: "must be 1 to 256 characters".into(),
                }],
            });
        }
        actor.require_read(d)?;
    }
    let Some(recorder) = &app.usage else {
        return Ok(UsageView {
            enabled: false,
            interval_ms: 0,
            start: None,
            end: None,
            policies: Vec::new(),
        });
    };
    let last = recorder.last();
    let policies = last
        .policies
        .iter()
        .filter(|p| domain.is_none_or(|d| d == p.domain) && actor.require_read(&p.domain).is_ok())
        .map(|p| PolicyUsageView {
            domain: p.domain.clone(),
            policy: p.policy.clone(),
            allowed: p.allowed,
            denied: p.denied,
            shadow_denied: p.shadow_denied,
            hits_allowed: p.hits_allowed,
            hits_denied: p.hits_denied,
            error_bound: p.error_bound,
            heavy_hitters: p
                .heavy_hitters
                .iter()
                .map(|h| HeavyHitterView {
                    value: h.value.clone(),
                    count: h.count,
                    error: h.error,
                })
                .collect(),
        })
        .collect();
    let ended = last.end_ms > 0;
    Ok(UsageView {
        enabled: true,
        interval_ms: u64::try_from(recorder.config().interval.as_millis()).unwrap_or(u64::MAX),
        start: ended.then(|| rfc3339(last.start_ms)),
        end: ended.then(|| rfc3339(last.end_ms)),
        policies,
    })
}
