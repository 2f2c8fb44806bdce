//! Store URLs: which Redis (or Valkey) and how to reach it.

use crate::RedisStoreError;

/// Where the counters live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// One node (or a primary behind a proxy): `redis://[user:pass@]host:port[/db]`,
    /// `rediss://` for TLS.
    Single(String),
    /// A Redis Cluster, from one or more seed nodes:
    /// `redis+cluster://[user:pass@]host:port,host:port`, `rediss+cluster://` for TLS.
    /// Held as one `redis://` URL per seed node.
    Cluster(Vec<String>),
}

impl StoreUrl {
    /// Parses a `--store` URL. `valkey://` and `valkeys://` are accepted as synonyms.
    pub fn parse(url: &str) -> Result<Self, RedisStoreError> {
        let invalid = |reason: &str| RedisStoreError::InvalidUrl {
            url: redact(url),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected scheme://host:port"))?;
        let (tls, cluster) = match scheme {
            "redis" | "valkey" => (false, false),
            "rediss" | "valkeys" => (true, false),
            "redis+cluster" | "valkey+cluster" => (false, true),
            "rediss+cluster" | "valkeys+cluster" => (true, true),
            other => {
                return Err(invalid(&format!(
                    "unknown scheme '{other}' (expected redis, rediss, redis+cluster or rediss+cluster)"
                )));
            }
        };
        let single_scheme = if tls { "rediss" } else { "redis" };
        let (credentials, hosts) = match rest.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, rest),
        };
        if hosts.is_empty() || hosts.starts_with('/') {
            return Err(invalid("no host given"));
        }
        let prefix = match credentials {
            Some(c) => format!("{single_scheme}://{c}@"),
            None => format!("{single_scheme}://"),
        };
        if !cluster {
            if hosts.contains(',') {
                return Err(invalid(
                    "several hosts need redis+cluster:// (a single-node URL takes one)",
                ));
            }
            return Ok(StoreUrl::Single(format!("{prefix}{hosts}")));
        }
        let nodes: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| format!("{prefix}{h}"))
            .collect();
        if nodes.is_empty() {
            return Err(invalid("no Cluster node given"));
        }
        Ok(StoreUrl::Cluster(nodes))
    }

    /// Whether connections use TLS.
    pub fn tls(&self) -> bool {
        match self {
            StoreUrl::Single(u) => u.starts_with("rediss://"),
            StoreUrl::Cluster(nodes) => nodes.iter().any(|u| u.starts_with("rediss://")),
        }
    }

    /// The URL with any password replaced by `***`, for logs and errors.
    pub fn redacted(&self) -> String {
        match self {
            StoreUrl::Single(u) => redact(u),
            StoreUrl::Cluster(nodes) => nodes
                .iter()
                .map(|u| redact(u))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// Replaces the password of `scheme://user:password@host` (or `scheme://:password@host`).
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_cluster_urls() {
        assert_eq!(
            StoreUrl::parse("redis://127.0.0.1:6379/2").unwrap(),
            StoreUrl::Single("redis://127.0.0.1:6379/2".into())
        );
        assert_eq!(
            StoreUrl::parse("valkeys://h:1").unwrap(),
            StoreUrl::Single("rediss://h:1".into())
        );
        let cluster = StoreUrl::parse("rediss+cluster://:pw@a:1,b:2").unwrap();
        assert_eq!(
            cluster,
            StoreUrl::Cluster(vec!["rediss://:pw@a:1".into(), "rediss://:pw@b:2".into()])
        );
        assert!(cluster.tls());
        assert_eq!(cluster.redacted(), "rediss://:***@a:1,rediss://:***@b:2");
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_the_password() {
        let err = StoreUrl::parse("memcached://u:secret@h:1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown scheme 'memcached'"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = StoreUrl::parse("redis://a:1,b:2").unwrap_err().to_string();
        assert!(err.contains("redis+cluster://"), "{err}");
        assert!(StoreUrl::parse("redis://").is_err());
        assert!(StoreUrl::parse("127.0.0.1:6379").is_err());
    }
}
