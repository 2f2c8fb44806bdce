//! Test fixtures shared by Tollgate's crates. Tests talk to real servers, never mocks:
//! these start private ones on free loopback ports and stop them when dropped.
//!
//! - [`RedisServer`]: one `redis-server` process.
//! - [`RedisCluster`]: three `redis-server` masters joined into a Cluster.
//! - [`FaultProxy`]: a TCP proxy that can add latency, refuse and cut connections, or
//!   black-hole them (accept, never answer).
//! - [`NatsServer`]: one `nats-server` with JetStream (killed, restarted, paused at will).
//! - [`PostgresDatabase`]: a database of its own on the test PostgreSQL server.
//! - [`TestCa`]: a throwaway CA issuing server and client certificates.
//! - [`conformance`]: the suite every counter store must pass.
//! - [`wait`]: waiting for an event under a generous ceiling, instead of timing it.

pub mod conformance;
mod nats;
mod pki;
mod postgres;
mod proxy;
mod redis;
pub mod wait;

pub use nats::NatsServer;
pub use pki::{Issued, TestCa};
pub use postgres::{PostgresDatabase, server_url as postgres_server_url};
pub use proxy::FaultProxy;
pub use redis::{RedisCluster, RedisServer};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}
