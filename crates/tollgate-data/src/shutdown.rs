//! The signals that stop a server: SIGINT and SIGTERM.

use anyhow::Context;

/// SIGINT and SIGTERM, registered when this is built (so a signal that arrives before
/// anyone waits is not lost to the default action, which would kill the process).
pub struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Starts listening for both.
    #[cfg(unix)]
    pub fn register() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    /// Starts listening for Ctrl-C.
    #[cfg(not(unix))]
    pub fn register() -> anyhow::Result<Self> {
        Ok(Self {})
    }

    /// Waits for the first of them.
    pub async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {},
            _ = self.terminate.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
