//! Building and running the service: policies, store, limiter, listeners, background tasks.
//!
//! Thread per core: each worker thread runs its own single-threaded tokio runtime with its
//! own listening socket on the same address (`SO_REUSEPORT`), so the kernel spreads
//! connections over workers and no request hops threads. On the 2-core test machine, with
//! wrk on the same cores, one such worker spent 12.9 µs of CPU per HTTP decision against
//! 17–19 µs for tokio's default two-thread work-stealing runtime (`scripts/bench-http`).

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tollgate_core::{
    CommitRule, Limiter, LimiterConfig, MemoryStore, MemoryStoreConfig, Store, SystemClock,
};
use tollgate_redis::{RedisStore, RedisStoreConfig};

use tollgate_admin::sync::{self, PolicyControl, PolicySources, Rejected};
use tollgate_admin::{policies, reload};
use tollgate_data::grpc::{GrpcFrontEnd, GrpcOptions, HeaderNames};
use tollgate_data::http::HttpFrontEnd;
use tollgate_data::listener::bind_workers;
use tollgate_data::metrics::Metrics;
use tollgate_data::resp::RespFrontEnd;
use tollgate_data::shutdown::ShutdownSignals;
use tollgate_data::tls::ListenerTls;
use tollgate_data::usage::{EventsHealth, UsageConfig, UsageRecorder};
use tollgate_data::{AppState, FrontEnd};

use crate::configuration::{Settings, StoreSettings};

/// How often expired counters are dropped from the in-memory store and histogram samples
/// are folded into buckets.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// A built service, bound to its port, not yet serving.
pub struct Application {
    /// The front ends, each with one listening socket per worker.
    front_ends: Vec<BoundFrontEnd>,
    state: Arc<AppState>,
    /// The policy sources and the domain service.
    policy_control: Arc<PolicyControl>,
    /// The policy path to watch for changes (none for the built-in examples), with the
    /// fingerprint of what was loaded.
    policies: Option<(std::path::PathBuf, Option<reload::Fingerprint>)>,
    /// Runs a shared store's connections (one thread), apart from the request workers,
    /// whose runtimes come and go with their listeners.
    store_runtime: Option<tokio::runtime::Runtime>,
    /// Runs the control plane (one thread): the admin listener, the policy database's
    /// connections, and the task that keeps database policies in force.
    control_runtime: tokio::runtime::Runtime,
    /// The admin listener.
    admin: StdListener,
    /// The admin listener's authentication.
    admin_access: tollgate_admin::access::AdminAccess,
    /// Origins allowed to call the admin API from browsers.
    admin_cors_origins: Vec<http::HeaderValue>,
    /// TLS of each listener, when configured.
    tls: Option<ListenerTls>,
    /// Events and usage, when on.
    events: Option<EventsParts>,
    /// How long a worker spins before it sleeps.
    park_spin: Duration,
}

/// What publishes events and aggregates usage.
struct EventsParts {
    /// The broker (`None`: usage for the admin API only, `--usage` without `--events`).
    broker: Option<Arc<tollgate_events::Broker>>,
    /// The data plane's event queue, read by the publisher.
    queue: Option<tokio::sync::mpsc::Receiver<tollgate_data::usage::DataEvent>>,
    /// The recorder to flush every interval.
    usage: Arc<UsageRecorder>,
    /// Names this process's data-plane events.
    origin: tollgate_events::publisher::Origin,
}

/// A front end and its listening sockets, one per worker, all on one address.
struct BoundFrontEnd {
    front_end: Arc<dyn FrontEnd>,
    listeners: Vec<StdListener>,
}

/// The store chosen by the settings, and the key seed to use with it.
struct BuiltStore {
    store: Arc<dyn Store>,
    key_seed: [u8; 16],
    runtime: Option<tokio::runtime::Runtime>,
}

fn build_store(settings: &StoreSettings) -> anyhow::Result<BuiltStore> {
    match settings {
        StoreSettings::Memory { max_keys } => {
            let memory = Arc::new(MemoryStore::new(MemoryStoreConfig {
                max_keys: *max_keys,
                ..MemoryStoreConfig::default()
            }));
            let mut key_seed = [0u8; 16];
            getrandom::fill(&mut key_seed)
                .map_err(|e| anyhow::anyhow!("cannot read random bytes for the key seed: {e}"))?;
            tracing::info!(store = "memory", max_keys, "counter store ready");
            Ok(BuiltStore {
                store: memory,
                key_seed,
                runtime: None,
            })
        }
        StoreSettings::Redis {
            url,
            timeout,
            prefix,
            ca_file,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("tollgate-store")
                .enable_all()
                .build()
                .context("cannot start the store's runtime")?;
            let mut config = RedisStoreConfig::new(url.clone());
            config.timeout = *timeout;
            config.prefix = prefix.clone();
            if let Some(path) = ca_file {
                config.ca_pem = Some(std::fs::read(path).with_context(|| {
                    format!(
                        "cannot read the store's CA file {} (--store-ca-file)",
                        path.display()
                    )
                })?);
            }
            let redacted = url.redacted();
            let (redis, key_seed) = runtime
                .block_on(async {
                    let redis = RedisStore::connect(config).await?;
                    // Nodes sharing a store must build the same counter keys.
                    let seed = redis.shared_key_seed().await?;
                    Ok::<_, tollgate_redis::RedisStoreError>((redis, seed))
                })
                .with_context(|| {
                    format!(
                        "cannot use the store at {redacted}: is Redis running there? \
                         (start one with `redis-server --port 6379`, or pick another with --store)"
                    )
                })?;
            tracing::info!(store = "redis", url = %redacted, timeout_ms = timeout.as_millis() as u64, %prefix, "counter store ready");
            Ok(BuiltStore {
                store: Arc::new(redis),
                key_seed,
                runtime: Some(runtime),
            })
        }
    }
}

impl Application {
    /// Loads policies, creates the store and binds one listener per worker.
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        let options = &settings.options;
        let policy_path = options.policies.policies.clone();
        // Fingerprint first: a change made while loading is then seen as a change.
        let loaded = policy_path.as_deref().map(|p| reload::fingerprint(p).ok());
        let files = policies::read_sources(policy_path.as_deref())?;
        // Invalid files stop startup before anything else is touched.
        policies::build(&files).map_err(|errors| anyhow::anyhow!("{}", Rejected(errors)))?;
        let built = build_store(&settings.store)?;

        let control_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tollgate-control")
            .enable_all()
            .build()
            .context("cannot start the control plane's runtime")?;
        let (control, snapshot) = control_runtime.block_on(async {
            let control = sync::open(&settings.database, options.policies.migrate).await?;
            let snapshot = control
                .snapshot(&tollgate_control::Actor::unauthenticated_admin("startup"))
                .await?;
            Ok::<_, anyhow::Error>((control, snapshot))
        })?;
        let sources = PolicySources {
            files,
            database: snapshot.domains,
            revision: snapshot.revision,
        };
        let policies = sources.build().map_err(|errors| {
            anyhow::anyhow!(
                "{}\n(a domain comes from one source: a policy file or the policy database, not both)",
                Rejected(errors)
            )
        })?;
        control.set_file_domains(sync::file_domains(&policies));
        let source = policy_path.as_ref().map_or_else(
            || policies::BUILTIN_NAME.to_owned(),
            |p| p.display().to_string(),
        );
        let domains: Vec<String> = policies.domains().map(|d| d.name().to_string()).collect();
        tracing::info!(source = %source, database_domains = sources.database.len(), domains = ?domains, "policies loaded");

        let metrics = Metrics::install().context("cannot install the metrics recorder")?;
        metrics.set_domains(&policies);

        let limiter_options = &options.limiter;
        let config = LimiterConfig {
            key_seed: built.key_seed,
            nodes: options.store.nodes,
            local_max_keys: usize::try_from(options.store.max_keys).unwrap_or(usize::MAX),
            shadow_mode: limiter_options.shadow_mode,
            quota_mode: limiter_options.quota_mode,
            commit_rule: if limiter_options.count_denied_requests {
                CommitRule::EveryRequestCounts
            } else {
                CommitRule::AllOrNothing
            },
            ..LimiterConfig::default()
        };
        tracing::info!(
            shadow_mode = config.shadow_mode,
            quota_mode = config.quota_mode,
            count_denied_requests = limiter_options.count_denied_requests,
            "limiter configured"
        );
        let limiter = Arc::new(Limiter::new(
            policies,
            built.store,
            Arc::new(SystemClock),
            config,
        ));

        let security = &settings.security;
        let tls = security
            .tls
            .as_ref()
            .map(ListenerTls::load)
            .transpose()
            .context("cannot set up TLS (--tls-cert, --tls-key, --tls-client-ca)")?;
        // The data plane's front ends: one line each.
        let listen = &options.listen;
        let mut registered: Vec<(Arc<dyn FrontEnd>, SocketAddr, &str)> = vec![
            (
                Arc::new(HttpFrontEnd {
                    tls: tls.as_ref().map(|t| t.http.clone()),
                }),
                listen.http_addr,
                "--http-addr",
            ),
            (
                Arc::new(GrpcFrontEnd {
                    options: GrpcOptions {
                        headers: options.grpc.grpc_response_headers,
                        header_names: HeaderNames {
                            limit: options.grpc.grpc_limit_header.clone(),
                            remaining: options.grpc.grpc_remaining_header.clone(),
                            reset: options.grpc.grpc_reset_header.clone(),
                        },
                        max_age: settings.grpc_max_age,
                        tls: tls.as_ref().map(|t| t.grpc.clone()),
                        keepalive: options.grpc.grpc_keepalive,
                        dynamic_metadata: options.grpc.grpc_response_dynamic_metadata,
                    },
                }),
                listen.grpc_addr,
                "--grpc-addr",
            ),
        ];
        if let Some(addr) = listen.resp_addr {
            registered.push((
                Arc::new(RespFrontEnd {
                    tls: tls.as_ref().map(|t| t.resp.clone()),
                    cell_release: listen.resp_cell_release,
                }),
                addr,
                "--resp-addr",
            ));
        }
        let front_ends = registered
            .into_iter()
            .map(|(front_end, addr, flag)| {
                Ok(BoundFrontEnd {
                    front_end,
                    listeners: bind_workers(addr, settings.workers)
                        .with_context(|| format!("cannot listen on {addr} ({flag})"))?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let admin = bind_workers(listen.admin_addr, 1)
            .with_context(|| format!("cannot listen on {} (--admin-addr)", listen.admin_addr))?
            .remove(0);
        let tokens = security
            .tokens
            .as_ref()
            .map(tollgate_control::jwt::TokenVerifier::new)
            .transpose()?;
        let admin_auth = options.security.admin_auth;
        let admin_access =
            tollgate_admin::access::AdminAccess::new(admin_auth, tokens, security.guard)
                .map_err(|e| anyhow::anyhow!("cannot set up the admin guard: {e}"))?;
        tracing::info!(
            admin_auth = ?admin_auth,
            jwt = security.tokens.is_some(),
            tls = tls.is_some(),
            data_auth = ?options.security.data_auth,
            "security configured"
        );
        if admin_auth == tollgate_admin::access::AdminAuthMode::Required
            && security.tokens.is_none()
        {
            let keys = control_runtime.block_on(control.list_keys(
                None,
                Some(1),
                &tollgate_control::Actor::unauthenticated_admin("startup"),
            ))?;
            if keys.items.is_empty() {
                tracing::info!(
                    "the admin API needs a key and none exists yet: create one with `tollgate keys create --role admin --name NAME`"
                );
            }
        }
        let events = build_events(&settings, &control_runtime)?;
        let state = Arc::new(AppState {
            data_token: security.data_token.clone(),
            trusted_proxies: options.listen.trusted_proxies.clone(),
            usage: events.as_ref().map(|e| e.usage.clone()),
            events: events
                .as_ref()
                .and_then(|e| e.broker.as_ref().map(|b| b.health().clone())),
            ..AppState::new(limiter, metrics)
        });
        let policy_control = Arc::new(PolicyControl {
            control,
            sources: std::sync::Mutex::new(sources),
        });
        Ok(Self {
            front_ends,
            state,
            policy_control,
            policies: policy_path.map(|p| (p, loaded.flatten())),
            admin_access,
            admin_cors_origins: options.security.admin_cors_origins.clone(),
            tls,
            store_runtime: built.runtime,
            control_runtime,
            admin,
            events,
            park_spin: Duration::from_micros(u64::from(options.listen.park_spin_us)),
        })
    }

    /// The address the admin listener is bound to.
    pub fn admin_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.admin.local_addr()?)
    }

    /// The address the front end called `name` (`http`, `grpc`) is bound to (useful with
    /// port 0).
    pub fn front_end_addr(&self, name: &str) -> anyhow::Result<SocketAddr> {
        let bound = (self.front_ends.iter())
            .find(|f| f.front_end.name() == name)
            .with_context(|| format!("no {name} front end"))?;
        Ok(bound.listeners[0].local_addr()?)
    }

    /// Serves until SIGINT or SIGTERM, then drains in-flight requests and returns.
    /// Blocks the calling thread, which becomes worker 0.
    pub fn run_until_stopped(self) -> anyhow::Result<()> {
        let (http_addr, grpc_addr) = (self.front_end_addr("http")?, self.front_end_addr("grpc")?);
        let resp_addr = self.front_end_addr("resp").ok();
        let admin_addr = self.admin_addr()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut publisher = None;
        let admin_task = {
            let _guard = self.control_runtime.enter();
            let listener = tokio::net::TcpListener::from_std(self.admin)?;
            sync::spawn_sync(self.state.clone(), self.policy_control.clone());
            let relays = self.events.as_ref().is_some_and(|e| e.broker.is_some());
            if let Some(events) = self.events {
                publisher = spawn_events(events, &self.policy_control.control);
            }
            if !relays {
                // No relay here: keep the outbox from growing without bound.
                let control = self.policy_control.control.clone();
                tokio::spawn(async move {
                    loop {
                        tollgate_events::relay::prune(&control).await;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                });
            }
            if let Some(tls) = &self.tls {
                for listener in [&tls.http, &tls.grpc, &tls.resp, &tls.admin] {
                    listener.spawn_watcher(stop_rx.clone());
                }
            }
            let router = tollgate_admin::router(
                self.policy_control.control.clone(),
                self.state.clone(),
                self.admin_access,
                &self.admin_cors_origins,
                self.tls.is_some(),
            );
            let listener = tollgate_admin::AdminListener::new(
                listener,
                self.tls.as_ref().map(|t| t.admin.clone()),
            );
            self.control_runtime
                .spawn(tollgate_admin::serve(listener, router, stop_rx.clone()))
        };
        // Worker i serves the i-th listener of every front end.
        let mut workers: Vec<Vec<(Arc<dyn FrontEnd>, StdListener)>> = Vec::new();
        for bound in self.front_ends {
            for (i, listener) in bound.listeners.into_iter().enumerate() {
                if workers.len() <= i {
                    workers.push(Vec::new());
                }
                workers[i].push((bound.front_end.clone(), listener));
            }
        }
        let mut workers = workers.into_iter();
        let main_worker = workers.next().context("no listener")?;
        let mut threads = Vec::new();
        let park_spin = self.park_spin;
        for (i, front_ends) in workers.enumerate() {
            let state = self.state.clone();
            let stop = stop_rx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("tollgate-worker-{}", i + 1))
                .spawn(move || serve_worker(front_ends, state, stop, park_spin))
                .context("cannot start a worker thread")?;
            threads.push(thread);
        }
        let runtime = worker_runtime(park_spin)?;
        let state = self.state.clone();
        let workers = threads.len() + 1;
        let policies = self.policies;
        let policy_control = self.policy_control.clone();
        let result = runtime.block_on(async move {
            let signals = ShutdownSignals::register()?;
            match resp_addr {
                Some(resp_addr) => tracing::info!(%http_addr, %grpc_addr, %resp_addr, %admin_addr, workers, "listening"),
                None => tracing::info!(%http_addr, %grpc_addr, %admin_addr, workers, "listening"),
            }
            spawn_housekeeping(&state);
            if let Some((path, loaded)) = policies {
                reload::spawn(state.clone(), policy_control, path, loaded);
            }
            let signal_state = state.clone();
            tokio::spawn(async move {
                signals.recv().await;
                signal_state.shutting_down.store(true, Ordering::Relaxed);
                tracing::info!("shutdown requested; draining in-flight requests");
                let _ = stop_tx.send(true);
            });
            serve(main_worker, state, stop_rx).await
        });
        for thread in threads {
            match thread.join() {
                Ok(r) => r?,
                Err(_) => anyhow::bail!("a worker thread panicked"),
            }
        }
        match self.control_runtime.block_on(admin_task) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "admin listener failed"),
            Err(e) => tracing::error!(error = %e, "admin listener panicked"),
        }
        if self.state.limiter.store().is_shared() {
            // Leased tokens this node holds go back to the store for the other nodes;
            // within a second, or they stay stranded until their window ends.
            let limiter = self.state.limiter.clone();
            match self.control_runtime.block_on(tokio::time::timeout(
                Duration::from_secs(1),
                limiter.return_all_leases(),
            )) {
                Ok(returned) => tracing::info!(returned, "leased tokens handed back"),
                Err(_) => tracing::warn!("leased tokens not handed back within 1 s"),
            }
        }
        if let (Some(usage), Some(stats)) = (&self.state.usage, &publisher) {
            // The interval in progress is published too, so a restart loses no usage: up
            // to 2 s for the publisher to have every queued event acknowledged or failed.
            usage.flush();
            let settled = self.control_runtime.block_on(async {
                for _ in 0..200 {
                    if stats_done(stats) >= usage.queued() {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                false
            });
            if !settled {
                tracing::warn!(
                    queued = usage.queued(),
                    done = stats_done(stats),
                    "stopping with usage events unpublished (the broker is slow or away)"
                );
            }
        }
        self.control_runtime
            .shutdown_timeout(Duration::from_secs(1));
        if let Some(store_runtime) = self.store_runtime {
            store_runtime.shutdown_timeout(Duration::from_secs(1));
        }
        result?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The usage recorder, and with `--events` the broker (connecting in the background) and
/// the data plane's event queue.
fn build_events(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Option<EventsParts>> {
    let o = &settings.options.events;
    if settings.events.is_none() && !o.usage {
        return Ok(None);
    }
    let (queue_tx, queue_rx) = match settings.events {
        Some(_) => {
            let (tx, rx) = tokio::sync::mpsc::channel(o.events_queue as usize);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let usage = Arc::new(UsageRecorder::new(
        UsageConfig {
            interval: o.usage_interval,
            sketch_counters: usize::from(o.heavy_hitter_counters),
            top_k: usize::from(o.heavy_hitters),
            denial_rate: o.denial_events_per_second,
            denial_sample: o.denial_events_sample,
        },
        queue_tx,
    ));
    let node = settings
        .events
        .as_ref()
        .map_or_else(crate::configuration::host_name, |c| c.node.clone());
    let broker = match &settings.events {
        Some(config) => {
            let health = Arc::new(EventsHealth::default());
            let broker = runtime
                .block_on(tollgate_events::Broker::connect(config.clone(), health))
                .context("cannot set up events (--events)")?;
            // A broker that is down does not stop the node; say so once, at startup.
            let connected = runtime.block_on(async {
                for _ in 0..20 {
                    if broker.is_connected() {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                false
            });
            if connected {
                if let Err(e) = runtime.block_on(broker.ensure_streams()) {
                    tracing::warn!(error = %e, "cannot create the event streams yet; retried on the first publish");
                }
                tracing::info!(broker = %config.redacted_url(), node = %config.node, "events on");
            } else {
                tracing::warn!(broker = %config.redacted_url(), "event broker unreachable (or refusing this node: see the errors above); serving anyway, events wait in the outbox (see /readyz)");
            }
            Some(Arc::new(broker))
        }
        None => None,
    };
    Ok(Some(EventsParts {
        broker,
        queue: queue_rx,
        usage,
        origin: tollgate_events::publisher::Origin::new(&node),
    }))
}

/// Events the data-plane publisher is done with (acknowledged or failed).
fn stats_done(stats: &tollgate_events::publisher::PublisherStats) -> u64 {
    stats.published.load(Ordering::Relaxed) + stats.failed.load(Ordering::Relaxed)
}

/// Starts the outbox relay, the data-plane publisher and the usage ticker on the current
/// (control) runtime; returns the publisher's counts, when there is one.
fn spawn_events(
    events: EventsParts,
    control: &Arc<tollgate_control::ControlPlane>,
) -> Option<Arc<tollgate_events::publisher::PublisherStats>> {
    let EventsParts {
        broker,
        queue,
        usage,
        origin,
    } = events;
    let mut stats = None;
    if let Some(broker) = &broker {
        tokio::spawn(tollgate_events::relay::run(control.clone(), broker.clone()));
        if let Some(queue) = queue {
            let counts = Arc::new(tollgate_events::publisher::PublisherStats::default());
            tokio::spawn(tollgate_events::publisher::run(
                queue,
                broker.clone(),
                origin,
                counts.clone(),
            ));
            stats = Some(counts);
        }
    }
    let every = usage.config().interval;
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            usage.flush();
        }
    });
    stats
}

fn serve_worker(
    front_ends: Vec<(Arc<dyn FrontEnd>, StdListener)>,
    state: Arc<AppState>,
    stop: watch::Receiver<bool>,
    park_spin: Duration,
) -> anyhow::Result<()> {
    worker_runtime(park_spin)?.block_on(serve(front_ends, state, stop))
}

/// A worker's runtime: one thread. With `park_spin`, the thread keeps its core busy that
/// long each time it runs out of work before it sleeps in `epoll_wait`: a request that
/// arrives meanwhile finds it awake, so the sender's kernel need not wake a sleeping CPU
/// (on a VM, an inter-processor interrupt and a VM exit that the *client* pays for).
/// Tokio has no spinning park of its own, hence the hook.
fn worker_runtime(park_spin: Duration) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    if !park_spin.is_zero() {
        builder.on_thread_park(move || {
            // A monotonic busy wait, not a decision's time: the limiter's Clock is not
            // involved.
            let until = std::time::Instant::now() + park_spin;
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        });
    }
    builder.build()
}

/// Serves one worker's front ends until `stop`; all drain on the way out.
async fn serve(
    front_ends: Vec<(Arc<dyn FrontEnd>, StdListener)>,
    state: Arc<AppState>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if let Err(e) = state.limiter.store().attach_current_thread().await {
        // The shared connection still works; this worker just takes a thread hop per call.
        tracing::warn!(error = %e, "no store connection of this worker's own; using the shared one");
    }
    tollgate_data::front_end::serve_all(front_ends, state, stop).await
}

fn spawn_housekeeping(state: &Arc<AppState>) {
    let metrics = state.metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tick.tick().await;
            metrics.upkeep();
        }
    });
    if state.limiter.store().is_shared() {
        let limiter = state.limiter.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Leased tokens nobody spent in time go back to the store for other nodes.
                let returned = limiter.return_expired_leases().await;
                if returned > 0 {
                    tracing::debug!(returned, "unspent leased tokens handed back");
                }
                // Both ways back count: this task's, and an expired lease's next fetch.
                metrics::counter!("tollgate_lease_tokens_returned_total")
                    .absolute(limiter.lease_tokens_returned());
            }
        });
    }
    let limiter = state.limiter.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = limiter.clock().now();
            let limiter = limiter.clone();
            // Sweeping walks every shard: keep it off the serving thread.
            let swept = tokio::task::spawn_blocking(move || {
                limiter.sweep(now) + limiter.store().sweep(now)
            });
            match swept.await {
                Ok(dropped) if dropped > 0 => tracing::debug!(dropped, "expired counters dropped"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "counter sweep failed"),
            }
        }
    });
}
