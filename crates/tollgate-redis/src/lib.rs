//! Tollgate's counter store on Redis or Valkey: a single node (`redis://`, `rediss://`) or a
//! Redis Cluster (`redis+cluster://host:port,host:port`).
//!
//! Every decision is one atomic server-side script ([`decide.lua`](../src/decide.lua)) that
//! restates tollgate-core's algorithms and batch rule, run with EVALSHA (loaded again on
//! NOSCRIPT) on a multiplexed, pipelined connection: one shared by all requests, or one per
//! worker thread after [`RedisStore::attach_current_thread`]. The script reads the store's
//! clock, so nodes with skewed clocks still agree.
//!
//! Around each call: a deadline ([`RedisStoreConfig::timeout`]) and a circuit breaker that
//! stops calling a store that keeps failing and probes it until it answers again. What a
//! request gets while the store is away is the policy's `on_store_error`, decided by the
//! [`tollgate_core::Limiter`].
//!
//! Keys: `{prefix}:{{group}}:{key}`, both hex. The group is a fingerprint of the domain and
//! is a Cluster hash tag, so all counters of one domain live in one slot: a multi-limit
//! decision stays one atomic script, and a Cluster spreads domains, not the keys of one
//! domain (see `docs/design/consistency.md`).

mod url;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Script, ScriptInvocation};
use smallvec::SmallVec;
use tollgate_core::algorithm::{Algorithm, domain};
use tollgate_core::store::{
    Admission, CircuitState, ExtendFuture, HoldSpec, LeaseFuture, LeaseGrant, SettleFuture,
    StoreFuture,
};
use tollgate_core::{
    CircuitBreaker, CircuitBreakerConfig, CommitRule, ExtendOutcome, HoldId, HoldKind, Limit,
    LimitOp, Nanos, Outcome, Settle, SettleOutcome, Settled, Span, Store, StoreError,
    saturating_nanos,
};
use tracing::Instrument;

pub use url::StoreUrl;

/// The decision script; see its header for the calling convention.
const DECIDE_LUA: &str = include_str!("decide.lua");
/// Numbers (packed doubles) the script returns per op.
/// Doubles per op in the script's arguments, and per counter in its reply.
const OP_WIDTH: usize = 9;
const REPLY_WIDTH: usize = 10;
const NANOS_PER_SECOND: u64 = 1_000_000_000;
/// Most batches one script call of [`Store::apply_many`] decides, so that no call holds
/// Redis (single-threaded while a script runs) for long.
const MANY_PER_CALL: usize = 128;

/// Whose clock decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreClock {
    /// The store's (`TIME` inside the script): nodes cannot disagree. The default.
    #[default]
    Store,
    /// The `now` the caller passes: for tests on a manual clock.
    Caller,
}

/// How to reach the store and how long to wait for it.
#[derive(Debug, Clone)]
pub struct RedisStoreConfig {
    /// Where the store is.
    pub url: StoreUrl,
    /// Deadline of one decision, round trip included.
    pub timeout: Duration,
    /// Deadline of establishing a connection.
    pub connect_timeout: Duration,
    /// Whose clock decides.
    pub clock: StoreClock,
    /// When to stop calling a failing store.
    pub breaker: CircuitBreakerConfig,
    /// Prefix of every key, so several deployments can share one store.
    pub prefix: String,
    /// With `rediss://`: certificates (PEM) to trust instead of the system's roots, for a
    /// store whose certificate a private CA signed.
    pub ca_pem: Option<Vec<u8>>,
}

impl RedisStoreConfig {
    /// Defaults for `url`: a 50 ms deadline, the store's clock, prefix `tollgate`.
    pub fn new(url: StoreUrl) -> Self {
        Self {
            url,
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(500),
            clock: StoreClock::Store,
            breaker: CircuitBreakerConfig::default(),
            prefix: "tollgate".to_owned(),
            ca_pem: None,
        }
    }
}

/// Why the store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// The URL is not one this store understands.
    #[error("invalid store URL '{url}': {reason}")]
    InvalidUrl {
        /// The URL, without its password.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store did not answer.
    #[error("cannot reach the store at {url}: {source}")]
    Unreachable {
        /// The URL, without its password.
        url: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Opens a connection: lazily for a single node (it connects on first use and reconnects by
/// itself), at once for a Cluster (to learn its topology). Its I/O runs on the runtime
/// this is called from.
async fn open(config: &RedisStoreConfig) -> Result<Connection, RedisStoreError> {
    let redacted = config.url.redacted();
    let unreachable = |source| RedisStoreError::Unreachable {
        url: redacted.clone(),
        source,
    };
    let connection = match &config.url {
        StoreUrl::Single(url) => {
            let client = match &config.ca_pem {
                Some(pem) if config.url.tls() => redis::Client::build_with_tls(
                    url.as_str(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem.clone()),
                    },
                ),
                _ => redis::Client::open(url.as_str()),
            }
            .map_err(unreachable)?;
            let manager = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.timeout))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(10))
                .set_max_delay(Duration::from_millis(100));
            Connection::Single(
                ConnectionManager::new_lazy_with_config(client, manager).map_err(unreachable)?,
            )
        }
        StoreUrl::Cluster(nodes) => {
            let mut builder = redis::cluster::ClusterClient::builder(nodes.clone());
            if let Some(pem) = &config.ca_pem
                && config.url.tls()
            {
                builder = builder.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                });
            }
            let client = builder
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.timeout)
                .retries(1)
                .build()
                .map_err(unreachable)?;
            let connection =
                tokio::time::timeout(config.connect_timeout * 4, client.get_async_connection())
                    .await
                    .map_err(|_| {
                        unreachable(redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "no Cluster node answered in time",
                        )))
                    })?
                    .map_err(unreachable)?;
            Connection::Cluster(connection)
        }
    };
    Ok(connection)
}

thread_local! {
    /// Connections opened for the calling thread's runtime, by store id.
    static THREAD_CONNECTIONS: std::cell::RefCell<Vec<(u64, Connection)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Calls made and how they ended, for metrics.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Scripts that answered.
    pub calls: AtomicU64,
    /// Calls that failed with an error from the store or the connection.
    pub errors: AtomicU64,
    /// Calls that missed their deadline.
    pub timeouts: AtomicU64,
    /// Calls not made because the circuit was open.
    pub refused: AtomicU64,
}

/// Counters in Redis or Valkey. See the crate docs.
pub struct RedisStore {
    /// Tells this store's per-thread connections from another store's.
    id: u64,
    /// The connection of the runtime that connected; used by threads without their own.
    connection: Connection,
    script: Script,
    config: RedisStoreConfig,
    breaker: CircuitBreaker,
    /// Origin of the breaker's monotonic clock.
    origin: Instant,
    stats: StoreStats,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.config.url.redacted())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the store. A single node is connected lazily and reconnects by itself;
    /// a Cluster needs one reachable node now to learn its topology.
    pub async fn connect(config: RedisStoreConfig) -> Result<Self, RedisStoreError> {
        if config.url.tls() {
            // rustls needs a process-wide provider; an earlier one (any) is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let connection = open(&config).await?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            connection,
            script: Script::new(DECIDE_LUA),
            breaker: CircuitBreaker::new(config.breaker),
            config,
            origin: Instant::now(),
            stats: StoreStats::default(),
        })
    }

    /// The 16-byte seed of counter keys that every node sharing this store must use: made
    /// by the first node that asks, read by the others.
    pub async fn shared_key_seed(&self) -> Result<[u8; 16], RedisStoreError> {
        let mut fresh = [0u8; 16];
        getrandom::fill(&mut fresh).map_err(|e| RedisStoreError::Unreachable {
            url: self.config.url.redacted(),
            source: redis::RedisError::from((
                redis::ErrorKind::Io,
                "no randomness for the key seed",
                e.to_string(),
            )),
        })?;
        let key = format!("{}:key-seed", self.config.prefix);
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(hex(&fresh)).arg("NX");
        let mut get = redis::cmd("GET");
        get.arg(&key);
        let stored: String = tokio::time::timeout(self.config.connect_timeout * 4, async {
            let _: redis::Value = self.query(&set).await?;
            self.query(&get).await
        })
        .await
        .map_err(|_| RedisStoreError::Unreachable {
            url: self.config.url.redacted(),
            source: redis::RedisError::from((redis::ErrorKind::Io, "timed out")),
        })?
        .map_err(|source| RedisStoreError::Unreachable {
            url: self.config.url.redacted(),
            source,
        })?;
        parse_seed(&stored).ok_or_else(|| RedisStoreError::InvalidUrl {
            url: self.config.url.redacted(),
            reason: format!("the stored key seed '{key}' is not 32 hex digits"),
        })
    }

    /// Calls made and how they ended.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Whether the circuit is closed (the store answered recently).
    pub fn circuit(&self) -> CircuitState {
        self.breaker.state()
    }

    /// Gives the calling thread its own connection, driven by the runtime it runs in, for
    /// every call this store makes from this thread. A server calls it once in each worker
    /// thread: requests then never hop to another thread to reach Redis.
    pub async fn attach_current_thread(&self) -> Result<(), RedisStoreError> {
        let connection = open(&self.config).await?;
        THREAD_CONNECTIONS.with(|c| {
            let mut c = c.borrow_mut();
            c.retain(|(id, _)| *id != self.id);
            c.push((self.id, connection));
        });
        Ok(())
    }

    /// This thread's connection if it has one, else the shared one.
    fn connection(&self) -> Connection {
        THREAD_CONNECTIONS
            .with(|c| {
                c.borrow()
                    .iter()
                    .find(|(id, _)| *id == self.id)
                    .map(|(_, conn)| conn.clone())
            })
            .unwrap_or_else(|| self.connection.clone())
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match &self.connection() {
            Connection::Single(c) => cmd.query_async(&mut c.clone()).await,
            Connection::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }

    async fn invoke(&self, invocation: &ScriptInvocation<'_>) -> redis::RedisResult<Vec<u8>> {
        match &self.connection() {
            Connection::Single(c) => invocation.invoke_async(&mut c.clone()).await,
            Connection::Cluster(c) => invocation.invoke_async(&mut c.clone()).await,
        }
    }

    fn timeout_ms(&self) -> u64 {
        u64::try_from(self.config.timeout.as_millis()).unwrap_or(u64::MAX)
    }

    fn monotonic(&self) -> Nanos {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// `{prefix}:{group}:{key}`: the braces make the group Redis Cluster's hash tag.
    fn key_name(&self, op: &LimitOp) -> String {
        let mut name = String::with_capacity(self.config.prefix.len() + 38);
        let _ = write!(
            name,
            "{}:{{{:016x}}}:{:016x}",
            self.config.prefix, op.group, op.key.0
        );
        name
    }

    /// Script arguments: the mode, the clock, then each op packed as doubles (see the
    /// script's header), plus `extra` doubles after the last op.
    fn push_args(
        &self,
        invocation: &mut ScriptInvocation<'_>,
        mode: &'static str,
        now: Nanos,
        ops: &[LimitOp],
        extra: &[u64],
    ) {
        invocation.arg(mode);
        match self.config.clock {
            StoreClock::Store => invocation.arg(""),
            StoreClock::Caller => {
                invocation.arg(pack(&[now / NANOS_PER_SECOND, now % NANOS_PER_SECOND]))
            }
        };
        let mut packed = Vec::with_capacity((ops.len() * OP_WIDTH + extra.len()) * 8);
        for op in ops {
            let algorithm = match op.limit.algorithm() {
                Algorithm::FixedWindow => 1,
                Algorithm::Gcra if op.limit.restart_debt() > 0 => 6,
                Algorithm::Gcra => 2,
                Algorithm::SlidingWindow => 3,
                Algorithm::Quota => 4,
                Algorithm::Concurrency => 5,
            };
            // Quotas and concurrency limits have no emission interval; its slots carry the
            // quota's window start, or until when concurrency slots taken are held. A GCRA
            // bucket restarting with a debt (never leased) carries the debt as its period.
            let (period, emission) = match op.limit.algorithm() {
                Algorithm::Quota => (op.limit.period(), op.limit.window_start()),
                Algorithm::Concurrency => (op.limit.period(), op.limit.held_until()),
                Algorithm::Gcra if algorithm == 6 => (op.limit.restart_debt(), op.limit.emission()),
                _ => (op.limit.period(), op.limit.emission()),
            };
            for x in [
                algorithm,
                op.limit.requests(),
                period / NANOS_PER_SECOND,
                period % NANOS_PER_SECOND,
                op.limit.burst(),
                emission / NANOS_PER_SECOND,
                emission % NANOS_PER_SECOND,
                // A cost past MAX_COUNT decides like MAX_COUNT (it exceeds every limit),
                // and the script's doubles hold it exactly.
                op.cost.min(domain::MAX_COUNT),
                // 0 shadow, 1 enforced; plus 2 in quota mode (see decide.lua).
                u64::from(op.enforce) + 2 * u64::from(op.quota),
            ] {
                packed.extend_from_slice(&(x as f64).to_le_bytes());
            }
        }
        for &x in extra {
            packed.extend_from_slice(&(x.min(domain::MAX_COUNT) as f64).to_le_bytes());
        }
        invocation.arg(packed);
    }

    /// Runs the script under the breaker and the deadline.
    async fn call(&self, invocation: &ScriptInvocation<'_>) -> Result<Vec<u8>, StoreError> {
        if self.breaker.admit(self.monotonic()) == Admission::Refuse {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Unavailable(
                "circuit open after repeated store failures; probing".to_owned(),
            ));
        }
        // A child of a traced decision's span; none when traces are off or the decision
        // is not sampled (a call outside any decision, a lease's hand-back, is not traced).
        // (Not `tracing::enabled!`: with per-layer filters it leaves the filter state set
        // for the thread's next event, which the log layer then drops.)
        let span = if !tracing::Span::current().is_disabled() {
            tracing::info_span!(
                target: "tollgate::trace",
                "store.call",
                otel.kind = "client",
                db.system = "redis",
                outcome = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let answer = tokio::time::timeout(self.config.timeout, self.invoke(invocation))
            .instrument(span.clone())
            .await;
        if !span.is_disabled() {
            span.record(
                "outcome",
                match &answer {
                    Ok(Ok(_)) => "ok",
                    Ok(Err(e)) if !e.is_timeout() => "error",
                    _ => "timeout",
                },
            );
        }
        match answer {
            Ok(Ok(reply)) => {
                self.breaker.on_success();
                self.stats.calls.fetch_add(1, Ordering::Relaxed);
                Ok(reply)
            }
            Ok(Err(e)) if e.is_timeout() => {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                self.breaker.on_failure(self.monotonic());
                Err(StoreError::Timeout(self.timeout_ms()))
            }
            Ok(Err(e)) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                // A script error is the same on every retry: a bug or a bad limit, not an
                // outage, so it does not open the circuit.
                if e.kind() != redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) {
                    self.breaker.on_failure(self.monotonic());
                }
                Err(StoreError::Unavailable(e.to_string()))
            }
            Err(_) => {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                self.breaker.on_failure(self.monotonic());
                Err(StoreError::Timeout(self.timeout_ms()))
            }
        }
    }

    /// Runs a decision over `counters` counters: its reply, [`REPLY_WIDTH`] values each.
    async fn call_for(
        &self,
        invocation: &ScriptInvocation<'_>,
        counters: usize,
    ) -> Result<SmallVec<[f64; 8]>, StoreError> {
        let reply = unpack(&self.call(invocation).await?);
        if reply.len() != counters * REPLY_WIDTH {
            return Err(StoreError::Unavailable(format!(
                "the decision script answered {} values for {counters} counters",
                reply.len(),
            )));
        }
        Ok(reply)
    }

    /// The domain's hold index (every call's first key: each releases expired holds).
    fn holds_name(&self, group: u64) -> String {
        format!("{}:{{{group:016x}}}:holds", self.config.prefix)
    }

    /// A hold's record and its settlement, in its domain's hash slot.
    fn hold_names(&self, id: HoldId) -> (String, String) {
        let base = format!("{}:{{{:016x}}}", self.config.prefix, id.group);
        (format!("{base}:hold:{id}"), format!("{base}:settled:{id}"))
    }

    async fn run(
        &self,
        ops: &mut [LimitOp],
        now: Nanos,
        rule: CommitRule,
    ) -> Result<(), StoreError> {
        let mode = if rule == CommitRule::EveryRequestCounts {
            "1"
        } else {
            "0"
        };
        self.decide(ops, now, mode, None).await
    }

    /// Independent batches ([`Store::apply_many`]): each hash-tag group's batches in one
    /// script call (mode '6' or '7', at most [`MANY_PER_CALL`] batches each), every call
    /// sent at once on the multiplexed connection. A failed call fails its own batches.
    async fn run_many(
        &self,
        ops: &mut [LimitOp],
        lengths: &[usize],
        now: Nanos,
        rule: CommitRule,
    ) -> Vec<Result<(), StoreError>> {
        let mode = if rule == CommitRule::EveryRequestCounts {
            "7"
        } else {
            "6"
        };
        let mut spans = Vec::with_capacity(lengths.len());
        let mut at = 0;
        for &n in lengths {
            let end = (at + n).min(ops.len());
            spans.push(at..end);
            at = end;
        }
        // (group, batches) per call, in the order the batches came.
        let mut calls: Vec<(u64, Vec<usize>)> = Vec::new();
        for (b, span) in spans.iter().enumerate() {
            if span.is_empty() {
                continue;
            }
            let group = ops[span.start].group;
            match calls
                .iter_mut()
                .rev()
                .find(|(g, batches)| *g == group && batches.len() < MANY_PER_CALL)
            {
                Some((_, batches)) => batches.push(b),
                None => calls.push((group, vec![b])),
            }
        }
        let ops_ref: &[LimitOp] = ops;
        let answers = futures_util::future::join_all(calls.iter().map(|(group, batches)| {
            let call_ops: Vec<LimitOp> = batches
                .iter()
                .flat_map(|&b| ops_ref[spans[b].clone()].iter().copied())
                .collect();
            let sizes: Vec<u64> = batches.iter().map(|&b| spans[b].len() as u64).collect();
            async move {
                let mut invocation = self.script.prepare_invoke();
                invocation.key(self.holds_name(*group));
                for op in &call_ops {
                    invocation.key(self.key_name(op));
                }
                self.push_args(&mut invocation, mode, now, &call_ops, &[]);
                invocation.arg(pack(&sizes));
                self.call_for(&invocation, call_ops.len()).await
            }
        }))
        .await;
        let mut results = vec![Ok(()); lengths.len()];
        for ((_, batches), answer) in calls.iter().zip(answers) {
            match answer {
                Ok(reply) => {
                    let mut values = reply.chunks_exact(REPLY_WIDTH);
                    for &b in batches {
                        for op in &mut ops[spans[b].clone()] {
                            if let Some(v) = values.next() {
                                op.outcome = Some(outcome_of(&op.limit, v));
                            }
                        }
                    }
                }
                Err(e) => {
                    for &b in batches {
                        results[b] = Err(e.clone());
                    }
                }
            }
        }
        results
    }

    /// One decision over `ops` in `mode` ('0', '1', or '3' keeping `hold`).
    async fn decide(
        &self,
        ops: &mut [LimitOp],
        now: Nanos,
        mode: &'static str,
        hold: Option<HoldSpec>,
    ) -> Result<(), StoreError> {
        // No ops and no hold to keep: nothing to decide, and no call (that would expire
        // holds early, unlike every other store).
        if ops.is_empty() && hold.is_none() {
            return Ok(());
        }
        let group = hold.map_or_else(|| ops.first().map_or(0, |op| op.group), |h| h.id.group);
        let mut invocation = self.script.prepare_invoke();
        invocation.key(self.holds_name(group));
        if let Some(hold) = hold {
            invocation.key(self.hold_names(hold.id).0);
        }
        for op in ops.iter() {
            invocation.key(self.key_name(op));
        }
        self.push_args(&mut invocation, mode, now, ops, &[]);
        if let Some(hold) = hold {
            invocation.arg(hold.id.to_string());
            let kind = match hold.kind {
                HoldKind::Reservation => 1,
                HoldKind::Lease => 2,
            };
            invocation.arg(pack(&[
                kind,
                hold.deadline / NANOS_PER_SECOND,
                hold.deadline % NANOS_PER_SECOND,
            ]));
        }
        let reply = self.call_for(&invocation, ops.len()).await?;
        for (op, values) in ops.iter_mut().zip(reply.chunks_exact(REPLY_WIDTH)) {
            op.outcome = Some(outcome_of(&op.limit, values));
        }
        Ok(())
    }

    async fn run_lease(
        &self,
        op: &LimitOp,
        unused: u64,
        want: u64,
        now: Nanos,
    ) -> Result<LeaseGrant, StoreError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.key(self.holds_name(op.group));
        invocation.key(self.key_name(op));
        let mut wanted = *op;
        wanted.cost = want;
        self.push_args(&mut invocation, "2", now, &[wanted], &[unused]);
        let reply = unpack(&self.call(&invocation).await?);
        let [
            granted,
            remaining,
            reset_s,
            reset_n,
            retry_s,
            retry_n,
            valid_s,
            valid_n,
        ] = reply[..]
        else {
            return Err(StoreError::Unavailable(format!(
                "the lease script answered {} values instead of 8",
                reply.len()
            )));
        };
        Ok(LeaseGrant {
            granted: unsigned(granted),
            remaining: unsigned(remaining),
            reset_after: span(reset_s, reset_n),
            retry_after: (retry_s >= 0.0).then(|| span(retry_s, retry_n)),
            valid_for: saturating_nanos(span(valid_s, valid_n)),
        })
    }
}

impl RedisStore {
    /// Settles (mode '4', `how` given) or extends (mode '5') the hold `id`; the reply's
    /// code, how it was settled and at what.
    async fn hold_call(
        &self,
        id: HoldId,
        mode: &'static str,
        params: &[u64],
        now: Nanos,
    ) -> Result<(u64, Settled), StoreError> {
        let (record, settled) = self.hold_names(id);
        let mut invocation = self.script.prepare_invoke();
        invocation.key(self.holds_name(id.group));
        invocation.key(record);
        invocation.key(settled);
        self.push_args(&mut invocation, mode, now, &[], params);
        invocation.arg(id.to_string());
        let reply = unpack(&self.call(&invocation).await?);
        let [code, how, actual] = reply[..] else {
            return Err(StoreError::Unavailable(format!(
                "the hold script answered {} values instead of 3",
                reply.len()
            )));
        };
        let settled = if how == 2.0 {
            Settled::Released
        } else {
            Settled::Committed {
                actual: unsigned(actual),
            }
        };
        Ok((unsigned(code), settled))
    }

    async fn run_settle(
        &self,
        id: HoldId,
        how: Settle,
        now: Nanos,
    ) -> Result<SettleOutcome, StoreError> {
        let params = match how {
            Settle::Commit(actual) => [1, actual],
            Settle::Release => [2, 0],
        };
        let (code, settled) = self.hold_call(id, "4", &params, now).await?;
        Ok(match code {
            1 => SettleOutcome::Settled {
                how: settled,
                repeated: false,
            },
            2 => SettleOutcome::Settled {
                how: settled,
                repeated: true,
            },
            3 => SettleOutcome::Conflict { already: settled },
            _ => SettleOutcome::Unknown,
        })
    }

    async fn run_extend(
        &self,
        id: HoldId,
        deadline: Nanos,
        now: Nanos,
    ) -> Result<ExtendOutcome, StoreError> {
        let params = [deadline / NANOS_PER_SECOND, deadline % NANOS_PER_SECOND];
        let (code, settled) = self.hold_call(id, "5", &params, now).await?;
        Ok(match code {
            1 => ExtendOutcome::Extended { deadline },
            3 => ExtendOutcome::Settled(settled),
            _ => ExtendOutcome::Unknown,
        })
    }

    async fn run_reserve(
        &self,
        ops: &mut [LimitOp],
        hold: HoldSpec,
        now: Nanos,
    ) -> Result<(), StoreError> {
        tollgate_core::store::hold_ops(ops, &hold);
        self.decide(ops, now, "3", Some(hold)).await
    }
}

impl Store for RedisStore {
    fn reserve<'a>(
        &'a self,
        ops: &'a mut [LimitOp],
        hold: HoldSpec,
        now: Nanos,
    ) -> StoreFuture<'a> {
        Box::pin(self.run_reserve(ops, hold, now))
    }

    fn settle<'a>(&'a self, id: HoldId, how: Settle, now: Nanos) -> SettleFuture<'a> {
        Box::pin(self.run_settle(id, how, now))
    }

    fn extend<'a>(&'a self, id: HoldId, deadline: Nanos, now: Nanos) -> ExtendFuture<'a> {
        Box::pin(self.run_extend(id, deadline, now))
    }

    fn apply<'a>(
        &'a self,
        ops: &'a mut [LimitOp],
        now: Nanos,
        rule: CommitRule,
    ) -> StoreFuture<'a> {
        Box::pin(self.run(ops, now, rule))
    }

    fn apply_many<'a>(
        &'a self,
        ops: &'a mut [LimitOp],
        lengths: &'a [usize],
        now: Nanos,
        rule: CommitRule,
    ) -> tollgate_core::ManyFuture<'a> {
        Box::pin(self.run_many(ops, lengths, now, rule))
    }

    fn lease<'a>(&'a self, op: &'a LimitOp, unused: u64, want: u64, now: Nanos) -> LeaseFuture<'a> {
        Box::pin(self.run_lease(op, unused, want, now))
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn is_available(&self) -> bool {
        self.breaker.state() == CircuitState::Closed
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn report(&self) -> tollgate_core::StoreReport {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        tollgate_core::StoreReport {
            keys: None,
            overflows: 0,
            calls: Some(tollgate_core::StoreCalls {
                ok: load(&self.stats.calls),
                error: load(&self.stats.errors),
                timeout: load(&self.stats.timeouts),
                circuit_open: load(&self.stats.refused),
            }),
        }
    }

    fn attach_current_thread(&self) -> StoreFuture<'_> {
        Box::pin(async move {
            RedisStore::attach_current_thread(self)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        })
    }
}

/// One op's reply: allowed, remaining, reset_after and retry_after (seconds -1: none) as
/// seconds and nanoseconds, then the state as expiry seconds, nanoseconds and the
/// algorithm's two counts.
fn outcome_of(limit: &Limit, v: &[f64]) -> Outcome {
    Outcome {
        allowed: v[0] == 1.0,
        remaining: unsigned(v[1]),
        reset_after: span(v[2], v[3]),
        retry_after: (v[4] >= 0.0).then(|| span(v[4], v[5])),
        state: limit.state_from_parts(span(v[6], v[7]), unsigned(v[8]), unsigned(v[9])),
    }
}

/// A time or span the script sends as whole seconds and nanoseconds.
fn span(seconds: f64, nanos: f64) -> Span {
    // `as` saturates and maps NaN to 0, so a negative or broken value becomes 0.
    (seconds as Span) * Span::from(NANOS_PER_SECOND) + nanos as Span
}

/// A whole non-negative double from the script as an integer (negatives become 0).
fn unsigned(x: f64) -> u64 {
    // `as` saturates and maps NaN to 0: exactly the clamping wanted here.
    x as u64
}

/// Integers as little-endian doubles, the script's `struct` format `<d`. Exact below 2^53,
/// which bounds every quantity the script works with (see its header).
fn pack(values: &[u64]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&x| (x as f64).to_le_bytes())
        .collect()
}

/// The script's packed reply as doubles; a trailing partial double is ignored.
fn unpack(bytes: &[u8]) -> SmallVec<[f64; 8]> {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn parse_seed(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut seed = [0u8; 16];
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::CounterState;

    #[test]
    fn seeds_round_trip_through_hex() {
        let seed: [u8; 16] = std::array::from_fn(|i| (i * 17) as u8);
        assert_eq!(parse_seed(&hex(&seed)), Some(seed));
        assert_eq!(parse_seed("zz"), None);
        assert_eq!(parse_seed(&"g".repeat(32)), None);
    }

    #[test]
    fn replies_become_outcomes_with_core_shaped_state() {
        let sliding = Limit::sliding_window(10, NANOS_PER_SECOND).unwrap();
        let o = outcome_of(
            &sliding,
            &[1.0, 4.0, 0.0, 10.0, -1.0, 0.0, 2.0, 5.0, 3.0, 7.0],
        );
        assert!(o.allowed);
        assert_eq!(o.reset_after, 10);
        assert_eq!(o.retry_after, None);
        assert_eq!(o.state, CounterState([2_000_000_005, (3 << 32) | 7]));
        let gcra = Limit::gcra(1, NANOS_PER_SECOND, 1).unwrap();
        let o = outcome_of(&gcra, &[0.0, 0.0, 0.0, 10.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(o.retry_after, Some(3));
        assert_eq!(o.state, CounterState::default());
        // A thousand years of seconds, past 64-bit nanoseconds, arrive whole.
        let far = 31_536_000_000.0 + 1_795_000_000.0;
        let o = outcome_of(
            &gcra,
            &[
                1.0,
                0.0,
                31_536_000_000.0,
                7.0,
                -1.0,
                0.0,
                far,
                9.0,
                0.0,
                0.0,
            ],
        );
        assert_eq!(
            o.reset_after,
            31_536_000_000 * Span::from(NANOS_PER_SECOND) + 7
        );
        assert_eq!(
            gcra.expiry_of(o.state),
            33_331_000_000 * Span::from(NANOS_PER_SECOND) + 9
        );
    }
}
