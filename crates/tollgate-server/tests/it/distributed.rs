//! Several `tollgate` nodes sharing one Redis (a private `redis-server` started here):
//! exactness of `global`, the bound of `leased`, and behaviour while Redis is away.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tollgate_testkit::{FaultProxy, RedisServer, wait};

use crate::helpers::{TempDir, TestServer, body, metric};

/// GCRA at 100 per day: nothing refills while a test runs, so "exactly 100" is exact.
const POLICIES: &str = "domain: shared
descriptors:
  - key: global
    rate_limit: {unit: day, requests_per_unit: 100, algorithm: gcra}
  - key: leased
    rate_limit: {unit: day, requests_per_unit: 100, algorithm: gcra, consistency: leased}
  - key: leased_closed
    rate_limit: {unit: day, requests_per_unit: 100, algorithm: gcra, consistency: leased, on_store_error: deny}
  - key: hot
    rate_limit: {unit: day, requests_per_unit: 1000000, algorithm: gcra, consistency: leased}
  - key: open
    rate_limit: {unit: day, requests_per_unit: 1000, on_store_error: allow}
  - key: closed
    rate_limit: {unit: day, requests_per_unit: 1000, on_store_error: deny}
  - key: fallback
    rate_limit: {unit: day, requests_per_unit: 4, on_store_error: local}
";

/// `n` nodes on `store`. Their store deadline is generous: these tests count exact
/// admissions, and on a loaded test machine a 50 ms deadline can be missed, which is
/// answered by `on_store_error` (the deadline tests set their own).
fn nodes(n: usize, store: &str, dir: &TempDir) -> Vec<TestServer> {
    let policies = dir.write("shared.yaml", POLICIES);
    (0..n)
        .map(|_| {
            TestServer::serve(
                Some(&policies),
                &["--store", store, "--workers", "1", "--store-timeout", "2s"],
            )
        })
        .collect()
}

/// Sends `per_client` requests for `key` from `clients` concurrent clients per node;
/// returns how many were admitted.
async fn hammer(nodes: &[TestServer], key: &str, clients: usize, per_client: usize) -> usize {
    let mut tasks = Vec::new();
    for node in nodes {
        for _ in 0..clients {
            let client = reqwest::Client::new();
            let url = node.url("/v1/check");
            let body = body("shared", &[&[(key, "k")]], 1);
            tasks.push(tokio::spawn(async move {
                let mut admitted = 0;
                for _ in 0..per_client {
                    let r = client.post(&url).json(&body).send().await.expect("request");
                    let v: Value = r.json().await.expect("JSON");
                    assert_eq!(v["statuses"][0]["store_failed"], false, "{v}");
                    admitted += usize::from(v["allowed"] == true);
                }
                admitted
            }));
        }
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("client task");
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_admits_exactly_the_limit_across_three_nodes() {
    let redis = RedisServer::start();
    let dir = TempDir::new("global");
    let nodes = nodes(3, &redis.url(), &dir);
    let admitted = hammer(&nodes, "global", 4, 50).await;
    assert_eq!(
        admitted, 100,
        "600 requests over 3 nodes against a global limit of 100"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_never_exceeds_the_limit_across_three_nodes() {
    let redis = RedisServer::start();
    let dir = TempDir::new("leased");
    let nodes = nodes(3, &redis.url(), &dir);
    let admitted = hammer(&nodes, "leased", 4, 50).await;
    eprintln!("leased: {admitted} of 100 admitted");
    assert!(admitted <= 100, "{admitted} admitted");
    // Worst case under-admission: each node holds one lease (10) and a prefetched half.
    assert!(admitted >= 100 - 3 * 15, "{admitted} admitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_hot_keys_need_few_redis_round_trips() {
    let redis = RedisServer::start();
    let dir = TempDir::new("hot");
    let nodes = nodes(3, &redis.url(), &dir);
    let before = script_calls(&redis);
    let admitted = hammer(&nodes, "hot", 2, 400).await;
    assert_eq!(admitted, 2_400);
    let trips = script_calls(&redis) - before;
    eprintln!("hot: {trips} round trips for 2400 decisions");
    assert!(
        trips as f64 <= 0.05 * 2_400.0,
        "{trips} round trips for 2400 decisions"
    );
}

/// EVAL and EVALSHA calls the server has run (INFO commandstats).
fn script_calls(redis: &RedisServer) -> u64 {
    let info = redis.command(&["INFO", "commandstats"]);
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// One check of `key=value`, failing (rather than hanging) if no answer comes.
async fn decide_value(node: &TestServer, key: &str, value: &str) -> Value {
    wait::finishes(
        &format!("an answer for {key}={value}"),
        node.check_json(&body("shared", &[&[(key, value)]], 1)),
    )
    .await
}

async fn decide(node: &TestServer, key: &str) -> Value {
    decide_value(node, key, "k").await
}

async fn readyz(node: &TestServer) -> u16 {
    node.get("/readyz").await.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_answered_by_on_store_error_and_recovery_follows() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port())));
    let dir = TempDir::new("outage");
    let nodes = nodes(1, &format!("redis://{}", proxy.addr()), &dir);
    let node = &nodes[0];
    for key in ["open", "closed", "fallback"] {
        let v = decide(node, key).await;
        assert_eq!(v["allowed"], true, "{key}: {v}");
        assert_eq!(v["statuses"][0]["store_failed"], false);
    }
    assert_eq!(readyz(node).await, 200);

    proxy.set_down(true);
    // Every answer comes back (none hangs), decided by the policy's on_store_error.
    for _ in 0..20 {
        let open = decide(node, "open").await;
        let closed = decide(node, "closed").await;
        assert_eq!(open["allowed"], true, "fail open: {open}");
        assert_eq!(open["statuses"][0]["store_failed"], true);
        assert_eq!(closed["allowed"], false, "fail closed: {closed}");
    }
    // The local fallback enforces 4 / 1 node in memory: one was used while Redis was up
    // only in Redis, so 4 pass here.
    let mut fallback = 0;
    for _ in 0..10 {
        fallback += usize::from(decide(node, "fallback").await["allowed"] == true);
    }
    assert_eq!(fallback, 4);
    assert_eq!(readyz(node).await, 503, "readiness reflects the store");
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("tollgate_store_up{store=\"redis\"} 0"),
        "{metrics}"
    );

    proxy.set_down(false);
    let v = wait::until("answers from the store once it is back", || async {
        let v = decide(node, "closed").await;
        (v["statuses"][0]["store_failed"] == false).then_some(v)
    })
    .await;
    assert_eq!(v["allowed"], true);
    assert_eq!(readyz(node).await, 200);
}

/// The store accepts connections and never answers (a partition, a hung Redis): only the
/// deadline ends each wait. Every kind of policy is still answered, by its
/// `on_store_error` (allow, deny, local), and leased ones by theirs once no lease can be
/// had (allow and deny).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_store_is_answered_by_the_deadline_for_every_policy_kind() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port())));
    let dir = TempDir::new("black-hole");
    let policies = dir.write("shared.yaml", POLICIES);
    let store = format!("redis://{}", proxy.addr());
    let node = TestServer::serve(
        Some(&policies),
        &[
            "--store",
            &store,
            "--workers",
            "1",
            "--store-timeout",
            "100ms",
        ],
    );
    for key in ["open", "closed", "fallback", "leased", "leased_closed"] {
        let v = decide(&node, key).await;
        assert_eq!(v["statuses"][0]["store_failed"], false, "{key}: {v}");
    }
    let timeouts = || async {
        metric(
            &node.metrics().await,
            "tollgate_store_calls_total{store=\"redis\",outcome=\"timeout\"}",
        )
    };
    let before = timeouts().await;

    proxy.set_black_hole(true);
    // Fresh values: no lease is held for them, so every kind must ask the store.
    for (key, allowed) in [
        ("open", true),
        ("closed", false),
        ("fallback", true),
        ("leased", true),
        ("leased_closed", false),
    ] {
        let v = decide_value(&node, key, "fresh").await;
        assert_eq!(v["statuses"][0]["store_failed"], true, "{key}: {v}");
        assert_eq!(v["allowed"], allowed, "{key}: {v}");
    }
    // A black hole refuses nothing: what ended the first waits was the deadline.
    assert!(
        timeouts().await > before,
        "no store call timed out: the black hole was not reached"
    );

    proxy.set_black_hole(false);
    wait::until("answers from the store after the black hole", || async {
        let v = decide(&node, "closed").await;
        (v["statuses"][0]["store_failed"] == false).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_is_exact_on_a_redis_cluster_too() {
    let cluster = tollgate_testkit::RedisCluster::start();
    let dir = TempDir::new("cluster");
    let nodes = nodes(2, &cluster.url(), &dir);
    let admitted = hammer(&nodes, "global", 3, 50).await;
    assert_eq!(
        admitted, 100,
        "300 requests over 2 nodes on a 3-master Cluster"
    );
    // A request charging two limits of the domain is still one atomic script: both keys
    // share the domain's hash tag, so the Cluster routes them to one slot.
    let node = &nodes[0];
    let v = node
        .check_json(&body("shared", &[&[("open", "a")], &[("closed", "b")]], 1))
        .await;
    assert_eq!(v["statuses"][0]["store_failed"], false, "{v}");
    assert_eq!(v["statuses"][1]["store_failed"], false, "{v}");
    // Asked of the Cluster itself: every counter of the domain is in one slot, on one
    // master (the one that owns it), so one script can run over all of them. Counters
    // are `tollgate:{group}:key`; `tollgate:key-seed` is the nodes' shared seed.
    let mut slots = std::collections::BTreeSet::new();
    let mut holders = 0;
    let mut keys = 0;
    for master in cluster.nodes() {
        let reply = master.command(&["KEYS", "tollgate:{*"]);
        let names: Vec<&str> = reply
            .split("\r\n")
            .filter(|l| l.starts_with("tollgate:{"))
            .collect();
        holders += usize::from(!names.is_empty());
        for name in names {
            keys += 1;
            let slot = master.command(&["CLUSTER", "KEYSLOT", name]);
            slots.insert(slot.trim().trim_start_matches(':').to_owned());
        }
    }
    assert!(
        keys >= 3,
        "the hammered counter and both limits of the last request: {keys}"
    );
    assert_eq!(
        slots.len(),
        1,
        "one slot for the domain's {keys} counters: {slots:?}"
    );
    assert_eq!(holders, 1, "one master holds them all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_store_is_used_with_its_ca_file() {
    let (redis, ca) = RedisServer::start_tls();
    let dir = TempDir::new("tls-store");
    let policies = dir.write("shared.yaml", POLICIES);
    let ca_file = dir.write("ca.pem", &String::from_utf8(ca).expect("PEM is text"));
    let node = TestServer::serve(
        Some(&policies),
        &[
            "--store",
            &redis.url(),
            "--store-ca-file",
            &ca_file.display().to_string(),
        ],
    );
    let admitted = hammer(std::slice::from_ref(&node), "global", 2, 60).await;
    assert_eq!(admitted, 100, "exact over TLS too");
}

/// One answer seen by the load of `redis_killed_mid_load_…`: which key, whether it passed,
/// whether the store failed, and the test's phase when it was sent and when it came back.
struct Seen {
    key: &'static str,
    allowed: bool,
    store_failed: bool,
    sent: u8,
    answered: u8,
}

const UP: u8 = 0;
const KILLED: u8 = 1;
const RESTARTED: u8 = 2;
const DONE: u8 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_and_restarted() {
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU8, Ordering};

    let mut redis = RedisServer::start();
    let port = redis.port();
    let dir = TempDir::new("kill");
    let nodes = nodes(1, &redis.url(), &dir);
    let node = &nodes[0];
    let phase = Arc::new(AtomicU8::new(UP));
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    // Four clients, until the test is done, bounded in count (5 000 requests each); the
    // phases move on events the answers show, not on a clock.
    let mut clients = Vec::new();
    for i in 0..4 {
        let key: &'static str = if i % 2 == 0 { "open" } else { "closed" };
        let client = reqwest::Client::builder()
            .timeout(wait::EVENT_CEILING)
            .build()
            .expect("client");
        let url = node.url("/v1/check");
        let (phase, seen) = (phase.clone(), seen.clone());
        clients.push(tokio::spawn(async move {
            let body = body("shared", &[&[(key, "m")]], 1);
            for _ in 0..5_000 {
                let sent = phase.load(Ordering::SeqCst);
                if sent == DONE {
                    break;
                }
                let r = client
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .expect("answered, no hang");
                let v: Value = r.json().await.expect("JSON");
                seen.lock().unwrap().push(Seen {
                    key,
                    allowed: v["allowed"] == true,
                    store_failed: v["statuses"][0]["store_failed"] == true,
                    sent,
                    answered: phase.load(Ordering::SeqCst),
                });
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    let count =
        |pred: &dyn Fn(&Seen) -> bool| seen.lock().unwrap().iter().filter(|s| pred(s)).count();
    wait::until("both keys answered by the store under load", || async {
        let from_store = |key| count(&|s: &Seen| s.key == key && !s.store_failed);
        (from_store("open") > 10 && from_store("closed") > 10).then_some(())
    })
    .await;
    redis.kill();
    phase.store(KILLED, Ordering::SeqCst);
    wait::until("answers while Redis is gone", || async {
        (count(&|s: &Seen| s.sent == KILLED && s.answered == KILLED) > 20).then_some(())
    })
    .await;
    let _restarted = RedisServer::start_on(port, &[]);
    phase.store(RESTARTED, Ordering::SeqCst);
    wait::until("both keys back on the store after the restart", || async {
        let back = |key| count(&|s: &Seen| s.key == key && s.sent == RESTARTED && !s.store_failed);
        (back("open") > 0 && back("closed") > 0).then_some(())
    })
    .await;
    phase.store(DONE, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client task");
    }
    // Asked and answered while Redis was dead: every answer came from on_store_error.
    let seen = seen.lock().unwrap();
    let during: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.sent == KILLED && s.answered == KILLED)
        .collect();
    assert!(
        during.len() > 20,
        "load kept flowing: {} answers",
        during.len()
    );
    for s in &during {
        assert!(
            s.store_failed,
            "{} answered from the store while it was dead",
            s.key
        );
        assert_eq!(
            s.allowed,
            s.key == "open",
            "{} must fail {}",
            s.key,
            if s.key == "open" { "open" } else { "closed" }
        );
    }
}

/// Leased limits where they can break: three nodes of two workers each (threads sharing
/// one node's lease table), a per-second window that rolls over many times under load, a
/// per-minute one whose idle leases expire and are handed back by the server's task, and
/// requests that a second (global) limit denies, whose leased tokens go back unspent.
const ROLLING: &str = "domain: rolling
descriptors:
  - key: per_second
    rate_limit: {unit: second, requests_per_unit: 40, consistency: leased, lease: 6}
  - key: per_minute
    rate_limit: {unit: minute, requests_per_unit: 60, consistency: leased, lease: 10}
  - key: tight
    rate_limit: {unit: hour, requests_per_unit: 150}
";

/// One answer: which limits it touched, whether it passed, and when it was sent and
/// received (nanoseconds since the epoch: the nodes' own clock, on this machine).
struct Rolled {
    kind: u8,
    allowed: bool,
    sent: u128,
    received: u128,
}

fn epoch_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The admitted answers of `kind` that were certainly decided in one window of `period`
/// ns (sent and received in it), per window.
fn per_window(
    seen: &[Rolled],
    kinds: &[u8],
    period: u128,
) -> std::collections::BTreeMap<u128, u64> {
    let mut windows = std::collections::BTreeMap::new();
    for s in seen.iter().filter(|s| s.allowed && kinds.contains(&s.kind)) {
        if s.sent / period == s.received / period {
            *windows.entry(s.sent / period).or_default() += 1;
        }
    }
    windows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_never_exceeds_any_window_while_windows_roll_and_leases_expire() {
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    let redis = RedisServer::start();
    let dir = TempDir::new("rolling");
    let policies = dir.write("rolling.yaml", ROLLING);
    let nodes: Vec<TestServer> = (0..3)
        .map(|_| {
            TestServer::serve(
                Some(&policies),
                &[
                    "--store",
                    &redis.url(),
                    "--workers",
                    "2",
                    "--store-timeout",
                    "2s",
                ],
            )
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<Rolled>::new()));
    let mut clients = Vec::new();
    for node in &nodes {
        for c in 0..3u64 {
            let url = node.url("/v1/check");
            let (done, seen) = (done.clone(), seen.clone());
            clients.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                // Bounded in count; the test ends it once the events it waits for happened.
                for i in 0..20_000u64 {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    // 0: the per-second limit alone; 1: with the hourly global limit, which
                    // ends up denying (the leased token is then given back); 2: now and
                    // then the per-minute limit, so its leases sit idle and expire.
                    let kind = if (i + c) % 25 == 0 { 2 } else { (i % 2) as u8 };
                    let descriptors: Vec<&[(&str, &str)]> = match kind {
                        0 => vec![&[("per_second", "k")]],
                        1 => vec![&[("per_second", "k")], &[("tight", "k")]],
                        _ => vec![&[("per_minute", "k")]],
                    };
                    let sent = epoch_ns();
                    let v: Value = client
                        .post(&url)
                        .json(&body("rolling", &descriptors, 1))
                        .send()
                        .await
                        .expect("answered")
                        .json()
                        .await
                        .expect("JSON");
                    assert_eq!(v["statuses"][0]["store_failed"], false, "{v}");
                    seen.lock().unwrap().push(Rolled {
                        kind,
                        allowed: v["allowed"] == true,
                        sent,
                        received: epoch_ns(),
                    });
                }
            }));
        }
    }
    const SECOND_NS: u128 = 1_000_000_000;
    let returned = || async {
        let mut total = 0.0;
        for node in &nodes {
            let text = node.metrics().await;
            if text.contains("tollgate_lease_tokens_returned_total") {
                total += metric(&text, "tollgate_lease_tokens_returned_total");
            }
        }
        total
    };
    // The events: per-second admissions in at least four windows, and the hourly limit
    // spent (so it denies, and the per-second tokens of those requests go back).
    wait::until(
        "the load saw four windows and the hourly limit spent",
        || async {
            let seen = seen.lock().unwrap();
            let windows = per_window(&seen, &[0, 1], SECOND_NS).len();
            let tight = seen.iter().filter(|s| s.kind == 1 && s.allowed).count();
            (windows >= 4 && tight >= 150).then_some(())
        },
    )
    .await;
    done.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client task");
    }
    // Whether any lease ended the load with tokens left is up to the load; this part is
    // not: one per-minute check per node now and then, on a key of its own (the load may
    // have spent the minute of `k`, and its end can be 60 s away), takes a lease of 10
    // and spends 1,
    // and the lease's time to live (1 s) ends well inside its minute, so the 9 left go back
    // to Redis (on the next check's fetch, or by the servers' task). A per-second lease
    // lives to its window's end, and tokens of an ended window are dropped, not handed
    // back into the next one. These checks are not in `seen` and touch none of the windows
    // checked below.
    let probe = reqwest::Client::new();
    wait::until_polling(
        "unspent leased tokens handed back to Redis",
        std::time::Duration::from_millis(300),
        || async {
            for node in &nodes {
                probe
                    .post(node.url("/v1/check"))
                    .json(&body("rolling", &[&[("per_minute", "probe")]], 1))
                    .send()
                    .await
                    .expect("answered");
            }
            (returned().await > 0.0).then_some(())
        },
    )
    .await;
    let handed_back = returned().await;
    let seen = seen.lock().unwrap();
    for (window, admitted) in per_window(&seen, &[0, 1], SECOND_NS) {
        assert!(admitted <= 40, "second {window}: {admitted} admitted of 40");
    }
    for (window, admitted) in per_window(&seen, &[2], 60 * SECOND_NS) {
        assert!(admitted <= 60, "minute {window}: {admitted} admitted of 60");
    }
    let tight = seen.iter().filter(|s| s.kind == 1 && s.allowed).count();
    assert!(tight <= 150, "{tight} admitted by the hourly limit of 150");
    let denied_by_tight = seen.iter().filter(|s| s.kind == 1 && !s.allowed).count();
    assert!(denied_by_tight > 0, "the hourly limit denied some");
    eprintln!(
        "rolling: {} answers, {} per-second windows, {} lease tokens handed back",
        seen.len(),
        per_window(&seen, &[0, 1], SECOND_NS).len(),
        handed_back
    );
}
