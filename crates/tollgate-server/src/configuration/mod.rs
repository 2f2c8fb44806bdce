//! Settings of `tollgate serve`, defined once.
//!
//! Every option is one field of a section struct below: its doc comment is its help, its
//! `#[arg]` names the flag, the `TOLLGATE_*` variable and the default, and its field name
//! is its key in the TOML file. Layers, lowest first: the built-in default < the TOML file
//! (`--config`) < the environment < the command line. clap does the layering: a file's
//! values become the arguments' defaults ([`file`]), so clap's own precedence puts
//! them above the built-in ones and below variables and flags, and clap's own parsers
//! check them (errors name the file, the line and the key). [`Settings::validate`] then
//! checks what spans options, in one pass.

mod file;
mod settings;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueHint};
use tollgate_admin::access::{AdminAuthMode, GuardLimits};
use tollgate_data::data_auth::DataAuthMode;
use tollgate_data::grpc::ResponseHeaders;
use tollgate_data::resp::cell::CellRelease;

use crate::cli::LogFormat;

pub use file::{parse_command_line, parse_from};
pub use settings::{SecuritySettings, Settings, StoreSettings, database_url, host_name};

/// An address (`10.0.0.7`: that one) or a CIDR range (`10.0.0.0/8`).
fn parse_net(value: &str) -> Result<ipnet::IpNet, String> {
    let value = value.trim();
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("'{value}' is neither an address nor a CIDR range (10.0.0.0/8)"))
}

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
    /// Address of the RESP listener (off when unset): any Redis client may send
    /// redis-cell's `CL.THROTTLE` and Tollgate's `TG.CHECK`. Port 0 picks a free port.
    #[arg(long, env = "TOLLGATE_RESP_ADDR", value_name = "ADDR")]
    pub resp_addr: Option<SocketAddr>,
    /// The redis-cell release `CL.THROTTLE` answers as: 0.2 (the crate on crates.io:
    /// times truncated to whole seconds), 0.3 (truncated; errors read `Cell error: Store
    /// error: ...`) or 0.4 (0.4.0 and later: times rounded up; errors as 0.3's). Pick the
    /// one the callers were written against.
    #[arg(
        long,
        env = "TOLLGATE_RESP_CELL_RELEASE",
        value_name = "RELEASE",
        default_value = "0.2"
    )]
    pub resp_cell_release: CellRelease,
    /// Proxies whose `X-Forwarded-For` forward auth (`/v1/forward-auth/{domain}`) believes
    /// when it takes the client's address: comma-separated addresses or CIDR ranges.
    #[arg(
        long,
        env = "TOLLGATE_TRUSTED_PROXIES",
        value_name = "CIDR,...",
        value_delimiter = ',',
        value_parser = parse_net,
        default_value = "127.0.0.0/8,::1/128"
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,
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
    /// Microseconds a worker stays busy once it runs out of work before it sleeps (0, the
    /// default: it sleeps at once; at most 1000). A request that comes meanwhile is read
    /// without waking a sleeping thread, and the client is spared that wake-up: more
    /// decisions per second and lower latency for clients that send one request at a time,
    /// for CPU spent while lightly loaded (docs/design/scaling.md, "Spinning before sleep").
    #[arg(long, env = "TOLLGATE_PARK_SPIN_US", value_name = "MICROSECONDS", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub park_spin_us: u16,
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
    /// Global quota mode (envoyproxy/ratelimit's QUOTA_MODE): every limit is in quota
    /// mode, so a request is denied only when every limited descriptor is over.
    #[arg(long, env = "TOLLGATE_QUOTA_MODE")]
    pub quota_mode: bool,
}

/// The gRPC listener's behaviour.
#[derive(Debug, Clone, Args)]
pub struct GrpcListenerOptions {
    /// Rate-limit headers the gRPC service asks Envoy to add to responses
    /// (`response_headers_to_add`): none, draft03 (`RateLimit-Limit`, `-Remaining`, `-Reset`, as
    /// envoyproxy/ratelimit's LIMIT_RESPONSE_HEADERS_ENABLED) or draft11 (`RateLimit-Policy`,
    /// `RateLimit`).
    #[arg(
        long,
        env = "TOLLGATE_GRPC_RESPONSE_HEADERS",
        value_name = "KIND",
        default_value = "none"
    )]
    pub grpc_response_headers: ResponseHeaders,
    /// With draft03: the name of the header carrying the limit (envoyproxy/ratelimit's
    /// LIMIT_LIMIT_HEADER).
    #[arg(long, env = "TOLLGATE_GRPC_LIMIT_HEADER", value_name = "NAME", default_value = "RateLimit-Limit", value_parser = header_name)]
    pub grpc_limit_header: String,
    /// With draft03: the name of the header carrying what is left (LIMIT_REMAINING_HEADER).
    #[arg(long, env = "TOLLGATE_GRPC_REMAINING_HEADER", value_name = "NAME", default_value = "RateLimit-Remaining", value_parser = header_name)]
    pub grpc_remaining_header: String,
    /// With draft03: the name of the header carrying the seconds to the end of the limit's
    /// unit (LIMIT_RESET_HEADER).
    #[arg(long, env = "TOLLGATE_GRPC_RESET_HEADER", value_name = "NAME", default_value = "RateLimit-Reset", value_parser = header_name)]
    pub grpc_reset_header: String,
    /// Return the request (domain, descriptors, hits) and the `metadata` of the descriptors
    /// that passed in each gRPC response's dynamic metadata (envoyproxy/ratelimit's
    /// RESPONSE_DYNAMIC_METADATA).
    #[arg(long, env = "TOLLGATE_GRPC_RESPONSE_DYNAMIC_METADATA")]
    pub grpc_response_dynamic_metadata: bool,
    /// Recycle gRPC connections at this age (e.g. `24h`, `30m`), so that clients
    /// re-resolve and spread over new nodes. Default: connections live until closed.
    #[arg(long, env = "TOLLGATE_GRPC_MAX_CONNECTION_AGE", value_name = "DURATION", value_parser = positive_duration)]
    pub grpc_max_connection_age: Option<Duration>,
    /// Time in-flight calls get after a connection reached its maximum age.
    #[arg(long, env = "TOLLGATE_GRPC_MAX_CONNECTION_AGE_GRACE", value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub grpc_max_connection_age_grace: Duration,
    /// HTTP/2 pings on idle gRPC connections, so that dead peers are noticed.
    #[arg(long, env = "TOLLGATE_GRPC_KEEPALIVE", value_name = "DURATION", default_value = "30s", value_parser = positive_duration)]
    pub grpc_keepalive: Duration,
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

/// Events on NATS JetStream and the usage they carry.
#[derive(Debug, Clone, Args)]
pub struct EventsOptions {
    /// Publish events to NATS JetStream at this URL (nats://HOST:PORT, tls://HOST:PORT;
    /// several comma-separated): audit entries and changes through the transactional outbox,
    /// denials and usage aggregates from the data plane. Off when unset. An unreachable
    /// broker does not stop the node: events wait and /readyz says so.
    #[arg(long, env = "TOLLGATE_EVENTS", value_name = "URL")]
    pub events: Option<String>,
    /// A NATS credentials file (.creds: user JWT and NKey seed) for the broker.
    #[arg(long, env = "TOLLGATE_EVENTS_CREDENTIALS", value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub events_credentials: Option<PathBuf>,
    /// PEM CA certificates to trust for the broker's TLS.
    #[arg(long, env = "TOLLGATE_EVENTS_CA", value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub events_ca: Option<PathBuf>,
    /// A PEM client certificate for mutual TLS with the broker (with --events-client-key).
    #[arg(long, env = "TOLLGATE_EVENTS_CLIENT_CERT", value_name = "FILE", value_hint = ValueHint::FilePath, requires = "events_client_key")]
    pub events_client_cert: Option<PathBuf>,
    /// The PEM key of --events-client-cert.
    #[arg(long, env = "TOLLGATE_EVENTS_CLIENT_KEY", value_name = "FILE", value_hint = ValueHint::FilePath, requires = "events_client_cert")]
    pub events_client_key: Option<PathBuf>,
    /// This node's name in events (`source: /tollgate/node/NAME`). Default: the host name.
    #[arg(long, env = "TOLLGATE_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Keep usage per policy and heavy hitters (the admin API's usage view) even without
    /// --events, which turns it on.
    #[arg(long, env = "TOLLGATE_USAGE")]
    pub usage: bool,
    /// How often usage is aggregated and published.
    #[arg(long, env = "TOLLGATE_USAGE_INTERVAL", value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    pub usage_interval: Duration,
    /// Heavy hitters reported per policy and interval.
    #[arg(long, env = "TOLLGATE_HEAVY_HITTERS", value_name = "K", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub heavy_hitters: u16,
    /// Counters of each policy's heavy-hitter summary (more: smaller error, N / counters).
    #[arg(long, env = "TOLLGATE_HEAVY_HITTER_COUNTERS", value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..))]
    pub heavy_hitter_counters: u16,
    /// Denial events published one by one per second, per node; past it they are sampled.
    #[arg(
        long,
        env = "TOLLGATE_DENIAL_EVENTS_PER_SECOND",
        value_name = "N",
        default_value_t = 100
    )]
    pub denial_events_per_second: u64,
    /// Past the rate, one denial in this many is published (each says how many it stands for).
    #[arg(long, env = "TOLLGATE_DENIAL_EVENTS_SAMPLE", value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub denial_events_sample: u64,
    /// Data-plane events that may wait for the publisher; past it they are dropped and counted.
    #[arg(long, env = "TOLLGATE_EVENTS_QUEUE", value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub events_queue: u32,
}

/// Traces.
#[derive(Debug, Clone, Args)]
pub struct TraceOptions {
    /// Export traces over OTLP/HTTP (protobuf) to this collector, such as
    /// http://127.0.0.1:4318 (`/v1/traces` is added to a URL without a path). Off when
    /// unset.
    #[arg(long, env = "TOLLGATE_OTLP_ENDPOINT", value_name = "URL", value_parser = otlp_endpoint)]
    pub otlp_endpoint: Option<String>,
    /// The share of decisions without a caller's `traceparent` that start a sampled trace
    /// (0 to 1). A request with a `traceparent` follows its caller's sampling flag.
    #[arg(long, env = "TOLLGATE_TRACE_SAMPLE_RATIO", value_name = "RATIO", default_value_t = 0.01, value_parser = ratio)]
    pub trace_sample_ratio: f64,
}

fn otlp_endpoint(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("'{text}' is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "'{text}' must be an http:// or https:// URL of an OTLP/HTTP collector, such as http://127.0.0.1:4318"
        ));
    }
    if url.path() == "/" || url.path().is_empty() {
        return Ok(format!("{}v1/traces", url.as_str()));
    }
    Ok(url.to_string())
}

fn ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "'{text}' is not a ratio from 0 to 1 (such as 0.01)"
        )),
    }
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
    /// Events.
    #[command(flatten)]
    pub events: EventsOptions,
    /// Traces.
    #[command(flatten)]
    pub traces: TraceOptions,
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

fn header_name(text: &str) -> Result<String, String> {
    http::HeaderName::from_bytes(text.as_bytes())
        .map(|_| text.to_owned())
        .map_err(|_| format!("'{text}' is not a valid HTTP header name"))
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
