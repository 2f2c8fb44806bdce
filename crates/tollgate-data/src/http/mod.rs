//! The HTTP front end: `POST /v1/check`, batches of checks (`POST /v1/checks`), reservations and leases (`holds`), and the
//! operations endpoints.
//!
//! Each connection starts on [`connection::DataConnection`], which answers keep-alive
//! checks itself and hands any other request shape to hyper ([`hyper_side`]).

mod batch;
pub mod check;
pub mod connection;
mod forward_auth;
pub(crate) mod holds;
pub mod hyper_side;
mod ops;
pub mod problem;
pub mod render;
pub mod request_id;

use std::net::TcpListener as StdListener;
use std::sync::Arc;

use axum::Router;
use axum::routing::{MethodRouter, any, delete, get, post};
use futures_util::future::LocalBoxFuture;
use tokio::sync::watch;

use crate::front_end::FrontEnd;
use crate::listener::accept_until_stopped;
use crate::state::AppState;
use crate::tls::ReloadingTls;
use connection::DataConnection;
use problem::Problem;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The router of the HTTP listener, for every request but `POST /v1/check` (which
/// [`hyper_side::dispatch`] answers before it). The path is routed without a handler so
/// that its other methods get 405 like any other route's.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/check", MethodRouter::new())
        .route("/v1/checks", post(batch::checks))
        .route("/v1/reservations", post(holds::reserve))
        .route("/v1/reservations/{id}", delete(holds::release))
        .route("/v1/reservations/{id}/commit", post(holds::commit))
        .route("/v1/reservations/{id}/heartbeat", post(holds::heartbeat))
        .route("/v1/leases", post(holds::lease))
        .route("/v1/leases/{id}", delete(holds::release))
        .route("/v1/leases/{id}/heartbeat", post(holds::heartbeat))
        .route("/v1/forward-auth/{domain}", any(forward_auth::forward_auth))
        .route(
            "/v1/forward-auth/{domain}/{*rest}",
            any(forward_auth::forward_auth),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(|uri: http::Uri| async move { Problem::not_found(uri.path()) })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .with_state(state)
}

/// The HTTP JSON front end (`--http-addr`).
#[derive(Default)]
pub struct HttpFrontEnd {
    /// TLS, when configured.
    pub tls: Option<Arc<ReloadingTls>>,
}

impl FrontEnd for HttpFrontEnd {
    fn name(&self) -> &'static str {
        "http"
    }

    fn serve(
        self: Arc<Self>,
        listener: StdListener,
        state: Arc<AppState>,
        stop: watch::Receiver<bool>,
    ) -> LocalBoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let router = router(state.clone());
            let http = hyper_side::hyper_settings();
            accept_until_stopped(
                "http",
                listener,
                stop,
                None,
                self.tls.clone(),
                move |stream| {
                    let peer = crate::tls::peer_addr(&stream);
                    DataConnection::new(stream, peer, state.clone(), router.clone(), http.clone())
                },
            )
            .await;
            Ok(())
        })
    }
}
