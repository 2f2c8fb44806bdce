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
    /// Manage the admin API's keys, directly in the policy database (so the first admin
    /// key can be made before anyone can authenticate).
    Keys(KeysArgs),
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
    /// Port 0 picks a free port; the chosen address is logged.
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
    /// Authentication, TLS and limits of the listeners.
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// Authentication, TLS and the admin API's own limits.
#[derive(Debug, Args, Default, Clone)]
#[command(next_help_heading = "Security")]
pub struct SecurityArgs {
    /// How the admin API authenticates: required (API keys from `tollgate keys create`, or
    /// JWT bearer tokens) or none (every caller is an admin: only accepted when
    /// --admin-addr is a loopback address). Default: required.
    #[arg(long, env = "TOLLGATE_ADMIN_AUTH", value_name = "MODE")]
    pub admin_auth: Option<crate::admin::access::AdminAuthMode>,
    /// Accept HS256 JWTs signed with the secret in this file (at least 32 bytes).
    #[arg(long, env = "TOLLGATE_JWT_HS256_SECRET_FILE", value_name = "FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// Accept RS256/ES256 JWTs signed by the keys of this JWKS file.
    #[arg(long, env = "TOLLGATE_JWT_JWKS_FILE", value_name = "FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// The `iss` every JWT must carry.
    #[arg(long, env = "TOLLGATE_JWT_ISSUER", value_name = "ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The `aud` every JWT must carry.
    #[arg(long, env = "TOLLGATE_JWT_AUDIENCE", value_name = "AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Admin requests per second accepted from one address (default 50, bursts of 2 s).
    #[arg(long, env = "TOLLGATE_ADMIN_REQUESTS_PER_SECOND", value_name = "N")]
    pub admin_requests_per_second: Option<u32>,
    /// Failed authentications per minute from one address before it gets 429 (default 10).
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_AUTH_FAILURES_PER_MINUTE",
        value_name = "N"
    )]
    pub admin_auth_failures_per_minute: Option<u32>,
    /// Browser origins allowed to call the admin API (CORS); none by default. Repeatable.
    #[arg(
        long = "admin-cors-origin",
        env = "TOLLGATE_ADMIN_CORS_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub admin_cors_origins: Vec<String>,
    /// Serve TLS on every listener with this certificate chain (PEM); reloaded when the
    /// file changes.
    #[arg(
        long,
        env = "TOLLGATE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "TOLLGATE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// With --data-auth mtls: CA certificates (PEM) that sign the clients' certificates.
    #[arg(long, env = "TOLLGATE_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// How the data plane (/v1/check, Envoy RLS) authenticates callers: none (the
    /// default, as envoyproxy/ratelimit), token (a shared bearer token) or mtls (client
    /// certificates signed by --tls-client-ca).
    #[arg(long, env = "TOLLGATE_DATA_AUTH", value_name = "MODE")]
    pub data_auth: Option<crate::data_auth::DataAuthMode>,
    /// With --data-auth token: the file holding the shared token (16+ characters).
    #[arg(long, env = "TOLLGATE_DATA_TOKEN_FILE", value_name = "FILE")]
    pub data_token_file: Option<PathBuf>,
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

/// `tollgate keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// A TOML configuration file (its `database` and `data_dir` are used).
    #[arg(long, env = "TOLLGATE_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// The policy database.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// `tollgate keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once (only its hash is stored).
    Create {
        /// What may it do: admin, editor or viewer.
        #[arg(long, value_name = "ROLE")]
        role: RoleArg,
        /// A domain it may act on; repeat for several. Default: every domain (`*`).
        #[arg(long = "domain", value_name = "DOMAIN")]
        domains: Vec<String>,
        /// What the key is for (shown in listings and the audit log).
        #[arg(long, value_name = "NAME", default_value = "cli")]
        name: String,
        /// Stop working after this long (e.g. `90d`, `12h`). Default: never.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by its id; every node refuses it from the next request on.
    Revoke {
        /// The key's id (the part after `tg_`, as `keys list` shows it).
        id: String,
    },
}

/// A role, as typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Everything, including keys (with every domain).
    Admin,
    /// Reads, and writes policies of its domains.
    Editor,
    /// Reads its domains.
    Viewer,
}

impl From<RoleArg> for tollgate_control::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Admin => tollgate_control::Role::Admin,
            RoleArg::Editor => tollgate_control::Role::Editor,
            RoleArg::Viewer => tollgate_control::Role::Viewer,
        }
    }
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

/// Where the admin API is, and how to authenticate to it.
#[derive(Debug, Args, Clone)]
pub struct AdminArgs {
    /// Base URL of the server's admin listener (https:// when it serves TLS).
    #[arg(long, env = "TOLLGATE_ADMIN", default_value = "http://127.0.0.1:8082")]
    pub admin: String,
    /// An API key (from `tollgate keys create`) or a JWT. Prefer the environment variable:
    /// command lines are visible to other users of the machine.
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub key: Option<String>,
    /// With https://: a PEM file of CA certificates to trust (default: the public roots).
    #[arg(long, env = "TOLLGATE_ADMIN_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
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
    /// The data-plane token, when the server runs with `--data-auth token`.
    #[arg(
        long,
        env = "TOLLGATE_DATA_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// With https://: a PEM file of CA certificates to trust (default: the public roots).
    #[arg(long, env = "TOLLGATE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}
