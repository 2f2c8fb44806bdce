//! What the data-plane targets share: a service state like `tollgate serve`'s (built-in
//! example policies, in-memory store), built once per process, and a way to run the
//! handlers, which never wait with the in-memory store.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use tollgate_core::{Limiter, LimiterConfig, MemoryStore, SystemClock};
use tollgate_core::PolicySet;
use tollgate_data::AppState;
use tollgate_data::metrics::Metrics;

pub fn state() -> Arc<AppState> {
    static STATE: OnceLock<Arc<AppState>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let example = include_str!("../../examples/policies/api.yaml");
            let policies =
                PolicySet::from_files([("api.yaml", example)]).expect("the example policies");
            let memory = Arc::new(MemoryStore::default());
            let limiter = Limiter::new(
                policies,
                memory,
                Arc::new(SystemClock),
                LimiterConfig::default(),
            );
            let metrics = Metrics::install().expect("metrics");
            Arc::new(AppState::new(Arc::new(limiter), metrics))
        })
        .clone()
}

/// Polls `f` to completion; the in-memory store answers without waiting, so one poll
/// suffices (a pending future here would be a bug worth a crash).
pub fn run<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a data-plane handler waited with the in-memory store"),
    }
}
