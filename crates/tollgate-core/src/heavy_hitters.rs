//! Heavy hitters: the descriptor values that take the most hits, in bounded memory.
//!
//! [`SpaceSaving`] is Metwally, Agrawal and El Abbadi's Space-Saving summary ("Efficient
//! computation of frequent and top-k elements in data streams", ICDT 2005) over `m`
//! counters. After a stream of total weight `N`:
//! - every estimate over-counts: `count - error <= true <= count`;
//! - every `error` is at most the smallest counter, which is at most `N / m`;
//! - every value whose true weight exceeds `N / m` is in the summary.
//!
//! Summaries of disjoint streams merge (Cafaro, Pulimeno and Tempesta, "A parallel space
//! saving algorithm for frequent items and the Hurwitz zeta distribution", 2016) with the
//! same guarantees over the combined weight, so each worker keeps its own and a reader
//! merges them.
//!
//! Written here rather than taken from a crate: the crates that exist either allocate per
//! item, keep no per-entry error, or cannot merge; the decision path needs an offer that
//! allocates only when a new value enters the summary.

use std::collections::HashMap;

use foldhash::fast::FixedState;

/// One monitored value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeavyHitter {
    /// What the value is (a descriptor's entries as `key=value`, joined by `,`).
    pub value: String,
    /// Its estimated weight: at least its true weight.
    pub count: u64,
    /// How much of `count` may come from values it replaced: the true weight is at least
    /// `count - error`.
    pub error: u64,
}

#[derive(Debug, Clone)]
struct Slot {
    key: u64,
    value: Box<str>,
    count: u64,
    error: u64,
}

/// A Space-Saving summary of `capacity` counters. Values are identified by a 64-bit
/// fingerprint the caller computes (two values with one fingerprint count as one).
#[derive(Debug, Clone)]
pub struct SpaceSaving {
    capacity: usize,
    /// A binary min-heap by `count`.
    heap: Vec<Slot>,
    /// Fingerprint → position in `heap`.
    index: HashMap<u64, usize, FixedState>,
    total: u64,
}

impl SpaceSaving {
    /// A summary of `capacity` counters (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            heap: Vec::with_capacity(capacity),
            index: HashMap::with_capacity_and_hasher(capacity, FixedState::default()),
            total: 0,
        }
    }

    /// How many counters it keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The total weight offered.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether nothing was offered since it was made or cleared.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The bound on every estimate's error: the smallest counter once all are in use
    /// (0 before: every value seen is counted exactly), which is at most `total / capacity`.
    pub fn error_bound(&self) -> u64 {
        if self.heap.len() < self.capacity {
            0
        } else {
            self.heap.first().map_or(0, |s| s.count)
        }
    }

    /// Counts `weight` hits of the value fingerprinted `key`; `value` names it, called only
    /// when the value enters the summary.
    pub fn offer(&mut self, key: u64, weight: u64, value: impl FnOnce() -> String) {
        if weight == 0 {
            return;
        }
        self.total = self.total.saturating_add(weight);
        if let Some(&at) = self.index.get(&key) {
            self.heap[at].count = self.heap[at].count.saturating_add(weight);
            self.sift_down(at);
        } else if self.heap.len() < self.capacity {
            self.heap.push(Slot {
                key,
                value: value().into_boxed_str(),
                count: weight,
                error: 0,
            });
            let at = self.heap.len() - 1;
            self.index.insert(key, at);
            self.sift_up(at);
        } else {
            // The smallest counter goes to the newcomer, which inherits its count as error.
            let root = &mut self.heap[0];
            self.index.remove(&root.key);
            let min = root.count;
            *root = Slot {
                key,
                value: value().into_boxed_str(),
                count: min.saturating_add(weight),
                error: min,
            };
            self.index.insert(key, 0);
            self.sift_down(0);
        }
    }

    /// The `k` heaviest values, heaviest first (ties by value, so the order is stable).
    pub fn top(&self, k: usize) -> Vec<HeavyHitter> {
        let mut all: Vec<&Slot> = self.heap.iter().collect();
        all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        all.into_iter()
            .take(k)
            .map(|s| HeavyHitter {
                value: s.value.to_string(),
                count: s.count,
                error: s.error,
            })
            .collect()
    }

    /// Folds in the summary of a disjoint stream: afterwards this summarises both, with
    /// the guarantees over their combined weight.
    pub fn merge(&mut self, other: &SpaceSaving) {
        if other.is_empty() {
            return;
        }
        // A value one summary does not monitor may have had up to its smallest counter
        // there (0 when that summary never filled up).
        let mine_min = self.error_bound();
        let theirs_min = other.error_bound();
        let mut merged: HashMap<u64, Slot, FixedState> = HashMap::with_capacity_and_hasher(
            self.heap.len() + other.heap.len(),
            FixedState::default(),
        );
        for slot in self.heap.drain(..) {
            merged.insert(slot.key, slot);
        }
        for slot in merged.values_mut() {
            if !other.index.contains_key(&slot.key) {
                slot.count = slot.count.saturating_add(theirs_min);
                slot.error = slot.error.saturating_add(theirs_min);
            }
        }
        for slot in &other.heap {
            match merged.get_mut(&slot.key) {
                Some(mine) => {
                    mine.count = mine.count.saturating_add(slot.count);
                    mine.error = mine.error.saturating_add(slot.error);
                }
                None => {
                    merged.insert(
                        slot.key,
                        Slot {
                            key: slot.key,
                            value: slot.value.clone(),
                            count: slot.count.saturating_add(mine_min),
                            error: slot.error.saturating_add(mine_min),
                        },
                    );
                }
            }
        }
        let mut slots: Vec<Slot> = merged.into_values().collect();
        slots.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        slots.truncate(self.capacity);
        self.total = self.total.saturating_add(other.total);
        self.rebuild(slots);
    }

    /// Forgets everything (keeps its memory).
    pub fn clear(&mut self) {
        self.heap.clear();
        self.index.clear();
        self.total = 0;
    }

    fn rebuild(&mut self, slots: Vec<Slot>) {
        self.heap = slots;
        self.heap.sort_by_key(|s| s.count); // a sorted array is a min-heap
        self.index.clear();
        for (at, slot) in self.heap.iter().enumerate() {
            self.index.insert(slot.key, at);
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.index.insert(self.heap[a].key, a);
        self.index.insert(self.heap[b].key, b);
    }

    fn sift_up(&mut self, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if self.heap[parent].count <= self.heap[at].count {
                break;
            }
            self.swap(parent, at);
            at = parent;
        }
    }

    fn sift_down(&mut self, mut at: usize) {
        loop {
            let left = 2 * at + 1;
            if left >= self.heap.len() {
                break;
            }
            let right = left + 1;
            let child = if right < self.heap.len() && self.heap[right].count < self.heap[left].count
            {
                right
            } else {
                left
            };
            if self.heap[at].count <= self.heap[child].count {
                break;
            }
            self.swap(at, child);
            at = child;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(s: &mut SpaceSaving, key: u64, weight: u64) {
        s.offer(key, weight, || format!("v{key}"));
    }

    #[test]
    fn counts_exactly_until_full() {
        let mut s = SpaceSaving::new(3);
        for (k, w) in [(1, 5), (2, 3), (1, 2), (3, 1)] {
            offer(&mut s, k, w);
        }
        assert_eq!(s.error_bound(), 1);
        let top = s.top(3);
        assert_eq!(
            top[0],
            HeavyHitter {
                value: "v1".into(),
                count: 7,
                error: 0
            }
        );
        assert_eq!(top[1].count, 3);
        assert_eq!(s.total(), 11);
    }

    #[test]
    fn a_newcomer_takes_the_smallest_counter_as_its_error() {
        let mut s = SpaceSaving::new(2);
        offer(&mut s, 1, 10);
        offer(&mut s, 2, 4);
        offer(&mut s, 3, 1);
        let top = s.top(2);
        assert_eq!(
            top[1],
            HeavyHitter {
                value: "v3".into(),
                count: 5,
                error: 4
            }
        );
        assert!(s.top(2).iter().all(|h| h.value != "v2"));
    }

    #[test]
    fn the_label_is_made_only_when_a_value_enters() {
        let mut s = SpaceSaving::new(2);
        s.offer(1, 1, || "one".into());
        s.offer(1, 1, || panic!("already monitored"));
        assert_eq!(s.top(1)[0].count, 2);
    }
}
