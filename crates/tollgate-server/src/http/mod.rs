//! The HTTP listener: `POST /v1/check` and the operations endpoints.

mod check;
mod ops;
pub mod problem;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use http::{HeaderName, Request};
use tollgate_core::{Limiter, MemoryStore};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::metrics::Metrics;
use problem::Problem;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler shares.
pub struct AppState {
    /// The decision engine.
    pub limiter: Arc<Limiter>,
    /// The in-memory store, when that is the store (for its gauges).
    pub memory: Option<Arc<MemoryStore>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set once shutdown starts: `/readyz` then answers 503 so balancers drain this node.
    pub shutting_down: AtomicBool,
}

impl AppState {
    /// Whether this node should receive traffic.
    pub fn ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Relaxed)
    }
}

/// The `x-request-id` header: taken from the caller when present, generated otherwise.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids from a per-process random prefix and a counter: unique, cheap, sortable.
#[derive(Clone)]
struct CounterRequestId {
    prefix: u32,
    next: Arc<AtomicU64>,
}

impl MakeRequestId for CounterRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:08x}-{:012x}", self.prefix, n);
        http::HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// The router of the HTTP listener.
pub fn router(state: Arc<AppState>) -> Router {
    let mut seed = [0u8; 4];
    // Only ids depend on it: a fixed prefix is an acceptable fallback.
    let _ = getrandom::fill(&mut seed);
    let ids = CounterRequestId {
        prefix: u32::from_le_bytes(seed),
        next: Arc::new(AtomicU64::new(0)),
    };
    Router::new()
        .route("/v1/check", post(check::check))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(|uri: http::Uri| async move { Problem::not_found(uri.path()) })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::debug_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), ids))
}
