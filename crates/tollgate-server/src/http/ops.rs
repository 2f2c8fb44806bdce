//! Operations endpoints: liveness, readiness, Prometheus metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use http::{StatusCode, header};

use super::AppState;

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// `GET /readyz`: policies are loaded and the node is not shutting down.
pub async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if let Some(memory) = &state.memory {
        // Counting takes every shard lock briefly: fine at scrape frequency.
        metrics::gauge!("tollgate_store_keys").set(memory.len() as f64);
        metrics::counter!("tollgate_store_overflows_total").absolute(memory.overflows());
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
