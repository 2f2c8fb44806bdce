//! Tollgate's gRPC services, generated from `proto/` at build time.
//!
//! - [`tollgate::v1`]: reservations and concurrency leases (`tollgate.v1.Holds`), and
//!   streams of checks decided together (`tollgate.v1.Checks`).
//! - [`kuadrant::service::ratelimit::v1`]: Kuadrant's `RateLimitService` (Limitador's
//!   `CheckRateLimit`, `Report`, `Reserve`, `Commit`).
//!
//! Envoy's messages are `envoy-types`' own, so a descriptor or a response is one type
//! across Envoy's RLS and these services.

#![allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    reason = "generated code; the protos document each message"
)]

/// `package tollgate.*`.
pub mod tollgate {
    /// `package tollgate.v1`.
    pub mod v1 {
        tonic::include_proto!("tollgate.v1");
    }
}

/// `package kuadrant.*`.
pub mod kuadrant {
    /// `package kuadrant.service.*`.
    pub mod service {
        /// `package kuadrant.service.ratelimit.*`.
        pub mod ratelimit {
            /// `package kuadrant.service.ratelimit.v1`.
            pub mod v1 {
                tonic::include_proto!("kuadrant.service.ratelimit.v1");
            }
        }
    }
}

/// The encoded descriptors of Envoy's RLS, `tollgate.v1` and Kuadrant's service with their
/// imports, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
