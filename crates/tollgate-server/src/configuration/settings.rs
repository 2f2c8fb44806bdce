//! What `serve` starts from, validated: options that span others checked together, the
//! files they name read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tollgate_admin::access::{AdminAuthMode, GuardLimits};
use tollgate_data::data_auth::{DataAuthMode, DataToken};
use tollgate_data::listener::MaxAge;
use tollgate_data::tls::TlsSettings;
use tollgate_redis::StoreUrl;

use super::{DatabaseOptions, SecurityOptions, ServeOptions, StoreOptions};
#[cfg(test)]
use crate::cli::Command;

/// Where counters live, as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// In this process's memory.
    Memory {
        /// Most counters kept.
        max_keys: usize,
    },
    /// In Redis or Valkey, shared by every node pointed at it.
    Redis {
        /// Where.
        url: StoreUrl,
        /// Deadline of one call.
        timeout: Duration,
        /// Prefix of every key.
        prefix: String,
        /// CA certificates (PEM file) to trust for `rediss://`.
        ca_file: Option<PathBuf>,
    },
}

/// What `serve` starts from: the options, and what was derived from them and checked
/// across them (files read, URLs parsed).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The options as given.
    pub options: ServeOptions,
    /// The policy database's URL.
    pub database: String,
    /// The counter store.
    pub store: StoreSettings,
    /// Worker threads.
    pub workers: usize,
    /// Maximum age of gRPC connections.
    pub grpc_max_age: Option<MaxAge>,
    /// Authentication and TLS, with secrets read.
    pub security: SecuritySettings,
    /// The event broker, when `--events` is set (its URL and files checked).
    pub events: Option<tollgate_events::EventsConfig>,
}

/// Authentication and TLS, with their files read.
#[derive(Debug, Clone, Default)]
pub struct SecuritySettings {
    /// JWT validation, when bearer tokens are accepted.
    pub tokens: Option<tollgate_control::jwt::TokenSettings>,
    /// The admin API's brute-force guard.
    pub guard: GuardLimits,
    /// TLS on every listener.
    pub tls: Option<TlsSettings>,
    /// The shared data-plane token (with `data_auth = token`).
    pub data_token: Option<DataToken>,
}

impl Settings {
    /// Checks what spans options and reads the files they name, so that a mistake stops
    /// startup with a message rather than surfacing at the first request.
    pub fn validate(options: ServeOptions) -> anyhow::Result<Self> {
        let listen = &options.listen;
        if options.security.admin_auth == AdminAuthMode::None
            && !listen.admin_addr.ip().is_loopback()
        {
            // Anyone who reaches an unauthenticated admin API can switch off every limit.
            bail!(
                "admin_addr {} is not a loopback address, and admin_auth is none: an \
                 admin API without authentication only listens on 127.0.0.1 or ::1. Keep \
                 --admin-auth required (the default) and create a key with `tollgate keys \
                 create --role admin`",
                listen.admin_addr
            );
        }
        Ok(Self {
            database: database_url(&options.policies.database)?,
            store: store_settings(&options.store)?,
            workers: match listen.workers {
                Some(n) => usize::from(n),
                None => std::thread::available_parallelism().map_or(1, usize::from),
            },
            grpc_max_age: options.grpc.grpc_max_connection_age.map(|age| MaxAge {
                age,
                grace: options.grpc.grpc_max_connection_age_grace,
            }),
            security: security_settings(&options.security)?,
            events: events_config(&options.events)?,
            options,
        })
    }
}

/// The broker's configuration: a malformed URL or an unreadable credentials or TLS file
/// stops startup with the flag named; an unreachable broker does not.
pub fn events_config(
    o: &super::EventsOptions,
) -> anyhow::Result<Option<tollgate_events::EventsConfig>> {
    let Some(url) = &o.events else {
        for (flag, set) in [
            ("--events-credentials", o.events_credentials.is_some()),
            ("--events-ca", o.events_ca.is_some()),
            ("--events-client-cert", o.events_client_cert.is_some()),
        ] {
            if set {
                bail!(
                    "{flag} is set but --events is not: give the broker's URL with --events nats://HOST:PORT"
                );
            }
        }
        return Ok(None);
    };
    let node = o.node_name.clone().unwrap_or_else(host_name);
    let mut config = tollgate_events::EventsConfig::new(url, &node)?;
    config.credentials = o.events_credentials.clone();
    config.ca = o.events_ca.clone();
    config.client_cert = o
        .events_client_cert
        .clone()
        .zip(o.events_client_key.clone());
    config.check_files()?;
    Ok(Some(config))
}

/// The host's name (for event sources), else `tollgate`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "tollgate".into())
}

fn read_secret(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = std::fs::read(path)
        .with_context(|| format!("cannot read {what} from {}", path.display()))?;
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    Ok(bytes)
}

fn security_settings(o: &SecurityOptions) -> anyhow::Result<SecuritySettings> {
    let tokens = if o.jwt_hs256_secret_file.is_some() || o.jwt_jwks_file.is_some() {
        let (Some(issuer), Some(audience)) = (o.jwt_issuer.clone(), o.jwt_audience.clone()) else {
            bail!("JWT authentication needs both jwt_issuer and jwt_audience");
        };
        let hs256_secret = (o.jwt_hs256_secret_file.as_deref())
            .map(|p| read_secret(p, "the JWT HS256 secret"))
            .transpose()?;
        let jwks = (o.jwt_jwks_file.as_deref())
            .map(|p| {
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read the JWKS file {}", p.display()))
            })
            .transpose()?;
        let settings = tollgate_control::jwt::TokenSettings {
            hs256_secret,
            jwks,
            issuer,
            audience,
            leeway_secs: tollgate_control::jwt::DEFAULT_LEEWAY_SECS,
        };
        // Validate now: a bad JWKS or a short secret stops startup.
        tollgate_control::jwt::TokenVerifier::new(&settings)?;
        Some(settings)
    } else {
        if o.jwt_issuer.is_some() || o.jwt_audience.is_some() {
            bail!("jwt_issuer and jwt_audience need jwt_hs256_secret_file or jwt_jwks_file");
        }
        None
    };
    let tls = match (&o.tls_cert, &o.tls_key) {
        (Some(cert), Some(key)) => Some(TlsSettings {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: o.tls_client_ca.clone(),
        }),
        (None, None) if o.tls_client_ca.is_some() => {
            bail!("tls_client_ca needs tls_cert and tls_key: client certificates need TLS")
        }
        (None, None) => None,
        _ => bail!("tls_cert and tls_key go together"),
    };
    let data_token = match (o.data_auth, &o.data_token_file) {
        (DataAuthMode::Token, None) => {
            bail!("data_auth = token needs data_token_file (a file holding the token)")
        }
        (DataAuthMode::Token, Some(path)) => {
            let text =
                String::from_utf8(read_secret(path, "the data-plane token")?).map_err(|_| {
                    anyhow::anyhow!("the data-plane token in {} is not UTF-8", path.display())
                })?;
            Some(DataToken::new(&text).map_err(|e| anyhow::anyhow!("{e} ({})", path.display()))?)
        }
        (_, Some(_)) => bail!("data_token_file is only used with data_auth = token"),
        (_, None) => None,
    };
    let has_client_ca = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    match o.data_auth {
        DataAuthMode::Mtls if !has_client_ca => {
            bail!("data_auth = mtls needs tls_cert, tls_key and tls_client_ca")
        }
        DataAuthMode::None | DataAuthMode::Token if has_client_ca => {
            bail!("tls_client_ca is only used with data_auth = mtls")
        }
        _ => {}
    }
    Ok(SecuritySettings {
        tokens,
        guard: GuardLimits {
            requests_per_second: o.admin_requests_per_second,
            failures_per_minute: o.admin_auth_failures_per_minute,
        },
        tls,
        data_token,
    })
}

/// The policy database's URL: `database`, else a SQLite file in the data directory
/// (`data_dir`, or the platform default).
pub fn database_url(o: &DatabaseOptions) -> anyhow::Result<String> {
    if let Some(url) = &o.database {
        return Ok(url.clone());
    }
    let dir = match &o.data_dir {
        Some(dir) => dir.clone(),
        None => default_data_dir()?,
    };
    Ok(tollgate_control::db::default_sqlite_url(&dir))
}

/// `$XDG_DATA_HOME/tollgate`, else `~/.local/share/tollgate`.
fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("tollgate"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/tollgate")),
        None => bail!("no data directory: set --data-dir, TOLLGATE_DATA_DIR or HOME"),
    }
}

fn store_settings(o: &StoreOptions) -> anyhow::Result<StoreSettings> {
    let max_keys = usize::try_from(o.max_keys).unwrap_or(usize::MAX);
    let scheme = o
        .store
        .split_once("://")
        .map_or(o.store.as_str(), |(scheme, _)| scheme);
    if scheme == "memory" {
        return Ok(StoreSettings::Memory { max_keys });
    }
    let url = StoreUrl::parse(&o.store).map_err(|e| {
        anyhow::anyhow!("{e} (supported: memory://, redis://, rediss://, redis+cluster://)")
    })?;
    if o.store_ca_file.is_some() && !url.tls() {
        bail!("store_ca_file is only used with rediss:// (TLS) store URLs");
    }
    Ok(StoreSettings::Redis {
        url,
        timeout: o.store_timeout,
        prefix: o.store_prefix.clone(),
        ca_file: o.store_ca_file.clone(),
    })
}

/// The serve options of a command line (tests).
#[cfg(test)]
pub(super) fn serve(args: &[&str]) -> anyhow::Result<Settings> {
    let cli = super::parse_from(
        ["tollgate", "serve"]
            .into_iter()
            .chain(args.iter().copied()),
    )?;
    match cli.command {
        Command::Serve(options) => Settings::validate(*options),
        _ => bail!("not serve"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::cli::Cli;

    #[test]
    fn defaults_need_no_file() {
        let s = serve(&[]).unwrap();
        assert_eq!(s.options.listen.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.store, StoreSettings::Memory { max_keys: 16 << 20 });
        assert!(s.options.policies.policies.is_none());
        assert_eq!(s.options.listen.admin_addr.to_string(), "127.0.0.1:8082");
        assert!(s.database.starts_with("sqlite://"), "{}", s.database);
        assert!(
            s.database.ends_with("tollgate/tollgate.db"),
            "{}",
            s.database
        );
    }

    #[test]
    fn an_unauthenticated_admin_listener_stays_on_loopback() {
        let err = serve(&["--admin-auth", "none", "--admin-addr", "0.0.0.0:8082"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a loopback address"), "{err}");
        assert!(serve(&["--admin-auth", "none", "--admin-addr", "[::1]:0"]).is_ok());
        // Authenticated, it may listen anywhere.
        let s = serve(&["--admin-addr", "0.0.0.0:8082"]).unwrap();
        assert_eq!(s.options.security.admin_auth, AdminAuthMode::Required);
    }

    #[test]
    fn security_settings_that_cannot_work_are_refused_with_their_reason() {
        let dir = std::env::temp_dir().join(format!("tollgate-sec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "too-short\n").unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "a-token-long-enough-1234\n").unwrap();
        let short = short.to_str().unwrap();
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                vec!["--jwt-hs256-secret-file", short],
                "jwt_issuer and jwt_audience",
            ),
            (
                vec![
                    "--jwt-hs256-secret-file",
                    short,
                    "--jwt-issuer",
                    "i",
                    "--jwt-audience",
                    "a",
                ],
                "at least 32 bytes",
            ),
            (vec!["--data-auth", "token"], "needs data_token_file"),
            (
                vec!["--data-auth", "token", "--data-token-file", short],
                "at least 16",
            ),
            (
                vec!["--data-auth", "mtls"],
                "needs tls_cert, tls_key and tls_client_ca",
            ),
            (
                vec!["--tls-client-ca", short],
                "client certificates need TLS",
            ),
        ];
        for (args, expected) in cases {
            let err = serve(&args).unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{args:?}: {err:#}");
        }
        let ok = serve(&[
            "--data-auth",
            "token",
            "--data-token-file",
            token.to_str().unwrap(),
        ])
        .unwrap();
        assert!(ok.security.data_token.is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wildcard_cors_origins_are_refused() {
        let err = Cli::command()
            .try_get_matches_from(["tollgate", "serve", "--admin-cors-origin", "*"])
            .unwrap_err();
        assert!(err.to_string().contains("no wildcard"), "{err}");
    }

    #[test]
    fn the_database_defaults_to_sqlite_in_the_data_dir() {
        let o = DatabaseOptions {
            database: None,
            data_dir: Some("/var/lib/tg".into()),
        };
        assert_eq!(
            database_url(&o).unwrap(),
            "sqlite:///var/lib/tg/tollgate.db"
        );
        let o = DatabaseOptions {
            database: Some("postgres://h/db".into()),
            data_dir: Some("/x".into()),
        };
        assert_eq!(database_url(&o).unwrap(), "postgres://h/db");
    }

    #[test]
    fn unknown_stores_are_errors() {
        let err = serve(&["--store", "memcached://127.0.0.1:11211"]).unwrap_err();
        assert!(
            err.to_string().contains("unknown scheme 'memcached'"),
            "{err}"
        );
        assert!(err.to_string().contains("redis+cluster://"), "{err}");
    }

    #[test]
    fn redis_urls_pick_the_redis_store_with_its_options() {
        let s = serve(&["--store", "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"]).unwrap();
        let StoreSettings::Redis {
            url,
            timeout,
            prefix,
            ca_file: None,
        } = s.store
        else {
            panic!("expected Redis, got {:?}", s.store);
        };
        assert!(matches!(url, StoreUrl::Cluster(ref nodes) if nodes.len() == 2));
        assert_eq!(timeout, Duration::from_millis(50));
        assert_eq!(prefix, "tollgate");
        let err = Cli::command()
            .try_get_matches_from(["tollgate", "serve", "--store-prefix", "a{b}"])
            .unwrap_err();
        assert!(err.to_string().contains("braces"), "{err}");
    }
}
