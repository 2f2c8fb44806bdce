//! `POST /v1/check`: the HTTP data plane.
//!
//! Request and response follow the JSON mapping of Envoy's RLS messages (see README).
//! The answer is 200 whatever the decision; the caller decides what a denial means.
//! Rate-limit headers follow the IETF draft (`RateLimit-Policy`, `RateLimit`) and a denial
//! carries `Retry-After`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::Response;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use tollgate_core::{CheckRequest, Entry, LimitOverride, Unit};

use super::AppState;
use super::problem::Problem;
use super::request_id::{REQUEST_ID, RequestId};
use crate::data_plane::{self, DescriptorParts};

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

/// Why a request body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Larger than [`super::MAX_BODY_BYTES`].
    TooLarge,
    /// The connection failed or the framing was invalid.
    Unreadable(String),
}

/// The axum handler; the listener's fast path calls [`answer`] directly.
pub async fn check(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => BodyError::TooLarge,
        _ => BodyError::Unreadable(rejection.body_text()),
    });
    answer(&state, &headers, body)
        .await
        .map(axum::body::Body::from)
}

/// Answers one check request: a decision (200) or a problem (4xx), with a request id.
pub async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BodyError>,
) -> http::Response<Bytes> {
    let started = Instant::now();
    let id = RequestId::of(headers);
    if let Some(token) = &state.data_token
        && !token.admits(headers)
    {
        state.metrics.rejected("unauthenticated");
        let mut response = Problem::new(
            StatusCode::UNAUTHORIZED,
            "urn:tollgate:problem:unauthenticated",
            "Unauthenticated",
            "this server requires Authorization: Bearer <data-plane token> on every check",
        )
        .to_response();
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(r#"Bearer realm="tollgate""#),
        );
        response.headers_mut().insert(REQUEST_ID.clone(), id.0);
        return response;
    }
    let mut response = decide(state, headers, &id, body).await;
    response.headers_mut().insert(REQUEST_ID.clone(), id.0);
    if response.status() == StatusCode::OK {
        // Decisions only: refused requests are counted by reason instead.
        state.metrics.observe_latency(started.elapsed());
    }
    response
}

async fn decide(
    state: &AppState,
    headers: &HeaderMap,
    id: &RequestId,
    body: Result<Bytes, BodyError>,
) -> http::Response<Bytes> {
    let body = match body {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            state.metrics.rejected("body");
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "urn:tollgate:problem:body-too-large",
                "Body too large",
                format!("the body must be at most {} bytes", super::MAX_BODY_BYTES),
            )
            .to_response();
        }
        Err(BodyError::Unreadable(detail)) => {
            state.metrics.rejected("body");
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "urn:tollgate:problem:unreadable-body",
                "Unreadable body",
                detail,
            )
            .to_response();
        }
    };
    if !is_json(headers) {
        state.metrics.rejected("content_type");
        return Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "urn:tollgate:problem:unsupported-media-type",
            "Unsupported media type",
            "send the request as application/json",
        )
        .to_response();
    }
    let parsed: CheckBody<'_> = match parse_body(&body) {
        Ok(parsed) => parsed,
        Err(detail) => {
            state.metrics.rejected("json");
            tracing::info!(request_id = id.as_str(), %detail, "malformed check request");
            return Problem::invalid_body(detail).to_response();
        }
    };

    let entries: Vec<Entry<'_>> = parsed
        .descriptors
        .iter()
        .flat_map(|d| {
            d.entries.iter().map(|e| Entry {
                key: &e.key,
                value: &e.value,
            })
        })
        .collect();
    let mut parts = Vec::with_capacity(parsed.descriptors.len());
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
                    .to_response();
                }
            },
        };
        parts.push(DescriptorParts {
            entries: d.entries.len(),
            hits: d.hits,
            limit_override,
        });
    }
    let descriptors = data_plane::descriptors(&entries, parts);
    let request = CheckRequest {
        domain: &parsed.domain,
        descriptors: &descriptors,
        hits: parsed.hits.unwrap_or(1),
    };
    let decision = match state.limiter.check(&request).await {
        Ok(decision) => decision,
        Err(e) => {
            state.metrics.rejected("invalid");
            tracing::info!(request_id = id.as_str(), detail = %e, "invalid check request");
            return Problem::invalid_request(e.to_string()).to_response();
        }
    };
    data_plane::record(state, id, &request, &decision);
    super::render::decision(&decision)
}

/// Decodes the body, naming the field at fault (`descriptors[0].entries[1].key: ...`).
fn parse_body(body: &[u8]) -> Result<CheckBody<'_>, String> {
    // Fast path without path tracking; on failure decode again to name the field.
    if let Ok(parsed) = serde_json::from_slice(body) {
        return Ok(parsed);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
