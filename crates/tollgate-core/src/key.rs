//! Counter keys: a keyed 64-bit fingerprint of (domain, algorithm, descriptor entries).
//!
//! Fingerprints instead of strings keep every stored counter the same small size and
//! building a key free of allocation. The hash is SipHash-1-3 keyed with a secret seed, so
//! a caller cannot craft two descriptors that share a counter; the chance that two of a
//! million live keys collide by accident is about 3 in 100 million.

use std::hash::Hasher;

use siphasher::sip::SipHasher13;

/// The identity of one counter in a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey(pub u64);

/// Builds [`CounterKey`]s with a secret seed. Nodes that share a store must share the seed.
#[derive(Debug, Clone)]
pub struct KeyHasher {
    k0: u64,
    k1: u64,
}

impl KeyHasher {
    /// A hasher keyed with `seed` (16 random bytes in production; any value in tests).
    pub fn new(seed: [u8; 16]) -> Self {
        let (a, b) = seed.split_at(8);
        let word = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or([0; 8]));
        Self {
            k0: word(a),
            k1: word(b),
        }
    }

    /// A fingerprint of `domain` that keeps its counters together in a sharded store
    /// ([`crate::LimitOp::group`]).
    pub fn group(&self, domain: &str) -> u64 {
        self.start(0xfe, domain).finish().0
    }

    pub(crate) fn start(&self, tag: u8, domain: &str) -> KeyBuilder {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write_u8(tag);
        let mut b = KeyBuilder(h);
        b.str(domain);
        b
    }
}

/// An unfinished key: strings are length-prefixed so that no two sequences hash alike by
/// shifting bytes between fields.
pub(crate) struct KeyBuilder(SipHasher13);

impl KeyBuilder {
    pub(crate) fn str(&mut self, s: &str) {
        self.0.write_usize(s.len());
        self.0.write(s.as_bytes());
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.0.write_usize(b.len());
        self.0.write(b);
    }

    pub(crate) fn byte(&mut self, b: u8) {
        self.0.write_u8(b);
    }

    pub(crate) fn finish(self) -> CounterKey {
        CounterKey(self.0.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(h: &KeyHasher, parts: &[&str]) -> CounterKey {
        let mut b = h.start(1, parts[0]);
        for p in &parts[1..] {
            b.str(p);
        }
        b.finish()
    }

    #[test]
    fn field_boundaries_matter() {
        let h = KeyHasher::new([7; 16]);
        assert_ne!(key(&h, &["d", "ab", "c"]), key(&h, &["d", "a", "bc"]));
    }

    #[test]
    fn seed_changes_every_key() {
        let a = KeyHasher::new([1; 16]);
        let b = KeyHasher::new([2; 16]);
        assert_ne!(key(&a, &["d", "k", "v"]), key(&b, &["d", "k", "v"]));
        assert_eq!(key(&a, &["d", "k", "v"]), key(&a, &["d", "k", "v"]));
    }
}
