//! API keys: `tg_<id>_<secret>`, random, shown once, stored only as a hash.
//!
//! The id (10 random bytes, hex) is public: listings, the audit log and `revoke` use it.
//! The secret (32 random bytes, hex) never leaves the creator's hands. The store keeps the
//! SHA-256 of the whole key: a key has 256 bits of entropy, so a fast hash is enough (no
//! dictionary to slow down), and a stolen table holds nothing that authenticates. The
//! hash is compared in constant time.
//!
//! Every request looks its key up in the store (one primary-key read), so a revocation or
//! an expiry takes effect on every node at once.

use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;
use subtle::ConstantTimeEq;

use crate::audit::Audit;
use crate::auth::{Actor, Principal, Role, Scope};
use crate::document::FieldError;
use crate::model::{ApiKey, CreatedApiKey, NewApiKey, Page};
use crate::service::{ControlPlane, now_ms, rfc3339};
use crate::{ControlError, model::MAX_NAME_LEN};

/// What every key starts with, so that scanners and people recognise one.
pub const PREFIX: &str = "tg_";
const ID_BYTES: usize = 10;
const SECRET_BYTES: usize = 32;
/// `last_used_at` is written at most this often per key (milliseconds).
const LAST_USED_EVERY_MS: i64 = 60_000;

/// Why a presented key or token does not authenticate. The message goes to the audit log
/// and the server's log; the client only hears that it is not valid.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    /// No credentials at all.
    #[error("no credentials")]
    Missing,
    /// Not shaped like a key or a token.
    #[error("malformed credentials: {0}")]
    Malformed(&'static str),
    /// No key has this id.
    #[error("unknown key")]
    UnknownKey,
    /// The id exists but the secret does not match.
    #[error("wrong secret")]
    WrongSecret,
    /// The key was revoked.
    #[error("key revoked")]
    Revoked,
    /// The key or token has expired.
    #[error("expired")]
    Expired,
    /// The token is not valid (signature, issuer, audience, times, algorithm, claims).
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// Tokens are not accepted by this server.
    #[error("bearer tokens are not configured on this server")]
    TokensDisabled,
    /// The store could not be asked.
    #[error("{0}")]
    Store(#[from] ControlError),
}

/// Hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes from the system, as hex (key secrets, session ids, CSRF tokens).
pub fn random_hex(n: usize) -> Result<String, ControlError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes)
        .map_err(|e| ControlError::Config(format!("no system randomness for a new key: {e}")))?;
    Ok(hex(&bytes))
}

/// The stored hash of a whole key.
fn hash(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// The id of a well-formed key (`tg_<20 hex>_<64 hex>`).
pub fn key_id(key: &str) -> Result<&str, AuthFailure> {
    let rest = key
        .strip_prefix(PREFIX)
        .ok_or(AuthFailure::Malformed("an API key starts with tg_"))?;
    let (id, secret) = rest
        .split_once('_')
        .ok_or(AuthFailure::Malformed("an API key is tg_<id>_<secret>"))?;
    let hex_of = |s: &str, n: usize| s.len() == 2 * n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex_of(id, ID_BYTES) || !hex_of(secret, SECRET_BYTES) {
        return Err(AuthFailure::Malformed("an API key is tg_<id>_<secret>"));
    }
    Ok(id)
}

fn parse_expiry(text: Option<&str>, now: i64) -> Result<Option<i64>, ControlError> {
    let Some(text) = text else { return Ok(None) };
    let invalid = |message: String| ControlError::Invalid {
        errors: vec![FieldError {
            field: "expires_at".into(),
            message,
        }],
    };
    let at = humantime::parse_rfc3339_weak(text)
        .map_err(|e| invalid(format!("is not an RFC 3339 time: {e}")))?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| invalid("is before 1970".into()))?;
    if ms <= now {
        return Err(invalid("is in the past".into()));
    }
    Ok(Some(ms))
}

fn check_new_key(new: &NewApiKey) -> Result<(), ControlError> {
    let mut errors = Vec::new();
    if new.name.is_empty() || new.name.chars().count() > MAX_NAME_LEN || new.name.contains('\0') {
        errors.push(FieldError {
            field: "name".into(),
            message: format!("must be 1 to {MAX_NAME_LEN} characters, without NUL"),
        });
    }
    if new.domains.is_empty() || new.domains.len() > Scope::MAX_DOMAINS {
        errors.push(FieldError {
            field: "domains".into(),
            message: format!(
                "must name 1 to {} domains, or [\"*\"] for every domain",
                Scope::MAX_DOMAINS
            ),
        });
    }
    for (i, d) in new.domains.iter().enumerate() {
        if d != "*"
            && let Err(e) = crate::document::check_domain_name(d)
        {
            errors.push(FieldError {
                field: format!("domains[{i}]"),
                message: e.message,
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ControlError::Invalid { errors })
    }
}

fn key_from_row(row: &AnyRow) -> Result<ApiKey, ControlError> {
    let role: String = row.try_get("role")?;
    let domains: String = row.try_get("domains")?;
    let at = |column: &str| -> Result<Option<String>, ControlError> {
        Ok(row.try_get::<Option<i64>, _>(column)?.map(rfc3339))
    };
    Ok(ApiKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: Role::parse(&role)
            .ok_or_else(|| ControlError::Corrupt(format!("unknown role '{role}'")))?,
        domains: serde_json::from_str(&domains)
            .map_err(|e| ControlError::Corrupt(format!("key domains: {e}")))?,
        created_at: rfc3339(row.try_get("created_at")?),
        created_by: row.try_get("created_by")?,
        expires_at: at("expires_at")?,
        revoked_at: at("revoked_at")?,
        last_used_at: at("last_used_at")?,
    })
}

const KEY_COLUMNS: &str = "SELECT id, name, role, domains, created_at, created_by, expires_at, \
     revoked_at, last_used_at FROM api_keys";

impl ControlPlane {
    /// Creates an API key; the answer holds the key, which is shown this once only.
    pub async fn create_key(
        &self,
        new: &NewApiKey,
        actor: &Actor,
    ) -> Result<CreatedApiKey, ControlError> {
        let audit = Audit::new(actor, "key.create", new.name.clone());
        self.audited(&audit, async {
            actor.require_admin("create API keys")?;
            check_new_key(new)?;
            let now = now_ms();
            let expires_at = parse_expiry(new.expires_at.as_deref(), now)?;
            let id = random_hex(ID_BYTES)?;
            let key = format!("{PREFIX}{id}_{}", random_hex(SECRET_BYTES)?);
            let scope = Scope::from_names(new.domains.iter().cloned());
            let domains = serde_json::to_string(&scope.names())
                .map_err(|e| ControlError::Corrupt(e.to_string()))?;
            let mut tx = self.database().pool().begin().await?;
            sqlx::query(
                "INSERT INTO api_keys (id, name, role, domains, hash, created_at, created_by, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&id)
            .bind(&new.name)
            .bind(new.role.as_str())
            .bind(&domains)
            .bind(hash(&key))
            .bind(now)
            .bind(&actor.name)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            let detail = format!("id {id}, role {}, domains {}", new.role, scope.names().join(","));
            self.record_ok(&mut tx, &audit, &detail, None).await?;
            tx.commit().await?;
            tracing::info!(key = %id, role = %new.role, actor = %actor.name, via = actor.via, "API key created");
            Ok(CreatedApiKey {
                key,
                info: self.key(&id).await?,
            })
        })
        .await
    }

    async fn key(&self, id: &str) -> Result<ApiKey, ControlError> {
        let sql = format!("{KEY_COLUMNS} WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.database().pool())
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("API key '{id}'")))?;
        key_from_row(&row)
    }

    /// API keys, newest first (`cursor` continues a listing), revoked ones included.
    pub async fn list_keys(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
        actor: &Actor,
    ) -> Result<Page<ApiKey>, ControlError> {
        actor.require_admin("list API keys")?;
        let limit = crate::service::page_size(limit)?;
        let after = crate::service::decode_cursor(cursor)?;
        let sql = format!("{KEY_COLUMNS} WHERE id > $1 ORDER BY id LIMIT $2");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&after)
            .bind(limit + 1)
            .fetch_all(self.database().pool())
            .await?;
        let items = rows
            .iter()
            .map(key_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::service::paginate(items, limit, |k| &k.id))
    }

    /// Revokes a key: from now on, on every node, it authenticates nothing.
    pub async fn revoke_key(&self, id: &str, actor: &Actor) -> Result<ApiKey, ControlError> {
        let audit = Audit::new(actor, "key.revoke", id.to_owned());
        self.audited(&audit, async {
            actor.require_admin("revoke API keys")?;
            if actor.name == format!("key:{id}") {
                // Revoking the key in hand could lock out the last admin: use another key,
                // or `tollgate keys revoke` on the database.
                return Err(ControlError::Conflict(format!(
                    "API key '{id}' authenticates this request and cannot revoke itself; \
                     revoke it with another admin key or `tollgate keys revoke {id}`"
                )));
            }
            let mut tx = self.database().pool().begin().await?;
            let revoked = sqlx::query(
                "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            )
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if revoked == 0 {
                let exists: Option<String> =
                    sqlx::query_scalar("SELECT id FROM api_keys WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                return Err(match exists {
                    Some(_) => ControlError::Conflict(format!("API key '{id}' is already revoked")),
                    None => ControlError::NotFound(format!("API key '{id}'")),
                });
            }
            self.record_ok(&mut tx, &audit, "revoked", None).await?;
            tx.commit().await?;
            tracing::info!(key = %id, actor = %actor.name, via = actor.via, "API key revoked");
            self.key(id).await
        })
        .await
    }

    /// Who `key` authenticates, if anyone: checked against the store on every call.
    pub async fn authenticate_key(&self, key: &str) -> Result<Principal, AuthFailure> {
        let id = key_id(key)?;
        let row = sqlx::query(
            "SELECT role, domains, hash, expires_at, revoked_at, last_used_at FROM api_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.database().pool())
        .await
        .map_err(ControlError::from)?
        .ok_or(AuthFailure::UnknownKey)?;
        let stored: String = row.try_get("hash").map_err(ControlError::from)?;
        if !bool::from(hash(key).as_bytes().ct_eq(stored.as_bytes())) {
            return Err(AuthFailure::WrongSecret);
        }
        let get = |c: &str| row.try_get::<Option<i64>, _>(c).map_err(ControlError::from);
        if get("revoked_at")?.is_some() {
            return Err(AuthFailure::Revoked);
        }
        let now = now_ms();
        if get("expires_at")?.is_some_and(|at| at <= now) {
            return Err(AuthFailure::Expired);
        }
        if get("last_used_at")?.is_none_or(|at| now - at >= LAST_USED_EVERY_MS) {
            sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(self.database().pool())
                .await
                .map_err(ControlError::from)?;
        }
        let role: String = row.try_get("role").map_err(ControlError::from)?;
        let domains: String = row.try_get("domains").map_err(ControlError::from)?;
        let domains: Vec<String> = serde_json::from_str(&domains)
            .map_err(|e| ControlError::Corrupt(format!("key domains: {e}")))?;
        Ok(Principal {
            name: format!("key:{id}"),
            role: Role::parse(&role)
                .ok_or_else(|| ControlError::Corrupt(format!("unknown role '{role}'")))?,
            scope: Scope::from_names(domains),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_keys_have_an_id() {
        let id = "0123456789abcdef0123";
        let secret = "ab".repeat(32);
        assert_eq!(key_id(&format!("tg_{id}_{secret}")).unwrap(), id);
        for bad in [
            String::new(),
            format!("xx_{id}_{secret}"),
            format!("tg_{id}{secret}"),
            format!("tg_{id}_{}", &secret[1..]),
            format!("tg_{}_{secret}", &id[1..]),
            format!("tg_{id}_{}zz", &secret[2..]),
        ] {
            assert!(key_id(&bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_parsed_or_refused_without_panicking(text in ".{0,120}") {
            if let Ok(id) = key_id(&text) {
                proptest::prop_assert!(text.starts_with(PREFIX) && id.len() == 2 * ID_BYTES);
            }
        }
    }

    #[test]
    fn hashes_are_of_the_whole_key() {
        assert_ne!(hash("tg_a_b"), hash("tg_a_c"));
        assert_eq!(hash("x").len(), 64);
    }

    #[test]
    fn expiry_must_be_a_future_rfc3339_time() {
        assert_eq!(parse_expiry(None, 0).unwrap(), None);
        assert_eq!(
            parse_expiry(Some("1970-01-01T00:00:01Z"), 0).unwrap(),
            Some(1000)
        );
        assert!(parse_expiry(Some("1970-01-01T00:00:01Z"), 1000).is_err());
        assert!(parse_expiry(Some("tomorrow"), 0).is_err());
    }
}
