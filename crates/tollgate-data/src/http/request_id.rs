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

/// Longest caller-chosen id kept; longer ones are replaced by a new id.
const MAX_LEN: usize = 128;

/// The id of one request, kept inline (no allocation per request).
#[derive(Clone)]
pub struct RequestId {
    len: u8,
    bytes: [u8; MAX_LEN],
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}

impl RequestId {
    /// The caller's id (if it is at most 128 visible characters), else a new one.
    pub fn of(headers: &HeaderMap) -> Self {
        Self::from_header(headers.get(&REQUEST_ID).map(HeaderValue::as_bytes))
    }

    /// The same for the raw value of the header, when the caller sent one.
    pub fn from_header(value: Option<&[u8]>) -> Self {
        match value {
            Some(v)
                if !v.is_empty()
                    && v.len() <= MAX_LEN
                    && v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) =>
            {
                Self::inline(v)
            }
            _ => Self::generate(),
        }
    }

    /// The same for an id read from elsewhere (gRPC metadata).
    pub fn from_caller(id: Option<&str>) -> Self {
        Self::from_header(id.map(str::as_bytes))
    }

    fn inline(v: &[u8]) -> Self {
        let mut bytes = [0; MAX_LEN];
        bytes[..v.len()].copy_from_slice(v);
        Self {
            len: v.len() as u8,
            bytes,
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
        Self::inline(&buf)
    }

    /// The id as sent on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The id as text (for logs).
    pub fn as_str(&self) -> &str {
        // Only visible ASCII is ever kept.
        std::str::from_utf8(self.as_bytes()).unwrap_or("-")
    }

    /// The id as a header value.
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_bytes(self.as_bytes()).unwrap_or(HeaderValue::from_static("-"))
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
        assert_eq!(RequestId::from_header(Some(b"abc-123")).as_str(), "abc-123");
        assert_eq!(RequestId::from_header(Some(b"a\x01b")).as_str().len(), 21);
        assert_eq!(
            RequestId::from_header(Some(&[b'y'; 129])).as_str().len(),
            21
        );
        assert_eq!(RequestId::from_header(None).as_str().len(), 21);
        assert_eq!(RequestId::from_header(Some(b"")).as_str().len(), 21);
        assert_eq!(
            RequestId::from_caller(Some("grpc-1")).header_value(),
            "grpc-1"
        );
        assert_eq!(
            RequestId::from_header(Some(&[b'z'; 128])).as_bytes(),
            &[b'z'; 128]
        );
    }
}
