//! `POST /v1/check`: the JSON mapping of Envoy's `RateLimitRequest`, and the answer.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// A check: may a request described by `descriptors` pass in `domain`?
///
/// Borrows from the text it is decoded from where it can (`CheckRequest<'static>` owns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest<'a> {
    /// The domain whose policies apply.
    #[serde(borrow)]
    pub domain: Cow<'a, str>,
    /// One or more descriptors; the answer has one status for each, in order.
    #[serde(borrow)]
    pub descriptors: Vec<DescriptorRequest<'a>>,
    /// The request's cost (default 1); Envoy's name `hits_addend` is accepted too.
    #[serde(
        default,
        alias = "hits_addend",
        skip_serializing_if = "Option::is_none"
    )]
    pub hits: Option<u64>,
}

/// One descriptor: ordered `key=value` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorRequest<'a> {
    /// The entries, in order.
    #[serde(borrow)]
    pub entries: Vec<EntryRequest<'a>>,
    /// This descriptor's own cost, over the request's.
    #[serde(
        default,
        alias = "hits_addend",
        skip_serializing_if = "Option::is_none"
    )]
    pub hits: Option<u64>,
    /// A limit the caller sets for this descriptor instead of the policy's.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitOverride<'a>>,
}

/// One `key=value` entry of a descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryRequest<'a> {
    /// The key.
    #[serde(borrow)]
    pub key: Cow<'a, str>,
    /// The value (may be empty).
    #[serde(borrow, default)]
    pub value: Cow<'a, str>,
}

/// A caller-supplied limit (Envoy's `RateLimitDescriptor.limit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverride<'a> {
    /// Requests per unit.
    pub requests_per_unit: u32,
    /// `second`, `minute`, `hour`, `day`, `week`, `month` or `year`.
    #[serde(borrow)]
    pub unit: Cow<'a, str>,
}

/// The answer to a check: 200 whatever the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckResponse {
    /// Whether every enforced limit admitted the request.
    pub allowed: bool,
    /// One status per descriptor of the request, in order.
    pub statuses: Vec<DescriptorStatus>,
}

/// What one descriptor met. Fields are always present (`null` when they do not apply),
/// in this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorStatus {
    /// Whether this descriptor's limit admitted the request.
    pub allowed: bool,
    /// The policy that decided; `null` when none matched.
    pub policy: Option<String>,
    /// The limit's quota (burst for GCRA, requests per window otherwise).
    pub limit: Option<u64>,
    /// The policy's rate.
    pub requests_per_unit: Option<u64>,
    /// The unit of that rate.
    pub unit: Option<String>,
    /// What is left after this request.
    pub remaining: Option<u64>,
    /// Milliseconds until the counter is full again (0 without a limit).
    pub reset_after_ms: u64,
    /// When denied: milliseconds until the same request would pass.
    pub retry_after_ms: Option<u64>,
    /// Whether the matched policy is `unlimited`.
    pub unlimited: bool,
    /// Whether a shadow-mode policy would have denied it.
    pub shadow_denied: bool,
    /// Whether the limit is in quota mode: over it, this status is not `allowed`, while
    /// the request is denied only if every quota-mode status of the request is over too.
    pub quota_mode: bool,
    /// Whether the store failed and the policy's `on_store_error` decided.
    pub store_failed: bool,
}

impl CheckResponse {
    /// The statuses that denied.
    pub fn denied(&self) -> impl Iterator<Item = &DescriptorStatus> {
        self.statuses.iter().filter(|s| !s.allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_borrow_and_accept_envoys_names() {
        let text = r#"{"domain":"api","descriptors":[{"entries":[{"key":"user","value":"42"},{"key":"k"}],"hits_addend":3}],"hits_addend":2}"#;
        let r: CheckRequest<'_> = serde_json::from_str(text).unwrap();
        assert!(matches!(r.domain, Cow::Borrowed("api")));
        assert_eq!(r.hits, Some(2));
        assert_eq!(r.descriptors[0].hits, Some(3));
        assert_eq!(r.descriptors[0].entries[1].value, "");
        let back = serde_json::to_string(&r).unwrap();
        let again: CheckRequest<'_> = serde_json::from_str(&back).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err =
            serde_json::from_str::<CheckRequest<'_>>(r#"{"domain":"a","descriptors":[],"hit":1}"#)
                .unwrap_err();
        assert!(err.to_string().contains("unknown field `hit`"), "{err}");
    }
}
