//! `examples/llm-gateway/policies.yaml` end to end: 100 simulated streams against two nodes
//! sharing one Redis, each taking a stream slot, reserving `max_tokens` and committing the
//! real count on the other node; one in ten clients dies mid-stream.

use std::collections::HashMap;

use serde_json::{Value, json};
use tollgate_testkit::{RedisServer, wait};

use crate::helpers::{TempDir, TestServer};

const KEYS: usize = 5;
const STREAMS: usize = 100;
const MAX_TOKENS: u64 = 1_000;
const TOKENS_PER_KEY: u64 = 5_000;
const MONTHLY: u64 = 1_000_000;

/// One simulated stream: what it reserved and committed, and whether its client died.
#[derive(Debug, Default, Clone)]
struct Stream {
    key: usize,
    admitted: bool,
    committed: Option<u64>,
    died: bool,
}

fn descriptors(pairs: &[(&str, String)]) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|(k, v)| json!({"entries": [{"key": k, "value": v}]}))
            .collect(),
    )
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> Value {
    let r = client.post(url).json(&body).send().await.expect("request");
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.expect("JSON")
}

/// A deterministic stream of numbers (no randomness in a test's verdict).
fn draw(seed: u64) -> u64 {
    seed.wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407)
        >> 33
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_gateway_streams_never_overrun_and_dead_clients_leak_nothing() {
    let redis = RedisServer::start();
    let dir = TempDir::new("llm");
    // The example file, with the per-minute limit counted per day, so that no window ends
    // while the test runs (a minute boundary would start a fresh allowance mid-test).
    let example = include_str!("../../../../examples/llm-gateway/policies.yaml");
    assert!(example.contains("unit: minute"));
    let policies = dir.write("llm.yaml", &example.replace("unit: minute", "unit: day"));
    let nodes: Vec<TestServer> = (0..2)
        .map(|_| {
            TestServer::serve(
                Some(&policies),
                &["--store", &redis.url(), "--workers", "1"],
            )
        })
        .collect();
    let day_at_start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;

    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let (here, there) = (nodes[i % 2].url(""), nodes[(i + 1) % 2].url(""));
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let key = i % KEYS;
            let died = i % 10 == 7;
            let ttl_ms = if died { 1_500 } else { 60_000 };
            let mut stream = Stream { key, died, ..Stream::default() };
            // A slot: retried while the key's 4 are busy (bounded).
            let mut lease = None;
            for _ in 0..2_000 {
                let v = post(
                    &client,
                    format!("{here}/v1/leases"),
                    json!({"domain": "llm", "descriptors": descriptors(&[("streams_of", format!("key-{key}"))]), "ttl_ms": ttl_ms}),
                )
                .await;
                if let Some(id) = v["id"].as_str() {
                    lease = Some(id.to_owned());
                    break;
                }
                tokio::task::yield_now().await;
            }
            let lease = lease.expect("a stream slot within 2000 tries");
            let v = post(
                &client,
                format!("{here}/v1/reservations"),
                json!({
                    "domain": "llm",
                    "descriptors": descriptors(&[("api_key", format!("key-{key}")), ("org", "acme".to_owned())]),
                    "estimate": MAX_TOKENS,
                    "ttl_ms": ttl_ms,
                }),
            )
            .await;
            stream.admitted = v["allowed"] == true;
            if died {
                return stream; // neither commit nor release: the TTLs must clean up
            }
            if let Some(id) = v["id"].as_str() {
                // 100 to 1,499 tokens: some streams use more than they reserved.
                let actual = 100 + draw(i as u64) % 1_400;
                let c = post(
                    &client,
                    format!("{there}/v1/reservations/{id}/commit"),
                    json!({"actual": actual}),
                )
                .await;
                assert_eq!(c["settled"], "committed", "{c}");
                stream.committed = Some(actual);
            }
            let r = client
                .delete(format!("{there}/v1/leases/{lease}"))
                .send()
                .await
                .expect("release");
            assert_eq!(r.status(), 200);
            stream
        }));
    }
    let mut streams = Vec::new();
    for t in tasks {
        streams.push(t.await.expect("stream task"));
    }

    // Per key: what commits charged never passes the limit by more than the overages
    // committed (docs/design/metering.md, "Overage"); the org's quota is charged exactly
    // what was committed.
    let crossed_a_day = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400
        != day_at_start;
    let mut per_key: HashMap<usize, (u64, u64)> = HashMap::new();
    for s in streams
        .iter()
        .filter_map(|s| s.committed.map(|a| (s.key, a)))
    {
        let (charged, over) = per_key.entry(s.0).or_default();
        *charged += s.1;
        *over += s.1.saturating_sub(MAX_TOKENS);
    }
    let windows = if crossed_a_day { 2 } else { 1 };
    for (key, (charged, over)) in &per_key {
        assert!(
            *charged <= windows * TOKENS_PER_KEY + over,
            "key-{key}: {charged} tokens charged, limit {TOKENS_PER_KEY} + overages {over}"
        );
    }
    let admitted = streams.iter().filter(|s| s.admitted).count();
    let died_admitted = streams.iter().filter(|s| s.admitted && s.died).count();
    assert!(
        admitted > 0 && admitted < STREAMS,
        "{admitted} of {STREAMS} admitted"
    );
    eprintln!(
        "llm gateway: {admitted} of {STREAMS} streams admitted ({died_admitted} of them died), \
         tokens charged per key {per_key:?}"
    );

    // The dead clients' slots and reservations come back by their TTL, with no one's help
    // but the next decisions; then nothing is held anywhere.
    let probe = |key: usize| {
        let node = nodes[key % 2].url("/v1/check");
        async move {
            post(
                &reqwest::Client::new(),
                node,
                json!({"domain": "llm", "descriptors": descriptors(&[("streams_of", format!("key-{key}"))])}),
            )
            .await
        }
    };
    for key in 0..KEYS {
        wait::until("a dead client's stream slot to come back", || async {
            let v = probe(key).await;
            (v["statuses"][0]["remaining"] == 4).then_some(())
        })
        .await;
    }
    let committed: u64 = streams.iter().filter_map(|s| s.committed).sum();
    let v = post(
        &reqwest::Client::new(),
        nodes[1].url("/v1/check"),
        json!({"domain": "llm", "descriptors": descriptors(&[("org", "acme".to_owned())])}),
    )
    .await;
    // This check costs 1; everything else the quota counts is exactly what was committed
    // (the dead clients' reservations came back).
    assert_eq!(
        v["statuses"][0]["remaining"],
        MONTHLY - committed - 1,
        "the monthly quota holds exactly what was committed: {v}"
    );
    let left = redis.command(&["KEYS", "*:hold:*"]);
    assert!(
        left.starts_with("*0"),
        "holds left in Redis after their TTL: {left}"
    );
}
