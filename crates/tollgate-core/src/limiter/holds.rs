//! Reservations and concurrency leases through the limiter: the request is matched as a
//! check is, and the store takes and keeps the hold ([`crate::hold`]).
//!
//! Every op of a hold goes to the limiter's store, whatever its policy's `consistency`:
//! a hold must be settled from whichever node the caller reaches next, so it lives where
//! every node sees it. A store that cannot answer fails the reservation (no
//! `on_store_error` fallback: a hold that is not kept cannot be settled).

use super::{Decision, Limiter, Plan};
use crate::descriptor::{CheckRequest, RequestError};
use crate::hold::{ExtendOutcome, HoldId, HoldKind, MAX_HOLD_TTL, Settle, SettleOutcome};
use crate::store::{HoldSpec, StoreError};
use crate::time::Nanos;

/// The answer to [`Limiter::reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The decision, as a check with the estimate as its cost would have it.
    pub decision: Decision,
    /// The hold's id when admitted; nothing is held when denied.
    pub id: Option<HoldId>,
    /// When the store releases the hold by itself.
    pub deadline: Nanos,
}

/// Why a hold could not be taken or extended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoldError {
    /// The request is malformed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A TTL of zero or longer than [`MAX_HOLD_TTL`].
    #[error("ttl_ms must be between 1 and {max} (a day), got {got}", max = MAX_HOLD_TTL / 1_000_000)]
    Ttl {
        /// The TTL asked for, in milliseconds.
        got: u64,
    },
    /// The store could not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A TTL given in milliseconds, as nanoseconds: 1 ms to [`MAX_HOLD_TTL`], or
/// [`HoldError::Ttl`].
pub fn hold_ttl_from_millis(ms: u64) -> Result<Nanos, HoldError> {
    match ms.checked_mul(1_000_000) {
        Some(ns) if ms > 0 && ns <= MAX_HOLD_TTL => Ok(ns),
        _ => Err(HoldError::Ttl { got: ms }),
    }
}

/// Checks a TTL given in nanoseconds.
fn check_ttl(ttl: Nanos) -> Result<Nanos, HoldError> {
    if ttl == 0 || ttl > MAX_HOLD_TTL {
        return Err(HoldError::Ttl {
            got: ttl / 1_000_000,
        });
    }
    Ok(ttl)
}

impl Limiter {
    /// Takes `request`'s cost (the estimate) on every limit it matches, all or nothing,
    /// and keeps it as a hold of `kind` for `ttl` nanoseconds.
    pub async fn reserve(
        &self,
        request: &CheckRequest<'_>,
        kind: HoldKind,
        ttl: Nanos,
    ) -> Result<Reservation, HoldError> {
        let ttl = check_ttl(ttl)?;
        let mut plan = Plan::default();
        self.plan(request, &mut plan)?;
        let id = HoldId::fresh(self.keys.group(request.domain));
        let deadline = plan.now.saturating_add(ttl);
        let hold = HoldSpec { id, kind, deadline };
        match self.store.reserve_now(&mut plan.ops, hold, plan.now) {
            Some(result) => result?,
            None => self.store.reserve(&mut plan.ops, hold, plan.now).await?,
        }
        let decision = self.finish(&mut plan);
        Ok(Reservation {
            id: decision.allowed.then_some(id),
            decision,
            deadline,
        })
    }

    /// Settles the hold `id`: see [`Settle`].
    pub async fn settle(&self, id: HoldId, how: Settle) -> Result<SettleOutcome, StoreError> {
        let now = self.clock.now();
        match self.store.settle_now(id, how, now) {
            Some(result) => result,
            None => self.store.settle(id, how, now).await,
        }
    }

    /// Keeps the hold `id` for `ttl` nanoseconds from now (a lease's heartbeat).
    pub async fn extend_hold(&self, id: HoldId, ttl: Nanos) -> Result<ExtendOutcome, HoldError> {
        let ttl = check_ttl(ttl)?;
        let now = self.clock.now();
        Ok(self.store.extend(id, now.saturating_add(ttl), now).await?)
    }
}
