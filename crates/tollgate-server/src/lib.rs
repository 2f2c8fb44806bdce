//! The `tollgate` server: configuration, telemetry, the HTTP data plane and the CLI around
//! `tollgate-core`. Wiring, not logic: decisions are made in the core.

pub mod cli;
pub mod commands;
pub mod configuration;
pub mod data_plane;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod policies;
pub mod reload;
pub mod startup;
pub mod telemetry;
