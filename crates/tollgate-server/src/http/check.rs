//! `POST /v1/check`: the HTTP data plane.
//!
//! Request and response follow the JSON mapping of Envoy's RLS messages (see README).
//! The answer is 200 whatever the decision; the caller decides what a denial means.
//! Rate-limit headers follow the IETF draft (`RateLimit-Policy`, `RateLimit`) and a denial
//! carries `Retry-After`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use tollgate_core::{
    CheckRequest, Decision, Descriptor, DescriptorStatus, Entry, LimitOverride, Nanos, Unit,
};

use super::AppState;
use super::problem::Problem;

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody<'a> {
    #[serde(borrow)]
    domain: Cow<'a, str>,
    #[serde(borrow)]
    descriptors: Vec<DescriptorBody<'a>>,
    #[serde(default, alias = "hits_addend")]
    hits: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DescriptorBody<'a> {
    #[serde(borrow)]
    entries: Vec<EntryBody<'a>>,
    #[serde(default, alias = "hits_addend")]
    hits: Option<u64>,
    #[serde(default)]
    limit: Option<LimitBody<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryBody<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow, default)]
    value: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitBody<'a> {
    requests_per_unit: u32,
    #[serde(borrow)]
    unit: Cow<'a, str>,
}

#[derive(Serialize)]
struct CheckResponse<'a> {
    allowed: bool,
    statuses: Vec<StatusBody<'a>>,
}

#[derive(Serialize)]
struct StatusBody<'a> {
    allowed: bool,
    policy: Option<&'a str>,
    limit: Option<u64>,
    requests_per_unit: Option<u64>,
    unit: Option<&'static str>,
    remaining: Option<u64>,
    reset_after_ms: u64,
    retry_after_ms: Option<u64>,
    unlimited: bool,
    shadow_denied: bool,
}

fn ceil_div(ns: Nanos, unit: Nanos) -> u64 {
    ns.div_ceil(unit)
}

fn is_json(headers: &HeaderMap) -> bool {
    match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        None => true,
        Some(ct) => {
            let essence = ct.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
        }
    }
}

/// The handler.
pub async fn check(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            state.metrics.rejected("body");
            let status = rejection.status();
            return Problem::new(
                status,
                "urn:tollgate:problem:unreadable-body",
                "Unreadable body",
                rejection.body_text(),
            )
            .into_response();
        }
    };
    if !is_json(&headers) {
        state.metrics.rejected("content_type");
        return Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "urn:tollgate:problem:unsupported-media-type",
            "Unsupported media type",
            "send the request as application/json",
        )
        .into_response();
    }
    let parsed: CheckBody<'_> = match parse_body(&body) {
        Ok(parsed) => parsed,
        Err(detail) => {
            state.metrics.rejected("json");
            tracing::info!(request_id = request_id(&headers), %detail, "malformed check request");
            return Problem::invalid_body(detail).into_response();
        }
    };

    let total: usize = parsed.descriptors.iter().map(|d| d.entries.len()).sum();
    let mut entries: Vec<Entry<'_>> = Vec::with_capacity(total);
    for d in &parsed.descriptors {
        entries.extend(d.entries.iter().map(|e| Entry {
            key: &e.key,
            value: &e.value,
        }));
    }
    let mut descriptors: Vec<Descriptor<'_>> = Vec::with_capacity(parsed.descriptors.len());
    let mut offset = 0;
    for (i, d) in parsed.descriptors.iter().enumerate() {
        let limit_override = match &d.limit {
            None => None,
            Some(l) => match Unit::parse(&l.unit) {
                Some(unit) => Some(LimitOverride {
                    requests_per_unit: l.requests_per_unit,
                    unit,
                }),
                None => {
                    state.metrics.rejected("invalid");
                    return Problem::invalid_request(format!(
                        "descriptors[{i}].limit.unit: invalid unit '{}' (expected second, minute, hour, day, week, month or year)",
                        l.unit
                    ))
                    .into_response();
                }
            },
        };
        let n = d.entries.len();
        descriptors.push(Descriptor {
            entries: &entries[offset..offset + n],
            hits: d.hits,
            limit_override,
        });
        offset += n;
    }
    let request = CheckRequest {
        domain: &parsed.domain,
        descriptors: &descriptors,
        hits: parsed.hits.unwrap_or(1),
    };

    let decision = match state.limiter.check(&request).await {
        Ok(decision) => decision,
        Err(e) => {
            state.metrics.rejected("invalid");
            tracing::info!(request_id = request_id(&headers), detail = %e, "invalid check request");
            return Problem::invalid_request(e.to_string()).into_response();
        }
    };
    if let Some(e) = &decision.store_error {
        tracing::warn!(request_id = request_id(&headers), error = %e, "store failed; policies' on_store_error decided");
    }
    let response = render(&decision);
    let shadow = decision.statuses.iter().filter(|s| s.shadow_denied).count() as u64;
    state.metrics.decision(
        decision.domain.as_deref(),
        decision.allowed,
        shadow,
        started.elapsed(),
    );
    response
}

/// Decodes the body, naming the field at fault (`descriptors[0].entries[1].key: ...`).
fn parse_body(body: &[u8]) -> Result<CheckBody<'_>, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: CheckBody<'_> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })?;
    de.end().map_err(|e| e.to_string())?;
    Ok(parsed)
}

fn request_id(headers: &HeaderMap) -> &str {
    headers
        .get(&super::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

fn status_body(s: &DescriptorStatus) -> StatusBody<'_> {
    let rate = s.rule.as_ref().and_then(|r| r.rate());
    let limited = rate.is_some();
    StatusBody {
        allowed: s.allowed,
        policy: s.rule.as_ref().map(|r| r.name()),
        limit: s.rule.as_ref().and_then(|r| r.quota()),
        requests_per_unit: rate.map(|(n, _)| n),
        unit: rate.map(|(_, u)| u.as_str()),
        remaining: limited.then_some(s.remaining),
        reset_after_ms: if limited {
            ceil_div(s.reset_after, 1_000_000)
        } else {
            0
        },
        retry_after_ms: s.retry_after.map(|r| ceil_div(r, 1_000_000)),
        unlimited: s.rule.is_some() && !limited,
        shadow_denied: s.shadow_denied,
    }
}

fn render(decision: &Decision) -> Response {
    let body = CheckResponse {
        allowed: decision.allowed,
        statuses: decision.statuses.iter().map(status_body).collect(),
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = (StatusCode::OK, json).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let (policy, current) = ratelimit_headers(decision);
    if let Ok(v) = HeaderValue::try_from(policy)
        && !v.is_empty()
    {
        headers.insert(RATELIMIT_POLICY.clone(), v);
    }
    if let Ok(v) = HeaderValue::try_from(current)
        && !v.is_empty()
    {
        headers.insert(RATELIMIT.clone(), v);
    }
    if let Some(seconds) = retry_after_seconds(decision) {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// Appends `name` as a structured-field string: printable ASCII, `"` and `\` escaped, any
/// other byte replaced by `?` (policy names come from configuration, not from callers).
fn sf_string(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}

/// `RateLimit-Policy` and `RateLimit` values: one list member per limited descriptor.
fn ratelimit_headers(decision: &Decision) -> (String, String) {
    let (mut policy, mut current) = (String::new(), String::new());
    for s in &decision.statuses {
        let Some(rule) = &s.rule else { continue };
        let (Some((_, unit)), Some(quota)) = (rule.rate(), rule.quota()) else {
            continue;
        };
        if !policy.is_empty() {
            policy.push_str(", ");
            current.push_str(", ");
        }
        sf_string(&mut policy, rule.name());
        let _ = write!(policy, ";q={quota};w={}", unit.seconds());
        sf_string(&mut current, rule.name());
        let _ = write!(
            current,
            ";r={};t={}",
            s.remaining,
            ceil_div(s.reset_after, 1_000_000_000)
        );
    }
    (policy, current)
}

/// Seconds until a denied request may pass: the longest wait among the descriptors that
/// denied it; `None` when allowed or when it can never pass.
fn retry_after_seconds(decision: &Decision) -> Option<u64> {
    if decision.allowed {
        return None;
    }
    let mut longest: Nanos = 0;
    for s in decision.statuses.iter().filter(|s| !s.allowed) {
        longest = longest.max(s.retry_after?);
    }
    Some(ceil_div(longest, 1_000_000_000).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sf_strings_are_escaped_and_ascii() {
        let mut s = String::new();
        sf_string(&mut s, "a\"b\\c é");
        assert_eq!(s, "\"a\\\"b\\\\c ?\"");
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(is_json(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(&h));
    }
}
