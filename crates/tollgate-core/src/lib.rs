//! Tollgate's core: the rate-limiting engine with no I/O.
//!
//! - [`algorithm`]: GCRA, fixed window and sliding window as pure functions of
//!   (state, limit, cost, now).
//! - [`policy`]: domains and descriptor trees, loaded from envoyproxy/ratelimit's YAML
//!   format, matched with its rules.
//! - [`store`]: the [`Store`] trait (atomic multi-limit batches) and the in-memory store.
//! - [`Limiter`]: request → policies → store → [`Decision`].
//! - [`heavy_hitters`]: the values that take the most hits, in bounded memory.
//!
//! Nothing here opens a socket, reads a file or needs an async runtime: the server crate
//! (and anyone embedding Tollgate) brings those.

pub mod algorithm;
pub mod calendar;
pub mod descriptor;
pub mod heavy_hitters;
pub mod hold;
pub mod key;
pub mod lease;
mod limiter;
pub mod policy;
pub mod store;
pub mod time;

pub use algorithm::{Algorithm, CounterState, Limit, Outcome};
pub use calendar::{Calendar, CalendarError, CalendarPeriod, Window};
pub use descriptor::{CheckRequest, Descriptor, Entry, LimitOverride, RequestError, RequestLimits};
pub use hold::{ExtendOutcome, HeldOp, HoldId, HoldKind, Settle, SettleOutcome, Settled};
pub use key::{CounterKey, KeyHasher};
pub use limiter::{
    Decision, DescriptorStatus, HoldError, Limiter, LimiterConfig, Reservation, Rule,
    hold_ttl_from_millis,
};
pub use policy::{
    Consistency, Metadata, MetadataValue, OnStoreError, Policy, PolicyError, PolicyLimit,
    PolicySet, Unit,
};
pub use store::{
    Admission, CircuitBreaker, CircuitBreakerConfig, CircuitState, CommitRule, HoldSpec,
    LeaseGrant, LimitOp, ManyFuture, MemoryStore, MemoryStoreConfig, Store, StoreCalls, StoreError,
    StoreReport,
};
pub use time::{
    Clock, ManualClock, Nanos, SECOND, Span, SystemClock, ceil_units, instant_after,
    saturating_nanos,
};
