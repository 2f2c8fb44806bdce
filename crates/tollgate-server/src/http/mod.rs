//! The HTTP listener: `POST /v1/check` and the operations endpoints.

mod check;
pub mod listener;
mod ops;
pub mod problem;
mod render;
pub mod request_id;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tollgate_core::{Limiter, MemoryStore};

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

/// The router of the HTTP listener.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/check", post(check::check))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(|uri: http::Uri| async move { Problem::not_found(uri.path()) })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
