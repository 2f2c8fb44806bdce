//! RFC 9457 problem details (`application/problem+json`), and the problem types Tollgate
//! answers with: every HTTP error of every listener names one of [`types`].

use serde::{Deserialize, Serialize};

/// An error answer. `type` names the kind (stable, clients may switch on it); `detail`
/// says what exactly is wrong with this request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemDetails {
    /// A URI naming the kind of problem: one of [`types`].
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What exactly is wrong with this request.
    pub detail: String,
    /// For validation failures: each field that is wrong, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// A problem with one field of a request, named by its path in the body
/// (`rate_limit.burst`, `descriptor[1].key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// Where, as a path into the request body.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// An error at `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The problem types (`type` URIs), defined once.
pub mod types {
    /// 400: the body is not the JSON the endpoint expects.
    pub const INVALID_BODY: &str = "urn:tollgate:problem:invalid-body";
    /// 400: well-formed JSON that asks something invalid (`errors` may list each field).
    pub const INVALID_REQUEST: &str = "urn:tollgate:problem:invalid-request";
    /// 400: the body could not be read (framing, connection).
    pub const UNREADABLE_BODY: &str = "urn:tollgate:problem:unreadable-body";
    /// 401: no valid credentials.
    pub const UNAUTHENTICATED: &str = "urn:tollgate:problem:unauthenticated";
    /// 403: valid credentials without the right.
    pub const FORBIDDEN: &str = "urn:tollgate:problem:forbidden";
    /// 404.
    pub const NOT_FOUND: &str = "urn:tollgate:problem:not-found";
    /// 405.
    pub const METHOD_NOT_ALLOWED: &str = "urn:tollgate:problem:method-not-allowed";
    /// 409: the change conflicts with what exists.
    pub const CONFLICT: &str = "urn:tollgate:problem:conflict";
    /// 412: an `If-Match` precondition failed (the resource changed meanwhile).
    pub const STALE: &str = "urn:tollgate:problem:stale";
    /// 413.
    pub const BODY_TOO_LARGE: &str = "urn:tollgate:problem:body-too-large";
    /// 415.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "urn:tollgate:problem:unsupported-media-type";
    /// 429: too many requests (the admin API's own guard).
    pub const TOO_MANY_REQUESTS: &str = "urn:tollgate:problem:too-many-requests";
    /// 431.
    pub const HEADERS_TOO_LARGE: &str = "urn:tollgate:problem:headers-too-large";
    /// 500.
    pub const INTERNAL: &str = "urn:tollgate:problem:internal";
    /// 503: the policy database is unavailable.
    pub const POLICY_STORE_UNAVAILABLE: &str = "urn:tollgate:problem:policy-store-unavailable";
    /// 503: the counter store could not keep or settle a reservation or lease.
    pub const STORE_UNAVAILABLE: &str = "urn:tollgate:problem:store-unavailable";
    /// 503: the request took longer than the admin API's deadline.
    pub const TIMEOUT: &str = "urn:tollgate:problem:timeout";
    /// 403: a change made through a dashboard session without its CSRF token, or a
    /// session's WebSocket opened from another origin.
    pub const CSRF: &str = "urn:tollgate:problem:csrf";
}
