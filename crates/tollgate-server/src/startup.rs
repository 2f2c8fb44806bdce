//! Building and running the service: policies, store, limiter, listener, background tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tollgate_core::{Limiter, LimiterConfig, MemoryStore, MemoryStoreConfig, SystemClock};

use crate::configuration::{Settings, StoreSettings};
use crate::http::{AppState, router};
use crate::metrics::Metrics;

/// How often expired counters are dropped from the in-memory store.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A built service, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl Application {
    /// Loads policies, creates the store and binds the HTTP listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let policies = crate::policies::load(settings.policies.as_deref())?;
        let source = settings.policies.as_ref().map_or_else(
            || crate::policies::BUILTIN_NAME.to_owned(),
            |p| p.display().to_string(),
        );
        let domains: Vec<String> = policies.domains().map(|d| d.name().to_string()).collect();
        tracing::info!(source = %source, domains = ?domains, "policies loaded");

        let metrics = Metrics::install().context("cannot install the metrics recorder")?;
        metrics.set_domains(&policies);

        let StoreSettings::Memory { max_keys } = settings.store;
        let memory = Arc::new(MemoryStore::new(MemoryStoreConfig {
            max_keys,
            ..MemoryStoreConfig::default()
        }));
        let mut key_seed = [0u8; 16];
        getrandom::fill(&mut key_seed)
            .map_err(|e| anyhow::anyhow!("cannot read random bytes for the key seed: {e}"))?;
        let config = LimiterConfig {
            key_seed,
            ..LimiterConfig::default()
        };
        let limiter = Arc::new(Limiter::new(
            policies,
            memory.clone(),
            Arc::new(SystemClock),
            config,
        ));

        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("cannot listen on {} (--http-addr)", settings.http_addr))?;
        let state = Arc::new(AppState {
            limiter,
            memory: Some(memory),
            metrics,
            shutting_down: AtomicBool::new(false),
        });
        Ok(Self { listener, state })
    }

    /// The address the HTTP listener is bound to (useful with port 0).
    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until SIGINT or SIGTERM, then drains in-flight requests and returns.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let addr = self.http_addr()?;
        tracing::info!(http_addr = %addr, "listening");
        if let Some(memory) = self.state.memory.clone() {
            let limiter = self.state.limiter.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SWEEP_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let now = limiter.clock().now();
                    let memory = memory.clone();
                    // Sweeping walks every shard: keep it off the async workers.
                    match tokio::task::spawn_blocking(move || memory.sweep(now)).await {
                        Ok(dropped) if dropped > 0 => {
                            tracing::debug!(dropped, "expired counters dropped")
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "counter sweep failed"),
                    }
                }
            });
        }
        let state = self.state.clone();
        axum::serve(self.listener, router(self.state))
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                state.shutting_down.store(true, Ordering::Relaxed);
                tracing::info!("shutdown requested; draining in-flight requests");
            })
            .await
            .context("HTTP server failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
