//! The HTTP listener: `POST /v1/check` and the operations endpoints.

pub mod check;
pub mod connection;
pub mod listener;
mod ops;
pub mod problem;
pub(crate) mod render;
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
    /// The Redis store, when that is the store (for its call counters).
    pub redis: Option<Arc<tollgate_redis::RedisStore>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set once shutdown starts: `/readyz` then answers 503 so balancers drain this node.
    pub shutting_down: AtomicBool,
    /// The policy sources and the domain service (absent when embedded without them).
    pub policy_control: Option<Arc<crate::control::PolicyControl>>,
    /// Live decisions for watchers.
    pub decisions: Arc<crate::decisions::DecisionTap>,
    /// The shared token every check must carry, when the data plane requires one.
    pub data_token: Option<crate::data_auth::DataToken>,
}

impl AppState {
    /// The state of a data plane alone: no control plane, nobody watching decisions.
    pub fn new(
        limiter: Arc<Limiter>,
        memory: Option<Arc<MemoryStore>>,
        redis: Option<Arc<tollgate_redis::RedisStore>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            limiter,
            memory,
            redis,
            metrics,
            shutting_down: AtomicBool::new(false),
            policy_control: None,
            decisions: Arc::default(),
            data_token: None,
        }
    }

    /// Whether this node should receive traffic: not shutting down, and its store
    /// answering (a node cut off from a shared store that others still reach should lose
    /// its traffic to them).
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err("shutting down");
        }
        if !self.limiter.store().is_available() {
            return Err("store unavailable");
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    //! The router answers `POST /v1/check` like the listener's fast path (same `answer`),
    //! for callers that mount the router themselves.

    use std::sync::{Arc, OnceLock};

    use axum::body::Body;
    use http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tollgate_core::{Limiter, LimiterConfig, MemoryStore, SystemClock};
    use tower::ServiceExt;

    use super::*;

    fn state() -> Arc<AppState> {
        static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();
        let metrics = METRICS
            .get_or_init(|| Metrics::install().expect("metrics"))
            .clone();
        let policies = crate::policies::load(None).expect("built-in policies");
        let memory = Arc::new(MemoryStore::default());
        let limiter = Limiter::new(
            policies,
            memory.clone(),
            Arc::new(SystemClock),
            LimiterConfig::default(),
        );
        Arc::new(AppState::new(
            Arc::new(limiter),
            Some(memory),
            None,
            metrics,
        ))
    }

    #[tokio::test]
    async fn the_router_answers_checks_and_problems() {
        let app = router(state());
        let body = r#"{"domain":"api","descriptors":[{"entries":[{"key":"remote_address","value":"1.2.3.4"}]}]}"#;
        let request = Request::post("/v1/check")
            .header("content-type", "application/json")
            .body(Body::from(body));
        let response = app
            .clone()
            .oneshot(request.expect("request"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().contains_key("x-request-id"));
        assert_eq!(
            response.headers()["ratelimit-policy"],
            "\"per_ip\";q=40;w=1"
        );
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["statuses"][0]["remaining"], 39);

        let big = Body::from(vec![b'x'; MAX_BODY_BYTES + 1]);
        let request = Request::post("/v1/check")
            .header("content-type", "application/json")
            .body(big);
        let response = app
            .clone()
            .oneshot(request.expect("request"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );

        let request = Request::get("/v1/check")
            .body(Body::empty())
            .expect("request");
        let response = app.oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
