//! `POST /v1/checks`: many independent checks in one request ([`tollgate_api::BatchRequest`]),
//! decided together by [`tollgate_core::Limiter::check_many`] (one store round trip per
//! hash-tag group) and answered in order. A malformed check gets its own problem in its
//! place; the others are still decided. The answer is 200 unless the batch itself is
//! refused (token, media type, body, number of checks), and carries no rate-limit headers:
//! those belong to each check's own status.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tollgate_api::problem::types as problem_types;
use tollgate_api::{BatchRequest, MAX_BATCH_CHECKS};
use tollgate_core::{CheckRequest, Descriptor};

use super::check::{self, BodyFault, CheckHeaders};
use super::problem::Problem;
use super::request_id::{REQUEST_ID, RequestId};
use crate::data_plane;
use crate::state::AppState;

/// Largest batch body: room for [`MAX_BATCH_CHECKS`] small checks.
pub const MAX_BATCH_BODY_BYTES: usize = 1024 * 1024;

/// Answers `POST /v1/checks`.
pub async fn checks(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> axum::response::Response {
    let id = RequestId::of(&headers);
    let mut answer = match answer(&state, &headers, &id, body).await {
        Ok(answer) | Err(answer) => answer,
    };
    answer
        .headers_mut()
        .insert(REQUEST_ID.clone(), id.header_value());
    answer.map(Body::from)
}

type Answer = http::Response<Bytes>;

async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    id: &RequestId,
    body: Body,
) -> Result<Answer, Answer> {
    let h = CheckHeaders::of(headers);
    check::authorize(state, h.authorization)?;
    if !check::is_json(h.content_type) {
        state.metrics.rejected("content_type");
        return Err(Problem::unsupported_media_type().to_response());
    }
    let bytes = axum::body::to_bytes(body, MAX_BATCH_BODY_BYTES)
        .await
        .map_err(|_| {
            state.metrics.rejected("body");
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                problem_types::BODY_TOO_LARGE,
                "Body too large",
                format!("a batch body must be at most {MAX_BATCH_BODY_BYTES} bytes"),
            )
            .to_response()
        })?;
    let parsed: BatchRequest<'_> =
        check::parse_json(&bytes).map_err(|BodyFault { field, detail }| {
            state.metrics.rejected("json");
            tracing::info!(request_id = id.as_str(), field, "malformed batch of checks");
            Problem::invalid_body(detail).to_response()
        })?;
    let n = parsed.checks.len();
    if n == 0 || n > MAX_BATCH_CHECKS {
        state.metrics.rejected("invalid");
        return Err(Problem::invalid_request(format!(
            "checks: a batch holds 1 to {MAX_BATCH_CHECKS} checks, not {n}"
        ))
        .to_response());
    }

    // Each check laid out for the core; a check whose descriptors do not decode keeps its
    // problem in its place.
    let split: Vec<_> = (parsed.checks.iter())
        .map(|c| check::descriptor_parts(&c.descriptors))
        .collect();
    let descriptors: Vec<Option<Vec<Descriptor<'_>>>> = split
        .iter()
        .map(|s| {
            s.as_ref()
                .ok()
                .map(|(entries, parts)| data_plane::descriptors(entries, parts.iter().copied()))
        })
        .collect();
    let requests: Vec<Option<CheckRequest<'_>>> = (parsed.checks.iter().zip(&descriptors))
        .map(|(c, d)| {
            d.as_deref().map(|descriptors| CheckRequest {
                domain: &c.domain,
                descriptors,
                hits: c.hits.unwrap_or(1),
            })
        })
        .collect();
    let answers = data_plane::decide_many(state, Some(id), &requests).await;

    let mut out = Vec::with_capacity(16 + 300 * n);
    out.extend_from_slice(b"{\"results\":[");
    for (i, (s, answer)) in split.iter().zip(answers).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let problem = match (s, answer) {
            (Err(detail), _) => Some(format!("checks[{i}].{detail}")),
            (Ok(_), Some(Ok(decision))) => {
                super::render::decision_body(&mut out, &decision);
                None
            }
            (Ok(_), Some(Err(e))) => Some(format!("checks[{i}]: {e}")),
            (Ok(_), None) => Some(format!("checks[{i}]: not decided")),
        };
        if let Some(detail) = problem {
            state.metrics.rejected("invalid");
            out.extend_from_slice(b"{\"error\":");
            let problem = Problem::invalid_request(detail);
            out.extend_from_slice(&serde_json::to_vec(&problem).unwrap_or_default());
            out.push(b'}');
        }
    }
    out.extend_from_slice(b"]}");
    let mut response = http::Response::new(Bytes::from(out));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
