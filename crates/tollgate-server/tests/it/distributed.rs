//! Several `tollgate` nodes sharing one Redis (a private `redis-server` started here):
//! exactness of `global`, the bound of `leased`, and behaviour while Redis is away.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_testkit::{FaultProxy, RedisServer};

use crate::helpers::{TempDir, TestServer, body};

/// GCRA at 100 per day: nothing refills while a test runs, so "exactly 100" is exact.
const POLICIES: &str = "domain: shared
descriptors:
  - key: global
    rate_limit: {unit: day, requests_per_unit: 100, algorithm: gcra}
  - key: leased
    rate_limit: {unit: day, requests_per_unit: 100, algorithm: gcra, consistency: leased}
  - key: hot
    rate_limit: {unit: day, requests_per_unit: 1000000, algorithm: gcra, consistency: leased}
  - key: open
    rate_limit: {unit: day, requests_per_unit: 1000, on_store_error: allow}
  - key: closed
    rate_limit: {unit: day, requests_per_unit: 1000, on_store_error: deny}
  - key: fallback
    rate_limit: {unit: day, requests_per_unit: 4, on_store_error: local}
";

fn nodes(n: usize, store: &str, dir: &TempDir) -> Vec<TestServer> {
    let policies = dir.write("shared.yaml", POLICIES);
    (0..n)
        .map(|_| TestServer::serve(Some(&policies), &["--store", store, "--workers", "1"]))
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

async fn decide(node: &TestServer, key: &str) -> (Value, Duration) {
    let started = Instant::now();
    let v = node.check_json(&body("shared", &[&[(key, "k")]], 1)).await;
    (v, started.elapsed())
}

async fn readyz(node: &TestServer) -> u16 {
    node.get("/readyz").await.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_answered_by_on_store_error_and_recovery_is_quick() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port())));
    let dir = TempDir::new("outage");
    let nodes = nodes(1, &format!("redis://{}", proxy.addr()), &dir);
    let node = &nodes[0];
    for key in ["open", "closed", "fallback"] {
        let (v, _) = decide(node, key).await;
        assert_eq!(v["allowed"], true, "{key}: {v}");
        assert_eq!(v["statuses"][0]["store_failed"], false);
    }
    assert_eq!(readyz(node).await, 200);

    proxy.set_down(true);
    // Every answer comes back promptly (the 50 ms deadline, or at once once the circuit
    // opens), decided by the policy's on_store_error.
    for _ in 0..20 {
        let (open, took_open) = decide(node, "open").await;
        let (closed, took_closed) = decide(node, "closed").await;
        assert_eq!(open["allowed"], true, "fail open: {open}");
        assert_eq!(open["statuses"][0]["store_failed"], true);
        assert_eq!(closed["allowed"], false, "fail closed: {closed}");
        assert!(
            took_open.max(took_closed) < Duration::from_secs(1),
            "a request hung"
        );
    }
    // The local fallback enforces 4 / 1 node in memory: one was used while Redis was up
    // only in Redis, so 4 pass here.
    let mut fallback = 0;
    for _ in 0..10 {
        fallback += usize::from(decide(node, "fallback").await.0["allowed"] == true);
    }
    assert_eq!(fallback, 4);
    assert_eq!(readyz(node).await, 503, "readiness reflects the store");
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("tollgate_store_up{store=\"redis\"} 0"),
        "{metrics}"
    );

    proxy.set_down(false);
    let healed = Instant::now();
    loop {
        let (v, _) = decide(node, "closed").await;
        if v["statuses"][0]["store_failed"] == false {
            assert_eq!(v["allowed"], true);
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(1),
            "not recovered within 1 s: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(readyz(node).await, 200);
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

/// One answer seen by the load of `redis_killed_mid_load_…`: when it was asked, which key,
/// whether it passed, whether the store failed.
struct Seen {
    at: Instant,
    key: &'static str,
    allowed: bool,
    store_failed: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_and_restarted() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    let dir = TempDir::new("kill");
    let nodes = nodes(1, &redis.url(), &dir);
    let node = &nodes[0];
    let start = Instant::now();
    // Four clients, bounded in time (4 s) and count (5 000 requests each).
    let mut clients = Vec::new();
    for i in 0..4 {
        let key: &'static str = if i % 2 == 0 { "open" } else { "closed" };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let url = node.url("/v1/check");
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let body = body("shared", &[&[(key, "m")]], 1);
            for _ in 0..5_000 {
                if start.elapsed() > Duration::from_secs(4) {
                    break;
                }
                let at = Instant::now();
                let r = client
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .expect("answered, no hang");
                let v: Value = r.json().await.expect("JSON");
                seen.push(Seen {
                    at,
                    key,
                    allowed: v["allowed"] == true,
                    store_failed: v["statuses"][0]["store_failed"] == true,
                });
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let _restarted = RedisServer::start_on(port, &[]);
    let restarted = Instant::now();
    let mut seen = Vec::new();
    for c in clients {
        seen.extend(c.await.expect("client task"));
    }
    // While Redis was gone, every answer came from on_store_error, open or closed.
    let during: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at > killed + Duration::from_millis(100) && s.at < restarted)
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
    // Back on the store within a second of its return, for every key.
    for key in ["open", "closed"] {
        let back = seen
            .iter()
            .filter(|s| s.key == key && s.at > restarted && !s.store_failed)
            .map(|s| s.at)
            .min()
            .unwrap_or_else(|| panic!("{key} never came back to the store"));
        assert!(
            back - restarted < Duration::from_secs(1),
            "{key} back after {:?}",
            back - restarted
        );
    }
}
