//! Tollgate's data plane: everything between a caller's socket and
//! [`tollgate_core::Limiter`].
//!
//! - [`front_end`]: the [`FrontEnd`] trait; a worker serves a list of them.
//! - [`http`]: `POST /v1/check` (its own HTTP/1.1 loop, hyper for everything else) and the
//!   operations endpoints; [`grpc`]: Envoy's RLS v3 `ShouldRateLimit`, health, reflection.
//! - [`listener`]: the accept loop every listener shares (TLS handshakes, connection ages,
//!   graceful drain); [`tls`]: certificates reloaded from disk.
//! - [`state`]: [`AppState`], what every front end shares; [`data_auth`]: the data-plane
//!   token; [`decisions`]: the live decision tap; [`metrics`]: the Prometheus recorder;
//!   [`usage`]: usage per policy, heavy hitters and denial events, off the decision's clock.

pub mod data_auth;
pub mod data_plane;
pub mod decisions;
pub mod front_end;
pub mod grpc;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod resp;
pub mod shutdown;
pub mod state;
pub mod tls;
pub mod trace;
pub mod usage;

pub use front_end::FrontEnd;
pub use state::AppState;
