//! Limits named by the caller rather than by a policy: redis-cell's `CL.THROTTLE key …`
//! carries its own parameters with each call. Each key is one counter in a namespace of
//! its own (a front end's, so `CL.THROTTLE user:1` and a policy's counters never meet),
//! kept in the limiter's store like any other, so nodes sharing a store share these too.

use super::Limiter;
use crate::algorithm::{Limit, Outcome};
use crate::key::CounterKey;
use crate::store::{CommitRule, LimitOp, StoreError};

impl Limiter {
    /// The counter of `key` in `namespace`, and its group: each key is a group of its own,
    /// so a Cluster spreads them over its slots (a decision touches one key).
    pub fn named_key(&self, namespace: &str, key: &[u8]) -> (CounterKey, u64) {
        let mut builder = self.keys.start(0xfd, namespace);
        builder.bytes(key);
        let counter = builder.finish();
        (counter, counter.0)
    }

    /// Decides `cost` against `limit` on the counter of `key` in `namespace`, straight on
    /// the store (no policy, no lease, no `on_store_error`: the caller hears of a store
    /// failure). A cost of 0 only reads.
    pub async fn check_named(
        &self,
        namespace: &str,
        key: &[u8],
        limit: Limit,
        cost: u64,
    ) -> Result<Outcome, StoreError> {
        let mut ops = [self.named_op(namespace, key, limit, cost)];
        let now = self.clock.now();
        // The caller's semantics (redis-cell's): a denial changes nothing, whatever
        // commit rule the policies follow.
        let rule = CommitRule::AllOrNothing;
        match self.store.apply_now(&mut ops, now, rule) {
            Some(result) => result?,
            None => self.store.apply(&mut ops, now, rule).await?,
        }
        let [op] = ops;
        decided(&op)
    }

    /// The op of a named check: its counter, in its own group on a shared store.
    fn named_op(&self, namespace: &str, key: &[u8], limit: Limit, cost: u64) -> LimitOp {
        let (counter, group) = self.named_key(namespace, key);
        let mut op = LimitOp::new(counter, limit, cost, true);
        if self.store.is_shared() {
            op.group = group;
        }
        op
    }

    /// [`Limiter::check_named`] for independent `(key, limit, cost)` checks, answered in
    /// order: sent to the store together ([`crate::Store::apply_many`]), so a pipeline of
    /// them costs one round trip rather than one each.
    pub async fn check_named_many(
        &self,
        namespace: &str,
        checks: &[(&[u8], Limit, u64)],
    ) -> Vec<Result<Outcome, StoreError>> {
        let mut ops: Vec<LimitOp> = checks
            .iter()
            .map(|&(key, limit, cost)| self.named_op(namespace, key, limit, cost))
            .collect();
        let lengths = vec![1; ops.len()];
        let now = self.clock.now();
        let results = self
            .store
            .apply_many(&mut ops, &lengths, now, CommitRule::AllOrNothing)
            .await;
        (results.into_iter().zip(&ops))
            .map(|(result, op)| result.and_then(|()| decided(op)))
            .collect()
    }
}

/// An applied op's outcome.
fn decided(op: &LimitOp) -> Result<Outcome, StoreError> {
    op.outcome.ok_or(StoreError::Unsupported(
        "the store answered without deciding",
    ))
}
