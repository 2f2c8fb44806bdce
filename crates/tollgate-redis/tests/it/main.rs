//! tollgate-redis against real Redis servers started by the test harness.

mod conformance;
mod failures;
mod support;
mod tls;
