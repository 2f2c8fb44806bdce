//! The command line (clap). Every `serve` flag can also come from a `TOLLGATE_*` variable
//! or the TOML file given with `--config`; flags and variables win over the file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Tollgate: a rate-limiting and quota service. Callers ask "may this request pass?" and
/// get a decision in microseconds.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the rate-limit service (HTTP and gRPC data planes, admin APIs, operations endpoints).
    ///
    /// With no options it listens on 127.0.0.1:8080 (HTTP) and 127.0.0.1:8081 (gRPC),
    /// keeps counters in memory and serves the built-in example policies (domain "api").
    /// The admin API (REST and GraphQL) listens on 127.0.0.1:8082; policies created there
    /// live in a SQLite database in the data directory.
    Serve(Box<ServeArgs>),
    /// Work with policy files.
    Policy {
        /// What to do with them.
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Manage the policy database's schema (versioned migrations embedded in the binary).
    Migrate(MigrateArgs),
    /// Ask a running server for one decision and print it.
    ///
    /// Exit status: 0 when allowed, 1 when denied, 2 on any error.
    Check(CheckArgs),
}

/// `tollgate serve`.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// A TOML configuration file (see examples/tollgate.toml).
    #[arg(long, env = "TOLLGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A policy file, or a directory of policy files (one domain per file). Defaults to the
    /// built-in example policies.
    #[arg(long, env = "TOLLGATE_POLICIES", value_name = "PATH")]
    pub policies: Option<PathBuf>,
    /// Address of the HTTP listener (POST /v1/check, /healthz, /readyz, /metrics).
    /// Port 0 picks a free port; the chosen address is logged.
    #[arg(long, env = "TOLLGATE_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Address of the gRPC listener (Envoy RLS v3 `ShouldRateLimit`, `grpc.health.v1`).
    /// Port 0 picks a free port; the chosen address is logged.
    #[arg(long, env = "TOLLGATE_GRPC_ADDR", value_name = "ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Address of the admin listener: REST under /v1/admin/, GraphQL at /graphql.
    /// Loopback only (the admin API has no authentication yet). Port 0 picks a free port;
    /// the chosen address is logged.
    #[arg(long, env = "TOLLGATE_ADMIN_ADDR", value_name = "ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// The policy database.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Apply pending database migrations at startup instead of refusing to start.
    /// (A brand-new, empty database is always initialised.)
    #[arg(long, env = "TOLLGATE_MIGRATE")]
    pub migrate: bool,
    /// Where counters live: memory:// (this process, the default), redis://host:port
    /// (rediss:// for TLS) or redis+cluster://host:port,host:port for a Redis Cluster.
    /// Valkey works under the same URLs (valkey:// is accepted too).
    #[arg(long, env = "TOLLGATE_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Deadline of one call to a shared store (e.g. `50ms`); past it, the policy's
    /// on_store_error decides.
    #[arg(long, env = "TOLLGATE_STORE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub store_timeout: Option<std::time::Duration>,
    /// With rediss://: a PEM file of CA certificates to trust instead of the system's, for
    /// a Redis whose certificate a private CA signed.
    #[arg(long, env = "TOLLGATE_STORE_CA_FILE", value_name = "PATH")]
    pub store_ca_file: Option<PathBuf>,
    /// Prefix of every key in a shared store, so several deployments can share one Redis.
    #[arg(long, env = "TOLLGATE_STORE_PREFIX", value_name = "PREFIX")]
    pub store_prefix: Option<String>,
    /// How many nodes share the store: with on_store_error: local, each node then enforces
    /// limit / N on its own while the store is unreachable.
    #[arg(long, env = "TOLLGATE_NODES", value_name = "N")]
    pub nodes: Option<u64>,
    /// Most counters kept in this process: the in-memory store's, or with a shared store
    /// the node-local ones (consistency: local, on_store_error: local). Memory stays
    /// bounded under key spraying.
    #[arg(long, env = "TOLLGATE_MAX_KEYS", value_name = "N")]
    pub max_keys: Option<usize>,
    /// Global shadow mode: every policy is evaluated and counted, none ever denies
    /// (envoyproxy/ratelimit's SHADOW_MODE).
    #[arg(long, env = "TOLLGATE_SHADOW_MODE")]
    pub shadow_mode: bool,
    /// Count denied requests too, as envoyproxy/ratelimit does: every matching limit is
    /// charged whether or not the request passes. By default a denied request consumes
    /// nothing.
    #[arg(long, env = "TOLLGATE_COUNT_DENIED_REQUESTS")]
    pub count_denied_requests: bool,
    /// Rate-limit headers the gRPC service asks Envoy to add to responses
    /// (`response_headers_to_add`): none, draft03 (`X-RateLimit-*`, as
    /// envoyproxy/ratelimit's LIMIT_RESPONSE_HEADERS_ENABLED) or draft11 (`RateLimit-Policy`,
    /// `RateLimit`).
    #[arg(long, env = "TOLLGATE_GRPC_RESPONSE_HEADERS", value_name = "KIND")]
    pub grpc_response_headers: Option<ResponseHeaders>,
    /// Recycle gRPC connections at this age (e.g. `24h`, `30m`), so that clients
    /// re-resolve and spread over new nodes. Default: connections live until closed.
    #[arg(long, env = "TOLLGATE_GRPC_MAX_CONNECTION_AGE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub grpc_max_connection_age: Option<std::time::Duration>,
    /// Time in-flight calls get after a connection reached its maximum age (default `10s`).
    #[arg(long, env = "TOLLGATE_GRPC_MAX_CONNECTION_AGE_GRACE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub grpc_max_connection_age_grace: Option<std::time::Duration>,
    /// Worker threads serving requests, each with its own listening socket on the same
    /// address. Default: one per CPU core.
    #[arg(long, env = "TOLLGATE_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Log format: auto (pretty on a terminal, JSON otherwise), json or pretty.
    /// The level is set with RUST_LOG (default: info).
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// Where the policy database is; shared by `serve` and `migrate`.
#[derive(Debug, Args, Default, Clone)]
pub struct DatabaseArgs {
    /// The policy database: sqlite:PATH (one node) or postgres://user@host/db (many nodes
    /// sharing policies). Default: a SQLite file in the data directory.
    #[arg(long, env = "TOLLGATE_DATABASE", value_name = "URL")]
    pub database: Option<String>,
    /// Directory for Tollgate's own files (the default SQLite database). Default:
    /// $XDG_DATA_HOME/tollgate, else ~/.local/share/tollgate.
    #[arg(long, env = "TOLLGATE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `tollgate migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// A TOML configuration file (its `database` and `data_dir` are used).
    #[arg(long, env = "TOLLGATE_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// The policy database.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: MigrateCommand,
}

/// `tollgate migrate ...`.
#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// List every migration and whether it is applied. Exit status: 0 when the schema is
    /// current, 1 when migrations are pending or the schema is unknown to this release.
    Status,
    /// Apply pending migrations (one node at a time: a lock is held while applying).
    Up {
        /// Print the SQL that would run, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which rate-limit headers the gRPC service returns for Envoy to add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ResponseHeaders {
    /// None (envoyproxy/ratelimit's default).
    #[default]
    None,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (IETF draft 03).
    Draft03,
    /// `RateLimit-Policy` and `RateLimit` (IETF draft 11), as `POST /v1/check` sends.
    Draft11,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty when standard output is a terminal, JSON otherwise.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable, coloured.
    Pretty,
}

/// `tollgate policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check policy files and directories; print every error with file, line and field.
    ///
    /// Exit status: 0 when every file is valid, 1 otherwise.
    Validate(ValidateArgs),
    /// Push policy files to a running server's admin API: each file replaces its domain's
    /// policies. Shows the difference first.
    ///
    /// Exit status: 0 when applied (or nothing to change), 1 on an error.
    Apply(ApplyArgs),
    /// Print a domain's policies (as a policy file), or one policy (as JSON).
    Get(GetArgs),
    /// List domains, or the policies of one domain.
    List(ListArgs),
    /// Delete one policy, or a whole domain with its policies.
    Delete(DeleteArgs),
}

/// Where the admin API is.
#[derive(Debug, Args, Clone)]
pub struct AdminArgs {
    /// Base URL of the server's admin listener.
    #[arg(long, env = "TOLLGATE_ADMIN", default_value = "http://127.0.0.1:8082")]
    pub admin: String,
}

/// `tollgate policy apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The admin API.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Policy files or directories (one domain per file).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Show the difference only; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `tollgate policy get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The admin API.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The domain.
    pub domain: String,
    /// One policy of it (default: the whole domain as a policy file).
    pub policy: Option<String>,
}

/// `tollgate policy list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The admin API.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// List this domain's policies (default: list domains).
    pub domain: Option<String>,
}

/// `tollgate policy delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The admin API.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The domain.
    pub domain: String,
    /// The policy to delete; without it the domain is deleted, with all its policies.
    pub policy: Option<String>,
}

/// `tollgate policy validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Policy files or directories.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// `tollgate check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Base URL of the server's HTTP listener.
    #[arg(long, env = "TOLLGATE_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The domain whose policies apply.
    #[arg(long, short = 'D')]
    pub domain: String,
    /// A descriptor as key=value pairs separated by commas, e.g. `-d path=/login,user=42`.
    /// Repeat for several descriptors.
    #[arg(
        long = "descriptor",
        short = 'd',
        required = true,
        value_name = "K=V[,K=V...]"
    )]
    pub descriptors: Vec<String>,
    /// Cost of the request.
    #[arg(long, default_value_t = 1)]
    pub hits: u64,
    /// Print the server's JSON answer instead of the summary.
    #[arg(long)]
    pub json: bool,
}
