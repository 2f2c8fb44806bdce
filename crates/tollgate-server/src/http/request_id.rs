//! Request ids: the caller's `x-request-id` when it sends one, otherwise a new id made of a
//! per-process random prefix and a counter (unique, cheap, sortable). Every log line about
//! a request carries it, and the answer echoes it.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

static PREFIX: LazyLock<u32> = LazyLock::new(|| {
    let mut seed = [0u8; 4];
    // Only the uniqueness of ids across restarts depends on it: a fixed prefix will do.
    let _ = getrandom::fill(&mut seed);
    u32::from_le_bytes(seed)
});
static NEXT: AtomicU64 = AtomicU64::new(0);

/// The id of one request.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

impl RequestId {
    /// The caller's id (if it is at most 128 visible characters), else a new one.
    pub fn of(headers: &HeaderMap) -> Self {
        match headers.get(&REQUEST_ID) {
            Some(v) if v.len() <= 128 && v.to_str().is_ok() => Self(v.clone()),
            _ => Self::generate(),
        }
    }

    /// The same for an id read from elsewhere (gRPC metadata).
    pub fn from_caller(id: Option<&str>) -> Self {
        match id
            .filter(|v| v.len() <= 128)
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            Some(v) => Self(v),
            None => Self::generate(),
        }
    }

    /// A new id: `pppppppp-nnnnnnnnnnnn` in hex.
    pub fn generate() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut buf = [b'-'; 21];
        let prefix = u64::from(*PREFIX);
        for i in 0..8 {
            buf[i] = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
        }
        for i in 0..12 {
            buf[9 + i] = HEX[((n >> (44 - 4 * i)) & 0xf) as usize];
        }
        // Hex digits and a dash are always a valid header value.
        Self(HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("-")))
    }

    /// The id as text (for logs).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_shaped() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.as_str().len(), 21);
        assert_eq!(&a.as_str()[8..9], "-");
    }

    #[test]
    fn callers_ids_are_kept_unless_unreasonable() {
        let mut h = HeaderMap::new();
        h.insert(&REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(RequestId::of(&h).as_str(), "abc-123");
        h.insert(
            &REQUEST_ID,
            HeaderValue::from_str(&"x".repeat(200)).unwrap(),
        );
        assert_eq!(RequestId::of(&h).as_str().len(), 21);
    }
}
