//! End-to-end tests: the real `tollgate` binary on a random loopback port, driven over HTTP.

mod admin;
mod batch;
mod bench_cli;
mod check_api;
mod cli;
mod dashboard;
mod distributed;
mod envoy_examples;
mod events;
mod forward_auth;
mod grpc;
mod grpc_holds;
mod helpers;
mod holds;
mod http1;
mod llm_gateway;
mod magnitudes;
mod operations;
mod propagation;
mod reload;
mod resp;
mod security;
mod tower_layer;
mod traces;
