//! Operations endpoints: liveness, readiness, Prometheus metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use http::{StatusCode, header};

use crate::state::AppState;

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// `GET /readyz`: policies are loaded, the store answers and the node is not shutting down.
pub async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    // Events never make a node unready: decisions do not depend on the broker.
    let events = state
        .events
        .as_ref()
        .and_then(|e| e.detail())
        .map_or_else(String::new, |d| format!("{d}\n"));
    match state.ready() {
        Ok(()) => (StatusCode::OK, format!("ready\n{events}")),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n{events}")),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let store = state.limiter.store();
    let report = store.report();
    if let Some(keys) = report.keys {
        metrics::gauge!("tollgate_store_keys").set(keys as f64);
        metrics::counter!("tollgate_store_overflows_total").absolute(report.overflows);
    }
    if let Some(calls) = report.calls {
        for (outcome, value) in [
            ("ok", calls.ok),
            ("error", calls.error),
            ("timeout", calls.timeout),
            ("circuit_open", calls.circuit_open),
        ] {
            metrics::counter!("tollgate_store_calls_total", "store" => store.kind(), "outcome" => outcome)
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
