//! hyper's side of the data listener: the connections [`DataConnection`] hands over (any
//! request shape it does not answer itself) and hyper's HTTP/1.1 settings for them.
//!
//! On hyper, `POST /v1/check` is dispatched before the axum router, straight to
//! [`check::answer`]: the router's boxed services and body conversions are work a check
//! does not need, and this is the one place that drains an oversized body so the
//! connection stays usable. Everything else goes through the router.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioTimer;
use tower::ServiceExt;

use super::MAX_BODY_BYTES;
use super::check::{self, BodyError, CheckHeaders};
use crate::state::AppState;

/// How long a client may take to send a request's headers.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest oversized body still read (and discarded) to keep its connection usable.
const DRAIN_LIMIT: usize = 1 << 20;

type ResponseBody = Either<Full<Bytes>, Body>;

/// hyper's HTTP/1.1 settings on the data listener, for connections it takes over.
pub fn hyper_settings() -> hyper::server::conn::http1::Builder {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // Bounds a request's head (hyper answers 431 beyond it); bodies stream past it.
        .max_buf_size(MAX_HEAD_BYTES)
        .max_header_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    http
}

/// hyper's service on the data listener: checks straight to [`check::answer`], the rest
/// through the router.
pub(crate) async fn dispatch(
    state: Arc<AppState>,
    router: Router,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    if request.method() == Method::POST && request.uri().path() == "/v1/check" {
        let (parts, body) = request.into_parts();
        let (body, unread) = read_body(&parts.headers, body).await;
        let mut answer =
            check::answer(&state, CheckHeaders::of(&parts.headers), body.as_deref()).await;
        if unread {
            // Part of the body is still on the wire: this connection cannot carry another
            // request, and the client must know before it tries.
            answer
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return Ok(answer.map(|b| Either::Left(Full::new(b))));
    }
    let response = match router.oneshot(request.map(Body::new)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    Ok(response.map(Either::Right))
}

/// Reads the body, at most [`MAX_BODY_BYTES`]. A body declared too large is still read
/// and thrown away when it is under [`DRAIN_LIMIT`], so the connection stays usable;
/// the flag says whether unread bytes remain.
async fn read_body(
    headers: &http::HeaderMap,
    mut body: Incoming,
) -> (Result<Bytes, BodyError>, bool) {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|&n| n > MAX_BODY_BYTES) {
        if n > DRAIN_LIMIT {
            return (Err(BodyError::TooLarge), true);
        }
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                return (Err(BodyError::TooLarge), true);
            }
        }
        return (Err(BodyError::TooLarge), false);
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => (Ok(collected.to_bytes()), false),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => (Err(BodyError::TooLarge), true),
        Err(e) => (
            Err(BodyError::Unreadable(format!(
                "cannot read the request body: {e}"
            ))),
            true,
        ),
    }
}
