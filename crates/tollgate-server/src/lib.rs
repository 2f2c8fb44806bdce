//! The `tollgate` server: configuration, telemetry, the HTTP and gRPC data planes, the
//! admin APIs and the CLI around `tollgate-core` and `tollgate-control`. Wiring, not logic: decisions are made in the core.

pub mod admin;
pub mod cli;
pub mod commands;
pub mod configuration;
pub mod control;
pub mod data_auth;
pub mod data_plane;
pub mod decisions;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod policies;
pub mod reload;
pub mod startup;
pub mod telemetry;
pub mod tls;
