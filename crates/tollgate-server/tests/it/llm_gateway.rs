//! `examples/llm-gateway/policies.yaml` end to end: 100 simulated streams against two nodes
//! sharing one Redis, each taking a stream slot, reserving `max_tokens` and committing the
//! real count on the other node; one in ten clients dies mid-stream. Then the same traffic
//! through check-then-report (Kuadrant's `CheckRateLimit` and `Report`), to measure the
//! overshoot that reservations avoid.

use std::collections::HashMap;

use serde_json::{Value, json};
use tollgate_testkit::{RedisServer, wait};

use tollgate_proto::kuadrant::service::ratelimit::v1::rate_limit_service_client::RateLimitServiceClient as KuadrantClient;

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

/// How the simulated gateway meters tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metering {
    /// Reserve `max_tokens` over HTTP, commit the real count on the other node.
    Reservations,
    /// Kuadrant's flow over gRPC: `CheckRateLimit` (would one more token pass?), then
    /// `Report` of the real count on the other node.
    CheckThenReport,
}

/// Two nodes on one Redis with the example's policies (per-minute limits counted per
/// day, so that no window ends while a test runs). The store's deadline is generous: the
/// test suite runs many servers at once on a small machine, and a hold the store cannot
/// keep in time is refused (503), which is not what these tests measure.
fn gateway(redis: &RedisServer, dir: &TempDir) -> Vec<TestServer> {
    let example = include_str!("../../../../examples/llm-gateway/policies.yaml");
    assert!(example.contains("unit: minute"));
    let policies = dir.write("llm.yaml", &example.replace("unit: minute", "unit: day"));
    (0..2)
        .map(|_| {
            TestServer::serve(
                Some(&policies),
                &[
                    "--store",
                    &redis.url(),
                    "--workers",
                    "1",
                    "--store-timeout",
                    "5s",
                ],
            )
        })
        .collect()
}

fn day_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs()
        / 86_400
}

/// Runs the 100 streams: each takes a stream slot (retried while its key's 4 are busy),
/// is admitted or not by `metering`, streams for a few milliseconds, and settles on the
/// other node; one client in ten dies after admission and settles nothing.
async fn simulate(nodes: &[TestServer], metering: Metering) -> Vec<Stream> {
    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let (here, there) = (nodes[i % 2].url(""), nodes[(i + 1) % 2].url(""));
        let (grpc_here, grpc_there) = (nodes[i % 2].grpc.clone(), nodes[(i + 1) % 2].grpc.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let key = i % KEYS;
            let died = i % 10 == 7;
            let ttl_ms = if died { 1_500 } else { 60_000 };
            let mut stream = Stream { key, died, ..Stream::default() };
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
            let tokens = [("api_key", format!("key-{key}")), ("org", "acme".to_owned())];
            // 100 to 1,499 tokens: some streams use more than they reserved.
            let actual = 100 + draw(i as u64) % 1_400;
            // The model's stream takes 5 to 24 ms, while other streams start and end.
            let streaming = std::time::Duration::from_millis(5 + draw(i as u64 + 1_000) % 20);
            match metering {
                Metering::Reservations => {
                    let v = post(
                        &client,
                        format!("{here}/v1/reservations"),
                        json!({
                            "domain": "llm",
                            "descriptors": descriptors(&tokens),
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
                        tokio::time::sleep(streaming).await;
                        let c = post(
                            &client,
                            format!("{there}/v1/reservations/{id}/commit"),
                            json!({"actual": actual}),
                        )
                        .await;
                        assert_eq!(c["settled"], "committed", "{c}");
                        stream.committed = Some(actual);
                    }
                }
                Metering::CheckThenReport => {
                    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
                    let mut check = KuadrantClient::connect(grpc_here).await.expect("connect");
                    let answer = check
                        .check_rate_limit(kuadrant_request(&tokens, 0))
                        .await
                        .expect("CheckRateLimit")
                        .into_inner();
                    stream.admitted = answer.overall_code == Code::Ok as i32;
                    if died {
                        return stream; // its tokens are never reported
                    }
                    if stream.admitted {
                        tokio::time::sleep(streaming).await;
                        let mut report = KuadrantClient::connect(grpc_there).await.expect("connect");
                        let hits = u32::try_from(actual).expect("fits");
                        report
                            .report(kuadrant_request(&tokens, hits))
                            .await
                            .expect("Report");
                        stream.committed = Some(actual);
                    }
                }
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
    streams
}

fn kuadrant_request(
    pairs: &[(&str, String)],
    hits: u32,
) -> envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest {
        domain: "llm".into(),
        descriptors: pairs
            .iter()
            .map(|(k, v)| RateLimitDescriptor {
                entries: vec![Entry {
                    key: (*k).into(),
                    value: v.clone(),
                }],
                ..Default::default()
            })
            .collect(),
        hits_addend: hits,
    }
}

/// Per key: tokens charged (committed or reported) and the overage of commits past
/// their estimate.
fn charged_per_key(streams: &[Stream]) -> HashMap<usize, (u64, u64)> {
    let mut per_key: HashMap<usize, (u64, u64)> = HashMap::new();
    for (key, actual) in streams
        .iter()
        .filter_map(|s| s.committed.map(|a| (s.key, a)))
    {
        let (charged, over) = per_key.entry(key).or_default();
        *charged += actual;
        *over += actual.saturating_sub(MAX_TOKENS);
    }
    per_key
}

/// Tokens charged past each key's limit, summed over the keys.
fn overshoot(per_key: &HashMap<usize, (u64, u64)>, windows: u64) -> u64 {
    per_key
        .values()
        .map(|(charged, _)| charged.saturating_sub(windows * TOKENS_PER_KEY))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_gateway_streams_never_overrun_and_dead_clients_leak_nothing() {
    let redis = RedisServer::start();
    let dir = TempDir::new("llm");
    let nodes = gateway(&redis, &dir);
    let day_at_start = day_now();
    let streams = simulate(&nodes, Metering::Reservations).await;

    // Per key: what commits charged never passes the limit by more than the overages
    // committed (docs/design/metering.md, "Overage"); the org's quota is charged exactly
    // what was committed.
    let crossed_a_day = day_now() != day_at_start;
    let per_key = charged_per_key(&streams);
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
        "llm gateway, reservations: {admitted} of {STREAMS} streams admitted ({died_admitted} of them died), \
         tokens charged per key (charged, overage) {per_key:?}, {} tokens past the limits",
        overshoot(&per_key, windows)
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

/// The same streams through check-then-report: every stream whose check lands before the
/// reports that fill the limit passes, so the keys end past their limits by far more than
/// reservations' overages. Report is exact across nodes: the monthly quota holds every
/// reported token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_then_report_lets_concurrent_streams_overshoot() {
    let redis = RedisServer::start();
    let dir = TempDir::new("llm-ctr");
    let nodes = gateway(&redis, &dir);
    let day_at_start = day_now();
    let streams = simulate(&nodes, Metering::CheckThenReport).await;
    let windows = if day_now() != day_at_start { 2 } else { 1 };
    let per_key = charged_per_key(&streams);
    let admitted = streams.iter().filter(|s| s.admitted).count();
    let past = overshoot(&per_key, windows);
    eprintln!(
        "llm gateway, check-then-report: {admitted} of {STREAMS} streams admitted, \
         tokens charged per key (charged, overage) {per_key:?}, {past} tokens past the limits"
    );
    // Demand (about 14,000 tokens per key) far exceeds 5,000: checks pass while less than
    // the limit is reported, so every key ends at or past its limit.
    for (key, (charged, _)) in &per_key {
        assert!(
            *charged >= TOKENS_PER_KEY,
            "key-{key}: only {charged} reported"
        );
    }
    assert!(past > 0, "no key went past its limit: {per_key:?}");
    let reported: u64 = streams.iter().filter_map(|s| s.committed).sum();
    let v = post(
        &reqwest::Client::new(),
        nodes[0].url("/v1/check"),
        json!({"domain": "llm", "descriptors": descriptors(&[("org", "acme".to_owned())])}),
    )
    .await;
    assert_eq!(
        v["statuses"][0]["remaining"],
        MONTHLY - reported - 1,
        "every reported token is counted once, whichever node took it: {v}"
    );
}

/// `examples/llm-gateway/envoy.yaml`'s flow, as Envoy runs it: the descriptors its
/// `rate_limits` build from the request headers, asked on the request path at their
/// `hits_addend`, then again when the stream is done at the count from the response header
/// its `format` names. Tollgate runs as the file says (`--count-denied-requests`), so the
/// report counts even past the limit and the next call is refused.
#[tokio::test]
async fn envoys_stream_done_report_charges_what_the_model_used() {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
    use envoy_types::pb::google::protobuf::UInt64Value;

    let envoy: Value =
        yaml_serde::from_str(include_str!("../../../../examples/llm-gateway/envoy.yaml"))
            .expect("envoy.yaml is YAML");
    let route = &envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["routes"][0];
    let per_route = &route["typed_per_filter_config"]["envoy.filters.http.ratelimit"];
    assert_eq!(
        per_route["@type"],
        "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute"
    );
    let filter = &envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][0]["typed_config"];
    let domain = filter["domain"].as_str().expect("the filter's domain");
    let request_headers = [("x-api-key", "key-9"), ("x-org", "globex")];
    let response_headers = [("x-tokens-used", "5500")];
    let header = |headers: &[(&str, &str)], name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| (*v).to_owned())
            .unwrap_or_else(|| panic!("no header {name}"))
    };
    // The RLS request Envoy sends for the rate limits of one phase.
    let phase = |stream_done: bool| {
        let descriptors = per_route["rate_limits"]
            .as_array()
            .expect("rate_limits")
            .iter()
            .filter(|r| r["apply_on_stream_done"].as_bool().unwrap_or(false) == stream_done)
            .map(|r| {
                let entries = r["actions"]
                    .as_array()
                    .expect("actions")
                    .iter()
                    .map(|a| {
                        let h = &a["request_headers"];
                        Entry {
                            key: h["descriptor_key"].as_str().unwrap().into(),
                            value: header(&request_headers, h["header_name"].as_str().unwrap()),
                        }
                    })
                    .collect();
                let hits = &r["hits_addend"];
                let hits = match hits["number"].as_u64() {
                    Some(n) => n,
                    None => {
                        let format = hits["format"].as_str().expect("a number or a format");
                        let name = format
                            .strip_prefix("%RESP(")
                            .and_then(|f| f.strip_suffix(")%"))
                            .expect("a %RESP(header)% format");
                        header(&response_headers, name).parse().unwrap()
                    }
                };
                RateLimitDescriptor {
                    entries,
                    hits_addend: Some(UInt64Value { value: hits }),
                    ..Default::default()
                }
            })
            .collect();
        RateLimitRequest {
            domain: domain.into(),
            descriptors,
            hits_addend: 0,
        }
    };
    assert_eq!(phase(false).descriptors.len(), 2);
    assert_eq!(phase(true).descriptors.len(), 2);

    let dir = TempDir::new("llm-envoy");
    let example = include_str!("../../../../examples/llm-gateway/policies.yaml");
    let policies = dir.write("llm.yaml", &example.replace("unit: minute", "unit: day"));
    let s = TestServer::serve(Some(&policies), &["--count-denied-requests"]);
    let mut rls = RateLimitServiceClient::connect(s.grpc.clone())
        .await
        .expect("connect");
    let first = rls
        .should_rate_limit(phase(false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.overall_code, Code::Ok as i32);
    assert_eq!(first.statuses[0].limit_remaining, 4_999);
    // The stream used 5,500 tokens: Envoy reports them; they count past the 5,000.
    rls.should_rate_limit(phase(true)).await.unwrap();
    let next = rls
        .should_rate_limit(phase(false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.overall_code, Code::OverLimit as i32, "{next:?}");
    // The month: 1 + 5,500 + 1 (the refused call counts too, as Envoy's service counts it).
    assert_eq!(next.statuses[1].limit_remaining, 1_000_000 - 5_502);
}
