//! Where counters live. A [`Store`] applies a batch of [`LimitOp`]s atomically: every op is
//! evaluated against the same snapshot, and either all admitting ops are committed (when
//! every enforced op admits) or none is. That is the rule "a denied request consumes
//! nothing", and each store must keep it.
//!
//! Outcomes a store reports: a denying op, its denial; in an admitted batch, each op's
//! outcome with its cost taken; in a denied batch, an op that would have admitted reports a
//! cost-0 evaluation of the counter as stored (what is left, untouched).
//!
//! [`CommitRule::EveryRequestCounts`] is envoyproxy/ratelimit's way instead: every op
//! charges its counter ([`crate::Limit::charge`]) whatever the outcome.

mod breaker;
mod memory;

use std::future::Future;
use std::pin::Pin;

pub use breaker::{Admission, CircuitBreaker, CircuitBreakerConfig, CircuitState};
pub use memory::{MemoryStore, MemoryStoreConfig};

use crate::algorithm::{Limit, Outcome};
use crate::hold::{ExtendOutcome, HoldId, HoldKind, Settle, SettleOutcome};
use crate::key::CounterKey;
use crate::time::{Nanos, Span};

/// One limit to check in a decision.
#[derive(Debug, Clone, Copy)]
pub struct LimitOp {
    /// The counter.
    pub key: CounterKey,
    /// Counters that a shared store must keep together so one decision stays atomic (a
    /// fingerprint of the domain; Redis Cluster's hash tag). Set by the limiter for
    /// shared stores ([`Store::is_shared`]); 0 otherwise.
    pub group: u64,
    /// The rule to apply to it.
    pub limit: Limit,
    /// How much this request costs against it.
    pub cost: u64,
    /// Whether a denial by this op denies the request (false for shadow-mode policies).
    pub enforce: bool,
    /// A quota-mode op (envoyproxy/ratelimit's `quota_mode`): the quota ops of a batch deny
    /// it only together, when every one of them denies; a non-enforced quota op counts as
    /// one that admits. See [`batch_admits`].
    pub quota: bool,
    /// Written by the store: what the algorithm decided.
    pub outcome: Option<Outcome>,
}

impl LimitOp {
    /// An op not yet evaluated.
    pub fn new(key: CounterKey, limit: Limit, cost: u64, enforce: bool) -> Self {
        Self {
            key,
            group: 0,
            limit,
            cost,
            enforce,
            quota: false,
            outcome: None,
        }
    }
}

/// What a store commits after evaluating a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommitRule {
    /// Tollgate's rule: commit only if every enforced op admits; a denial consumes nothing.
    #[default]
    AllOrNothing,
    /// envoyproxy/ratelimit's rule: every op counts the request, admitted or not.
    EveryRequestCounts,
}

/// Whether a batch of evaluated ops admits the request: every enforced op that is not in
/// quota mode admits, and, when the batch has quota-mode ops, at least one of them admits
/// or is not enforced (envoyproxy/ratelimit's rule: the request is over the limit when a
/// regular descriptor is, or when every quota-mode descriptor is).
pub fn batch_admits(ops: &[LimitOp]) -> bool {
    let (mut has_quota, mut quota_passes) = (false, false);
    for op in ops {
        let passes = !op.enforce || op.outcome.is_some_and(|o| o.allowed);
        if op.quota {
            has_quota = true;
            quota_passes |= passes;
        } else if !passes {
            return false;
        }
    }
    !has_quota || quota_passes
}

/// What a store without holds answers to [`Store::reserve`], `settle` and `extend`.
const NO_HOLDS: StoreError = StoreError::Unsupported("this store keeps no reservations or leases");

/// Makes `ops` the ops of the hold `hold`: concurrency ops take their slots until its
/// deadline (every store's [`Store::reserve`] starts here).
pub fn hold_ops(ops: &mut [LimitOp], hold: &HoldSpec) {
    for op in ops.iter_mut() {
        op.limit = op.limit.holding_until(hold.deadline);
    }
}

/// Why a store could not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or answered with an error; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer within its deadline.
    #[error("store did not answer within {0} ms")]
    Timeout(u64),
    /// The store cannot do this at all (a test double without holds, a full hold table).
    #[error("{0}")]
    Unsupported(&'static str),
}

impl StoreError {
    /// Whether the same call may succeed later (drives retries and circuit breaking).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout(_))
    }
}

/// Tokens a store granted to one node for one counter (`consistency: leased`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// Tokens granted, possibly 0.
    pub granted: u64,
    /// What the store has left after the grant.
    pub remaining: u64,
    /// Nanoseconds until the counter is full again.
    pub reset_after: Span,
    /// With nothing granted: when a full lease would fit.
    pub retry_after: Option<Span>,
    /// How long the tokens may be spent, from the store's now.
    pub valid_for: Nanos,
}

impl LeaseGrant {
    /// The grant for a lease decided by [`Limit::lease`].
    pub fn from_outcome(granted: u64, outcome: &Outcome, valid_for: Nanos) -> Self {
        Self {
            granted,
            remaining: outcome.remaining,
            reset_after: outcome.reset_after,
            retry_after: if granted == 0 {
                outcome.retry_after
            } else {
                None
            },
            valid_for,
        }
    }
}

/// The future [`Store::lease`] returns.
pub type LeaseFuture<'a> =
    Pin<Box<dyn Future<Output = Result<LeaseGrant, StoreError>> + Send + 'a>>;

/// The future a [`Store`] returns.
pub type StoreFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// The future [`Store::apply_many`] returns: one result per batch, in order.
pub type ManyFuture<'a> = Pin<Box<dyn Future<Output = Vec<Result<(), StoreError>>> + Send + 'a>>;

/// The future [`Store::settle`] returns.
pub type SettleFuture<'a> =
    Pin<Box<dyn Future<Output = Result<SettleOutcome, StoreError>> + Send + 'a>>;

/// The future [`Store::extend`] returns.
pub type ExtendFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ExtendOutcome, StoreError>> + Send + 'a>>;

/// A hold to take with [`Store::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldSpec {
    /// Its id (its group is the ops' group).
    pub id: HoldId,
    /// What it is for.
    pub kind: HoldKind,
    /// When the store releases it by itself.
    pub deadline: Nanos,
}

/// A counter store, shared by all requests (`Arc<dyn Store>`).
pub trait Store: Send + Sync + 'static {
    /// Evaluates `ops` at `now` and commits them atomically (see the module docs), writing
    /// each op's `outcome`. Stores with their own clock (Redis) may use it instead of `now`.
    /// An empty `ops` decides nothing: holds past their deadline expire on the next decision.
    fn apply<'a>(&'a self, ops: &'a mut [LimitOp], now: Nanos, rule: CommitRule)
    -> StoreFuture<'a>;

    /// The same, without waiting, for stores that never wait (in memory). `None` means
    /// "call [`Store::apply`]". Lets the in-memory path skip allocating a future.
    fn apply_now(
        &self,
        ops: &mut [LimitOp],
        now: Nanos,
        rule: CommitRule,
    ) -> Option<Result<(), StoreError>> {
        let _ = (ops, now, rule);
        None
    }

    /// Evaluates independent batches: `ops` cut into consecutive slices of `lengths`, each
    /// decided and committed as [`Store::apply`] would, one after another in order, with a
    /// result per slice. Remote stores send each hash-tag group's batches in one round
    /// trip; the default calls [`Store::apply`] once per batch.
    fn apply_many<'a>(
        &'a self,
        ops: &'a mut [LimitOp],
        lengths: &'a [usize],
        now: Nanos,
        rule: CommitRule,
    ) -> ManyFuture<'a> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(lengths.len());
            let mut rest = ops;
            for &n in lengths {
                let n = n.min(rest.len());
                let (batch, tail) = std::mem::take(&mut rest).split_at_mut(n);
                rest = tail;
                let result = match self.apply_now(batch, now, rule) {
                    Some(result) => result,
                    None => self.apply(batch, now, rule).await,
                };
                results.push(result);
            }
            results
        })
    }

    /// Gives back `unused` tokens of an earlier lease on `op`'s counter, then takes up to
    /// `want` more, atomically ([`Limit::refund`], [`Limit::lease`]).
    fn lease<'a>(&'a self, op: &'a LimitOp, unused: u64, want: u64, now: Nanos) -> LeaseFuture<'a>;

    /// Evaluates `ops` at `now` all or nothing, like [`Store::apply`], and when the batch
    /// admits, keeps what each op took as the hold `hold` ([`crate::hold`]): concurrency
    /// ops take their slots until the hold's deadline. A denied batch takes nothing and
    /// keeps no hold.
    fn reserve<'a>(
        &'a self,
        ops: &'a mut [LimitOp],
        hold: HoldSpec,
        now: Nanos,
    ) -> StoreFuture<'a> {
        let _ = (ops, hold, now);
        Box::pin(std::future::ready(Err(NO_HOLDS)))
    }

    /// [`Store::reserve`] without waiting, for stores that never wait; `None` means "call
    /// [`Store::reserve`]".
    fn reserve_now(
        &self,
        ops: &mut [LimitOp],
        hold: HoldSpec,
        now: Nanos,
    ) -> Option<Result<(), StoreError>> {
        let _ = (ops, hold, now);
        None
    }

    /// [`Store::settle`] without waiting, for stores that never wait; `None` means "call
    /// [`Store::settle`]".
    fn settle_now(
        &self,
        id: HoldId,
        how: Settle,
        now: Nanos,
    ) -> Option<Result<SettleOutcome, StoreError>> {
        let _ = (id, how, now);
        None
    }

    /// Settles the hold `id` ([`crate::hold::settlement`] per counter), once: a repeat
    /// answers as the first did, for [`crate::hold::SETTLED_KEPT`].
    fn settle<'a>(&'a self, id: HoldId, how: Settle, now: Nanos) -> SettleFuture<'a> {
        let _ = (id, how, now);
        Box::pin(std::future::ready(Err(NO_HOLDS)))
    }

    /// Keeps the live hold `id` until `deadline` (a lease's heartbeat).
    fn extend<'a>(&'a self, id: HoldId, deadline: Nanos, now: Nanos) -> ExtendFuture<'a> {
        let _ = (id, deadline, now);
        Box::pin(std::future::ready(Err(NO_HOLDS)))
    }

    /// Whether counters are shared with other nodes (Redis), so that `consistency` matters;
    /// false for the in-memory store, where every policy is simply exact.
    fn is_shared(&self) -> bool {
        false
    }

    /// Whether the store is answering (false while a circuit breaker is open); drives
    /// `/readyz`.
    fn is_available(&self) -> bool {
        true
    }

    /// A short name for logs and metrics (`memory`, `redis`).
    fn kind(&self) -> &'static str;

    /// What the store counts about itself, for `/metrics`.
    fn report(&self) -> StoreReport {
        StoreReport::default()
    }

    /// Drops counters that expired before `now` from a store that keeps them in this
    /// process; returns how many. Shared stores expire their own.
    fn sweep(&self, now: Nanos) -> usize {
        let _ = now;
        0
    }

    /// Prepares the calling thread to use this store from its own runtime (a server calls
    /// it once in each worker thread; Redis opens the thread's own connection there). On
    /// an error the store still works, through a connection shared with other threads.
    fn attach_current_thread(&self) -> StoreFuture<'_> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// What a store counts about itself ([`Store::report`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreReport {
    /// Counters held in this process, for stores that hold them here.
    pub keys: Option<u64>,
    /// New counters refused because the store was full.
    pub overflows: u64,
    /// Calls to a remote store, for stores that make them.
    pub calls: Option<StoreCalls>,
}

/// Calls made to a remote store, by how they ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCalls {
    /// Answered.
    pub ok: u64,
    /// Failed with an error from the store or the connection.
    pub error: u64,
    /// Missed their deadline.
    pub timeout: u64,
    /// Not made because the circuit breaker was open.
    pub circuit_open: u64,
}
