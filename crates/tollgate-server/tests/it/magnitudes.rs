//! Real magnitudes end to end: the policy that once saturated (`1 per year, burst 1,000`,
//! a bucket 1,000 years deep) through the real binary over HTTP, on the in-memory store, a
//! Redis and a Redis Cluster alike.

use serde_json::Value;
use tollgate_testkit::{RedisCluster, RedisServer};

use crate::helpers::{TempDir, TestServer, body};

const POLICIES: &str = "domain: archive
descriptors:
  - key: export
    rate_limit: {unit: year, requests_per_unit: 1, algorithm: gcra, burst: 1000}
";

const YEAR_MS: u64 = 31_536_000_000;
/// Slack for the wall clock moving while 1,005 requests are answered: the answers are
/// exact to the nanosecond at the instant each is decided, which is later than the first.
const SLACK_MS: u64 = 10 * 60 * 1_000;

async fn thousand_of_1005(node: &TestServer) {
    let mut admitted = 0u64;
    let mut last: Option<Value> = None;
    for i in 0..1_005u64 {
        let v = node
            .check_json(&body("archive", &[&[("export", "tenant-1")]], 1))
            .await;
        let status = &v["statuses"][0];
        assert_eq!(status["store_failed"], false, "{v}");
        if v["allowed"] == true {
            admitted += 1;
            assert_eq!(status["remaining"], 999 - i, "request {i}: {v}");
            let reset = status["reset_after_ms"].as_u64().expect("reset");
            assert!(
                reset <= (i + 1) * YEAR_MS && reset + SLACK_MS > (i + 1) * YEAR_MS,
                "request {i}: reset {reset} ms, not {} years: {v}",
                i + 1
            );
        } else {
            last = Some(v);
        }
    }
    assert_eq!(admitted, 1_000, "of 1,005 at 1 per year with burst 1,000");
    let v = last.expect("five refused");
    let status = &v["statuses"][0];
    assert_eq!(status["remaining"], 0, "{v}");
    let retry = status["retry_after_ms"].as_u64().expect("a retry time");
    assert!(
        retry <= YEAR_MS && retry + SLACK_MS > YEAR_MS,
        "retry {retry} ms: {v}"
    );
    let reset = status["reset_after_ms"].as_u64().expect("reset");
    assert!(
        reset <= 1_000 * YEAR_MS && reset + SLACK_MS > 1_000 * YEAR_MS,
        "reset {reset} ms: {v}"
    );
}

/// A node serving the archive policy, on `store` (the in-memory store when `None`).
fn node(tag: &str, store: Option<&str>) -> (TestServer, TempDir) {
    let dir = TempDir::new(tag);
    let policies = dir.write("archive.yaml", POLICIES);
    // A generous store deadline: a missed one would be answered by on_store_error.
    let flags: Vec<&str> = store.map_or_else(Vec::new, |url| {
        vec!["--store", url, "--store-timeout", "2s"]
    });
    (TestServer::serve(Some(&policies), &flags), dir)
}

#[tokio::test]
async fn a_thousand_year_bucket_admits_exactly_its_burst_in_memory() {
    let (node, _dir) = node("magnitudes-memory", None);
    thousand_of_1005(&node).await;
}

#[tokio::test]
async fn a_thousand_year_bucket_admits_exactly_its_burst_on_redis() {
    let redis = RedisServer::start();
    let (node, _dir) = node("magnitudes-redis", Some(&redis.url()));
    thousand_of_1005(&node).await;
}

#[tokio::test]
async fn a_thousand_year_bucket_admits_exactly_its_burst_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let (node, _dir) = node("magnitudes-cluster", Some(&cluster.url()));
    thousand_of_1005(&node).await;
}
