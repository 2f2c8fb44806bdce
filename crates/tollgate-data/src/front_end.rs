//! The front ends a worker runs. Each protocol the data plane speaks (HTTP JSON, Envoy
//! RLS over gRPC, and whatever comes next) is one [`FrontEnd`]: startup binds one listening
//! socket per worker for each registered front end, and every worker serves all of them on
//! its own runtime. Adding a protocol is a module implementing this trait and one line in
//! the list startup builds.

use std::net::TcpListener as StdListener;
use std::sync::Arc;

use futures_util::future::LocalBoxFuture;
use tokio::sync::watch;

use crate::state::AppState;

/// One protocol of the data plane, served on its own listening sockets.
pub trait FrontEnd: Send + Sync + 'static {
    /// A short name for logs and metrics (`http`, `grpc`).
    fn name(&self) -> &'static str;

    /// Serves connections from `listener` (already bound and non-blocking) until `stop`
    /// turns true, then lets the open ones finish. Runs on the calling worker's runtime.
    fn serve(
        self: Arc<Self>,
        listener: StdListener,
        state: Arc<AppState>,
        stop: watch::Receiver<bool>,
    ) -> LocalBoxFuture<'static, anyhow::Result<()>>;
}

/// Serves every `(front end, listener)` pair of one worker until `stop`; the first error
/// is returned once all have finished.
pub async fn serve_all(
    front_ends: Vec<(Arc<dyn FrontEnd>, StdListener)>,
    state: Arc<AppState>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let served = front_ends
        .into_iter()
        .map(|(front_end, listener)| front_end.serve(listener, state.clone(), stop.clone()));
    let results = futures_util::future::join_all(served).await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(())
}
