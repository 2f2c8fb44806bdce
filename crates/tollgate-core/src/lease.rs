//! Tokens this node leased from a shared store (`consistency: leased`), spent without a
//! round trip. Every token was taken from the store's counter before it is spent here, so
//! nodes together never admit more than the limit; what they can lose is the tokens a node
//! holds but does not spend (see `docs/design/consistency.md`).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::algorithm::{Algorithm, Limit};
use crate::key::CounterKey;
use crate::store::LeaseGrant;
use crate::time::{Nanos, Span, instant_after};

const SHARDS: usize = 64;

/// A full lease request older than this is presumed lost (its request was dropped) and
/// another may start.
const FETCH_STALE: Nanos = crate::time::SECOND;

/// Unspent tokens of a window algorithm go back to the store only while their window has
/// at least this long to run on the node's clock: a store refunds into the window it is
/// in when the tokens arrive, and tokens of a window that has ended must not become
/// room in the next one. Past it they are dropped (they cost nothing once their window
/// is over).
pub const HAND_BACK_MARGIN: Nanos = crate::time::SECOND / 10;

#[derive(Debug, Clone, Copy)]
struct Slot {
    limit: Limit,
    /// The counter's group ([`crate::LimitOp::group`]), to hand tokens back on expiry.
    group: u64,
    tokens: u64,
    /// The tokens may be spent before this time (node clock).
    valid_until: Nanos,
    /// For window algorithms, when the window the tokens were counted in ends at the
    /// latest (node clock); `Nanos::MAX` for the others.
    window_end: Nanos,
    /// What the store had left at the last grant (reported, not enforced).
    store_remaining: u64,
    reset_at: Nanos,
    /// The store had nothing to lease: deny here until then.
    exhausted_until: Nanos,
    /// When the full lease now in flight was asked for (initial fetch or refill).
    fetching_since: Option<Nanos>,
}

impl Slot {
    fn empty(limit: Limit) -> Self {
        Self {
            limit,
            group: 0,
            tokens: 0,
            valid_until: 0,
            window_end: Nanos::MAX,
            store_remaining: 0,
            reset_at: 0,
            exhausted_until: 0,
            fetching_since: None,
        }
    }

    fn fetching(&self, now: Nanos) -> bool {
        self.fetching_since
            .is_some_and(|since| now.saturating_sub(since) < FETCH_STALE)
    }

    /// Takes the tokens out of the slot: those that may go back to the store at `now`
    /// ([`HAND_BACK_MARGIN`]), none if their window is (nearly) over.
    fn take_returnable(&mut self, now: Nanos) -> u64 {
        let tokens = std::mem::take(&mut self.tokens);
        if now.saturating_add(HAND_BACK_MARGIN) < self.window_end {
            tokens
        } else {
            0
        }
    }
}

/// What [`LeaseTable::take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Spent locally. `refill`: tokens ran low and this caller should fetch the next lease.
    Taken {
        /// Tokens this node still holds.
        left: u64,
        /// Tokens the store had left at the last grant.
        store_remaining: u64,
        /// When the counter is full again.
        reset_at: Nanos,
        /// Whether the caller should fetch a full lease now.
        refill: bool,
    },
    /// The store is known to be out of tokens until `retry_at`.
    Exhausted {
        /// When a lease may succeed again.
        retry_at: Nanos,
        /// When the counter is full again.
        reset_at: Nanos,
    },
    /// Ask the store: give back `unused` tokens and take a full lease, which this caller
    /// is now the one fetching.
    Fetch {
        /// Tokens of a lease that may no longer be spent, to give back.
        unused: u64,
    },
    /// Another request is fetching the full lease: take just this request's cost, so that
    /// concurrent misses never pile up tokens on one node.
    FetchCost,
}

/// A lease that ran out of time with tokens left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiredLease {
    /// The counter.
    pub key: CounterKey,
    /// Its group.
    pub group: u64,
    /// Its limit.
    pub limit: Limit,
    /// Tokens never spent.
    pub unused: u64,
}

/// Leases held by this node, per counter.
#[derive(Debug)]
pub struct LeaseTable {
    shards: Box<[Mutex<HashMap<u64, Slot>>]>,
}

impl Default for LeaseTable {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl LeaseTable {
    fn shard(&self, key: CounterKey) -> MutexGuard<'_, HashMap<u64, Slot>> {
        // Slots are replaced whole; a poisoned lock still guards consistent data.
        self.shards[(key.0 >> 58) as usize % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Spends `cost` tokens of `key`'s lease if it holds enough; `low_water` is the level
    /// under which the next lease is fetched ahead of need.
    pub fn take(
        &self,
        key: CounterKey,
        limit: Limit,
        cost: u64,
        low_water: u64,
        now: Nanos,
    ) -> Take {
        let mut shard = self.shard(key);
        let slot = shard.entry(key.0).or_insert_with(|| Slot::empty(limit));
        if slot.limit != limit {
            // A changed policy: the old tokens belong to another limit; start over.
            *slot = Slot::empty(limit);
        }
        let fetching = slot.fetching(now);
        if slot.valid_until <= now && slot.tokens > 0 {
            // Expired: these tokens may no longer be spent here; they go back to the store
            // with the next full fetch.
            if fetching {
                return Take::FetchCost;
            }
            let unused = slot.take_returnable(now);
            slot.fetching_since = Some(now);
            return Take::Fetch { unused };
        }
        if slot.tokens >= cost && slot.valid_until > now {
            slot.tokens -= cost;
            // Not while the store is known to be empty: that would cost a round trip per
            // request for nothing.
            let refill = slot.tokens <= low_water && !fetching && now >= slot.exhausted_until;
            if refill {
                slot.fetching_since = Some(now);
            }
            return Take::Taken {
                left: slot.tokens,
                store_remaining: slot.store_remaining,
                reset_at: slot.reset_at,
                refill,
            };
        }
        if now < slot.exhausted_until {
            return Take::Exhausted {
                retry_at: slot.exhausted_until,
                reset_at: slot.reset_at,
            };
        }
        if fetching {
            return Take::FetchCost;
        }
        // Not enough here: hand the rest back with a full fetch.
        let unused = slot.take_returnable(now);
        slot.fetching_since = Some(now);
        Take::Fetch { unused }
    }

    /// Adds a grant fetched at `sent_at` (node clock, before the request left) and spends
    /// `cost` of it if it can. `full`: this was the full lease [`Take::Fetch`] or a refill
    /// asked for. Returns whether `cost` was spent and the tokens left.
    #[allow(clippy::too_many_arguments)]
    pub fn fill(
        &self,
        key: CounterKey,
        group: u64,
        limit: Limit,
        grant: &LeaseGrant,
        cost: u64,
        ttl: Nanos,
        sent_at: Nanos,
        full: bool,
    ) -> (bool, u64) {
        let mut shard = self.shard(key);
        // The store measured validity from its own now, which is after `sent_at`: counting
        // from `sent_at` can only end the lease early.
        let valid_until = sent_at.saturating_add(grant.valid_for.min(ttl));
        let slot = shard.entry(key.0).or_insert_with(|| Slot::empty(limit));
        if slot.limit != limit {
            *slot = Slot::empty(limit);
        }
        slot.group = group;
        if full {
            slot.fetching_since = None;
        }
        let window_end = match limit.algorithm() {
            Algorithm::FixedWindow | Algorithm::SlidingWindow | Algorithm::Quota => {
                sent_at.saturating_add(grant.valid_for)
            }
            Algorithm::Gcra | Algorithm::Concurrency => Nanos::MAX,
        };
        // Tokens already held keep their own (earlier) end: the merged lease ends first.
        (slot.valid_until, slot.window_end) = if slot.tokens == 0 {
            (valid_until, window_end)
        } else {
            (
                slot.valid_until.min(valid_until),
                slot.window_end.min(window_end),
            )
        };
        slot.tokens = slot.tokens.saturating_add(grant.granted);
        slot.store_remaining = grant.remaining;
        slot.reset_at = instant_after(sent_at, grant.reset_after);
        if grant.granted == 0 {
            let wait = grant
                .retry_after
                .unwrap_or(Span::from(grant.valid_for))
                .max(1);
            slot.exhausted_until = instant_after(sent_at, wait);
        }
        let spent = slot.tokens >= cost;
        if spent {
            slot.tokens -= cost;
        }
        (spent, slot.tokens)
    }

    /// Gives `cost` back to the lease it was taken from (the request was denied elsewhere).
    pub fn give_back(&self, key: CounterKey, cost: u64) {
        if let Some(slot) = self.shard(key).get_mut(&key.0) {
            slot.tokens = slot.tokens.saturating_add(cost);
        }
    }

    /// A full fetch failed: let the next caller try.
    pub fn fetch_failed(&self, key: CounterKey) {
        if let Some(slot) = self.shard(key).get_mut(&key.0) {
            slot.fetching_since = None;
        }
    }

    /// Removes leases that can no longer be spent and returns those that still hold
    /// tokens, for the caller to hand back to the store (`Store::lease` with `unused`).
    pub fn drain_expired(&self, now: Nanos) -> Vec<ExpiredLease> {
        self.drain(now, |s| {
            s.valid_until > now || s.exhausted_until > now || s.fetching(now)
        })
    }

    /// Removes every lease, returning those that still hold tokens their window can take
    /// back: a node that stops hands them back instead of stranding them until their
    /// window ends.
    pub fn drain_all(&self, now: Nanos) -> Vec<ExpiredLease> {
        self.drain(now, |_| false)
    }

    fn drain(&self, now: Nanos, keep: impl Fn(&Slot) -> bool) -> Vec<ExpiredLease> {
        let mut expired = Vec::new();
        for shard in self.shards.iter() {
            let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
            map.retain(|&key, s| {
                let live = keep(s);
                if !live {
                    let unused = s.take_returnable(now);
                    if unused > 0 {
                        expired.push(ExpiredLease {
                            key: CounterKey(key),
                            group: s.group,
                            limit: s.limit,
                            unused,
                        });
                    }
                }
                live
            });
        }
        expired
    }

    /// Tokens held for `key`, for tests and inspection.
    pub fn tokens(&self, key: CounterKey) -> u64 {
        self.shard(key).get(&key.0).map_or(0, |s| s.tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::SECOND;

    fn grant(granted: u64) -> LeaseGrant {
        LeaseGrant {
            granted,
            remaining: 50,
            reset_after: Span::from(SECOND),
            retry_after: (granted == 0).then_some(Span::from(SECOND / 2)),
            valid_for: SECOND,
        }
    }

    #[test]
    fn tokens_are_spent_until_low_water_then_one_caller_refills() {
        let t = LeaseTable::default();
        let (k, l) = (CounterKey(1), Limit::fixed_window(100, SECOND).unwrap());
        assert_eq!(t.take(k, l, 1, 2, 0), Take::Fetch { unused: 0 });
        assert_eq!(
            t.take(k, l, 1, 2, 0),
            Take::FetchCost,
            "one full fetch at a time"
        );
        assert_eq!(t.fill(k, 0, l, &grant(5), 1, SECOND, 0, true), (true, 4));
        assert!(matches!(
            t.take(k, l, 1, 2, 1),
            Take::Taken {
                left: 3,
                refill: false,
                ..
            }
        ));
        assert!(matches!(
            t.take(k, l, 1, 2, 1),
            Take::Taken {
                left: 2,
                refill: true,
                ..
            }
        ));
        assert!(matches!(
            t.take(k, l, 1, 2, 1),
            Take::Taken {
                left: 1,
                refill: false,
                ..
            }
        ));
        t.give_back(k, 1);
        assert_eq!(t.tokens(k), 2);
    }

    #[test]
    fn expired_and_changed_leases_are_handed_back() {
        let t = LeaseTable::default();
        let (k, l) = (CounterKey(2), Limit::fixed_window(100, SECOND).unwrap());
        t.fill(k, 0, l, &grant(5), 0, SECOND / 4, 0, true);
        assert_eq!(t.take(k, l, 1, 0, SECOND / 4), Take::Fetch { unused: 5 });
        t.fill(k, 0, l, &grant(5), 0, SECOND, SECOND / 4, true);
        let other = Limit::fixed_window(10, SECOND).unwrap();
        assert_eq!(
            t.take(k, other, 1, 0, SECOND / 2),
            Take::Fetch { unused: 0 }
        );
    }

    #[test]
    fn an_empty_store_is_remembered_until_its_retry_time() {
        let t = LeaseTable::default();
        let (k, l) = (CounterKey(3), Limit::fixed_window(100, SECOND).unwrap());
        assert_eq!(t.fill(k, 0, l, &grant(0), 1, SECOND, 10, true), (false, 0));
        assert!(
            matches!(t.take(k, l, 1, 0, 11), Take::Exhausted { retry_at, .. } if retry_at == 10 + SECOND / 2)
        );
        assert_eq!(
            t.take(k, l, 1, 0, 10 + SECOND / 2),
            Take::Fetch { unused: 0 }
        );
        t.fetch_failed(k);
        assert_eq!(
            t.drain_expired(3 * SECOND),
            vec![],
            "nothing left to hand back"
        );
        assert_eq!(
            t.take(k, l, 1, 0, 3 * SECOND),
            Take::Fetch { unused: 0 },
            "slot gone"
        );
    }

    #[test]
    fn window_tokens_go_back_only_while_their_window_runs() {
        // A lease of a 1 s window (valid for the whole window) expires at the window's
        // end: handing it back then would make room in the next window. Dropped.
        let t = LeaseTable::default();
        let (k, l) = (CounterKey(7), Limit::fixed_window(100, SECOND).unwrap());
        t.take(k, l, 1, 0, 0);
        t.fill(k, 1, l, &grant(10), 1, 2 * SECOND, 0, true);
        assert_eq!(t.drain_expired(SECOND), vec![]);
        assert_eq!(t.tokens(k), 0);
        // Capped by the lease's time to live (a quarter of the window), it expires with
        // three quarters to run: its tokens go back.
        t.take(k, l, 1, 0, 0);
        t.fill(k, 1, l, &grant(10), 1, SECOND / 4, 0, true);
        assert_eq!(t.drain_expired(SECOND / 4).len(), 1);
        // Within the margin of the window's end: dropped too.
        t.take(k, l, 1, 0, 0);
        t.fill(k, 1, l, &grant(10), 1, SECOND - HAND_BACK_MARGIN, 0, true);
        assert_eq!(t.drain_expired(SECOND - HAND_BACK_MARGIN), vec![]);
        // Through the next fetch, the same rule.
        t.take(k, l, 1, 0, 0);
        t.fill(k, 1, l, &grant(10), 1, 2 * SECOND, 0, true);
        assert_eq!(t.take(k, l, 1, 0, SECOND), Take::Fetch { unused: 0 });
    }

    #[test]
    fn expired_leases_with_tokens_are_drained_for_hand_back() {
        let t = LeaseTable::default();
        let (k, l) = (CounterKey(5), Limit::gcra(100, SECOND, 100).unwrap());
        t.take(k, l, 1, 0, 0);
        t.fill(k, 42, l, &grant(10), 1, SECOND / 2, 0, true);
        assert_eq!(t.drain_expired(SECOND / 4), vec![]);
        let drained = t.drain_expired(SECOND / 2);
        assert_eq!(
            drained,
            vec![ExpiredLease {
                key: k,
                group: 42,
                limit: l,
                unused: 9
            }]
        );
        assert_eq!(t.tokens(k), 0);
    }

    #[test]
    fn no_refill_while_the_store_is_known_to_be_empty() {
        let t = LeaseTable::default();
        let (k, l) = (CounterKey(6), Limit::fixed_window(100, SECOND).unwrap());
        t.take(k, l, 1, 2, 0);
        t.fill(k, 0, l, &grant(3), 0, SECOND, 0, true);
        assert!(matches!(
            t.take(k, l, 1, 2, 1),
            Take::Taken { refill: true, .. }
        ));
        t.fill(k, 0, l, &grant(0), 0, SECOND, 1, true);
        assert!(matches!(
            t.take(k, l, 1, 2, 2),
            Take::Taken { refill: false, .. }
        ));
    }

    #[test]
    fn a_lost_fetch_does_not_block_the_next_one_for_ever() {
        let t = LeaseTable::default();
        let (k, l) = (CounterKey(4), Limit::fixed_window(100, SECOND).unwrap());
        assert_eq!(t.take(k, l, 1, 0, 0), Take::Fetch { unused: 0 });
        assert_eq!(t.take(k, l, 1, 0, SECOND / 2), Take::FetchCost);
        assert_eq!(t.take(k, l, 1, 0, SECOND), Take::Fetch { unused: 0 });
    }
}
