//! Integration tests of tollgate-core's public API (one binary, several modules).

mod algorithms;
mod batch;
mod calendar;
mod consistency;
mod heavy_hitters;
mod holds;
mod limiter;
mod matching;
mod policy_files;
mod quota_mode;
mod support;
mod usage;
