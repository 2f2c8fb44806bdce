//! What this layer answers by itself: a denial (HTTP 429 or gRPC `RESOURCE_EXHAUSTED`) and
//! a refusal without a decision (HTTP 503 or gRPC `UNAVAILABLE`).

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;

/// A decision, whichever way it was made.
pub(crate) struct Answer {
    pub(crate) allowed: bool,
    /// Seconds until the same request would pass, if it ever would.
    pub(crate) retry_after: Option<u64>,
    /// The policy that denied, for the problem's detail.
    pub(crate) policy: Option<String>,
}

impl Answer {
    pub(crate) fn of_decision(d: &tollgate_core::Decision) -> Self {
        if d.allowed {
            return Self {
                allowed: true,
                retry_after: None,
                policy: None,
            };
        }
        let denied = d.statuses.iter().filter(|s| !s.allowed);
        let retry_after = denied
            .clone()
            .filter_map(|s| s.retry_after)
            .max()
            .map(|ns| u64::try_from(ns.div_ceil(1_000_000_000)).unwrap_or(u64::MAX));
        let policy = denied
            .filter_map(|s| s.rule.as_ref().map(|r| r.name().to_owned()))
            .next();
        Self {
            allowed: d.allowed,
            retry_after,
            policy,
        }
    }

    pub(crate) fn of_response(r: &tollgate_api::CheckResponse) -> Self {
        Self {
            allowed: r.allowed,
            retry_after: r
                .denied()
                .filter_map(|s| s.retry_after_ms)
                .max()
                .map(|ms| ms.div_ceil(1000)),
            policy: r.denied().find_map(|s| s.policy.clone()),
        }
    }
}

/// Why the layer answers a request itself instead of passing it on.
pub(crate) enum Refusal {
    /// The limiter denied it.
    Denied(Answer),
    /// No decision could be had and the layer fails closed.
    Unavailable,
}

impl Refusal {
    /// The answer, in the request's protocol (looked at only now: a request that passes,
    /// the usual case, never pays for the header lookup).
    pub(crate) fn response(&self, headers: &http::HeaderMap) -> http::Response<Full<Bytes>> {
        let grpc = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
        match self {
            Self::Denied(answer) => denied(answer, grpc),
            Self::Unavailable => unavailable(grpc),
        }
    }
}

fn grpc(code: u16, message: &'static str) -> http::Response<Full<Bytes>> {
    // A trailers-only answer: the status in the headers, no body.
    let mut response = http::Response::new(Full::new(Bytes::new()));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    h.insert("grpc-message", HeaderValue::from_static(message));
    response
}

fn problem(
    status: StatusCode,
    kind: &str,
    title: &str,
    detail: &str,
) -> http::Response<Full<Bytes>> {
    let body = serde_json::json!({
        "type": kind,
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = http::Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// The answer to a denied request.
pub(crate) fn denied(answer: &Answer, is_grpc: bool) -> http::Response<Full<Bytes>> {
    let mut response = if is_grpc {
        grpc(8, "rate limited")
    } else {
        let detail = match &answer.policy {
            Some(policy) => format!("over the limit of policy {policy}"),
            None => "over a rate limit".to_owned(),
        };
        problem(
            StatusCode::TOO_MANY_REQUESTS,
            tollgate_api::problem::types::TOO_MANY_REQUESTS,
            "Too many requests",
            &detail,
        )
    };
    if let Some(seconds) = answer.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The answer when no decision could be had and the layer fails closed.
pub(crate) fn unavailable(is_grpc: bool) -> http::Response<Full<Bytes>> {
    if is_grpc {
        return grpc(14, "rate limiter unavailable");
    }
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        tollgate_api::problem::types::STORE_UNAVAILABLE,
        "Rate limiter unavailable",
        "no rate-limit decision could be had, and this service fails closed",
    )
}
