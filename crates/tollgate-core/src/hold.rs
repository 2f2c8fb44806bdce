//! Holds: what a reservation or a concurrency lease keeps on its counters until it is
//! settled.
//!
//! A reservation (`Limiter::reserve`) takes an estimate on every limit a request matches,
//! all or nothing like a check, and keeps it as a hold; `commit(actual)` settles it at the
//! real cost (giving back what was not used, charging what was used beyond, past the limit
//! if need be: [`crate::Limit::force`]), `release` gives it all back, and a hold that
//! reaches its deadline is released by the store itself. A concurrency lease is the same
//! hold taken on `algorithm: concurrency` limits, whose slots every settlement frees.
//!
//! Stores keep holds next to the counters they touch (the memory store in its own table,
//! Redis in the domain's hash slot), expire them at their deadline on the next decision
//! that meets them, and remember a settled hold for [`SETTLED_KEPT`] so that repeating a
//! commit or a release answers as the first did.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::algorithm::{Algorithm, Limit};
use crate::key::CounterKey;
use crate::time::{Nanos, SECOND};

/// The longest a hold may be kept before it is settled or extended: a day.
pub const MAX_HOLD_TTL: Nanos = 86_400 * SECOND;

/// How long a settled hold is remembered, so that a repeated commit or release gets the
/// first answer again: 2 minutes, long enough for a client's retries, short enough that
/// a store settling 10,000 holds a second keeps about 1.2 million. After that its id is
/// unknown.
pub const SETTLED_KEPT: Nanos = 120 * SECOND;

/// Most counters one hold keeps (one per descriptor of a request).
pub const MAX_HELD_OPS: usize = 64;

/// A hold's name, unique across nodes: the domain's counter group (so a shared store
/// finds the hold's counters from the id alone) and a random nonce. Written as 32
/// lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HoldId {
    /// The counter group of the hold's domain (see [`crate::store::LimitOp::group`]).
    pub group: u64,
    /// Random.
    pub nonce: u64,
}

impl HoldId {
    /// A fresh id in `group`: a process-wide random key hashed with a counter, so ids
    /// never repeat within a process and collide across nodes with negligible odds.
    pub fn fresh(group: u64) -> Self {
        static SEED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mut h = SEED.get_or_init(Default::default).build_hasher();
        h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
        h.write_u64(group);
        Self {
            group,
            nonce: h.finish(),
        }
    }

    /// Parses the 32-hex-digit form.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Self {
            group: u64::from_str_radix(&text[..16], 16).ok()?,
            nonce: u64::from_str_radix(&text[16..], 16).ok()?,
        })
    }
}

impl HoldId {
    /// The 32-hex-digit form, without allocating.
    pub fn to_hex(&self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, word) in [self.group, self.nonce].into_iter().enumerate() {
            for j in 0..16 {
                out[i * 16 + j] = DIGITS[((word >> (60 - 4 * j)) & 0xf) as usize];
            }
        }
        out
    }
}

impl fmt::Display for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        f.write_str(std::str::from_utf8(&hex).unwrap_or_default())
    }
}

/// What a hold is for, which decides what releasing it gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldKind {
    /// A cost known afterwards: release (or expiry) gives the whole estimate back.
    Reservation,
    /// A concurrency lease: release (or expiry) frees its concurrency slots; any rate limit
    /// the request also met keeps what it counted (the request did start).
    Lease,
}

/// One counter a hold keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldOp {
    /// The counter.
    pub key: CounterKey,
    /// Its limit as it was when the hold was taken (a quota's window included).
    pub limit: Limit,
    /// What was taken from it.
    pub amount: u64,
    /// When it was taken: a window that has ended since keeps nothing to give back.
    pub taken_at: Nanos,
}

impl HeldOp {
    /// What releasing a hold of `kind` gives back to this counter.
    pub fn on_release(&self, kind: HoldKind) -> u64 {
        match (kind, self.limit.algorithm()) {
            (HoldKind::Reservation, _) | (HoldKind::Lease, Algorithm::Concurrency) => self.amount,
            (HoldKind::Lease, _) => 0,
        }
    }
}

/// How a hold is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// The real cost is known: every rate limit is charged `actual` instead of the amount
    /// held, concurrency slots are freed.
    Commit(u64),
    /// Nothing more is owed: see [`HoldKind`] for what is given back.
    Release,
}

/// What a settled hold was settled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Committed at `actual`.
    Committed {
        /// The cost committed.
        actual: u64,
    },
    /// Released.
    Released,
}

/// The answer to settling a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleOutcome {
    /// Settled now, or earlier in the same way (`repeated`).
    Settled {
        /// How.
        how: Settled,
        /// The hold was already settled this way; nothing changed.
        repeated: bool,
    },
    /// The hold was already settled another way; nothing changed.
    Conflict {
        /// How it was settled.
        already: Settled,
    },
    /// No such hold: never made, expired, or settled longer ago than [`SETTLED_KEPT`].
    Unknown,
}

/// The answer to extending a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtendOutcome {
    /// The hold is kept until `deadline`.
    Extended {
        /// The new deadline.
        deadline: Nanos,
    },
    /// Settled already: a settled hold cannot be extended.
    Settled(Settled),
    /// No such hold (see [`SettleOutcome::Unknown`]).
    Unknown,
}

/// What settling a hold at `now` does to one counter: `(give back, charge more)`. Only
/// the window the hold was taken in gets anything back (the counter has started afresh
/// since, or counts other requests); an overage is charged to the window of `now`.
pub fn settlement(op: &HeldOp, kind: HoldKind, how: Settle, now: Nanos) -> (u64, u64) {
    let (back, more) = match how {
        Settle::Release => (op.on_release(kind), 0),
        Settle::Commit(_) if op.limit.algorithm() == Algorithm::Concurrency => (op.amount, 0),
        Settle::Commit(actual) => (
            op.amount.saturating_sub(actual),
            actual.saturating_sub(op.amount),
        ),
    };
    let same_window = match op.limit.algorithm() {
        Algorithm::FixedWindow | Algorithm::SlidingWindow => {
            op.limit.window_of(op.taken_at) == op.limit.window_of(now)
        }
        Algorithm::Gcra | Algorithm::Quota | Algorithm::Concurrency => true,
    };
    (if same_window { back } else { 0 }, more)
}

/// The answer a repeated settlement gets from a hold settled `already`.
pub fn repeat(already: Settled, how: Settle) -> SettleOutcome {
    let same = match (already, how) {
        (Settled::Committed { actual: a }, Settle::Commit(b)) => a == b,
        (Settled::Released, Settle::Release) => true,
        _ => false,
    };
    if same {
        SettleOutcome::Settled {
            how: already,
            repeated: true,
        }
    } else {
        SettleOutcome::Conflict { already }
    }
}

/// What settling as `how` records.
pub fn settled(how: Settle) -> Settled {
    match how {
        Settle::Commit(actual) => Settled::Committed { actual },
        Settle::Release => Settled::Released,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_do_not_repeat() {
        let a = HoldId::fresh(0xabc);
        let b = HoldId::fresh(0xabc);
        assert_ne!(a, b);
        assert_eq!(HoldId::parse(&a.to_string()), Some(a));
        assert_eq!(a.to_string().len(), 32);
        assert_eq!(HoldId::parse("xyz"), None);
        assert_eq!(HoldId::parse(&"g".repeat(32)), None);
    }

    #[test]
    fn settling_charges_the_difference_and_frees_slots() {
        let rate = HeldOp {
            key: CounterKey(1),
            limit: Limit::fixed_window(100, SECOND).unwrap(),
            amount: 10,
            taken_at: 5 * SECOND,
        };
        let slot = HeldOp {
            key: CounterKey(2),
            limit: Limit::concurrency(4).unwrap(),
            amount: 1,
            taken_at: 5 * SECOND,
        };
        let r = HoldKind::Reservation;
        let now = 5 * SECOND + 1;
        assert_eq!(settlement(&rate, r, Settle::Commit(4), now), (6, 0));
        assert_eq!(settlement(&rate, r, Settle::Commit(25), now), (0, 15));
        assert_eq!(settlement(&rate, r, Settle::Release, now), (10, 0));
        assert_eq!(settlement(&slot, r, Settle::Commit(25), now), (1, 0));
        assert_eq!(
            settlement(&rate, HoldKind::Lease, Settle::Release, now),
            (0, 0)
        );
        assert_eq!(
            settlement(&slot, HoldKind::Lease, Settle::Release, now),
            (1, 0)
        );
        // The second the hold was taken in has ended: nothing to give back to it.
        assert_eq!(settlement(&rate, r, Settle::Commit(4), 6 * SECOND), (0, 0));
        assert_eq!(settlement(&rate, r, Settle::Commit(14), 6 * SECOND), (0, 4));
        let done = settled(Settle::Commit(4));
        assert!(matches!(
            repeat(done, Settle::Commit(4)),
            SettleOutcome::Settled { repeated: true, .. }
        ));
        assert_eq!(
            repeat(done, Settle::Release),
            SettleOutcome::Conflict { already: done }
        );
    }
}
