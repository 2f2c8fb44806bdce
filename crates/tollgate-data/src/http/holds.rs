//! `/v1/reservations` and `/v1/leases`: reserve, commit, release, heartbeat
//! ([`tollgate_core::hold`]). Answered through axum (the listener's own loop answers only
//! checks): they are a handful per request that costs seconds, not the hot path.

#![allow(
    clippy::result_large_err,
    reason = "a refusal is the answer itself, built once on a rare path"
)]

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use http::{HeaderMap, StatusCode};
use tollgate_api::problem::types as problem_types;
use tollgate_api::{
    CommitRequest, HeartbeatRequest, HeartbeatResponse, LeaseRequest, ReserveRequest,
};
use tollgate_core::{
    CheckRequest, ExtendOutcome, HoldError, HoldId, HoldKind, Reservation, Settle, SettleOutcome,
    Settled, ceil_units,
};

use super::check::{self, BodyFault, CheckHeaders};
use super::problem::Problem;
use super::request_id::{REQUEST_ID, RequestId};
use crate::data_plane;
use crate::state::AppState;

type Answer = http::Response<Bytes>;

const MS: u64 = 1_000_000;

/// Authenticates a request with a JSON body.
fn admit(state: &AppState, h: CheckHeaders<'_>) -> Result<(), Answer> {
    check::authorize(state, h.authorization)?;
    if !check::is_json(h.content_type) {
        return Err(Problem::unsupported_media_type().to_response());
    }
    Ok(())
}

/// Authenticates a request and reads its JSON body.
async fn read(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, Answer> {
    admit(state, CheckHeaders::of(headers))?;
    axum::body::to_bytes(body, super::MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                problem_types::BODY_TOO_LARGE,
                "Body too large",
                format!("the body must be at most {} bytes", super::MAX_BODY_BYTES),
            )
            .to_response()
        })
}

/// Decodes a body as `T`, or 400 naming the field at fault.
fn parse<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Answer> {
    check::parse_json::<T>(bytes)
        .map_err(|BodyFault { detail, .. }| Problem::invalid_body(detail).to_response())
}

fn invalid(detail: impl Into<String>) -> Answer {
    Problem::invalid_request(detail).to_response()
}

/// A TTL in milliseconds as nanoseconds, or 400 naming `ttl_ms`.
fn ttl(ms: u64) -> Result<u64, Answer> {
    tollgate_core::hold_ttl_from_millis(ms).map_err(|e| invalid(e.to_string()))
}

/// The answer as axum sends it, with the request's id.
fn with_request_id(mut answer: Answer, id: &RequestId) -> axum::response::Response {
    answer
        .headers_mut()
        .insert(REQUEST_ID.clone(), id.header_value());
    answer.map(Body::from)
}

fn hold_error(e: HoldError) -> Answer {
    match e {
        HoldError::Request(e) => invalid(e.to_string()),
        HoldError::Ttl { .. } => invalid(e.to_string()),
        HoldError::Store(e) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            problem_types::STORE_UNAVAILABLE,
            "Store unavailable",
            format!("the counter store could not keep or settle the hold: {e}"),
        )
        .to_response(),
    }
}

/// A decided reservation or lease, for the caller to render: the check's answer with the
/// hold's id and expiry after it.
pub(crate) struct Held {
    /// The decision.
    pub decision: tollgate_core::Decision,
    /// The hold and the milliseconds until it expires, when admitted.
    pub hold: Option<(HoldId, u64)>,
}

impl Held {
    /// Appends the JSON answer to `out`.
    pub(crate) fn body(&self, out: &mut Vec<u8>) {
        super::render::decision_body(out, &self.decision);
        out.pop(); // the closing brace
        match self.hold {
            Some((id, ms)) => {
                out.extend_from_slice(b",\"id\":\"");
                out.extend_from_slice(&id.to_hex());
                out.extend_from_slice(b"\",\"expires_in_ms\":");
                out.extend_from_slice(itoa::Buffer::new().format(ms).as_bytes());
                out.push(b'}');
            }
            None => out.extend_from_slice(br#","id":null,"expires_in_ms":null}"#),
        }
    }

    /// The answer as a response (rate-limit headers included).
    fn response(&self) -> Answer {
        let mut answer = super::render::decision(&self.decision);
        let mut body = Vec::with_capacity(answer.body().len() + 64);
        self.body(&mut body);
        *answer.body_mut() = Bytes::from(body);
        answer
    }
}

/// Decides and holds.
async fn hold(
    state: &AppState,
    request_id: &RequestId,
    domain: &str,
    descriptors: &[tollgate_api::DescriptorRequest<'_>],
    cost: u64,
    kind: HoldKind,
    ttl_ns: u64,
) -> Result<Held, Answer> {
    if let Some(i) = descriptors.iter().position(|d| d.hits.is_some()) {
        return Err(invalid(format!(
            "descriptors[{i}].hits: every descriptor of a hold costs the same (the estimate, or the lease's hits); leave hits out"
        )));
    }
    let (entries, parts) = check::descriptor_parts(descriptors).map_err(invalid)?;
    let descriptors = data_plane::descriptors(&entries, parts);
    let request = CheckRequest {
        domain,
        descriptors: &descriptors,
        hits: cost,
    };
    let Reservation {
        decision,
        id,
        deadline,
    } = state
        .limiter
        .reserve(&request, kind, ttl_ns)
        .await
        .map_err(hold_error)?;
    data_plane::record(state, request_id, &request, &decision);
    let now = state.limiter.clock().now();
    let hold = id.map(|id| (id, ceil_units(u128::from(deadline.saturating_sub(now)), MS)));
    Ok(Held { decision, hold })
}

/// Which kind of hold a request body asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HoldRoute {
    /// `POST /v1/reservations`.
    Reserve,
    /// `POST /v1/leases`.
    Lease,
}

/// Answers `POST /v1/reservations` or `POST /v1/leases` with `body` (the listener's own
/// loop calls it too).
pub(crate) async fn hold_answer(
    state: &AppState,
    headers: CheckHeaders<'_>,
    request_id: &RequestId,
    body: &[u8],
    route: HoldRoute,
) -> Result<Held, Answer> {
    admit(state, headers)?;
    let (domain, descriptors, cost, ttl_ms, kind) = match route {
        HoldRoute::Reserve => {
            let r: ReserveRequest<'_> = parse(body)?;
            data_plane::hold_amount("estimate", r.estimate, 1).map_err(invalid)?;
            (
                r.domain,
                r.descriptors,
                r.estimate,
                r.ttl_ms,
                HoldKind::Reservation,
            )
        }
        HoldRoute::Lease => {
            let r: LeaseRequest<'_> = parse(body)?;
            let hits = r.hits.unwrap_or(1);
            data_plane::hold_amount("hits", hits, 1).map_err(invalid)?;
            (r.domain, r.descriptors, hits, r.ttl_ms, HoldKind::Lease)
        }
    };
    let ttl_ns = ttl(ttl_ms)?;
    hold(state, request_id, &domain, &descriptors, cost, kind, ttl_ns).await
}

/// The axum side of [`hold_answer`].
async fn held(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    route: HoldRoute,
) -> axum::response::Response {
    let request_id = RequestId::from_header(CheckHeaders::of(headers).request_id);
    let answer = async {
        let bytes = read(state, headers, body).await?;
        let held =
            hold_answer(state, CheckHeaders::of(headers), &request_id, &bytes, route).await?;
        Ok(held.response())
    }
    .await;
    with_request_id(answer.unwrap_or_else(|e| e), &request_id)
}

/// `POST /v1/reservations`.
pub async fn reserve(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> axum::response::Response {
    held(&state, &headers, body, HoldRoute::Reserve).await
}

/// `POST /v1/leases`.
pub async fn lease(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> axum::response::Response {
    held(&state, &headers, body, HoldRoute::Lease).await
}

fn unknown(id: &str) -> Answer {
    Problem::new(
        StatusCode::NOT_FOUND,
        problem_types::NOT_FOUND,
        "Not found",
        data_plane::unknown_hold(id),
    )
    .to_response()
}

fn json<T: serde::Serialize>(value: &T) -> Answer {
    let mut answer =
        http::Response::new(Bytes::from(serde_json::to_vec(value).unwrap_or_default()));
    answer.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    answer
}

/// A hold settled (now or before, the same way): the 200 answer's content.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SettledHold {
    id: HoldId,
    how: Settled,
    repeated: bool,
}

impl SettledHold {
    /// Appends the JSON answer (`SettleResponse`) to `out`, written by hand: commits come as
    /// often as checks.
    pub(crate) fn body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(&self.id.to_hex());
        match self.how {
            Settled::Committed { actual } => {
                out.extend_from_slice(b"\",\"settled\":\"committed\",\"actual\":");
                out.extend_from_slice(itoa::Buffer::new().format(actual).as_bytes());
            }
            Settled::Released => {
                out.extend_from_slice(b"\",\"settled\":\"released\",\"actual\":null");
            }
        }
        out.extend_from_slice(if self.repeated {
            b",\"repeated\":true}"
        } else {
            b",\"repeated\":false}"
        });
    }

    fn response(&self) -> Answer {
        let mut body = Vec::with_capacity(96);
        self.body(&mut body);
        let mut answer = http::Response::new(Bytes::from(body));
        answer.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        answer
    }
}

async fn settle_hold(state: &AppState, id_text: &str, how: Settle) -> Result<SettledHold, Answer> {
    let Some(id) = HoldId::parse(id_text) else {
        return Err(unknown(id_text));
    };
    match state.limiter.settle(id, how).await {
        Ok(SettleOutcome::Settled { how, repeated }) => Ok(SettledHold { id, how, repeated }),
        Ok(SettleOutcome::Conflict { already }) => Err(Problem::new(
            StatusCode::CONFLICT,
            problem_types::CONFLICT,
            "Already settled",
            data_plane::already_settled(id, already),
        )
        .to_response()),
        Ok(SettleOutcome::Unknown) => Err(unknown(id_text)),
        Err(e) => Err(hold_error(HoldError::Store(e))),
    }
}

async fn settle(state: &AppState, id_text: &str, how: Settle) -> Answer {
    match settle_hold(state, id_text, how).await {
        Ok(settled) => settled.response(),
        Err(refused) => refused,
    }
}

/// `POST /v1/reservations/{id}/commit`.
pub async fn commit(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> axum::response::Response {
    let request_id = RequestId::from_header(CheckHeaders::of(&headers).request_id);
    let answer = match read(&state, &headers, body).await {
        Ok(bytes) => match commit_answer(&state, CheckHeaders::of(&headers), &id, &bytes).await {
            Ok(settled) => settled.response(),
            Err(refused) => refused,
        },
        Err(refused) => refused,
    };
    with_request_id(answer, &request_id)
}

/// Answers `POST /v1/reservations/{id}/commit` with `body` (the listener's own loop calls
/// it too).
pub(crate) async fn commit_answer(
    state: &AppState,
    headers: CheckHeaders<'_>,
    id: &str,
    body: &[u8],
) -> Result<SettledHold, Answer> {
    admit(state, headers)?;
    let c: CommitRequest = parse(body)?;
    data_plane::hold_amount("actual", c.actual, 0).map_err(invalid)?;
    settle_hold(state, id, Settle::Commit(c.actual)).await
}

/// `DELETE /v1/reservations/{id}` and `DELETE /v1/leases/{id}`.
pub async fn release(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> axum::response::Response {
    let request_id = RequestId::from_header(CheckHeaders::of(&headers).request_id);
    let answer = match check::authorize(&state, CheckHeaders::of(&headers).authorization) {
        Ok(()) => settle(&state, &id, Settle::Release).await,
        Err(refused) => refused,
    };
    with_request_id(answer, &request_id)
}

/// `POST /v1/leases/{id}/heartbeat` (and the same for a reservation).
pub async fn heartbeat(
    State(state): State<Arc<AppState>>,
    Path(id_text): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> axum::response::Response {
    let request_id = RequestId::from_header(CheckHeaders::of(&headers).request_id);
    let answer = async {
        let h: HeartbeatRequest = parse(&read(&state, &headers, body).await?)?;
        let ttl_ns = ttl(h.ttl_ms)?;
        let Some(id) = HoldId::parse(&id_text) else {
            return Ok(unknown(&id_text));
        };
        Ok(match state.limiter.extend_hold(id, ttl_ns).await {
            Ok(ExtendOutcome::Extended { deadline }) => {
                let now = state.limiter.clock().now();
                json(&HeartbeatResponse {
                    id: id.to_string(),
                    expires_in_ms: ceil_units(u128::from(deadline.saturating_sub(now)), MS),
                })
            }
            Ok(ExtendOutcome::Settled(already)) => Problem::new(
                StatusCode::CONFLICT,
                problem_types::CONFLICT,
                "Already settled",
                data_plane::already_settled(id, already),
            )
            .to_response(),
            Ok(ExtendOutcome::Unknown) => unknown(&id_text),
            Err(e) => hold_error(e),
        })
    }
    .await;
    with_request_id(answer.unwrap_or_else(|e| e), &request_id)
}
