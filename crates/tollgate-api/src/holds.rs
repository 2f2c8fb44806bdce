//! Reservations (`/v1/reservations`) and concurrency leases (`/v1/leases`): a check that
//! keeps what it took until it is settled, for costs known only afterwards and for limits
//! on what is in flight.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::check::{DescriptorRequest, DescriptorStatus};

/// `POST /v1/reservations`: hold `estimate` on every limit the descriptors match, all or
/// nothing, for `ttl_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest<'a> {
    /// The domain whose policies apply.
    #[serde(borrow)]
    pub domain: Cow<'a, str>,
    /// The descriptors, as in a check (without `hits` of their own: the estimate is the
    /// cost of every one).
    #[serde(borrow)]
    pub descriptors: Vec<DescriptorRequest<'a>>,
    /// What the request is expected to cost, at least 1 (tokens, bytes, calls).
    pub estimate: u64,
    /// How long the hold lasts unless committed or released, in milliseconds (1 to
    /// 86,400,000); the store releases it by itself then.
    pub ttl_ms: u64,
}

/// `POST /v1/leases`: take `hits` (default 1) slots of every concurrency limit the
/// descriptors match, and count the request against their rate limits, for `ttl_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest<'a> {
    /// The domain whose policies apply.
    #[serde(borrow)]
    pub domain: Cow<'a, str>,
    /// The descriptors, as in a check (without `hits` of their own).
    #[serde(borrow)]
    pub descriptors: Vec<DescriptorRequest<'a>>,
    /// Slots taken (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits: Option<u64>,
    /// How long the lease lasts without a heartbeat, in milliseconds (1 to 86,400,000).
    pub ttl_ms: u64,
}

/// The answer to a reservation or a lease: the check's answer, and the hold's id when
/// admitted. 200 whatever the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldResponse {
    /// Whether every enforced limit admitted the request (and so holds it).
    pub allowed: bool,
    /// One status per descriptor, as a check answers.
    pub statuses: Vec<DescriptorStatus>,
    /// The hold's id (32 hex digits) to commit, release or extend; `null` when denied.
    pub id: Option<String>,
    /// Milliseconds until the store releases the hold by itself; `null` when denied.
    pub expires_in_ms: Option<u64>,
}

/// `POST /v1/reservations/{id}/commit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// What the request really cost; above the estimate, the difference is charged even
    /// past the limit.
    pub actual: u64,
}

/// `POST /v1/leases/{id}/heartbeat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// How long the lease lasts from now, in milliseconds (1 to 86,400,000).
    pub ttl_ms: u64,
}

/// How a hold was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettledAs {
    /// Committed at `actual`.
    Committed,
    /// Released.
    Released,
}

/// The answer to a commit or a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettleResponse {
    /// The hold.
    pub id: String,
    /// How it is settled.
    pub settled: SettledAs,
    /// The cost committed (`null` for a release).
    pub actual: Option<u64>,
    /// The hold was already settled this way; nothing changed.
    pub repeated: bool,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatResponse {
    /// The lease.
    pub id: String,
    /// Milliseconds until the store releases it by itself.
    pub expires_in_ms: u64,
}
