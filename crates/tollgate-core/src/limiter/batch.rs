//! Many independent checks at once ([`Limiter::check_many`]): the pipelined front ends
//! (HTTP batches, RESP pipelines) hand a whole read's worth of checks to the store
//! together, so a remote store sees one round trip per hash-tag group instead of one per
//! check.

use super::{Decision, Limiter, Plan};
use crate::descriptor::{CheckRequest, RequestError};
use crate::policy::Consistency;
use crate::store::LimitOp;

impl Limiter {
    /// Decides independent `requests`, each answered as [`Limiter::check`] would answer it,
    /// in order; a malformed request gets its own error and the others still go ahead.
    ///
    /// Checks whose limits all live in the store (every check on the in-memory store, and
    /// `consistency: global` on a shared one) go to [`crate::Store::apply_many`] together,
    /// decided one after another in order within each hash-tag group. Checks with a
    /// `leased` or `local` limit are decided after them, one at a time.
    pub async fn check_many(
        &self,
        requests: &[CheckRequest<'_>],
    ) -> Vec<Result<Decision, RequestError>> {
        let mut plans: Vec<Result<Plan, RequestError>> = requests
            .iter()
            .map(|request| {
                let mut plan = Plan::default();
                self.plan(request, &mut plan).map(|()| plan)
            })
            .collect();
        let shared = self.store.is_shared();
        let together = |plan: &Plan| {
            !plan.ops.is_empty()
                && (!shared || plan.consistency.iter().all(|&c| c == Consistency::Global))
        };
        let now = self.clock.now();
        let mut ops: Vec<LimitOp> = Vec::new();
        let mut lengths: Vec<usize> = Vec::new();
        let mut batched: Vec<usize> = Vec::new();
        for (i, plan) in plans.iter_mut().enumerate() {
            if let Ok(plan) = plan
                && together(plan)
            {
                plan.now = now;
                batched.push(i);
                lengths.push(plan.ops.len());
                ops.extend_from_slice(&plan.ops);
            }
        }
        if !batched.is_empty() {
            let results = self
                .store
                .apply_many(&mut ops, &lengths, now, self.commit_rule)
                .await;
            let mut decided = ops.iter();
            for (&i, result) in batched.iter().zip(results) {
                let Ok(plan) = &mut plans[i] else { continue };
                for op in plan.ops.iter_mut() {
                    if let Some(answered) = decided.next() {
                        op.outcome = answered.outcome;
                    }
                }
                self.store_answered(plan, result);
            }
        }
        let mut answers = Vec::with_capacity(plans.len());
        for plan in plans {
            answers.push(match plan {
                Ok(mut plan) => {
                    if shared && !plan.ops.is_empty() && !together(&plan) {
                        self.decide_shared(&mut plan).await;
                    }
                    Ok(self.finish(&mut plan))
                }
                Err(e) => Err(e),
            });
        }
        answers
    }
}
