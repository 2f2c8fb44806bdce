//! The in-memory store: counters in sharded hash maps inside this process.
//!
//! - **Sharded**: a key's shard comes from its top bits; a decision locks only the shards
//!   its keys live in, in ascending order (so two decisions cannot deadlock), for the few
//!   nanoseconds the algorithm needs.
//! - **Small**: a counter is its 8-byte fingerprint and 16 bytes of state, nothing else.
//! - **Bounded**: a state's word 0 is the time after which it is equivalent to a fresh one
//!   ([`CounterState::expires_at`]); [`MemoryStore::sweep`] drops those, and `max_keys` caps
//!   what a key-spraying client can make it hold.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use smallvec::SmallVec;

use super::{
    CommitRule, ExtendFuture, HoldSpec, LeaseFuture, LeaseGrant, LimitOp, SettleFuture, Store,
    StoreError, StoreFuture, batch_admits,
};
use crate::algorithm::{Algorithm, CounterState};
use crate::hold::{
    ExtendOutcome, HeldOp, HoldId, HoldKind, SETTLED_KEPT, Settle, SettleOutcome, Settled, repeat,
    settled, settlement,
};
use crate::key::CounterKey;
use crate::time::Nanos;

/// Sizing of a [`MemoryStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStoreConfig {
    /// Number of shards; rounded up to a power of two.
    pub shards: usize,
    /// Most live counters kept; past it, new counters are decided but not remembered
    /// (counted in [`MemoryStore::overflows`]).
    pub max_keys: usize,
    /// Most reservations and leases held at once; past it a reservation is refused.
    /// Settled ones are remembered besides, up to four times as many (the oldest are
    /// forgotten first).
    pub max_holds: usize,
}

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        Self {
            shards: 128,
            max_keys: 16 << 20,
            max_holds: 1 << 20,
        }
    }
}

/// The keys are already uniform keyed hashes, so the map only needs them spread over its
/// bits: a multiply does that and leaves the top (tag) bits independent of the shard bits.
#[derive(Clone, Copy, Default)]
struct SpreadKey;

struct SpreadHasher(u64);

impl BuildHasher for SpreadKey {
    type Hasher = SpreadHasher;
    fn build_hasher(&self) -> SpreadHasher {
        SpreadHasher(0)
    }
}

impl Hasher for SpreadHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (x ^ (x >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Shard = HashMap<u64, CounterState, SpreadKey>;

/// One shard, alone on its cache line so that neighbouring locks do not contend.
#[repr(align(64))]
struct PaddedShard(Mutex<Shard>);

/// Counters in this process's memory. See the module docs.
pub struct MemoryStore {
    shards: Box<[PaddedShard]>,
    shift: u32,
    max_per_shard: usize,
    overflows: AtomicU64,
    holds: Mutex<HoldTable>,
    /// The earliest deadline in `holds` (`u64::MAX`: none): every decision reads it, and
    /// only one at or past it takes the table's lock to expire what is due.
    next_due: AtomicU64,
    max_holds: usize,
}

/// Reservations and leases ([`crate::hold`]). Lock order: this table, then shards.
#[derive(Default)]
struct HoldTable {
    live: HashMap<HoldId, LiveHold, foldhash::fast::RandomState>,
    /// Live holds by deadline.
    due: BTreeSet<(Nanos, HoldId)>,
    /// Settled holds, remembered until the time beside them (a lookup checks it: after a
    /// clock step back, `forget` is not in order and may drop them late).
    settled: HashMap<HoldId, (Settled, Nanos), foldhash::fast::RandomState>,
    /// Settled holds in the order they were settled, with their forget times: every
    /// settlement is kept for the same time, so the oldest is always first.
    forget: VecDeque<(Nanos, HoldId)>,
}

struct LiveHold {
    kind: HoldKind,
    deadline: Nanos,
    ops: SmallVec<[HeldOp; 2]>,
}

impl HoldTable {
    fn next_due(&self) -> Nanos {
        let live = self.due.first().map_or(Nanos::MAX, |&(t, _)| t);
        let settled = self.forget.front().map_or(Nanos::MAX, |&(t, _)| t);
        live.min(settled)
    }

    /// How `id` was settled, if it still is remembered at `now`.
    fn settled_at(&self, id: HoldId, now: Nanos) -> Option<Settled> {
        self.settled
            .get(&id)
            .filter(|&&(_, forget)| forget > now)
            .map(|&(how, _)| how)
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(MemoryStoreConfig::default())
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new(config: MemoryStoreConfig) -> Self {
        let count = config.shards.clamp(1, 1 << 16).next_power_of_two();
        let shards = (0..count)
            .map(|_| PaddedShard(Mutex::new(Shard::default())))
            .collect();
        Self {
            shards,
            shift: 64 - count.trailing_zeros(),
            max_per_shard: config.max_keys.div_ceil(count).max(1),
            overflows: AtomicU64::new(0),
            holds: Mutex::new(HoldTable::default()),
            next_due: AtomicU64::new(Nanos::MAX),
            max_holds: config.max_holds.max(1),
        }
    }

    #[inline]
    fn shard_of(&self, key: CounterKey) -> usize {
        // `checked_shr` covers the single-shard case, where the shift is 64.
        key.0.checked_shr(self.shift).unwrap_or(0) as usize
    }

    #[inline]
    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard lock cannot leave a slot half-written (slots are
        // replaced whole), so a poisoned lock is still safe to use.
        self.shards[shard]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Evaluates and commits `ops` atomically, all or nothing (see [`Store`]). Never fails.
    pub fn apply_sync(&self, ops: &mut [LimitOp], now: Nanos) {
        self.apply_with(ops, now, CommitRule::AllOrNothing);
    }

    /// Evaluates `ops` atomically and commits them by `rule`. Never fails.
    pub fn apply_with(&self, ops: &mut [LimitOp], now: Nanos, rule: CommitRule) {
        // No ops, no decision: holds expire on the next one, as on every store.
        if ops.is_empty() {
            return;
        }
        if now >= self.next_due.load(Ordering::Acquire) {
            self.expire_holds(now);
        }
        let every = rule == CommitRule::EveryRequestCounts;
        if let [op] = ops {
            let mut shard = self.lock(self.shard_of(op.key));
            let state = shard.get(&op.key.0).copied().unwrap_or_default();
            let outcome = op.limit.decide(state, op.cost, now);
            op.outcome = Some(outcome);
            if (op.cost > 0 || outcome.state != state) && (outcome.allowed || every) {
                let next = if every {
                    op.limit.charge(state, op.cost, now)
                } else {
                    outcome.state
                };
                self.commit(&mut shard, op.key, next);
            }
            return;
        }
        let mut order: SmallVec<[usize; 8]> = ops.iter().map(|op| self.shard_of(op.key)).collect();
        order.sort_unstable();
        order.dedup();
        let mut guards: SmallVec<[(usize, MutexGuard<'_, Shard>); 8]> =
            order.iter().map(|&s| (s, self.lock(s))).collect();
        let find = |guards: &SmallVec<[(usize, MutexGuard<'_, Shard>); 8]>, shard: usize| {
            guards.iter().position(|(s, _)| *s == shard).unwrap_or(0)
        };
        // The state each op leaves behind if the batch commits; a later op on the same
        // counter starts from it.
        let mut staged: SmallVec<[CounterState; 4]> = SmallVec::with_capacity(ops.len());
        for i in 0..ops.len() {
            let key = ops[i].key;
            let state = match (0..i).rev().find(|&j| ops[j].key == key) {
                Some(j) => staged[j],
                None => {
                    let g = &guards[find(&guards, self.shard_of(key))].1;
                    g.get(&key.0).copied().unwrap_or_default()
                }
            };
            let op = &mut ops[i];
            let outcome = op.limit.decide(state, op.cost, now);
            op.outcome = Some(outcome);
            staged.push(if every {
                op.limit.charge(state, op.cost, now)
            } else {
                outcome.state
            });
        }
        if !every && !batch_admits(ops) {
            // Nothing is consumed: ops that would have admitted report the counter as it is.
            for op in ops
                .iter_mut()
                .filter(|o| o.outcome.is_some_and(|out| out.allowed))
            {
                let g = &guards[find(&guards, self.shard_of(op.key))].1;
                let stored = g.get(&op.key.0).copied().unwrap_or_default();
                op.outcome = Some(op.limit.decide(stored, 0, now));
            }
            return;
        }
        for (op, next) in ops.iter().zip(staged) {
            let admitted_here = op.outcome.is_some_and(|o| o.allowed);
            // A zero cost changes nothing, except that it restarts an idle bucket.
            if (op.cost > 0 || op.limit.restart_debt() > 0) && (admitted_here || every) {
                let g = find(&guards, self.shard_of(op.key));
                self.commit(&mut guards[g].1, op.key, next);
            }
        }
    }

    fn lock_holds(&self) -> MutexGuard<'_, HoldTable> {
        // Every change to the table is whole before its lock is let go.
        self.holds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Releases every hold whose deadline has passed and forgets settled ones kept long
    /// enough; returns how many holds expired.
    pub fn expire_holds(&self, now: Nanos) -> usize {
        let mut table = self.lock_holds();
        let mut expired = 0;
        while let Some(&(at, id)) = table.due.first() {
            if at > now {
                break;
            }
            table.due.pop_first();
            if let Some(hold) = table.live.remove(&id) {
                for op in &hold.ops {
                    self.settle_op(op, hold.kind, Settle::Release, now);
                }
                expired += 1;
            }
        }
        while let Some(&(at, id)) = table.forget.front() {
            if at > now {
                break;
            }
            table.forget.pop_front();
            table.settled.remove(&id);
        }
        self.next_due.store(table.next_due(), Ordering::Release);
        expired
    }

    /// Gives back and charges what settling `op` as `how` means ([`settlement`]).
    fn settle_op(&self, op: &HeldOp, kind: HoldKind, how: Settle, now: Nanos) {
        let (back, more) = settlement(op, kind, how, now);
        if back == 0 && more == 0 {
            return;
        }
        let mut shard = self.lock(self.shard_of(op.key));
        let state = shard.get(&op.key.0).copied().unwrap_or_default();
        let next = op.limit.force(op.limit.refund(state, back, now), more, now);
        if next != state {
            self.commit(&mut shard, op.key, next);
        }
    }

    /// [`Store::reserve`] without waiting: whether the batch admitted (and the hold is
    /// kept), or an error when the hold table is full.
    pub fn reserve_sync(
        &self,
        ops: &mut [LimitOp],
        hold: HoldSpec,
        now: Nanos,
    ) -> Result<bool, StoreError> {
        if self.lock_holds().live.len() >= self.max_holds {
            self.expire_holds(now);
            if self.lock_holds().live.len() >= self.max_holds {
                return Err(StoreError::Unsupported(
                    "too many reservations and leases held at once",
                ));
            }
        }
        super::hold_ops(ops, &hold);
        self.apply_with(ops, now, CommitRule::AllOrNothing);
        if !batch_admits(ops) {
            return Ok(false);
        }
        let held = ops
            .iter()
            .filter(|op| op.cost > 0 && op.outcome.is_some_and(|o| o.allowed))
            .map(|op| HeldOp {
                key: op.key,
                limit: op.limit,
                amount: op.cost,
                taken_at: now,
            })
            .collect();
        let mut table = self.lock_holds();
        table.live.insert(
            hold.id,
            LiveHold {
                kind: hold.kind,
                deadline: hold.deadline,
                ops: held,
            },
        );
        table.due.insert((hold.deadline, hold.id));
        self.next_due.store(table.next_due(), Ordering::Release);
        Ok(true)
    }

    /// [`Store::settle`] without waiting.
    pub fn settle_sync(&self, id: HoldId, how: Settle, now: Nanos) -> SettleOutcome {
        if now >= self.next_due.load(Ordering::Acquire) {
            self.expire_holds(now);
        }
        let mut table = self.lock_holds();
        if let Some(hold) = table.live.remove(&id) {
            table.due.remove(&(hold.deadline, id));
            for op in &hold.ops {
                self.settle_op(op, hold.kind, how, now);
            }
            let done = settled(how);
            let forget = now.saturating_add(SETTLED_KEPT);
            table.settled.insert(id, (done, forget));
            table.forget.push_back((forget, id));
            while table.forget.len() > self.max_holds.saturating_mul(4) {
                if let Some((_, oldest)) = table.forget.pop_front() {
                    table.settled.remove(&oldest);
                }
            }
            self.next_due.store(table.next_due(), Ordering::Release);
            return SettleOutcome::Settled {
                how: done,
                repeated: false,
            };
        }
        match table.settled_at(id, now) {
            Some(already) => repeat(already, how),
            None => SettleOutcome::Unknown,
        }
    }

    /// [`Store::extend`] without waiting.
    pub fn extend_sync(&self, id: HoldId, deadline: Nanos, now: Nanos) -> ExtendOutcome {
        if now >= self.next_due.load(Ordering::Acquire) {
            self.expire_holds(now);
        }
        let mut table = self.lock_holds();
        let Some(hold) = table.live.get_mut(&id) else {
            return match table.settled_at(id, now) {
                Some(already) => ExtendOutcome::Settled(already),
                None => ExtendOutcome::Unknown,
            };
        };
        let before = hold.deadline;
        hold.deadline = deadline;
        for op in hold
            .ops
            .iter()
            .filter(|op| op.limit.algorithm() == Algorithm::Concurrency)
        {
            let mut shard = self.lock(self.shard_of(op.key));
            if let Some(state) = shard.get_mut(&op.key.0) {
                *state = op.limit.extend(*state, deadline, now);
            }
        }
        table.due.remove(&(before, id));
        table.due.insert((deadline, id));
        self.next_due.store(table.next_due(), Ordering::Release);
        ExtendOutcome::Extended { deadline }
    }

    /// Reservations and leases held now (settled ones not counted).
    pub fn live_holds(&self) -> usize {
        self.lock_holds().live.len()
    }

    /// Gives back `cost` that admitted `ops` took (see [`crate::Limit::refund`]).
    pub fn refund(&self, ops: &[LimitOp], now: Nanos) {
        for op in ops.iter().filter(|op| op.cost > 0) {
            let mut shard = self.lock(self.shard_of(op.key));
            if let Some(state) = shard.get_mut(&op.key.0) {
                *state = op.limit.refund(*state, op.cost, now);
            }
        }
    }

    /// [`Store::lease`] without waiting.
    pub fn lease_sync(&self, op: &LimitOp, unused: u64, want: u64, now: Nanos) -> LeaseGrant {
        if now >= self.next_due.load(Ordering::Acquire) {
            self.expire_holds(now);
        }
        let mut shard = self.lock(self.shard_of(op.key));
        let mut state = shard.get(&op.key.0).copied().unwrap_or_default();
        let before = state;
        state = op.limit.refund(state, unused, now);
        let (granted, outcome) = op.limit.lease(state, want, now);
        if granted > 0 {
            state = outcome.state;
        }
        if state != before {
            self.commit(&mut shard, op.key, state);
        }
        LeaseGrant::from_outcome(granted, &outcome, op.limit.lease_valid_for(now))
    }

    #[inline]
    fn commit(&self, shard: &mut Shard, key: CounterKey, state: CounterState) {
        if let Some(existing) = shard.get_mut(&key.0) {
            *existing = state;
        } else if shard.len() < self.max_per_shard {
            shard.insert(key.0, state);
        } else {
            self.overflows.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops every counter that is equivalent to a fresh one at `now`, one shard at a time,
    /// and gives memory back when a shard has shrunk a lot. Returns how many were dropped.
    pub fn sweep(&self, now: Nanos) -> usize {
        self.expire_holds(now);
        let mut dropped = 0;
        for shard in 0..self.shards.len() {
            let mut map = self.lock(shard);
            let before = map.len();
            map.retain(|_, state| state.expires_at() > now);
            dropped += before - map.len();
            if map.capacity() > 64 && map.len() < map.capacity() / 4 {
                let target = map.len() * 2;
                map.shrink_to(target);
            }
        }
        dropped
    }

    /// Live counters (including expired ones not yet swept).
    pub fn len(&self) -> usize {
        (0..self.shards.len()).map(|s| self.lock(s).len()).sum()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// New counters that were decided but not remembered because the store was full.
    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }

    /// The state of one counter, for inspection (admin APIs, tests).
    pub fn get(&self, key: CounterKey) -> Option<CounterState> {
        self.lock(self.shard_of(key)).get(&key.0).copied()
    }
}

impl Store for MemoryStore {
    fn apply<'a>(
        &'a self,
        ops: &'a mut [LimitOp],
        now: Nanos,
        rule: CommitRule,
    ) -> StoreFuture<'a> {
        self.apply_with(ops, now, rule);
        Box::pin(std::future::ready(Ok(())))
    }

    #[inline]
    fn apply_now(
        &self,
        ops: &mut [LimitOp],
        now: Nanos,
        rule: CommitRule,
    ) -> Option<Result<(), StoreError>> {
        self.apply_with(ops, now, rule);
        Some(Ok(()))
    }

    fn lease<'a>(&'a self, op: &'a LimitOp, unused: u64, want: u64, now: Nanos) -> LeaseFuture<'a> {
        let grant = self.lease_sync(op, unused, want, now);
        Box::pin(std::future::ready(Ok(grant)))
    }

    fn reserve<'a>(
        &'a self,
        ops: &'a mut [LimitOp],
        hold: HoldSpec,
        now: Nanos,
    ) -> StoreFuture<'a> {
        let result = self.reserve_sync(ops, hold, now).map(|_| ());
        Box::pin(std::future::ready(result))
    }

    fn reserve_now(
        &self,
        ops: &mut [LimitOp],
        hold: HoldSpec,
        now: Nanos,
    ) -> Option<Result<(), StoreError>> {
        Some(self.reserve_sync(ops, hold, now).map(|_| ()))
    }

    fn settle_now(
        &self,
        id: HoldId,
        how: Settle,
        now: Nanos,
    ) -> Option<Result<SettleOutcome, StoreError>> {
        Some(Ok(self.settle_sync(id, how, now)))
    }

    fn settle<'a>(&'a self, id: HoldId, how: Settle, now: Nanos) -> SettleFuture<'a> {
        Box::pin(std::future::ready(Ok(self.settle_sync(id, how, now))))
    }

    fn extend<'a>(&'a self, id: HoldId, deadline: Nanos, now: Nanos) -> ExtendFuture<'a> {
        Box::pin(std::future::ready(Ok(self.extend_sync(id, deadline, now))))
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn report(&self) -> super::StoreReport {
        // Counting takes every shard lock briefly: fine at scrape frequency.
        super::StoreReport {
            keys: Some(self.len() as u64),
            overflows: self.overflows(),
            calls: None,
        }
    }

    fn sweep(&self, now: Nanos) -> usize {
        MemoryStore::sweep(self, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Limit;
    use crate::time::SECOND;

    fn op(key: u64, limit: Limit, cost: u64) -> LimitOp {
        LimitOp::new(CounterKey(key), limit, cost, true)
    }

    #[test]
    fn a_denied_batch_consumes_nothing() {
        let store = MemoryStore::default();
        let per_second = Limit::fixed_window(5, SECOND).unwrap();
        let per_day = Limit::fixed_window(100, 86_400 * SECOND).unwrap();
        let now = 1_000 * SECOND;
        for _ in 0..5 {
            let mut ops = [op(1, per_second, 1), op(2, per_day, 1)];
            store.apply_sync(&mut ops, now);
            assert!(batch_admits(&ops));
        }
        let mut ops = [op(1, per_second, 1), op(2, per_day, 1)];
        store.apply_sync(&mut ops, now);
        assert!(!batch_admits(&ops));
        // The daily counter saw 5 requests, not 6.
        let mut peek = [op(2, per_day, 0)];
        store.apply_sync(&mut peek, now);
        assert_eq!(peek[0].outcome.unwrap().remaining, 95);
    }

    #[test]
    fn ops_on_one_counter_in_one_batch_add_up() {
        let store = MemoryStore::default();
        let limit = Limit::fixed_window(3, SECOND).unwrap();
        let mut ops = [op(9, limit, 2), op(9, limit, 2)];
        store.apply_sync(&mut ops, SECOND);
        assert!(ops[0].outcome.unwrap().allowed);
        assert!(!ops[1].outcome.unwrap().allowed);
        assert!(!batch_admits(&ops));
        assert_eq!(store.get(CounterKey(9)), None, "nothing committed");
    }

    #[test]
    fn shadow_ops_never_deny_the_batch() {
        let store = MemoryStore::default();
        let zero = Limit::fixed_window(0, SECOND).unwrap();
        let one = Limit::fixed_window(1, SECOND).unwrap();
        let mut ops = [LimitOp::new(CounterKey(1), zero, 1, false), op(2, one, 1)];
        store.apply_sync(&mut ops, SECOND);
        assert!(batch_admits(&ops));
        assert!(store.get(CounterKey(2)).is_some());
    }

    #[test]
    fn sweep_drops_expired_counters_only() {
        let store = MemoryStore::new(MemoryStoreConfig {
            shards: 4,
            max_keys: 1000,
            ..MemoryStoreConfig::default()
        });
        let second = Limit::fixed_window(10, SECOND).unwrap();
        let hour = Limit::fixed_window(10, 3_600 * SECOND).unwrap();
        let now = 7_200 * SECOND;
        for k in 0..100u64 {
            let limit = if k % 2 == 0 { second } else { hour };
            store.apply_sync(
                &mut [op(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), limit, 1)],
                now,
            );
        }
        assert_eq!(store.len(), 100);
        assert_eq!(store.sweep(now + 2 * SECOND), 50);
        assert_eq!(store.len(), 50);
    }

    #[test]
    fn a_full_store_still_decides_but_does_not_grow() {
        let store = MemoryStore::new(MemoryStoreConfig {
            shards: 1,
            max_keys: 10,
            ..MemoryStoreConfig::default()
        });
        let limit = Limit::fixed_window(1, SECOND).unwrap();
        for k in 0..20 {
            let mut ops = [op(k, limit, 1)];
            store.apply_sync(&mut ops, SECOND);
            assert!(ops[0].outcome.unwrap().allowed);
        }
        assert_eq!(store.len(), 10);
        assert_eq!(store.overflows(), 10);
    }
}
