//! The `tollgate` binary: command line, configuration, startup, telemetry and the
//! commands. Wiring, not logic: decisions are made in `tollgate-core`, requests are served
//! by `tollgate-data` (data plane) and `tollgate-admin` (admin plane).

pub mod cli;
pub mod commands;
pub mod configuration;
pub mod startup;
pub mod telemetry;
