//! The command line (clap): the subcommands and their arguments. `serve`'s options are
//! defined in [`crate::configuration`], with their variables and file keys.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::configuration::{DatabaseOptions, ServeOptions};

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
    Serve(Box<ServeOptions>),
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
    /// Load a running server over HTTP, gRPC or RESP and measure it: decisions per second,
    /// an HDR histogram of latencies (closed loop, or open loop at a fixed rate), and the
    /// server's CPU per decision with `--server-pid`.
    Bench(BenchArgs),
    /// Read the events a Tollgate deployment publishes to NATS JetStream.
    Events {
        /// What to do.
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Usage for the data team.
    Usage {
        /// What to do.
        #[command(subcommand)]
        command: UsageCommand,
    },
}

/// How to reach the event broker (the same flags as `serve`'s).
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// The broker: nats://HOST:PORT or tls://HOST:PORT.
    #[arg(long, env = "TOLLGATE_EVENTS", value_name = "URL")]
    pub events: String,
    /// A NATS credentials file (.creds).
    #[arg(long, env = "TOLLGATE_EVENTS_CREDENTIALS", value_name = "FILE")]
    pub events_credentials: Option<PathBuf>,
    /// PEM CA certificates to trust for the broker's TLS.
    #[arg(long, env = "TOLLGATE_EVENTS_CA", value_name = "FILE")]
    pub events_ca: Option<PathBuf>,
}

/// `tollgate events ...`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print events as they are published: one readable line each on a terminal, the
    /// CloudEvent's JSON (one per line) when piped.
    Tail {
        /// The broker.
        #[command(flatten)]
        broker: BrokerArgs,
        /// Only events of these types: audit, change, denial, usage (repeat or comma-separate).
        #[arg(long = "type", value_name = "TYPE", value_delimiter = ',')]
        types: Vec<String>,
        /// Only events about this domain.
        #[arg(long, value_name = "NAME")]
        domain: Option<String>,
        /// Stop after this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// JSON lines even on a terminal.
        #[arg(long)]
        json: bool,
    },
}

/// `tollgate usage ...`.
#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Write usage events to Parquet files partitioned by date and domain
    /// (`DIR/date=YYYY-MM-DD/domain=NAME/part-*.parquet`) through a durable JetStream
    /// consumer: run it again and it continues where it stopped, without duplicates.
    Export {
        /// The broker.
        #[command(flatten)]
        broker: BrokerArgs,
        /// The table's root directory.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// The durable consumer's name: one per destination.
        #[arg(long, value_name = "NAME", default_value = "tollgate-usage-export")]
        consumer: String,
        /// Stream sequence numbers per block; files are cut at block boundaries.
        #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
        block: u64,
        /// Exit once caught up and idle for this long (e.g. `5s`); default: run until stopped.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        until_idle: Option<std::time::Duration>,
        /// Once caught up, commit a block's rows so far when the oldest waited this long
        /// (larger files from a live stream; every block is committed at exit anyway).
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
        flush_after: std::time::Duration,
    },
}

/// `tollgate migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// A TOML configuration file (its `database` and `data_dir` are used).
    #[arg(long, env = "TOLLGATE_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// The policy database.
    #[command(flatten)]
    pub database: DatabaseOptions,
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
    pub database: DatabaseOptions,
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

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
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

/// Which front end `tollgate bench` loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchProtocol {
    /// `POST /v1/check` over HTTP/1.1 keep-alive.
    Http,
    /// Envoy's RLS `ShouldRateLimit` over gRPC.
    Grpc,
    /// `TG.CHECK` (or `CL.THROTTLE` with `--cell`) over RESP.
    Resp,
}

/// `tollgate bench`: load a running server and measure its answers.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The front end to load.
    #[arg(long, value_enum, default_value = "http")]
    pub protocol: BenchProtocol,
    /// Where it listens: `http://HOST:PORT` for HTTP and gRPC, `HOST:PORT` for RESP
    /// (default: the server's default address of that protocol).
    #[arg(long)]
    pub target: Option<String>,
    /// The domain whose policies apply.
    #[arg(long, short = 'D', default_value = "api")]
    pub domain: String,
    /// A descriptor as key=value pairs separated by commas; `{key}` in a value becomes a
    /// key number below `--keys`, drawn per request. Repeat for several descriptors.
    #[arg(long = "descriptor", short = 'd', value_name = "K=V[,K=V...]", default_values_t = vec!["user={key}".to_owned()])]
    pub descriptors: Vec<String>,
    /// How many distinct values `{key}` takes.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// With `--protocol resp`: `CL.THROTTLE {key} <burst> <count> <period>` instead of
    /// `TG.CHECK`, e.g. `--cell 99,100,1`.
    #[arg(long, value_name = "BURST,COUNT,PERIOD")]
    pub cell: Option<String>,
    /// Connections, each with one request in flight (or `--pipeline` with RESP and gRPC).
    #[arg(long, short = 'c', default_value_t = 8)]
    pub connections: usize,
    /// Requests sent together on a connection before reading the answers: RESP commands
    /// written at once, or gRPC checks on one `tollgate.v1.Checks/CheckStream`.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Open loop: send at this total rate (requests per second) whatever the answers'
    /// pace; latencies count from when each request was due (no coordinated omission).
    /// Without it the loop is closed: each connection sends when its answer arrives.
    #[arg(long)]
    pub rate: Option<u64>,
    /// How long to send.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: std::time::Duration,
    /// Most requests to send, whatever the duration.
    #[arg(long, default_value_t = 10_000_000)]
    pub requests: u64,
    /// The server's process id: prints its CPU time per decision (Linux `/proc`).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Client worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write every decision to FILE, one line each: the send and answer times (Unix
    /// nanoseconds), the key number and `allowed`, `denied` or `error`. Lets an analysis
    /// count what was admitted per window from the client's side.
    #[arg(long, value_name = "FILE")]
    pub decision_log: Option<std::path::PathBuf>,
    /// The data-plane token, when the server requires one.
    #[arg(
        long,
        env = "TOLLGATE_DATA_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}
