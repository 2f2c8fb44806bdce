//! Waiting for an event instead of timing it: tests assert that something happens (a
//! counter moves, a state changes, a line appears), never how fast. The ceiling is long
//! enough for a loaded CI machine and short enough that a hang fails with a message naming
//! what never happened, rather than with the harness's timeout.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a test waits for an event before it fails.
pub const EVENT_CEILING: Duration = Duration::from_secs(30);

/// Polls `probe` every 10 ms until it yields `Some`; panics naming `what` after
/// [`EVENT_CEILING`].
pub async fn until<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(what, EVENT_CEILING, Duration::from_millis(10), probe).await
}

/// [`until`] for a probe that costs something (reading a whole stream): polled every
/// `every` instead of every 10 ms.
pub async fn until_polling<T, F, Fut>(what: &str, every: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(what, EVENT_CEILING, every, probe).await
}

async fn poll<T, F, Fut>(what: &str, ceiling: Duration, every: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            started.elapsed() < ceiling,
            "{what}: did not happen within {ceiling:?}"
        );
        tokio::time::sleep(every).await;
    }
}

/// `future`'s output; panics naming `what` if it is still pending after
/// [`EVENT_CEILING`] (it hung).
pub async fn finishes<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(EVENT_CEILING, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: still waiting after {EVENT_CEILING:?} (hung)"),
    }
}
