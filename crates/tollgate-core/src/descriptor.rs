//! What a caller asks about: a domain, descriptors made of `key=value` entries, and a cost.
//!
//! These are borrowed views: the edge (HTTP, gRPC) decodes its wire format and lends the
//! strings to the engine without copying them.

use crate::algorithm::Limit;
use crate::policy::Unit;

/// One `key=value` pair of a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The key, e.g. `remote_address`. Never empty.
    pub key: &'a str,
    /// The value, e.g. `10.0.0.1`. May be empty.
    pub value: &'a str,
}

/// A limit the caller supplies for one descriptor (Envoy's per-descriptor `limit`), which
/// replaces whatever the policies say for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitOverride {
    /// Requests per unit.
    pub requests_per_unit: u32,
    /// The unit.
    pub unit: Unit,
}

impl LimitOverride {
    /// The fixed-window limit this override stands for.
    pub fn limit(&self) -> Limit {
        Limit::fixed_window(u64::from(self.requests_per_unit), self.unit.nanos())
            .expect("a unit is never zero nanoseconds long")
    }
}

/// One descriptor: an ordered list of entries, matched against a domain's descriptor tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor<'a> {
    /// The entries, in order. Never empty.
    pub entries: &'a [Entry<'a>],
    /// Cost of this descriptor alone; `None` uses the request's `hits`.
    pub hits: Option<u64>,
    /// A caller-supplied limit for this descriptor.
    pub limit_override: Option<LimitOverride>,
}

/// A question for the engine: may this request pass?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckRequest<'a> {
    /// The domain whose policies apply.
    pub domain: &'a str,
    /// The descriptors; each gets its own status in the decision.
    pub descriptors: &'a [Descriptor<'a>],
    /// Cost of the request (`hits_addend`); 0 is read as 1, as Envoy does.
    pub hits: u64,
}

/// Bounds on what one request may carry, so that no caller can make a decision expensive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most descriptors per request.
    pub max_descriptors: usize,
    /// Most entries per descriptor.
    pub max_entries: usize,
    /// Longest key or value, in bytes.
    pub max_value_len: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_descriptors: 64,
            max_entries: 32,
            max_value_len: 1024,
        }
    }
}

/// Why a request was refused before any counter was touched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `domain` is empty.
    #[error("domain must not be empty")]
    EmptyDomain,
    /// No descriptors.
    #[error("descriptors must not be empty")]
    NoDescriptors,
    /// Too many descriptors.
    #[error("too many descriptors: {got} (at most {max})")]
    TooManyDescriptors {
        /// How many were sent.
        got: usize,
        /// The bound.
        max: usize,
    },
    /// A descriptor without entries.
    #[error("descriptors[{descriptor}].entries must not be empty")]
    NoEntries {
        /// Index of the descriptor.
        descriptor: usize,
    },
    /// Too many entries in one descriptor.
    #[error("descriptors[{descriptor}].entries has {got} entries (at most {max})")]
    TooManyEntries {
        /// Index of the descriptor.
        descriptor: usize,
        /// How many were sent.
        got: usize,
        /// The bound.
        max: usize,
    },
    /// An entry with an empty key.
    #[error("descriptors[{descriptor}].entries[{entry}].key must not be empty")]
    EmptyKey {
        /// Index of the descriptor.
        descriptor: usize,
        /// Index of the entry.
        entry: usize,
    },
    /// A key or value longer than allowed.
    #[error("descriptors[{descriptor}].entries[{entry}] is longer than {max} bytes")]
    TooLong {
        /// Index of the descriptor.
        descriptor: usize,
        /// Index of the entry.
        entry: usize,
        /// The bound.
        max: usize,
    },
}

impl CheckRequest<'_> {
    /// Checks the request's shape against `limits`.
    pub fn validate(&self, limits: &RequestLimits) -> Result<(), RequestError> {
        if self.domain.is_empty() {
            return Err(RequestError::EmptyDomain);
        }
        if self.descriptors.is_empty() {
            return Err(RequestError::NoDescriptors);
        }
        if self.descriptors.len() > limits.max_descriptors {
            return Err(RequestError::TooManyDescriptors {
                got: self.descriptors.len(),
                max: limits.max_descriptors,
            });
        }
        for (d, descriptor) in self.descriptors.iter().enumerate() {
            if descriptor.entries.is_empty() {
                return Err(RequestError::NoEntries { descriptor: d });
            }
            if descriptor.entries.len() > limits.max_entries {
                return Err(RequestError::TooManyEntries {
                    descriptor: d,
                    got: descriptor.entries.len(),
                    max: limits.max_entries,
                });
            }
            for (e, entry) in descriptor.entries.iter().enumerate() {
                if entry.key.is_empty() {
                    return Err(RequestError::EmptyKey {
                        descriptor: d,
                        entry: e,
                    });
                }
                if entry.key.len() > limits.max_value_len
                    || entry.value.len() > limits.max_value_len
                {
                    return Err(RequestError::TooLong {
                        descriptor: d,
                        entry: e,
                        max: limits.max_value_len,
                    });
                }
            }
        }
        Ok(())
    }

    /// The cost of descriptor `d`: its own hits, else the request's, with 0 read as 1.
    pub fn cost_of(&self, descriptor: &Descriptor<'_>) -> u64 {
        match descriptor.hits {
            Some(h) if h > 0 => h,
            _ => self.hits.max(1),
        }
    }
}
