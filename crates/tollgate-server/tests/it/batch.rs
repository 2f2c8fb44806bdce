//! Many checks at once: `POST /v1/checks`, pipelined RESP decisions and gRPC streams
//! (`tollgate.v1.Checks`), on the memory store and over Redis, where what goes together
//! shares one round trip per hash-tag group.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
    Entry as RlsEntry, RateLimitOverride as RlsLimitOverride,
};
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use futures_util::{StreamExt, TryStreamExt};
use redis::Value as RedisValue;
use serde_json::{Value, json};
use tollgate_proto::tollgate::v1::StreamedDecision;
use tollgate_proto::tollgate::v1::checks_client::ChecksClient;
use tollgate_testkit::RedisServer;

use crate::helpers::{POLICIES, TempDir, TestServer, body, metric};

fn check_of(user: &str) -> Value {
    body("shop", &[&[("user", user)]], 1)
}

async fn batch(server: &TestServer, checks: Vec<Value>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.url("/v1/checks"))
        .json(&json!({ "checks": checks }))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// Store calls answered so far.
async fn store_calls(server: &TestServer) -> f64 {
    metric(
        &server.metrics().await,
        r#"tollgate_store_calls_total{store="redis",outcome="ok"}"#,
    )
}

/// Five checks of a 3-per-hour user, with a malformed one in the middle and one of
/// another user: each answered in its place, the malformed one with its problem.
async fn a_batch_is_answered_in_order(server: &TestServer, user: &str) {
    let mut checks: Vec<Value> = (0..5).map(|_| check_of(user)).collect();
    checks.insert(2, json!({"domain": "shop", "descriptors": []}));
    checks.push(check_of(&format!("{user}-other")));
    checks.insert(
        1,
        json!({"domain": "shop", "descriptors": [{"entries": [{"key": "user", "value": user}], "limit": {"requests_per_unit": 1, "unit": "fortnight"}}]}),
    );
    let (status, answer) = batch(server, checks).await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), 8, "{answer}");
    let allowed: Vec<Value> = results.iter().map(|r| r["allowed"].clone()).collect();
    assert_eq!(
        allowed,
        [
            json!(true),
            Value::Null,
            json!(true),
            Value::Null,
            json!(true),
            json!(false),
            json!(false),
            json!(true)
        ],
        "{answer}"
    );
    let remaining: Vec<Value> = [0, 2, 4, 5]
        .iter()
        .map(|&i| results[i]["statuses"][0]["remaining"].clone())
        .collect();
    assert_eq!(remaining, [json!(2), json!(1), json!(0), json!(0)]);
    assert!(results[5]["statuses"][0]["retry_after_ms"].as_u64() > Some(0));
    let unit = &results[1]["error"];
    assert_eq!(unit["status"], 400);
    assert!(
        unit["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("checks[1].descriptors[0].limit.unit")),
        "{unit}"
    );
    let empty = &results[3]["error"];
    assert_eq!(empty["type"], "urn:tollgate:problem:invalid-request");
    assert!(
        empty["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("checks[3]")),
        "{empty}"
    );
    // The batch and single checks share counters.
    a_single_check_is_denied(server, user).await;
}

/// A single `POST /v1/check` of `user` is denied: what went before spent the user's limit.
async fn a_single_check_is_denied(server: &TestServer, user: &str) {
    let single: Value = server
        .check(&check_of(user))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(single["allowed"], false, "{single}");
}

#[tokio::test]
async fn a_batch_of_checks_is_answered_in_order_with_problems_in_place() {
    let dir = TempDir::new("batch-memory");
    let server = TestServer::start(Some(&dir.write("shop.yaml", POLICIES)));
    a_batch_is_answered_in_order(&server, "ann").await;
    // What the batch itself gets wrong refuses it whole, naming the field.
    let (status, answer) = batch(&server, Vec::new()).await;
    assert_eq!(status, 400);
    assert!(
        answer["detail"]
            .as_str()
            .is_some_and(|d| d.contains("1 to 1000 checks, not 0"))
    );
    let too_many: Vec<Value> = (0..1001).map(|i| check_of(&format!("u{i}"))).collect();
    let (status, answer) = batch(&server, too_many).await;
    assert_eq!(status, 400, "{answer}");
    let response = reqwest::Client::new()
        .post(server.url("/v1/checks"))
        .header("content-type", "application/json")
        .body(r#"{"checks":[{"domain":"shop","descriptors":[],"hit":1}]}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.expect("JSON");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("checks[0]") && d.contains("unknown field `hit`")),
        "{problem}"
    );
}

/// A server of the shop policies over `redis`, with `flags` besides.
fn shop_over(redis: &RedisServer, name: &str, flags: &[&str]) -> (TestServer, TempDir) {
    let dir = TempDir::new(name);
    let url = redis.url();
    let mut all = vec!["--store", url.as_str(), "--store-timeout", "2s"];
    all.extend_from_slice(flags);
    let server = TestServer::serve(Some(&dir.write("shop.yaml", POLICIES)), &all);
    (server, dir)
}

#[tokio::test]
async fn over_redis_a_batch_costs_one_store_call_per_domain() {
    let redis = RedisServer::start();
    let (server, _dir) = shop_over(&redis, "batch-redis", &[]);
    a_batch_is_answered_in_order(&server, "bea").await;
    let before = store_calls(&server).await;
    let checks: Vec<Value> = (0..50).map(|i| check_of(&format!("c{}", i % 5))).collect();
    let (status, answer) = batch(&server, checks).await;
    assert_eq!(status, 200);
    let admitted = (answer["results"].as_array().expect("results").iter())
        .filter(|r| r["allowed"] == true)
        .count();
    assert_eq!(admitted, 15, "3 per hour for each of 5 users");
    let calls = store_calls(&server).await - before;
    assert_eq!(calls, 1.0, "50 checks of one domain, one script call");
}

#[tokio::test]
async fn pipelined_resp_decisions_over_redis_go_together_and_answer_in_order() {
    let redis = RedisServer::start();
    let (server, _dir) = shop_over(&redis, "batch-resp", &["--resp-addr", "127.0.0.1:0"]);
    let url = format!("redis://{}", server.resp.as_deref().expect("RESP"));
    let mut conn = redis::Client::open(url)
        .expect("URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connected");
    let before = store_calls(&server).await;
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for i in 0..12 {
        let count = if i == 3 { "x" } else { "1" };
        pipe.cmd("CL.THROTTLE")
            .arg("piped")
            .arg(4)
            .arg(count)
            .arg(3600);
    }
    let replies: Vec<RedisValue> = pipe.query_async(&mut conn).await.expect("pipeline");
    let mut admitted = Vec::new();
    for (i, reply) in replies.into_iter().enumerate() {
        if i == 3 {
            assert!(
                matches!(reply, RedisValue::ServerError(_)),
                "call 3: {reply:?}"
            );
            continue;
        }
        let v: Vec<i64> = redis::from_redis_value(reply).expect("five integers");
        admitted.push((v[0], v[2]));
    }
    assert_eq!(
        admitted,
        [
            (0, 4),
            (0, 3),
            (0, 2),
            (0, 1),
            (0, 0),
            (1, 0),
            (1, 0),
            (1, 0),
            (1, 0),
            (1, 0),
            (1, 0)
        ],
        "the burst of 5, in order"
    );
    let mut pipe = redis::pipe();
    for _ in 0..6 {
        pipe.cmd("TG.CHECK")
            .arg("shop")
            .arg(1)
            .arg("DESCRIPTOR")
            .arg(1)
            .arg("user")
            .arg("carl");
    }
    let replies: Vec<crate::resp::CheckReply> =
        pipe.query_async(&mut conn).await.expect("pipeline");
    let allowed: Vec<i64> = replies.iter().map(|r| r.0).collect();
    assert_eq!(allowed, [1, 1, 1, 0, 0, 0]);
    assert_eq!(replies[2].1[0].2, 0, "nothing left after the third");
    let calls = store_calls(&server).await - before;
    assert!(
        calls < 17.0,
        "17 decisions in two pipelines went to Redis together, not one call each: {calls} calls"
    );
}

/// One ShouldRateLimit request of the shop domain for `user`.
fn rls_of(user: &str) -> RateLimitRequest {
    RateLimitRequest {
        domain: "shop".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![RlsEntry {
                key: "user".into(),
                value: user.into(),
            }],
            ..Default::default()
        }],
        hits_addend: 1,
    }
}

/// Sends `requests` on one `tollgate.v1.Checks/CheckStream` and collects every answer.
async fn stream(server: &TestServer, requests: Vec<RateLimitRequest>) -> Vec<StreamedDecision> {
    let mut client = ChecksClient::connect(server.grpc.clone())
        .await
        .expect("connect");
    let answers = client
        .check_stream(futures_util::stream::iter(requests))
        .await
        .expect("stream accepted")
        .into_inner();
    answers.try_collect().await.expect("every answer")
}

/// What a streamed answer says: the overall code, or the error text.
fn verdict(answer: &StreamedDecision) -> Result<i32, String> {
    match &answer.decision {
        Some(decision) if answer.error.is_empty() => Ok(decision.overall_code),
        _ => Err(answer.error.clone()),
    }
}

/// Five checks of a 3-per-hour user with a malformed one among them, and one of another
/// user: one answer each, in order, the malformed one with its reason in its place.
async fn a_stream_is_answered_in_order(server: &TestServer, user: &str) {
    let mut requests: Vec<RateLimitRequest> = (0..5).map(|_| rls_of(user)).collect();
    let mut bad = rls_of(user);
    bad.descriptors[0].limit = Some(RlsLimitOverride {
        requests_per_unit: 1,
        unit: 99,
    });
    requests.insert(2, bad);
    requests.push(rls_of(&format!("{user}-other")));
    let answers = stream(server, requests).await;
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    let verdicts: Vec<Result<i32, String>> = answers.iter().map(verdict).collect();
    assert_eq!(verdicts.len(), 7, "{answers:?}");
    assert_eq!(verdicts[..2], [Ok(ok), Ok(ok)]);
    assert!(
        verdicts[2]
            .as_ref()
            .is_err_and(|e| e.starts_with("descriptors[0].limit.unit")),
        "{:?}",
        verdicts[2]
    );
    assert_eq!(verdicts[3..], [Ok(ok), Ok(over), Ok(over), Ok(ok)]);
    let left: Vec<u32> = [0, 1, 3]
        .iter()
        .map(|&i| answers[i].decision.as_ref().expect("decided").statuses[0].limit_remaining)
        .collect();
    assert_eq!(left, [2, 1, 0]);
    // The stream and single checks share counters.
    a_single_check_is_denied(server, user).await;
}

#[tokio::test]
async fn a_grpc_stream_of_checks_is_answered_in_order_with_errors_in_place() {
    let dir = TempDir::new("stream-memory");
    let server = TestServer::start(Some(&dir.write("shop.yaml", POLICIES)));
    a_stream_is_answered_in_order(&server, "cat").await;
    // A caller that waits for each answer before it sends the next gets it: a batch is
    // what has arrived, never a wait for more.
    let mut client = ChecksClient::connect(server.grpc.clone())
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel::<RateLimitRequest>(1);
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    tx.send(rls_of("dan")).await.expect("send");
    let mut answers = client
        .check_stream(outbound)
        .await
        .expect("stream accepted")
        .into_inner();
    let expected = [Code::Ok, Code::Ok, Code::Ok, Code::OverLimit];
    for (i, expected) in expected.into_iter().enumerate() {
        let answer = tokio::time::timeout(std::time::Duration::from_secs(30), answers.next())
            .await
            .expect("an answer without waiting for more requests")
            .expect("the stream goes on")
            .expect("an answer");
        assert_eq!(verdict(&answer), Ok(expected as i32), "{answer:?}");
        if i < 3 {
            tx.send(rls_of("dan")).await.expect("send");
        }
    }
    drop(tx);
    assert!(
        answers.next().await.is_none(),
        "the stream ends with the caller's"
    );
    let metrics = server.metrics().await;
    let counted = |code: &str| {
        metric(
            &metrics,
            &format!(r#"tollgate_grpc_requests_total{{method="CheckStream",code="{code}"}}"#),
        )
    };
    assert_eq!(counted("ok"), 10.0, "every streamed decision is counted");
    assert_eq!(counted("invalid_argument"), 1.0);
}

#[tokio::test]
async fn over_redis_a_grpc_stream_never_costs_more_store_calls_than_checks() {
    let redis = RedisServer::start();
    let (server, _dir) = shop_over(&redis, "stream-redis", &[]);
    a_stream_is_answered_in_order(&server, "eve").await;
    let before = store_calls(&server).await;
    let requests: Vec<RateLimitRequest> = (0..50).map(|i| rls_of(&format!("s{}", i % 5))).collect();
    let answers = stream(&server, requests).await;
    let admitted = (answers.iter())
        .filter(|a| verdict(a) == Ok(Code::Ok as i32))
        .count();
    assert_eq!(admitted, 15, "3 per hour for each of 5 users");
    // How many arrive together depends on the network; never more than one call a check
    // (the together path itself is held to one call per group by the unit tests of
    // next_batch and by over_redis_a_batch_costs_one_store_call_per_domain).
    let calls = store_calls(&server).await - before;
    assert!(
        (1.0..=50.0).contains(&calls),
        "{calls} store calls for 50 checks"
    );
}
