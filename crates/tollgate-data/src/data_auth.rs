//! Optional authentication of the data plane (`POST /v1/check` and Envoy's RLS service):
//! off by default, so Tollgate stays a drop-in replacement for envoyproxy/ratelimit.
//!
//! - `token`: every call carries `Authorization: Bearer <token>` (gRPC: the
//!   `authorization` metadata), compared in constant time with the configured token.
//! - `mtls`: the HTTP and gRPC listeners require a client certificate signed by
//!   `tls_client_ca` (see [`crate::tls`]); the handshake itself is the check.
//!
//! Health, readiness and metrics stay open: probes and scrapers carry no credentials.

use subtle::ConstantTimeEq;

/// How the data plane authenticates callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DataAuthMode {
    /// Anyone who reaches the listener may ask (envoyproxy/ratelimit's behaviour).
    #[default]
    None,
    /// A shared bearer token.
    Token,
    /// Client certificates (mTLS).
    Mtls,
}

/// Shortest shared token accepted (a guessable token is no protection).
pub const MIN_TOKEN_LEN: usize = 16;

/// The shared data-plane token.
#[derive(Clone)]
pub struct DataToken {
    expected: Vec<u8>,
}

impl std::fmt::Debug for DataToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataToken(..)")
    }
}

impl DataToken {
    /// A token; refused when shorter than [`MIN_TOKEN_LEN`] or not visible ASCII.
    pub fn new(token: &str) -> Result<Self, String> {
        let token = token.trim();
        if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "the data-plane token must be at least {MIN_TOKEN_LEN} visible ASCII characters"
            ));
        }
        Ok(Self {
            expected: format!("Bearer {token}").into_bytes(),
        })
    }

    /// Whether `secret` is the token itself (RESP's `AUTH`, which has no scheme).
    pub fn admits_secret(&self, secret: &[u8]) -> bool {
        bool::from(secret.ct_eq(&self.expected[b"Bearer ".len()..]))
    }

    /// Whether an `authorization` value (HTTP header or gRPC metadata) carries the token.
    pub fn admits(&self, value: Option<&[u8]>) -> bool {
        value.is_some_and(|v| bool::from(v.ct_eq(&self.expected)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        assert!(DataToken::new("short").is_err());
        assert!(DataToken::new("has a space in it!!").is_err());
        let token = DataToken::new("0123456789abcdefXYZ").unwrap();
        assert!(!token.admits(None));
        for (value, ok) in [
            ("Bearer 0123456789abcdefXYZ", true),
            ("Bearer 0123456789abcdefXY", false),
            ("Bearer 0123456789abcdefXYZZ", false),
            ("bearer 0123456789abcdefXYZ", false),
            ("0123456789abcdefXYZ", false),
        ] {
            assert_eq!(token.admits(Some(value.as_bytes())), ok, "{value}");
        }
        assert!(!format!("{token:?}").contains("0123"));
    }
}
