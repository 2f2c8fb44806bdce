//! What every front end of the data plane shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tollgate_core::Limiter;

use crate::data_auth::DataToken;
use crate::decisions::DecisionTap;
use crate::metrics::Metrics;
use crate::usage::{EventsHealth, UsageRecorder};

/// What every front end and handler of the data plane shares. The store is reached only
/// through the limiter (`Arc<dyn Store>`), so a new store needs nothing here.
pub struct AppState {
    /// The decision engine.
    pub limiter: Arc<Limiter>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set once shutdown starts: `/readyz` then answers 503 so balancers drain this node.
    pub shutting_down: AtomicBool,
    /// Live decisions for watchers.
    pub decisions: Arc<DecisionTap>,
    /// The shared token every check must carry, when the data plane requires one.
    pub data_token: Option<DataToken>,
    /// Usage per policy and the denial events, when events or usage are on.
    pub usage: Option<Arc<UsageRecorder>>,
    /// The event broker's health, when events are on.
    pub events: Option<Arc<EventsHealth>>,
    /// Peers whose `X-Forwarded-For` forward auth believes (loopback by default).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// 127.0.0.0/8 and ::1: a proxy on the same host.
pub fn loopback() -> Vec<ipnet::IpNet> {
    vec![
        ipnet::IpNet::V4(ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::LOCALHOST, 8)),
        ipnet::IpNet::V6(ipnet::Ipv6Net::new_assert(
            std::net::Ipv6Addr::LOCALHOST,
            128,
        )),
    ]
}

impl AppState {
    /// The state of a data plane: nobody watching decisions yet, no data-plane token.
    pub fn new(limiter: Arc<Limiter>, metrics: Arc<Metrics>) -> Self {
        Self {
            limiter,
            metrics,
            shutting_down: AtomicBool::new(false),
            decisions: Arc::default(),
            data_token: None,
            usage: None,
            events: None,
            trusted_proxies: loopback(),
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
