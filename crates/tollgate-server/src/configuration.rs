//! Settings of `tollgate serve`, defined once.
//!
//! Every option is one field of a section struct below: its doc comment is its help, its
//! `#[arg]` names the flag, the `TOLLGATE_*` variable and the default, and its field name
//! is its key in the TOML file. Layers, lowest first: the built-in default < the TOML file
//! (`--config`) < the environment < the command line. clap does the layering: a file's
//! values become the arguments' defaults ([`apply_file`]), so clap's own precedence puts
//! them above the built-in ones and below variables and flags, and clap's own parsers
//! check them (errors name the file, the line and the key). [`Settings::validate`] then
//! checks what spans options, in one pass.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, FromArgMatches, ValueHint};
use tollgate_admin::access::{AdminAuthMode, GuardLimits};
use tollgate_data::data_auth::{DataAuthMode, DataToken};
use tollgate_data::grpc::ResponseHeaders;
use tollgate_data::listener::MaxAge;
use tollgate_data::tls::TlsSettings;
use tollgate_redis::StoreUrl;

#[cfg(test)]
use crate::cli::Command;
use crate::cli::{Cli, LogFormat};

/// Where each listener binds and how many workers serve the data plane.
#[derive(Debug, Clone, Args)]
pub struct ListenOptions {
    /// Address of the HTTP listener (POST /v1/check, /healthz, /readyz, /metrics).
    /// Port 0 picks a free port; the chosen address is logged.
    #[arg(
        long,
        env = "TOLLGATE_HTTP_ADDR",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub http_addr: SocketAddr,
    /// Address of the gRPC listener (Envoy RLS v3 `ShouldRateLimit`, `grpc.health.v1`).
    /// Port 0 picks a free port; the chosen address is logged.
    #[arg(
        long,
        env = "TOLLGATE_GRPC_ADDR",
        value_name = "ADDR",
        default_value = "127.0.0.1:8081"
    )]
    pub grpc_addr: SocketAddr,
    /// Address of the admin listener: REST under /v1/admin/, GraphQL at /graphql.
    /// Port 0 picks a free port; the chosen address is logged.
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_ADDR",
        value_name = "ADDR",
        default_value = "127.0.0.1:8082"
    )]
    pub admin_addr: SocketAddr,
    /// Worker threads serving requests, each with its own listening socket on the same
    /// address. Default: one per CPU core.
    #[arg(long, env = "TOLLGATE_WORKERS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
}

/// Where policies come from.
#[derive(Debug, Clone, Args)]
pub struct PolicyOptions {
    /// A policy file, or a directory of policy files (one domain per file). Defaults to the
    /// built-in example policies.
    #[arg(long, env = "TOLLGATE_POLICIES", value_name = "PATH", value_hint = ValueHint::AnyPath)]
    pub policies: Option<PathBuf>,
    /// The policy database.
    #[command(flatten)]
    pub database: DatabaseOptions,
    /// Apply pending database migrations at startup instead of refusing to start.
    /// (A brand-new, empty database is always initialised.)
    #[arg(long, env = "TOLLGATE_MIGRATE")]
    pub migrate: bool,
}

/// Where the policy database is; shared by `serve`, `migrate` and `keys`.
#[derive(Debug, Clone, Args, Default)]
pub struct DatabaseOptions {
    /// The policy database: sqlite:PATH (one node) or postgres://user@host/db (many nodes
    /// sharing policies). Default: a SQLite file in the data directory.
    #[arg(long, env = "TOLLGATE_DATABASE", value_name = "URL")]
    pub database: Option<String>,
    /// Directory for Tollgate's own files (the default SQLite database). Default:
    /// $XDG_DATA_HOME/tollgate, else ~/.local/share/tollgate.
    #[arg(long, env = "TOLLGATE_DATA_DIR", value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub data_dir: Option<PathBuf>,
}

/// Where counters live.
#[derive(Debug, Clone, Args)]
pub struct StoreOptions {
    /// Where counters live: memory:// (this process, the default), redis://host:port
    /// (rediss:// for TLS) or redis+cluster://host:port,host:port for a Redis Cluster.
    /// Valkey works under the same URLs (valkey:// is accepted too).
    #[arg(
        long,
        env = "TOLLGATE_STORE",
        value_name = "URL",
        default_value = "memory://"
    )]
    pub store: String,
    /// Deadline of one call to a shared store (e.g. `50ms`); past it, the policy's
    /// on_store_error decides.
    #[arg(long, env = "TOLLGATE_STORE_TIMEOUT", value_name = "DURATION", default_value = "50ms", value_parser = positive_duration)]
    pub store_timeout: Duration,
    /// With rediss://: a PEM file of CA certificates to trust instead of the system's, for
    /// a Redis whose certificate a private CA signed.
    #[arg(long, env = "TOLLGATE_STORE_CA_FILE", value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub store_ca_file: Option<PathBuf>,
    /// Prefix of every key in a shared store, so several deployments can share one Redis.
    #[arg(long, env = "TOLLGATE_STORE_PREFIX", value_name = "PREFIX", default_value = "tollgate", value_parser = store_prefix)]
    pub store_prefix: String,
    /// How many nodes share the store: with on_store_error: local, each node then enforces
    /// limit / N on its own while the store is unreachable.
    #[arg(long, env = "TOLLGATE_NODES", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub nodes: u64,
    /// Most counters kept in this process: the in-memory store's, or with a shared store
    /// the node-local ones (consistency: local, on_store_error: local). Memory stays
    /// bounded under key spraying.
    #[arg(long, env = "TOLLGATE_MAX_KEYS", value_name = "N", default_value_t = 16 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_keys: u64,
}

/// How decisions are counted.
#[derive(Debug, Clone, Args)]
pub struct LimiterOptions {
    /// Global shadow mode: every policy is evaluated and counted, none ever denies
    /// (envoyproxy/ratelimit's SHADOW_MODE).
    #[arg(long, env = "TOLLGATE_SHADOW_MODE")]
    pub shadow_mode: bool,
    /// Count denied requests too, as envoyproxy/ratelimit does: every matching limit is
    /// charged whether or not the request passes. By default a denied request consumes
    /// nothing.
    #[arg(long, env = "TOLLGATE_COUNT_DENIED_REQUESTS")]
    pub count_denied_requests: bool,
}

/// The gRPC listener's behaviour.
#[derive(Debug, Clone, Args)]
pub struct GrpcListenerOptions {
    /// Rate-limit headers the gRPC service asks Envoy to add to responses
    /// (`response_headers_to_add`): none, draft03 (`X-RateLimit-*`, as
    /// envoyproxy/ratelimit's LIMIT_RESPONSE_HEADERS_ENABLED) or draft11 (`RateLimit-Policy`,
    /// `RateLimit`).
    #[arg(
        long,
        env = "TOLLGATE_GRPC_RESPONSE_HEADERS",
        value_name = "KIND",
        default_value = "none"
    )]
    pub grpc_response_headers: ResponseHeaders,
    /// Recycle gRPC connections at this age (e.g. `24h`, `30m`), so that clients
    /// re-resolve and spread over new nodes. Default: connections live until closed.
    #[arg(long, env = "TOLLGATE_GRPC_MAX_CONNECTION_AGE", value_name = "DURATION", value_parser = positive_duration)]
    pub grpc_max_connection_age: Option<Duration>,
    /// Time in-flight calls get after a connection reached its maximum age.
    #[arg(long, env = "TOLLGATE_GRPC_MAX_CONNECTION_AGE_GRACE", value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub grpc_max_connection_age_grace: Duration,
}

/// Authentication, TLS and the admin API's own limits.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Security")]
pub struct SecurityOptions {
    /// How the admin API authenticates: required (API keys from `tollgate keys create`, or
    /// JWT bearer tokens) or none (every caller is an admin: only accepted when
    /// --admin-addr is a loopback address).
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_AUTH",
        value_name = "MODE",
        default_value = "required"
    )]
    pub admin_auth: AdminAuthMode,
    /// Accept HS256 JWTs signed with the secret in this file (at least 32 bytes).
    #[arg(long, env = "TOLLGATE_JWT_HS256_SECRET_FILE", value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// Accept RS256/ES256 JWTs signed by the keys of this JWKS file.
    #[arg(long, env = "TOLLGATE_JWT_JWKS_FILE", value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub jwt_jwks_file: Option<PathBuf>,
    /// The `iss` every JWT must carry.
    #[arg(long, env = "TOLLGATE_JWT_ISSUER", value_name = "ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The `aud` every JWT must carry.
    #[arg(long, env = "TOLLGATE_JWT_AUDIENCE", value_name = "AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Admin requests per second accepted from one address (bursts of 2 s).
    #[arg(long, env = "TOLLGATE_ADMIN_REQUESTS_PER_SECOND", value_name = "N", default_value_t = GuardLimits::default().requests_per_second, value_parser = clap::value_parser!(u32).range(1..))]
    pub admin_requests_per_second: u32,
    /// Failed authentications per minute from one address before it gets 429.
    #[arg(long, env = "TOLLGATE_ADMIN_AUTH_FAILURES_PER_MINUTE", value_name = "N", default_value_t = GuardLimits::default().failures_per_minute, value_parser = clap::value_parser!(u32).range(1..))]
    pub admin_auth_failures_per_minute: u32,
    /// Browser origins allowed to call the admin API (CORS); none by default. Repeatable.
    #[arg(long = "admin-cors-origin", env = "TOLLGATE_ADMIN_CORS_ORIGINS", value_name = "ORIGIN", value_delimiter = ',', value_parser = cors_origin)]
    pub admin_cors_origins: Vec<http::HeaderValue>,
    /// Serve TLS on every listener with this certificate chain (PEM); reloaded when the
    /// file changes.
    #[arg(long, env = "TOLLGATE_TLS_CERT", value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "TOLLGATE_TLS_KEY", value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub tls_key: Option<PathBuf>,
    /// With --data-auth mtls: CA certificates (PEM) that sign the clients' certificates.
    #[arg(long, env = "TOLLGATE_TLS_CLIENT_CA", value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub tls_client_ca: Option<PathBuf>,
    /// How the data plane (/v1/check, Envoy RLS) authenticates callers: none (as
    /// envoyproxy/ratelimit), token (a shared bearer token) or mtls (client certificates
    /// signed by --tls-client-ca).
    #[arg(
        long,
        env = "TOLLGATE_DATA_AUTH",
        value_name = "MODE",
        default_value = "none"
    )]
    pub data_auth: DataAuthMode,
    /// With --data-auth token: the file holding the shared token (16+ characters).
    #[arg(long, env = "TOLLGATE_DATA_TOKEN_FILE", value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub data_token_file: Option<PathBuf>,
}

/// Every option of `tollgate serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeOptions {
    /// A TOML configuration file (see examples/tollgate.toml): its keys are the options'
    /// names with underscores (`http_addr = "127.0.0.1:9000"`).
    #[arg(long, env = "TOLLGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listeners.
    #[command(flatten)]
    pub listen: ListenOptions,
    /// Policies.
    #[command(flatten)]
    pub policies: PolicyOptions,
    /// Counters.
    #[command(flatten)]
    pub store: StoreOptions,
    /// Counting.
    #[command(flatten)]
    pub limiter: LimiterOptions,
    /// gRPC.
    #[command(flatten)]
    pub grpc: GrpcListenerOptions,
    /// Log format: auto (pretty on a terminal, JSON otherwise), json or pretty.
    /// The level is set with RUST_LOG (default: info).
    #[arg(
        long,
        env = "TOLLGATE_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "auto"
    )]
    pub log_format: LogFormat,
    /// Security.
    #[command(flatten)]
    pub security: SecurityOptions,
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

fn store_prefix(text: &str) -> Result<String, String> {
    if text.is_empty() || text.contains(['{', '}']) {
        return Err("must be non-empty and must not contain braces".into());
    }
    Ok(text.to_owned())
}

fn cors_origin(origin: &str) -> Result<http::HeaderValue, String> {
    if origin == "*" || !(origin.starts_with("https://") || origin.starts_with("http://")) {
        return Err(format!(
            "'{origin}' must be a full origin such as https://console.example.com (no wildcard)"
        ));
    }
    http::HeaderValue::from_str(origin)
        .map_err(|_| format!("'{origin}' is not a valid header value"))
}

/// Parses the command line (and the environment, and the `--config` file of the
/// subcommands that take one) into the [`Cli`]. A usage error, `--help` or `--version` is
/// a [`clap::Error`] inside the error, for `main` to print and exit with.
pub fn parse_command_line() -> anyhow::Result<Cli> {
    parse_from(std::env::args_os())
}

/// [`parse_command_line`] over given arguments.
pub fn parse_from(args: impl IntoIterator<Item = impl Into<OsString>>) -> anyhow::Result<Cli> {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = Cli::command();
    if let Some((subcommand, path)) = config_path(&args) {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        let file = ConfigFile::parse(&path, &text)?;
        let target = command
            .find_subcommand(&subcommand)
            .context("no such subcommand")?;
        let defaults = file.defaults_for(target)?;
        command = command.mut_subcommand(&subcommand, |mut c| {
            for (key, values) in defaults {
                let values: Vec<clap::builder::OsStr> =
                    values.into_iter().map(Into::into).collect();
                c = c.mut_arg(key, |a| a.default_values(values));
            }
            c
        });
    }
    let matches = command.try_get_matches_from(args)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// The subcommand and the `--config` file named on the command line or in the
/// environment, found by a lenient first parse.
fn config_path(args: &[OsString]) -> Option<(String, PathBuf)> {
    let matches = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(args)
        .ok()?;
    let (name, sub) = matches.subcommand()?;
    let path = sub.try_get_one::<PathBuf>("config").ok().flatten()?;
    Some((name.to_owned(), path.clone()))
}

/// A TOML configuration file: flat `key = value` lines, one per option.
struct ConfigFile {
    path: PathBuf,
    text: String,
    table: toml::Table,
}

impl ConfigFile {
    fn parse(path: &Path, text: &str) -> anyhow::Result<Self> {
        let table: toml::Table = toml::from_str(text)
            .with_context(|| format!("invalid configuration file {}", path.display()))?;
        let known = serve_keys();
        for key in table.keys() {
            if !known.iter().any(|k| k == key) {
                bail!(
                    "{}:{}: unknown key `{key}` (known keys: {})",
                    path.display(),
                    line_of(text, key),
                    known.join(", ")
                );
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            text: text.to_owned(),
            table,
        })
    }

    /// The file's values as defaults of `command`'s arguments, each checked by the
    /// argument's own parser; keys `command` does not take (serve's, for `migrate`) are
    /// left out. Paths are relative to the file.
    fn defaults_for(&self, command: &clap::Command) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut defaults = Vec::new();
        for (key, value) in &self.table {
            let Some(arg) = command.get_arguments().find(|a| a.get_id() == key.as_str()) else {
                continue;
            };
            let at = || {
                format!(
                    "{}:{}: `{key}`",
                    self.path.display(),
                    line_of(&self.text, key)
                )
            };
            let Some(values) = scalars(value) else {
                bail!(
                    "{} must be a string, a number, a boolean or a list of them",
                    at()
                );
            };
            let is_path = matches!(
                arg.get_value_hint(),
                ValueHint::FilePath | ValueHint::DirPath | ValueHint::AnyPath
            );
            let values: Vec<String> = values
                .into_iter()
                .map(|v| match is_path && Path::new(&v).is_relative() {
                    true => dir.join(v).display().to_string(),
                    false => v,
                })
                .collect();
            if values.len() != 1 && !matches!(arg.get_action(), clap::ArgAction::Append) {
                bail!("{} takes one value, not a list", at());
            }
            for v in &values {
                check_value(arg, v).map_err(|why| anyhow::anyhow!("{}: {why}", at()))?;
            }
            defaults.push((key.clone(), values));
        }
        Ok(defaults)
    }
}

/// Runs `value` through `arg`'s own parser, as if it had been given on the command line.
fn check_value(arg: &clap::Arg, value: &str) -> Result<(), String> {
    if matches!(
        arg.get_action(),
        clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
    ) {
        return match value {
            "true" | "false" => Ok(()),
            _ => Err(format!("must be true or false, not '{value}'")),
        };
    }
    let long = arg.get_long().unwrap_or(arg.get_id().as_str());
    let probe = clap::Command::new("tollgate")
        .no_binary_name(true)
        .arg(arg.clone().required(false).env(None::<&str>));
    match probe.try_get_matches_from([format!("--{long}={value}")]) {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.to_string();
            Err(text
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_owned())
        }
    }
}

/// The keys a configuration file may set: every option of `serve` but `config`.
fn serve_keys() -> Vec<String> {
    let command = Cli::command();
    let serve = command.find_subcommand("serve");
    serve
        .into_iter()
        .flat_map(|s| s.get_arguments())
        .map(|a| a.get_id().to_string())
        .filter(|id| id != "config" && id != "help")
        .collect()
}

/// The 1-based line where `key` is set (1 when it cannot be found).
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}

/// A TOML value as the strings a command line would carry.
fn scalars(value: &toml::Value) -> Option<Vec<String>> {
    match value {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Integer(i) => Some(vec![i.to_string()]),
        toml::Value::Float(f) => Some(vec![f.to_string()]),
        toml::Value::Boolean(b) => Some(vec![b.to_string()]),
        toml::Value::Datetime(d) => Some(vec![d.to_string()]),
        toml::Value::Array(items) => items
            .iter()
            .map(|v| match v {
                toml::Value::Array(_) | toml::Value::Table(_) => None,
                v => scalars(v).map(|mut s| s.remove(0)),
            })
            .collect(),
        toml::Value::Table(_) => None,
    }
}

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
            options,
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
fn serve(args: &[&str]) -> anyhow::Result<Settings> {
    let cli = parse_from(
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
    use super::*;

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
    fn flags_win_over_the_file_and_paths_are_relative_to_it() {
        let dir = std::env::temp_dir().join(format!("tollgate-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("tollgate.toml");
        std::fs::write(
            &cfg,
            "http_addr = \"127.0.0.1:9000\"\ngrpc_addr = \"127.0.0.1:9002\"\npolicies = \"pol\"\nmax_keys = 5\nshadow_mode = true\n",
        )
        .unwrap();
        let s = serve(&[
            "--config",
            cfg.to_str().unwrap(),
            "--http-addr",
            "127.0.0.1:9001",
        ])
        .unwrap();
        assert_eq!(s.options.listen.http_addr.port(), 9001);
        assert_eq!(s.options.listen.grpc_addr.port(), 9002);
        assert_eq!(s.options.policies.policies, Some(dir.join("pol")));
        assert_eq!(s.store, StoreSettings::Memory { max_keys: 5 });
        assert!(s.options.limiter.shadow_mode);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file_line_and_key() {
        let path = Path::new("/etc/tollgate.toml");
        let err = ConfigFile::parse(path, "# a comment\nhttp_adr = \"127.0.0.1:9000\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("/etc/tollgate.toml:2: unknown key `http_adr`"),
            "{err}"
        );
        assert!(err.contains("http_addr"), "lists the known keys: {err}");
        let err = ConfigFile::parse(path, "http_addr = [\"x\"\n")
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("invalid configuration file"),
            "{err:#}"
        );
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
