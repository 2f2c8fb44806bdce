//! Limiters for the embedded mode: the core over memory, or over Redis shared with other
//! processes (other services' layers, `tollgate serve` nodes) that use the same store.

use std::sync::Arc;

use tollgate_core::{Limiter, LimiterConfig, MemoryStore, PolicyError, PolicySet, SystemClock};

/// Why an embedded limiter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The policies do not parse or validate.
    #[error("invalid policies: {0}")]
    Policies(String),
    /// The store could not be reached.
    #[error("counter store: {0}")]
    Store(String),
}

impl From<PolicyError> for EmbeddedError {
    fn from(e: PolicyError) -> Self {
        Self::Policies(e.to_string())
    }
}

/// Policies from YAML texts, each named by its file name (for errors).
pub fn policies<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<PolicySet, EmbeddedError> {
    PolicySet::from_files(files).map_err(|errors| {
        EmbeddedError::Policies(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// A limiter over this process's memory: exact for this process, shared with no one.
pub fn memory(policies: PolicySet) -> Arc<Limiter> {
    Arc::new(Limiter::new(
        policies,
        Arc::new(MemoryStore::default()),
        Arc::new(SystemClock),
        LimiterConfig::default(),
    ))
}

/// A limiter over Redis or Valkey at `url` (`redis://`, `rediss://`,
/// `redis+cluster://`): counters shared with every process using that store and its key
/// seed, `tollgate serve` nodes included.
#[cfg(feature = "redis")]
pub async fn redis(policies: PolicySet, url: &str) -> Result<Arc<Limiter>, EmbeddedError> {
    use tollgate_redis::{RedisStore, RedisStoreConfig, StoreUrl};
    let url = StoreUrl::parse(url).map_err(|e| EmbeddedError::Store(e.to_string()))?;
    let store = RedisStore::connect(RedisStoreConfig::new(url))
        .await
        .map_err(|e| EmbeddedError::Store(e.to_string()))?;
    let key_seed = store
        .shared_key_seed()
        .await
        .map_err(|e| EmbeddedError::Store(e.to_string()))?;
    Ok(Arc::new(Limiter::new(
        policies,
        Arc::new(store),
        Arc::new(SystemClock),
        LimiterConfig {
            key_seed,
            ..LimiterConfig::default()
        },
    )))
}
