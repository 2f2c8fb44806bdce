//! Settings of `tollgate serve`, layered: built-in defaults < TOML file < `TOLLGATE_*`
//! environment variables and command-line flags (clap reads both).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use tollgate_redis::StoreUrl;

use crate::admin::access::{AdminAuthMode, GuardLimits};
use crate::cli::{DatabaseArgs, LogFormat, ResponseHeaders, SecurityArgs, ServeArgs};
use crate::data_auth::{DataAuthMode, DataToken};
use crate::http::listener::MaxAge;
use crate::tls::TlsSettings;

/// Default address of the HTTP listener.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Default address of the gRPC (Envoy RLS v3) listener.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:8081";
/// Default address of the admin listener (REST and GraphQL).
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:8082";

/// Where counters live.
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

/// Default deadline of one call to a shared store.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(50);

/// Everything `tollgate serve` needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// HTTP listener address.
    pub http_addr: SocketAddr,
    /// gRPC listener address.
    pub grpc_addr: SocketAddr,
    /// Admin listener address.
    pub admin_addr: SocketAddr,
    /// Policy file or directory; `None` serves the built-in example policies.
    pub policies: Option<PathBuf>,
    /// The policy database's URL.
    pub database: String,
    /// Apply pending migrations at startup.
    pub migrate: bool,
    /// Counter store.
    pub store: StoreSettings,
    /// Nodes sharing the store (`on_store_error: local` enforces limit / nodes).
    pub nodes: u64,
    /// Most counters kept in this process (the in-memory store, or the node-local counters
    /// next to a shared store).
    pub max_keys: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Worker threads, each with its own runtime and listening socket.
    pub workers: usize,
    /// Global shadow mode.
    pub shadow_mode: bool,
    /// Charge denied requests too (envoyproxy/ratelimit's counting).
    pub count_denied_requests: bool,
    /// Rate-limit headers returned over gRPC.
    pub grpc_response_headers: ResponseHeaders,
    /// Maximum age of gRPC connections.
    pub grpc_max_connection_age: Option<MaxAge>,
    /// Authentication, TLS and the admin API's limits.
    pub security: SecuritySettings,
}

/// Authentication, TLS and the admin API's own limits.
#[derive(Debug, Clone, Default)]
pub struct SecuritySettings {
    /// How the admin API authenticates.
    pub admin_auth: AdminAuthMode,
    /// JWT validation, when bearer tokens are accepted.
    pub tokens: Option<tollgate_control::jwt::TokenSettings>,
    /// The admin API's brute-force guard.
    pub guard: GuardLimits,
    /// Origins allowed to call the admin API from a browser.
    pub admin_cors_origins: Vec<http::HeaderValue>,
    /// TLS on every listener.
    pub tls: Option<TlsSettings>,
    /// Data-plane authentication.
    pub data_auth: DataAuthMode,
    /// The shared data-plane token (with `data_auth = token`).
    pub data_token: Option<DataToken>,
}

/// The TOML file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    http_addr: Option<SocketAddr>,
    grpc_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    policies: Option<PathBuf>,
    database: Option<String>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    migrate: bool,
    store: Option<String>,
    max_keys: Option<usize>,
    #[serde(default, with = "humantime_serde_opt")]
    store_timeout: Option<Duration>,
    store_prefix: Option<String>,
    store_ca_file: Option<PathBuf>,
    nodes: Option<u64>,
    log_format: Option<LogFormat>,
    workers: Option<usize>,
    #[serde(default)]
    shadow_mode: bool,
    #[serde(default)]
    count_denied_requests: bool,
    grpc_response_headers: Option<ResponseHeaders>,
    #[serde(default, with = "humantime_serde_opt")]
    grpc_max_connection_age: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    grpc_max_connection_age_grace: Option<Duration>,
    admin_auth: Option<AdminAuthMode>,
    jwt_hs256_secret_file: Option<PathBuf>,
    jwt_jwks_file: Option<PathBuf>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    admin_requests_per_second: Option<u32>,
    admin_auth_failures_per_minute: Option<u32>,
    #[serde(default)]
    admin_cors_origins: Vec<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    data_auth: Option<DataAuthMode>,
    data_token_file: Option<PathBuf>,
}

/// Durations in the TOML file are written like on the command line: `"24h"`, `"30s"`.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl Settings {
    /// Resolves settings from the flags (and environment) and the optional TOML file.
    pub fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        let mut file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        // Relative paths in a config file are relative to that file.
        let relative = |p: PathBuf| match &args.config {
            Some(cfg) if p.is_relative() => cfg.parent().unwrap_or(Path::new(".")).join(p),
            _ => p,
        };
        let file_policies = file.policies.take().map(relative);
        let security = security_settings(&args.security, &mut file, &relative)?;
        let store_url = args
            .store
            .clone()
            .or(file.store)
            .unwrap_or_else(|| "memory://".into());
        let max_keys = args.max_keys.or(file.max_keys).unwrap_or(16 << 20);
        if max_keys == 0 {
            bail!("max_keys must be at least 1");
        }
        let shared = SharedStoreOptions {
            timeout: args
                .store_timeout
                .or(file.store_timeout)
                .unwrap_or(DEFAULT_STORE_TIMEOUT),
            prefix: args
                .store_prefix
                .clone()
                .or(file.store_prefix)
                .unwrap_or_else(|| "tollgate".to_owned()),
            ca_file: args.store_ca_file.clone().or(file.store_ca_file),
        };
        let nodes = match args.nodes.or(file.nodes) {
            Some(0) => bail!("nodes must be at least 1"),
            Some(n) => n,
            None => 1,
        };
        let admin_addr = match args.admin_addr.or(file.admin_addr) {
            Some(addr) => addr,
            None => DEFAULT_ADMIN_ADDR.parse()?,
        };
        if security.admin_auth == AdminAuthMode::None && !admin_addr.ip().is_loopback() {
            // Anyone who reaches an unauthenticated admin API can switch off every limit.
            bail!(
                "admin_addr {admin_addr} is not a loopback address, and admin_auth is none: an \
                 admin API without authentication only listens on 127.0.0.1 or ::1. Keep \
                 --admin-auth required (the default) and create a key with `tollgate keys \
                 create --role admin`"
            );
        }
        Ok(Self {
            http_addr: match args.http_addr.or(file.http_addr) {
                Some(addr) => addr,
                None => DEFAULT_HTTP_ADDR.parse()?,
            },
            grpc_addr: match args.grpc_addr.or(file.grpc_addr) {
                Some(addr) => addr,
                None => DEFAULT_GRPC_ADDR.parse()?,
            },
            admin_addr,
            policies: args.policies.clone().or(file_policies),
            database: database_url(&args.database, file.database, file.data_dir)?,
            migrate: args.migrate || file.migrate,
            store: parse_store(&store_url, max_keys, shared)?,
            nodes,
            max_keys,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            workers: match args.workers.or(file.workers) {
                Some(0) => bail!("workers must be at least 1"),
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(1, usize::from),
            },
            shadow_mode: args.shadow_mode || file.shadow_mode,
            count_denied_requests: args.count_denied_requests || file.count_denied_requests,
            grpc_max_connection_age: args
                .grpc_max_connection_age
                .or(file.grpc_max_connection_age)
                .map(|age| MaxAge {
                    age,
                    grace: args
                        .grpc_max_connection_age_grace
                        .or(file.grpc_max_connection_age_grace)
                        .unwrap_or(Duration::from_secs(10)),
                }),
            grpc_response_headers: args
                .grpc_response_headers
                .or(file.grpc_response_headers)
                .unwrap_or_default(),
            security,
        })
    }
}

fn read_secret(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = std::fs::read(path)
        .with_context(|| format!("cannot read {what} from {}", path.display()))?;
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    Ok(bytes)
}

/// Security settings from the flags and the file; secrets are read from their files now,
/// so a mistake stops startup with a message rather than surfacing at the first request.
fn security_settings(
    args: &SecurityArgs,
    file: &mut FileSettings,
    relative: &dyn Fn(PathBuf) -> PathBuf,
) -> anyhow::Result<SecuritySettings> {
    let pick = |flag: &Option<PathBuf>, from_file: Option<PathBuf>| {
        flag.clone().or_else(|| from_file.map(relative))
    };
    let secret_file = pick(
        &args.jwt_hs256_secret_file,
        file.jwt_hs256_secret_file.take(),
    );
    let jwks_file = pick(&args.jwt_jwks_file, file.jwt_jwks_file.take());
    let issuer = args.jwt_issuer.clone().or(file.jwt_issuer.take());
    let audience = args.jwt_audience.clone().or(file.jwt_audience.take());
    let tokens = if secret_file.is_some() || jwks_file.is_some() {
        let (Some(issuer), Some(audience)) = (issuer, audience) else {
            bail!("JWT authentication needs both jwt_issuer and jwt_audience");
        };
        let hs256_secret = secret_file
            .map(|p| read_secret(&p, "the JWT HS256 secret"))
            .transpose()?;
        let jwks = jwks_file
            .map(|p| {
                std::fs::read_to_string(&p)
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
        if issuer.is_some() || audience.is_some() {
            bail!("jwt_issuer and jwt_audience need jwt_hs256_secret_file or jwt_jwks_file");
        }
        None
    };
    let defaults = GuardLimits::default();
    let guard = GuardLimits {
        requests_per_second: args
            .admin_requests_per_second
            .or(file.admin_requests_per_second)
            .unwrap_or(defaults.requests_per_second),
        failures_per_minute: args
            .admin_auth_failures_per_minute
            .or(file.admin_auth_failures_per_minute)
            .unwrap_or(defaults.failures_per_minute),
    };
    if guard.requests_per_second == 0 || guard.failures_per_minute == 0 {
        bail!("admin_requests_per_second and admin_auth_failures_per_minute must be at least 1");
    }
    let origins = if args.admin_cors_origins.is_empty() {
        std::mem::take(&mut file.admin_cors_origins)
    } else {
        args.admin_cors_origins.clone()
    };
    let admin_cors_origins = origins
        .iter()
        .map(|o| {
            if o == "*" || !(o.starts_with("https://") || o.starts_with("http://")) {
                bail!("admin CORS origin '{o}' must be a full origin such as https://console.example.com (no wildcard)");
            }
            http::HeaderValue::from_str(o)
                .map_err(|_| anyhow::anyhow!("admin CORS origin '{o}' is not a valid header value"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cert = pick(&args.tls_cert, file.tls_cert.take());
    let key = pick(&args.tls_key, file.tls_key.take());
    let client_ca = pick(&args.tls_client_ca, file.tls_client_ca.take());
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(TlsSettings {
            cert,
            key,
            client_ca,
        }),
        (None, None) => {
            if client_ca.is_some() {
                bail!("tls_client_ca needs tls_cert and tls_key: client certificates need TLS");
            }
            None
        }
        _ => bail!("tls_cert and tls_key go together"),
    };
    let data_auth = args.data_auth.or(file.data_auth).unwrap_or_default();
    let token_file = pick(&args.data_token_file, file.data_token_file.take());
    let data_token = match data_auth {
        DataAuthMode::Token => {
            let path = token_file
                .context("data_auth = token needs data_token_file (a file holding the token)")?;
            let text =
                String::from_utf8(read_secret(&path, "the data-plane token")?).map_err(|_| {
                    anyhow::anyhow!("the data-plane token in {} is not UTF-8", path.display())
                })?;
            Some(DataToken::new(&text).map_err(|e| anyhow::anyhow!("{e} ({})", path.display()))?)
        }
        _ if token_file.is_some() => bail!("data_token_file is only used with data_auth = token"),
        _ => None,
    };
    let has_client_ca = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    match data_auth {
        DataAuthMode::Mtls if !has_client_ca => {
            bail!("data_auth = mtls needs tls_cert, tls_key and tls_client_ca")
        }
        DataAuthMode::None | DataAuthMode::Token if has_client_ca => {
            bail!("tls_client_ca is only used with data_auth = mtls")
        }
        _ => {}
    }
    Ok(SecuritySettings {
        admin_auth: args.admin_auth.or(file.admin_auth).unwrap_or_default(),
        tokens,
        guard,
        admin_cors_origins,
        tls,
        data_auth,
        data_token,
    })
}

/// The policy database's URL: `--database`, else the file's `database`, else a SQLite file
/// in the data directory (`--data-dir`, the file's `data_dir`, or the platform default).
fn database_url(
    args: &DatabaseArgs,
    file_database: Option<String>,
    file_data_dir: Option<PathBuf>,
) -> anyhow::Result<String> {
    if let Some(url) = args.database.clone().or(file_database) {
        return Ok(url);
    }
    let dir = match args.data_dir.clone().or(file_data_dir) {
        Some(dir) => dir,
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

/// The policy database named by `migrate`'s flags and optional configuration file.
pub fn migrate_database(args: &DatabaseArgs, config: Option<&Path>) -> anyhow::Result<String> {
    let file = match config {
        Some(path) => read_file(path)?,
        None => FileSettings::default(),
    };
    database_url(args, file.database, file.data_dir)
}

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid configuration file {}", path.display()))
}

/// Options that only shared stores use.
struct SharedStoreOptions {
    timeout: Duration,
    prefix: String,
    ca_file: Option<PathBuf>,
}

fn parse_store(
    url: &str,
    max_keys: usize,
    shared: SharedStoreOptions,
) -> anyhow::Result<StoreSettings> {
    let scheme = url.split_once("://").map_or(url, |(scheme, _)| scheme);
    if scheme == "memory" {
        if max_keys == 0 {
            bail!("max_keys must be at least 1");
        }
        return Ok(StoreSettings::Memory { max_keys });
    }
    if shared.timeout.is_zero() {
        bail!("store_timeout must be longer than zero");
    }
    if shared.prefix.is_empty() || shared.prefix.contains(['{', '}']) {
        bail!("store_prefix must be non-empty and must not contain braces");
    }
    let url = StoreUrl::parse(url).map_err(|e| {
        anyhow::anyhow!("{e} (supported: memory://, redis://, rediss://, redis+cluster://)")
    })?;
    if shared.ca_file.is_some() && !url.tls() {
        bail!("store_ca_file is only used with rediss:// (TLS) store URLs");
    }
    Ok(StoreSettings::Redis {
        url,
        timeout: shared.timeout,
        prefix: shared.prefix,
        ca_file: shared.ca_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let s = Settings::load(&ServeArgs::default()).unwrap();
        assert_eq!(s.http_addr.to_string(), DEFAULT_HTTP_ADDR);
        assert_eq!(s.store, StoreSettings::Memory { max_keys: 16 << 20 });
        assert!(s.policies.is_none());
        assert_eq!(s.admin_addr.to_string(), DEFAULT_ADMIN_ADDR);
        assert!(s.database.starts_with("sqlite://"), "{}", s.database);
        assert!(
            s.database.ends_with("tollgate/tollgate.db"),
            "{}",
            s.database
        );
    }

    #[test]
    fn an_unauthenticated_admin_listener_stays_on_loopback() {
        let none = SecurityArgs {
            admin_auth: Some(AdminAuthMode::None),
            ..SecurityArgs::default()
        };
        let args = ServeArgs {
            admin_addr: Some("0.0.0.0:8082".parse().unwrap()),
            security: none.clone(),
            ..ServeArgs::default()
        };
        let err = Settings::load(&args).unwrap_err().to_string();
        assert!(err.contains("not a loopback address"), "{err}");
        let args = ServeArgs {
            admin_addr: Some("[::1]:0".parse().unwrap()),
            security: none,
            ..ServeArgs::default()
        };
        assert!(Settings::load(&args).is_ok());
        // Authenticated, it may listen anywhere.
        let args = ServeArgs {
            admin_addr: Some("0.0.0.0:8082".parse().unwrap()),
            ..ServeArgs::default()
        };
        let s = Settings::load(&args).unwrap();
        assert_eq!(s.security.admin_auth, AdminAuthMode::Required);
    }

    #[test]
    fn security_settings_that_cannot_work_are_refused_with_their_reason() {
        let dir = std::env::temp_dir().join(format!("tollgate-sec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "too-short\n").unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "a-token-long-enough-1234\n").unwrap();
        let cases: Vec<(SecurityArgs, &str)> = vec![
            (
                SecurityArgs {
                    jwt_hs256_secret_file: Some(short.clone()),
                    ..SecurityArgs::default()
                },
                "jwt_issuer and jwt_audience",
            ),
            (
                SecurityArgs {
                    jwt_hs256_secret_file: Some(short.clone()),
                    jwt_issuer: Some("i".into()),
                    jwt_audience: Some("a".into()),
                    ..SecurityArgs::default()
                },
                "at least 32 bytes",
            ),
            (
                SecurityArgs {
                    data_auth: Some(DataAuthMode::Token),
                    ..SecurityArgs::default()
                },
                "needs data_token_file",
            ),
            (
                SecurityArgs {
                    data_auth: Some(DataAuthMode::Token),
                    data_token_file: Some(short.clone()),
                    ..SecurityArgs::default()
                },
                "at least 16",
            ),
            (
                SecurityArgs {
                    data_auth: Some(DataAuthMode::Mtls),
                    ..SecurityArgs::default()
                },
                "needs tls_cert, tls_key and tls_client_ca",
            ),
            (
                SecurityArgs {
                    tls_client_ca: Some(short.clone()),
                    ..SecurityArgs::default()
                },
                "client certificates need TLS",
            ),
            (
                SecurityArgs {
                    admin_cors_origins: vec!["*".into()],
                    ..SecurityArgs::default()
                },
                "no wildcard",
            ),
        ];
        for (security, expected) in cases {
            let err = Settings::load(&ServeArgs {
                security: security.clone(),
                ..ServeArgs::default()
            })
            .unwrap_err();
            assert!(
                format!("{err:#}").contains(expected),
                "{security:?}: {err:#}"
            );
        }
        let ok = Settings::load(&ServeArgs {
            security: SecurityArgs {
                data_auth: Some(DataAuthMode::Token),
                data_token_file: Some(token),
                ..SecurityArgs::default()
            },
            ..ServeArgs::default()
        })
        .unwrap();
        assert!(ok.security.data_token.is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_database_defaults_to_sqlite_in_the_data_dir() {
        let args = DatabaseArgs {
            database: None,
            data_dir: Some("/var/lib/tg".into()),
        };
        assert_eq!(
            database_url(&args, None, None).unwrap(),
            "sqlite:///var/lib/tg/tollgate.db"
        );
        let args = DatabaseArgs {
            database: Some("postgres://h/db".into()),
            data_dir: Some("/x".into()),
        };
        assert_eq!(database_url(&args, None, None).unwrap(), "postgres://h/db");
    }

    #[test]
    fn flags_win_over_the_file_and_paths_are_relative_to_it() {
        let dir = std::env::temp_dir().join(format!("tollgate-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("tollgate.toml");
        std::fs::write(
            &cfg,
            "http_addr = \"127.0.0.1:9000\"\npolicies = \"pol\"\nmax_keys = 5\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(cfg.clone()),
            http_addr: Some("127.0.0.1:9001".parse().unwrap()),
            ..ServeArgs::default()
        };
        let s = Settings::load(&args).unwrap();
        assert_eq!(s.http_addr.port(), 9001);
        assert_eq!(s.policies, Some(dir.join("pol")));
        assert_eq!(s.store, StoreSettings::Memory { max_keys: 5 });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_keys_and_stores_are_errors() {
        let dir = std::env::temp_dir().join(format!("tollgate-cfg-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("bad.toml");
        std::fs::write(&cfg, "http_adr = \"127.0.0.1:9000\"\n").unwrap();
        let err = Settings::load(&ServeArgs {
            config: Some(cfg),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("http_adr"), "{err:#}");
        let err = parse_store("memcached://127.0.0.1:11211", 1, options()).unwrap_err();
        assert!(
            err.to_string().contains("unknown scheme 'memcached'"),
            "{err}"
        );
        assert!(err.to_string().contains("redis+cluster://"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn options() -> SharedStoreOptions {
        SharedStoreOptions {
            timeout: DEFAULT_STORE_TIMEOUT,
            prefix: "tollgate".into(),
            ca_file: None,
        }
    }

    #[test]
    fn redis_urls_pick_the_redis_store_with_its_options() {
        let s = parse_store(
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
            1,
            options(),
        )
        .unwrap();
        let StoreSettings::Redis {
            url,
            timeout,
            prefix,
            ca_file: None,
        } = s
        else {
            panic!("expected Redis, got {s:?}");
        };
        assert!(matches!(url, StoreUrl::Cluster(ref nodes) if nodes.len() == 2));
        assert_eq!(timeout, Duration::from_millis(50));
        assert_eq!(prefix, "tollgate");
        let bad_prefix = SharedStoreOptions {
            prefix: "a{b}".into(),
            ..options()
        };
        assert!(parse_store("redis://h:1", 1, bad_prefix).is_err());
    }
}
