//! "What would this request get?": the policies a request matches and what is left of
//! each counter, read without consuming anything (`Limiter::peek`). REST's
//! `POST /v1/admin/explain` and GraphQL's `counters` both answer with this.

use serde::{Deserialize, Serialize};
use tollgate_core::{CheckRequest, Descriptor, Entry, Limiter, PolicyLimit, Rule};
use utoipa::ToSchema;

/// One descriptor entry.
#[derive(Debug, Clone, Deserialize, ToSchema, async_graphql::InputObject)]
#[graphql(name = "EntryInput")]
#[serde(deny_unknown_fields)]
pub struct EntryInput {
    /// Key.
    #[schema(min_length = 1, max_length = 256)]
    pub key: String,
    /// Value.
    #[schema(max_length = 256)]
    pub value: String,
}

/// One descriptor.
#[derive(Debug, Clone, Deserialize, ToSchema, async_graphql::InputObject)]
#[graphql(name = "DescriptorInput")]
#[serde(deny_unknown_fields)]
pub struct DescriptorInput {
    /// Its entries, in order.
    #[schema(min_items = 1, max_items = 16)]
    pub entries: Vec<EntryInput>,
}

/// The question: the body of `POST /v1/check`, asked without consuming.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// The domain.
    #[schema(min_length = 1, max_length = 256)]
    pub domain: String,
    /// The descriptors.
    #[schema(min_items = 1, max_items = 16)]
    pub descriptors: Vec<DescriptorInput>,
    /// The cost to test against what is left (default 1).
    #[serde(default, deserialize_with = "integral")]
    #[schema(maximum = 2147483647)]
    pub hits: Option<u32>,
}

/// A JSON number with no fractional part (`3` or `3.0`, as JSON Schema's `integer` allows),
/// at most 2^31 - 1.
fn integral<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let Some(n) = Option::<f64>::deserialize(d)? else {
        return Ok(None);
    };
    if n.fract() != 0.0 || !(0.0..=f64::from(i32::MAX)).contains(&n) {
        return Err(serde::de::Error::custom(format!(
            "hits must be a whole number from 0 to {}, not {n}",
            i32::MAX
        )));
    }
    Ok(Some(n as u32))
}

/// What one descriptor would meet.
#[derive(Debug, Clone, Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct DescriptorExplanation {
    /// Whether a policy matched.
    pub matched: bool,
    /// The policy's name.
    pub policy: Option<String>,
    /// Requests per unit (absent when unlimited or unmatched).
    pub requests_per_unit: Option<u64>,
    /// The unit.
    pub unit: Option<String>,
    /// The algorithm.
    pub algorithm: Option<String>,
    /// Where the counter lives.
    pub consistency: Option<String>,
    /// Evaluated but never denies.
    pub shadow_mode: bool,
    /// What is left of the counter now.
    pub remaining: u64,
    /// When the counter is full again, in milliseconds.
    pub reset_after_ms: u64,
    /// Whether a request of `hits` would pass this limit now.
    pub would_allow: bool,
}

/// The answer.
#[derive(Debug, Clone, Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct Explanation {
    /// The domain, if Tollgate knows it.
    pub known_domain: bool,
    /// Whether the whole request would pass now.
    pub would_allow: bool,
    /// One per descriptor, in order.
    pub descriptors: Vec<DescriptorExplanation>,
}

/// Why a question cannot be answered.
pub type ExplainError = String;

/// The bounds the schema states, checked: longest domain, key or value (characters), most
/// descriptors, most entries per descriptor.
const MAX_TEXT: usize = 256;
const MAX_ITEMS: usize = 16;

fn check(request: &ExplainRequest) -> Result<(), ExplainError> {
    let len = |s: &str| s.chars().count();
    if request.domain.is_empty() || len(&request.domain) > MAX_TEXT {
        return Err(format!("domain: must be 1 to {MAX_TEXT} characters"));
    }
    if request.descriptors.is_empty() || request.descriptors.len() > MAX_ITEMS {
        return Err(format!("descriptors: must have 1 to {MAX_ITEMS} items"));
    }
    for (i, d) in request.descriptors.iter().enumerate() {
        if d.entries.is_empty() || d.entries.len() > MAX_ITEMS {
            return Err(format!(
                "descriptors[{i}].entries: must have 1 to {MAX_ITEMS} items"
            ));
        }
        for (j, e) in d.entries.iter().enumerate() {
            if e.key.is_empty() || len(&e.key) > MAX_TEXT {
                return Err(format!(
                    "descriptors[{i}].entries[{j}].key: must be 1 to {MAX_TEXT} characters"
                ));
            }
            if len(&e.value) > MAX_TEXT {
                return Err(format!(
                    "descriptors[{i}].entries[{j}].value: must be at most {MAX_TEXT} characters"
                ));
            }
        }
    }
    Ok(())
}

/// Answers `request` from `limiter` without consuming anything.
pub async fn explain(
    limiter: &Limiter,
    request: &ExplainRequest,
) -> Result<Explanation, ExplainError> {
    check(request)?;
    let entries: Vec<Vec<Entry<'_>>> = request
        .descriptors
        .iter()
        .map(|d| {
            d.entries
                .iter()
                .map(|e| Entry {
                    key: &e.key,
                    value: &e.value,
                })
                .collect()
        })
        .collect();
    let descriptors: Vec<Descriptor<'_>> = entries
        .iter()
        .map(|e| Descriptor {
            entries: e,
            hits: None,
            limit_override: None,
        })
        .collect();
    let hits = u64::from(request.hits.unwrap_or(1).max(1));
    let check = CheckRequest {
        domain: &request.domain,
        descriptors: &descriptors,
        hits,
    };
    let decision = limiter.peek(&check).await.map_err(|e| e.to_string())?;
    let known_domain = limiter.policies().domain(&request.domain).is_some();
    let mut out = Vec::with_capacity(decision.statuses.len());
    for status in &decision.statuses {
        let policy = match &status.rule {
            Some(Rule::Policy(p)) => Some(p),
            _ => None,
        };
        let limited = policy.and_then(|p| match &p.limit {
            PolicyLimit::Limited {
                limit,
                unit,
                requests_per_unit,
                ..
            } => Some((limit, unit, requests_per_unit)),
            PolicyLimit::Unlimited => None,
        });
        let shadow_mode = policy.is_some_and(|p| p.shadow_mode);
        let would_allow = limited.is_none() || shadow_mode || status.remaining >= hits;
        out.push(DescriptorExplanation {
            matched: status.rule.is_some(),
            policy: status.rule.as_ref().map(|r| r.name().to_owned()),
            requests_per_unit: limited.map(|(_, _, r)| *r),
            unit: limited.map(|(_, u, _)| u.as_str().to_owned()),
            algorithm: limited.map(|(l, _, _)| l.algorithm().as_str().to_owned()),
            consistency: policy.map(|p| format!("{:?}", p.consistency).to_lowercase()),
            shadow_mode,
            remaining: if limited.is_some() {
                status.remaining
            } else {
                0
            },
            reset_after_ms: u64::try_from(status.reset_after / 1_000_000).unwrap_or(u64::MAX),
            would_allow,
        });
    }
    Ok(Explanation {
        known_domain,
        would_allow: out.iter().all(|d| d.would_allow),
        descriptors: out,
    })
}
