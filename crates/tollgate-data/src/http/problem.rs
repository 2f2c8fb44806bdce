//! RFC 9457 problem details: every error the HTTP listener returns has this shape.

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use tollgate_api::problem::types as problem_types;

/// An `application/problem+json` response.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A URI naming the kind of problem (stable; clients may switch on it).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A short summary of the kind.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What exactly is wrong with this request.
    pub detail: String,
    /// For validation failures: each field that is wrong, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<tollgate_api::FieldError>,
}

impl Problem {
    /// A problem of `kind` with `status`.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            title,
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// 400: the body is not the JSON the endpoint expects.
    pub fn invalid_body(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            problem_types::INVALID_BODY,
            "Malformed request body",
            detail,
        )
    }

    /// 400: well-formed JSON that asks something invalid.
    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            problem_types::INVALID_REQUEST,
            "Invalid request",
            detail,
        )
    }

    /// 404.
    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            problem_types::NOT_FOUND,
            "Not found",
            format!("no resource at {path}"),
        )
    }

    /// 415: a body that is not JSON.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            problem_types::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            "send the request as application/json",
        )
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            problem_types::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "this resource does not support that method",
        )
    }
}

impl Problem {
    /// The response, with a body any HTTP stack can send.
    pub fn to_response(&self) -> http::Response<Bytes> {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut response = http::Response::new(Bytes::from(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        self.to_response().map(axum::body::Body::from)
    }
}
