//! `POST /v1/check`: the HTTP data plane.
//!
//! Request and response follow the JSON mapping of Envoy's RLS messages (see README).
//! The answer is 200 whatever the decision; the caller decides what a denial means.
//! Rate-limit headers follow the IETF draft (`RateLimit-Policy`, `RateLimit`) and a denial
//! carries `Retry-After`.

use std::time::Instant;
use tollgate_api::problem::types as problem_types;

use axum::body::Bytes;
use http::{HeaderMap, StatusCode, header};
use tollgate_core::{CheckRequest, Decision, Entry, LimitOverride, Unit};

use super::problem::Problem;
use super::request_id::{REQUEST_ID, RequestId};
use crate::data_plane::{self, DescriptorParts};
use crate::state::AppState;
use crate::trace::{self, TraceHeaders};
use tracing::Instrument;

/// The body, decoded in place (the wire type of `tollgate-api`).
type CheckBody<'a> = tollgate_api::CheckRequest<'a>;

/// The request headers a check reads, wherever they were parsed (hyper's header map, or
/// the listener's own HTTP/1.1 loop). The first value counts when a header repeats.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckHeaders<'a> {
    /// `Content-Type`.
    pub content_type: Option<&'a [u8]>,
    /// `Authorization` (the data-plane token, when one is required).
    pub authorization: Option<&'a [u8]>,
    /// `X-Request-Id`.
    pub request_id: Option<&'a [u8]>,
    /// `traceparent` and `tracestate` (W3C trace context).
    pub trace: TraceHeaders<'a>,
}

impl<'a> CheckHeaders<'a> {
    /// The headers a check reads, from a header map.
    pub fn of(headers: &'a HeaderMap) -> Self {
        let get = |name| headers.get(name).map(http::HeaderValue::as_bytes);
        Self {
            content_type: get(&header::CONTENT_TYPE),
            authorization: get(&header::AUTHORIZATION),
            request_id: get(&REQUEST_ID),
            trace: TraceHeaders::of(headers),
        }
    }
}

pub(crate) fn is_json(content_type: Option<&[u8]>) -> bool {
    match content_type {
        None => true,
        Some(ct) => {
            let essence = ct.split(|&b| b == b';').next().unwrap_or(b"");
            essence
                .trim_ascii()
                .eq_ignore_ascii_case(b"application/json")
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

/// What a check comes to, before it is put on the wire.
#[derive(Debug)]
pub enum Outcome {
    /// A decision: the answer is 200, rendered by [`super::render`].
    Decided(Decision),
    /// A refusal (4xx), already a response.
    Refused(http::Response<Bytes>),
}

/// Answers one check request: a decision (200) or a problem (4xx), with a request id.
pub async fn answer(
    state: &AppState,
    headers: CheckHeaders<'_>,
    body: Result<&[u8], &BodyError>,
) -> http::Response<Bytes> {
    let (id, outcome) = evaluate(state, headers, body).await;
    let mut response = match outcome {
        Outcome::Decided(decision) => super::render::decision(&decision),
        Outcome::Refused(response) => response,
    };
    response
        .headers_mut()
        .insert(REQUEST_ID.clone(), id.header_value());
    response
}

/// Decides one check request, leaving the rendering to the caller: [`answer`] for hyper
/// and axum, the listener's own loop writes straight to the wire.
pub async fn evaluate(
    state: &AppState,
    headers: CheckHeaders<'_>,
    body: Result<&[u8], &BodyError>,
) -> (RequestId, Outcome) {
    let started = Instant::now();
    let id = RequestId::from_header(headers.request_id);
    if let Err(response) = authorize(state, headers.authorization) {
        return (id, Outcome::Refused(response));
    }
    let span = trace::decision("http", &id, headers.trace);
    let outcome = match decide(state, headers, &id, body, &span)
        .instrument(span.clone())
        .await
    {
        Ok(decision) => {
            // Decisions only: refused requests are counted by reason instead.
            state.metrics.observe_latency(started.elapsed());
            Outcome::Decided(decision)
        }
        Err(refused) => Outcome::Refused(refused),
    };
    (id, outcome)
}

/// Refuses a request without the data-plane token, when the server requires one.
#[allow(
    clippy::result_large_err,
    reason = "the refusal is the answer itself, built once on a rare path"
)]
pub(crate) fn authorize(
    state: &AppState,
    authorization: Option<&[u8]>,
) -> Result<(), http::Response<Bytes>> {
    if let Some(token) = &state.data_token
        && !token.admits(authorization)
    {
        state.metrics.rejected("unauthenticated");
        let mut response = Problem::new(
            StatusCode::UNAUTHORIZED,
            problem_types::UNAUTHENTICATED,
            "Unauthenticated",
            "this server requires Authorization: Bearer <data-plane token> on every check",
        )
        .to_response();
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(r#"Bearer realm="tollgate""#),
        );
        return Err(response);
    }
    Ok(())
}

async fn decide(
    state: &AppState,
    headers: CheckHeaders<'_>,
    id: &RequestId,
    body: Result<&[u8], &BodyError>,
    span: &tracing::Span,
) -> Result<Decision, http::Response<Bytes>> {
    let body = match body {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            state.metrics.rejected("body");
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                problem_types::BODY_TOO_LARGE,
                "Body too large",
                format!("the body must be at most {} bytes", super::MAX_BODY_BYTES),
            )
            .to_response());
        }
        Err(BodyError::Unreadable(detail)) => {
            state.metrics.rejected("body");
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                problem_types::UNREADABLE_BODY,
                "Unreadable body",
                detail.clone(),
            )
            .to_response());
        }
    };
    if !is_json(headers.content_type) {
        state.metrics.rejected("content_type");
        return Err(Problem::unsupported_media_type().to_response());
    }
    let parsed: CheckBody<'_> = match parse_json(body) {
        Ok(parsed) => parsed,
        Err(BodyFault { field, detail }) => {
            state.metrics.rejected("json");
            // The field's path only: serde's message may quote a descriptor value.
            tracing::info!(request_id = id.as_str(), field, "malformed check request");
            return Err(Problem::invalid_body(detail).to_response());
        }
    };

    let (entries, parts) = match descriptor_parts(&parsed.descriptors) {
        Ok(split) => split,
        Err(detail) => {
            state.metrics.rejected("invalid");
            return Err(Problem::invalid_request(detail).to_response());
        }
    };
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
            return Err(Problem::invalid_request(e.to_string()).to_response());
        }
    };
    data_plane::record(state, id, &request, &decision);
    trace::decided(span, request.domain, decision.allowed);
    Ok(decision)
}

/// Why a body did not decode: the path of the field at fault (`.` for the whole body),
/// and the message for the caller, which names that path.
pub(crate) struct BodyFault {
    pub(crate) field: String,
    pub(crate) detail: String,
}

/// Splits decoded descriptors into the core's entries and the rest of each descriptor;
/// an invalid override unit is named with its path.
pub(crate) fn descriptor_parts<'a>(
    descriptors: &'a [tollgate_api::DescriptorRequest<'_>],
) -> Result<(Vec<Entry<'a>>, Vec<DescriptorParts>), String> {
    let entries: Vec<Entry<'a>> = descriptors
        .iter()
        .flat_map(|d| {
            d.entries.iter().map(|e| Entry {
                key: &e.key,
                value: &e.value,
            })
        })
        .collect();
    let mut parts = Vec::with_capacity(descriptors.len());
    for (i, d) in descriptors.iter().enumerate() {
        let limit_override = match &d.limit {
            None => None,
            Some(l) => match Unit::parse(&l.unit) {
                Some(unit) => Some(LimitOverride {
                    requests_per_unit: l.requests_per_unit,
                    unit,
                }),
                None => {
                    return Err(format!(
                        "descriptors[{i}].limit.unit: invalid unit '{}' (expected second, minute, hour, day, week, month or year)",
                        l.unit
                    ));
                }
            },
        };
        parts.push(DescriptorParts {
            entries: d.entries.len(),
            hits: d.hits,
            limit_override,
        });
    }
    Ok((entries, parts))
}

/// Decodes a JSON body, naming the field at fault (`descriptors[0].entries[1].key: ...`).
pub(crate) fn parse_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, BodyFault> {
    // Fast path without path tracking; on failure decode again to name the field.
    if let Ok(parsed) = serde_json::from_slice(body) {
        return Ok(parsed);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let detail = if field == "." {
            e.inner().to_string()
        } else {
            format!("{field}: {}", e.inner())
        };
        BodyFault { field, detail }
    })?;
    de.end().map_err(|e| BodyFault {
        field: ".".to_owned(),
        detail: e.to_string(),
    })?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(is_json(CheckHeaders::of(&h).content_type));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(is_json(CheckHeaders::of(&h).content_type));
        assert!(is_json(Some(b" Application/JSON ;q=1")));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(CheckHeaders::of(&h).content_type));
        assert!(!is_json(Some(b"application/jsonx")));
    }
}
