//! Many checks at once: `POST /v1/checks` and pipelined RESP decisions, on the memory store
//! and over Redis, where a pipeline's decisions share one round trip per hash-tag group.

use redis::Value as RedisValue;
use serde_json::{Value, json};
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

#[tokio::test]
async fn over_redis_a_batch_costs_one_store_call_per_domain() {
    let redis = RedisServer::start();
    let dir = TempDir::new("batch-redis");
    let server = TestServer::serve(
        Some(&dir.write("shop.yaml", POLICIES)),
        &["--store", &redis.url(), "--store-timeout", "2s"],
    );
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
    let dir = TempDir::new("batch-resp");
    let server = TestServer::serve(
        Some(&dir.write("shop.yaml", POLICIES)),
        &[
            "--store",
            &redis.url(),
            "--store-timeout",
            "2s",
            "--resp-addr",
            "127.0.0.1:0",
        ],
    );
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
