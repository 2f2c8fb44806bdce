//! JWT bearer tokens: HS256 with a shared secret, RS256 and ES256 with public keys from a
//! JWKS document.
//!
//! Rules (see `docs/design/authn-authz.md`):
//! - Only `HS256`, `RS256` and `ES256` are accepted; `none` and everything else is refused.
//! - The algorithm picks the key, and the key must be of that algorithm's family: an HS256
//!   token is checked only against the configured secret (never against an RSA public key
//!   used as an HMAC secret), an RS256/ES256 token only against a JWKS key of the same type
//!   (found by `kid`; a JWKS with one key of that type may omit `kid`).
//! - `exp`, `iss`, `aud` and `sub` are required; `iss` and `aud` must equal the configured
//!   values; `exp` and `nbf` (when present) are checked with a leeway.
//! - `role` (`admin`, `editor`, `viewer`) and `domains` (names, or `["*"]`) are required.

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::auth::{Principal, Role, Scope};
use crate::keys::AuthFailure;

/// Default clock leeway for `exp` and `nbf`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// How tokens are checked. Its `Debug` never shows the secret.
#[derive(Clone, Default)]
pub struct TokenSettings {
    /// The HS256 secret (at least 32 bytes), if HS256 tokens are accepted.
    pub hs256_secret: Option<Vec<u8>>,
    /// A JWKS document (JSON) with the RS256/ES256 public keys, if those are accepted.
    pub jwks: Option<String>,
    /// The required `iss`.
    pub issuer: String,
    /// The required `aud`.
    pub audience: String,
    /// Clock leeway for `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl std::fmt::Debug for TokenSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSettings")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "jwks",
                &self.jwks.as_ref().map(|j| format!("<{} bytes>", j.len())),
            )
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// A token configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenConfigError {
    /// Neither a secret nor a JWKS.
    #[error("token authentication needs an HS256 secret or a JWKS file")]
    NoKeys,
    /// `iss` or `aud` missing.
    #[error("token authentication needs an issuer and an audience")]
    NoIssuerOrAudience,
    /// The secret is too short to resist guessing.
    #[error("the HS256 secret must be at least 32 bytes, it has {0}")]
    ShortSecret(usize),
    /// The JWKS cannot be read.
    #[error("the JWKS is not valid: {0}")]
    Jwks(String),
}

struct PublicKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Checks bearer tokens and says whom they name.
pub struct TokenVerifier {
    hs256: Option<DecodingKey>,
    public: Vec<PublicKey>,
    issuer: String,
    audience: String,
    leeway: u64,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("TokenVerifier")
            .field("hs256", &self.hs256.is_some())
            .field("public_keys", &self.public.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    role: String,
    domains: Vec<String>,
}

fn algorithm_of(jwk: &jsonwebtoken::jwk::Jwk) -> Result<Algorithm, TokenConfigError> {
    let declared = jwk.common.key_algorithm;
    let algorithm = match (&jwk.algorithm, declared) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(_), None | Some(KeyAlgorithm::ES256)) => {
            Algorithm::ES256
        }
        _ => {
            return Err(TokenConfigError::Jwks(format!(
                "key {} is neither an RS256 nor an ES256 public key",
                jwk.common.key_id.as_deref().unwrap_or("(no kid)")
            )));
        }
    };
    Ok(algorithm)
}

impl TokenVerifier {
    /// A verifier for `settings`.
    pub fn new(settings: &TokenSettings) -> Result<Self, TokenConfigError> {
        if settings.hs256_secret.is_none() && settings.jwks.is_none() {
            return Err(TokenConfigError::NoKeys);
        }
        if settings.issuer.is_empty() || settings.audience.is_empty() {
            return Err(TokenConfigError::NoIssuerOrAudience);
        }
        let hs256 = match &settings.hs256_secret {
            Some(s) if s.len() < 32 => return Err(TokenConfigError::ShortSecret(s.len())),
            Some(s) => Some(DecodingKey::from_secret(s)),
            None => None,
        };
        let mut public = Vec::new();
        if let Some(text) = &settings.jwks {
            let set: JwkSet =
                serde_json::from_str(text).map_err(|e| TokenConfigError::Jwks(e.to_string()))?;
            for jwk in &set.keys {
                let algorithm = algorithm_of(jwk)?;
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| TokenConfigError::Jwks(e.to_string()))?;
                public.push(PublicKey {
                    kid: jwk.common.key_id.clone(),
                    algorithm,
                    key,
                });
            }
            if public.is_empty() {
                return Err(TokenConfigError::Jwks("it holds no keys".into()));
            }
        }
        Ok(Self {
            hs256,
            public,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway: settings.leeway_secs,
        })
    }

    fn key_for(&self, header: &jsonwebtoken::Header) -> Result<&DecodingKey, AuthFailure> {
        let invalid = |m: &str| AuthFailure::InvalidToken(m.to_owned());
        match header.alg {
            Algorithm::HS256 => self
                .hs256
                .as_ref()
                .ok_or_else(|| invalid("HS256 tokens are not accepted here")),
            Algorithm::RS256 | Algorithm::ES256 => {
                let same_type = self.public.iter().filter(|k| k.algorithm == header.alg);
                let found = match &header.kid {
                    Some(kid) => same_type
                        .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                        .collect::<Vec<_>>(),
                    None => same_type.collect(),
                };
                match found.as_slice() {
                    [one] => Ok(&one.key),
                    [] => Err(invalid("no key of the token's algorithm and kid")),
                    _ => Err(invalid("several keys fit: the token needs a kid")),
                }
            }
            _ => Err(invalid("algorithm not accepted (HS256, RS256, ES256 only)")),
        }
    }

    /// Whom `token` names, if it is valid now.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthFailure> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthFailure::InvalidToken(format!("header: {e}")))?;
        let key = self.key_for(&header)?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthFailure::Expired,
            _ => AuthFailure::InvalidToken(e.to_string()),
        })?;
        let claims = data.claims;
        let role = Role::parse(&claims.role)
            .ok_or_else(|| AuthFailure::InvalidToken(format!("unknown role '{}'", claims.role)))?;
        if claims.domains.is_empty() || claims.domains.len() > Scope::MAX_DOMAINS {
            return Err(AuthFailure::InvalidToken(
                "`domains` must name 1 to 100 domains".into(),
            ));
        }
        Ok(Principal {
            name: format!("token:{}", claims.sub),
            role,
            scope: Scope::from_names(claims.domains),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_mistakes_are_named() {
        let base = TokenSettings {
            issuer: "i".into(),
            audience: "a".into(),
            leeway_secs: 30,
            ..TokenSettings::default()
        };
        assert!(matches!(
            TokenVerifier::new(&base),
            Err(TokenConfigError::NoKeys)
        ));
        let short = TokenSettings {
            hs256_secret: Some(b"short".to_vec()),
            ..base.clone()
        };
        assert!(matches!(
            TokenVerifier::new(&short),
            Err(TokenConfigError::ShortSecret(5))
        ));
        let bad_jwks = TokenSettings {
            jwks: Some("{\"keys\": 3}".into()),
            ..base.clone()
        };
        assert!(matches!(
            TokenVerifier::new(&bad_jwks),
            Err(TokenConfigError::Jwks(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_tokens_are_refused_without_panicking(
            parts in proptest::collection::vec("[A-Za-z0-9_=-]{0,60}", 0..5)
        ) {
            let v = TokenVerifier::new(&TokenSettings {
                hs256_secret: Some(b"a-very-secret-value-of-32-bytes!!".to_vec()),
                issuer: "i".into(),
                audience: "a".into(),
                ..TokenSettings::default()
            })
            .unwrap();
            proptest::prop_assert!(v.verify(&parts.join(".")).is_err());
        }
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let v = TokenVerifier::new(&TokenSettings {
            hs256_secret: Some(b"a-very-secret-value-of-32-bytes!!".to_vec()),
            issuer: "i".into(),
            audience: "a".into(),
            ..TokenSettings::default()
        })
        .unwrap();
        assert!(!format!("{v:?}").contains("very-secret"));
        let settings = TokenSettings {
            hs256_secret: Some(b"a-very-secret-value-of-32-bytes!!".to_vec()),
            ..TokenSettings::default()
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("very-secret") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
