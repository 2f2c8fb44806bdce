//! Check-then-report, the way Limitador's `CheckRateLimit` and `Report` split a decision:
//! a probe that asks whether a cost would fit without taking it, and a report that charges
//! what was used whether it fits or not.
//!
//! Between the two, every concurrent request may pass the probe before any report lands:
//! that overshoot is what reservations ([`Limiter::reserve`]) avoid. Both read and write
//! each counter where a check does, so probes, reports and checks see one another.

use super::{Decision, Limiter, Plan};
use crate::descriptor::{CheckRequest, RequestError};
use crate::store::CommitRule;

impl Limiter {
    /// Whether `request`'s cost would fit on every limit it matches now, taking nothing.
    /// An op admits when what is left covers its cost; a denied one reports no
    /// `retry_after` (nothing was asked of the store beyond what is left). Store failures
    /// are answered by each policy's `on_store_error`, as for a check.
    pub async fn probe(&self, request: &CheckRequest<'_>) -> Result<Decision, RequestError> {
        let mut plan = Plan::default();
        self.plan(request, &mut plan)?;
        let costs: smallvec::SmallVec<[u64; 4]> = plan.ops.iter().map(|op| op.cost).collect();
        for op in plan.ops.iter_mut() {
            op.cost = 0;
        }
        self.apply_where_read(&mut plan, self.commit_rule).await;
        for (i, cost) in costs.into_iter().enumerate() {
            let op = &mut plan.ops[i];
            op.cost = cost;
            // An op answered by `on_store_error` keeps that answer.
            if let Some(outcome) = op.outcome.as_mut()
                && !plan.failed[i]
            {
                outcome.allowed = outcome.remaining >= cost;
                if !outcome.allowed {
                    outcome.retry_after = None;
                }
            }
        }
        Ok(self.finish(&mut plan))
    }

    /// Charges `request`'s cost to every limit it matches, past the limit if need be
    /// (envoyproxy/ratelimit's counting: a window counts past its limit, a GCRA bucket is
    /// emptied without going into debt, a concurrency limit takes no slot). The decision
    /// says whether the cost fitted; `store_error` is set when the store could not be
    /// charged, and then the policy's `on_store_error` answered.
    pub async fn report(&self, request: &CheckRequest<'_>) -> Result<Decision, RequestError> {
        let mut plan = Plan::default();
        self.plan(request, &mut plan)?;
        self.apply_where_read(&mut plan, CommitRule::EveryRequestCounts)
            .await;
        Ok(self.finish(&mut plan))
    }
}
