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

/// `GET /readyz`: policies are loaded, the store answers and the node is not shutting down.
pub async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    match state.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if let Some(memory) = &state.memory {
        // Counting takes every shard lock briefly: fine at scrape frequency.
        metrics::gauge!("tollgate_store_keys").set(memory.len() as f64);
        metrics::counter!("tollgate_store_overflows_total").absolute(memory.overflows());
    }
    if let Some(redis) = &state.redis {
        let stats = redis.stats();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        for (outcome, value) in [
            ("ok", load(&stats.calls)),
            ("error", load(&stats.errors)),
            ("timeout", load(&stats.timeouts)),
            ("circuit_open", load(&stats.refused)),
        ] {
            metrics::counter!("tollgate_store_calls_total", "store" => "redis", "outcome" => outcome)
                .absolute(value);
        }
    }
    let up = state.limiter.store().is_available();
    metrics::gauge!("tollgate_store_up", "store" => state.limiter.store().kind()).set(if up {
        1.0
    } else {
        0.0
    });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
