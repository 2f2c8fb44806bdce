//! Deciding over a shared store: each op goes where its policy's `consistency` says
//! (leased tokens, this node's memory, or one call to the store), the request's verdict is
//! taken over all of them, and what was taken is given back when it is denied. Store
//! failures are answered by each policy's `on_store_error`.

use std::sync::atomic::Ordering;

use smallvec::SmallVec;

use super::{Limiter, Plan};
use crate::lease::Take;
use crate::policy::{Consistency, OnStoreError};
use crate::store::{CommitRule, LimitOp, StoreError, batch_admits};
use crate::{Limit, Nanos, Outcome, Span, instant_after};

impl Limiter {
    /// Leased ops spend local tokens, local ops use this node's memory, global ops make one
    /// store call; then, if the request is denied, whatever was taken is given back.
    pub(super) async fn decide_shared(&self, plan: &mut Plan) {
        let rule = self.commit_rule;
        let now = plan.now;
        let by = |c: Consistency| -> SmallVec<[usize; 4]> {
            (0..plan.ops.len())
                .filter(|&i| plan.consistency[i] == c)
                .collect()
        };
        let (leased, local, global) = (
            by(Consistency::Leased),
            by(Consistency::Local),
            by(Consistency::Global),
        );
        // Taken before the verdict, given back if the request is denied.
        let mut taken_leases: SmallVec<[usize; 2]> = SmallVec::new();
        let mut taken_local: SmallVec<[LimitOp; 2]> = SmallVec::new();

        for &i in &leased {
            match self.spend_lease(&plan.ops[i], plan.lease[i], now).await {
                Ok(outcome) => {
                    if outcome.allowed && plan.ops[i].cost > 0 {
                        taken_leases.push(i);
                    }
                    plan.ops[i].outcome = Some(outcome);
                }
                Err(e) => {
                    let fallback = self.answer_without_store(plan, &[i], e);
                    taken_local.extend(fallback);
                }
            }
        }
        if !local.is_empty() {
            taken_local.extend(self.apply_locally(plan, &local, |limit| limit));
        }
        if !global.is_empty() {
            // What the ops decided so far (leased and local) says of the request: denied
            // by a regular limit, or by a quota group that is all over and has no member
            // left in the store; or a quota group already satisfied, whose members in the
            // store then decide nothing.
            let decided = |o: &&LimitOp| o.outcome.is_some();
            let over = |o: &LimitOp| o.enforce && o.outcome.is_some_and(|x| !x.allowed);
            let regular_over = (plan.ops.iter().filter(decided)).any(|o| !o.quota && over(o));
            let (quota_satisfied, quota_all_over) = if plan.ops.iter().any(|o| o.quota) {
                let mut done = plan
                    .ops
                    .iter()
                    .filter(decided)
                    .filter(|o| o.quota)
                    .peekable();
                let started = done.peek().is_some();
                let satisfied = done.any(|o| !over(o));
                let left = global.iter().any(|&i| plan.ops[i].quota);
                (satisfied, started && !satisfied && !left)
            } else {
                (false, false)
            };
            let denied_already =
                rule == CommitRule::AllOrNothing && (regular_over || quota_all_over);
            let mut ops: SmallVec<[LimitOp; 4]> = global
                .iter()
                .map(|&i| {
                    let op = plan.ops[i];
                    if quota_satisfied {
                        undecided_quota(op)
                    } else {
                        op
                    }
                })
                .collect();
            if denied_already {
                // Denied by a lease or a local limit: only ask what is left.
                for op in ops.iter_mut() {
                    op.cost = 0;
                }
            }
            match self.store.apply(&mut ops, now, rule).await {
                Ok(()) => {
                    for (op, &i) in ops.into_iter().zip(&global) {
                        plan.ops[i].outcome = op.outcome;
                    }
                }
                Err(e) => {
                    let fallback = self.answer_without_store(plan, &global, e);
                    taken_local.extend(fallback);
                }
            }
        }
        if rule == CommitRule::AllOrNothing && !batch_admits(&plan.ops) {
            for &i in &taken_leases {
                self.leases.give_back(plan.ops[i].key, plan.ops[i].cost);
            }
            self.local.refund(&taken_local, now);
        }
    }

    /// One leased op: spend local tokens, or fetch a lease (giving back an expired one).
    async fn spend_lease(
        &self,
        op: &LimitOp,
        lease: Option<u64>,
        now: Nanos,
    ) -> Result<Outcome, StoreError> {
        let want = lease
            .unwrap_or_else(|| op.limit.burst().div_ceil(self.lease_divisor))
            .max(op.cost)
            .max(1);
        let low_water = want / 2;
        let granted = |left: u64, store_remaining: u64, reset_at: Nanos| Outcome {
            allowed: true,
            remaining: left.saturating_add(store_remaining),
            reset_after: Span::from(reset_at.saturating_sub(now)),
            retry_after: None,
            state: Default::default(),
        };
        let denied = |retry_at: Nanos, reset_at: Nanos| Outcome {
            allowed: false,
            remaining: 0,
            reset_after: Span::from(reset_at.saturating_sub(now)),
            retry_after: (op.cost <= op.limit.burst())
                .then(|| Span::from(retry_at.saturating_sub(now).max(1))),
            state: Default::default(),
        };
        let taken = self.leases.take(op.key, op.limit, op.cost, low_water, now);
        match taken {
            Take::Taken {
                left,
                store_remaining,
                reset_at,
                refill,
            } => {
                if refill {
                    // Fetched ahead of need by the request that crossed the low-water mark,
                    // so that the others keep spending without a round trip.
                    match self.store.lease(op, 0, want, now).await {
                        Ok(grant) => {
                            self.leases.fill(
                                op.key,
                                op.group,
                                op.limit,
                                &grant,
                                0,
                                self.lease_ttl,
                                now,
                                true,
                            );
                        }
                        Err(_) => self.leases.fetch_failed(op.key),
                    }
                }
                Ok(granted(left, store_remaining, reset_at))
            }
            Take::Exhausted { retry_at, reset_at } => Ok(denied(retry_at, reset_at)),
            Take::Fetch { .. } | Take::FetchCost => {
                // A full lease for the caller that fetches it; just this request's cost for
                // those that arrive while it is in flight.
                let (unused, ask, full) = match taken {
                    Take::Fetch { unused } => (unused, want, true),
                    _ => (0, op.cost, false),
                };
                let grant = match self.store.lease(op, unused, ask, now).await {
                    Ok(grant) => {
                        if unused > 0 {
                            self.lease_tokens_returned
                                .fetch_add(unused, Ordering::Relaxed);
                        }
                        grant
                    }
                    Err(e) => {
                        if full {
                            self.leases.fetch_failed(op.key);
                        }
                        return Err(e);
                    }
                };
                let (spent, left) = self.leases.fill(
                    op.key,
                    op.group,
                    op.limit,
                    &grant,
                    op.cost,
                    self.lease_ttl,
                    now,
                    full,
                );
                let reset_at = instant_after(now, grant.reset_after);
                if spent {
                    Ok(granted(left, grant.remaining, reset_at))
                } else {
                    let wait = grant.retry_after.unwrap_or(Span::from(grant.valid_for));
                    Ok(denied(instant_after(now, wait), reset_at))
                }
            }
        }
    }

    /// Fills the outcome of ops `which` from their policies' `on_store_error` after a store
    /// failure. `local` enforces `limit / nodes` in this node's memory; the ops it admitted
    /// (and so charged) are returned, to be given back if the request is denied.
    pub(super) fn answer_without_store(
        &self,
        plan: &mut Plan,
        which: &[usize],
        error: StoreError,
    ) -> SmallVec<[LimitOp; 2]> {
        let local: SmallVec<[usize; 4]> = which
            .iter()
            .copied()
            .filter(|&i| plan.on_error[i] == OnStoreError::Local)
            .collect();
        let nodes = self.nodes;
        let charged = if local.is_empty() {
            SmallVec::new()
        } else {
            self.apply_locally(plan, &local, |limit| limit.divided(nodes))
        };
        for &i in which {
            plan.failed[i] = true;
            let allowed = match plan.on_error[i] {
                OnStoreError::Allow => true,
                OnStoreError::Deny => false,
                OnStoreError::Local => continue,
            };
            plan.ops[i].outcome = Some(Outcome {
                allowed,
                remaining: 0,
                reset_after: 0,
                retry_after: None,
                state: Default::default(),
            });
        }
        plan.store_error = Some(error);
        charged
    }

    /// Applies ops `which` of `plan` (with their limits mapped by `limit`) to this node's
    /// memory as one part of the request, writes their outcomes back, and returns what was
    /// charged, to be given back if the whole request is denied. The quota group is decided
    /// over the whole request at the end, so here its members decide nothing.
    fn apply_locally(
        &self,
        plan: &mut Plan,
        which: &[usize],
        limit: impl Fn(Limit) -> Limit,
    ) -> SmallVec<[LimitOp; 2]> {
        let mut ops: SmallVec<[LimitOp; 4]> = which
            .iter()
            .map(|&i| {
                let mut op = undecided_quota(plan.ops[i]);
                op.limit = limit(op.limit);
                op
            })
            .collect();
        self.local.apply_with(&mut ops, plan.now, self.commit_rule);
        let mut charged = SmallVec::new();
        if batch_admits(&ops) {
            // Only what was charged can be given back.
            charged.extend(
                ops.iter()
                    .copied()
                    .filter(|o| o.outcome.is_some_and(|x| x.allowed)),
            );
        }
        for (op, &i) in ops.into_iter().zip(which) {
            plan.ops[i].outcome = op.outcome;
        }
        charged
    }
}

/// `op` as a member of a quota group whose verdict is taken elsewhere: charged if it
/// admits, never denying.
fn undecided_quota(mut op: LimitOp) -> LimitOp {
    op.enforce &= !op.quota;
    op
}
