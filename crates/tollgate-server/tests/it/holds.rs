//! Reservations and concurrency leases over HTTP, against the real binary.

use serde_json::{Value, json};
use tollgate_testkit::wait;

use crate::helpers::{TempDir, TestServer};

const POLICIES: &str = "domain: llm
descriptors:
  - key: api_key
    rate_limit: {name: tokens_per_day, unit: day, requests_per_unit: 1000}
  - key: streams_of
    rate_limit: {name: streams, algorithm: concurrency, max_in_flight: 2}
";

fn server(extra: &[&str]) -> (TestServer, TempDir) {
    let dir = TempDir::new("holds");
    let file = dir.write("llm.yaml", POLICIES);
    (TestServer::serve(Some(&file), extra), dir)
}

async fn post(s: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let r = s
        .client
        .post(s.url(path))
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("a JSON answer"))
}

async fn delete(s: &TestServer, path: &str) -> (u16, Value) {
    let r = s.client.delete(s.url(path)).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("a JSON answer"))
}

fn reservation(key: &str, estimate: u64) -> Value {
    json!({
        "domain": "llm",
        "descriptors": [{"entries": [{"key": "api_key", "value": key}]}],
        "estimate": estimate,
        "ttl_ms": 60_000,
    })
}

#[tokio::test]
async fn reserve_commit_and_release_over_http() {
    let (s, _dir) = server(&[]);
    let (status, v) = post(&s, "/v1/reservations", &reservation("k", 600)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["allowed"], true, "{v}");
    assert_eq!(v["statuses"][0]["remaining"], 400, "{v}");
    assert!(v["expires_in_ms"].as_u64().unwrap() <= 60_000, "{v}");
    let id = v["id"].as_str().expect("an id").to_owned();
    // 600 more do not fit: denied, nothing held, no id.
    let (_, denied) = post(&s, "/v1/reservations", &reservation("k", 600)).await;
    assert_eq!(denied["allowed"], false, "{denied}");
    assert_eq!(denied["id"], Value::Null);
    // Used 100: 500 come back.
    let commit = format!("/v1/reservations/{id}/commit");
    let (status, c) = post(&s, &commit, &json!({"actual": 100})).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(
        c,
        json!({"id": id, "settled": "committed", "actual": 100, "repeated": false})
    );
    let (status, again) = post(&s, &commit, &json!({"actual": 100})).await;
    assert_eq!((status, &again["repeated"]), (200, &json!(true)), "{again}");
    let (status, conflict) = delete(&s, &format!("/v1/reservations/{id}")).await;
    assert_eq!(status, 409, "{conflict}");
    assert!(
        conflict["detail"]
            .as_str()
            .unwrap()
            .contains("committed at 100")
    );
    let (_, v) = post(&s, "/v1/reservations", &reservation("k", 900)).await;
    assert_eq!(v["allowed"], true, "900 fit after the commit: {v}");
    let other = v["id"].as_str().unwrap().to_owned();
    for repeated in [false, true] {
        let (status, r) = delete(&s, &format!("/v1/reservations/{other}")).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["settled"], "released");
        assert_eq!(r["repeated"], repeated);
    }
}

#[tokio::test]
async fn unknown_ids_and_bad_amounts_are_refused_by_name() {
    let (s, _dir) = server(&[]);
    for _ in 0..2 {
        let (status, p) = post(
            &s,
            "/v1/reservations/00000000000000000000000000000001/commit",
            &json!({"actual": 1}),
        )
        .await;
        assert_eq!(status, 404, "{p}");
        assert_eq!(p["type"], "urn:tollgate:problem:not-found");
    }
    let (status, _) = delete(&s, "/v1/reservations/not-an-id").await;
    assert_eq!(status, 404);
    for (body, field) in [
        (
            json!({"domain": "llm", "descriptors": [], "estimate": -1, "ttl_ms": 1000}),
            "estimate",
        ),
        (
            json!({"domain": "llm", "descriptors": [], "estimate": 1.5, "ttl_ms": 1000}),
            "estimate",
        ),
        (
            json!({"domain": "llm", "descriptors": [], "estimate": 0, "ttl_ms": 1000}),
            "estimate",
        ),
        (
            json!({"domain": "llm", "descriptors": [], "estimate": 5, "ttl_ms": 0}),
            "ttl_ms",
        ),
        (
            json!({"domain": "llm", "descriptors": [], "estimate": 5, "ttl_ms": 86_400_001}),
            "ttl_ms",
        ),
        (
            json!({"domain": "llm", "descriptors": [], "estimate": 1e30, "ttl_ms": 10}),
            "estimate",
        ),
        (
            json!({"domain": "llm", "descriptors": [{"entries": [{"key": "api_key", "value": "k"}], "hits": 3}], "estimate": 5, "ttl_ms": 10}),
            "descriptors[0].hits",
        ),
    ] {
        let (status, p) = post(&s, "/v1/reservations", &body).await;
        assert_eq!(status, 400, "{body}: {p}");
        assert!(p["detail"].as_str().unwrap().contains(field), "{body}: {p}");
    }
    let (_, v) = post(&s, "/v1/reservations", &reservation("k", 5)).await;
    let id = v["id"].as_str().unwrap();
    let (status, p) = post(
        &s,
        &format!("/v1/reservations/{id}/commit"),
        &json!({"actual": -3}),
    )
    .await;
    assert_eq!(status, 400, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("actual"), "{p}");
}

fn lease(ttl_ms: u64) -> Value {
    json!({
        "domain": "llm",
        "descriptors": [{"entries": [{"key": "streams_of", "value": "k"}]}],
        "ttl_ms": ttl_ms,
    })
}

#[tokio::test]
async fn leases_cap_what_is_in_flight_and_a_dead_clients_slot_returns() {
    let (s, _dir) = server(&[]);
    let (_, a) = post(&s, "/v1/leases", &lease(60_000)).await;
    assert_eq!(a["allowed"], true, "{a}");
    // This client dies without releasing: its slot comes back after 500 ms.
    let (_, b) = post(&s, "/v1/leases", &lease(500)).await;
    assert_eq!(b["allowed"], true, "{b}");
    let (_, c) = post(&s, "/v1/leases", &lease(60_000)).await;
    assert_eq!(c["allowed"], false, "{c}");
    assert_eq!(c["statuses"][0]["remaining"], 0, "{c}");
    // A concurrency limit reports its maximum, and no rate.
    assert_eq!(c["statuses"][0]["limit"], 2, "{c}");
    assert_eq!(c["statuses"][0]["unit"], Value::Null, "{c}");
    assert_eq!(c["statuses"][0]["requests_per_unit"], Value::Null, "{c}");
    let a_id = a["id"].as_str().unwrap();
    let (status, h) = post(
        &s,
        &format!("/v1/leases/{a_id}/heartbeat"),
        &json!({"ttl_ms": 60_000}),
    )
    .await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["expires_in_ms"], 60_000, "{h}");
    let taken = wait::until("the dead client's slot to return", || async {
        let (_, v) = post(&s, "/v1/leases", &lease(60_000)).await;
        (v["allowed"] == true).then_some(v)
    })
    .await;
    assert_eq!(taken["statuses"][0]["remaining"], 0, "{taken}");
    let (status, _) = delete(&s, &format!("/v1/leases/{a_id}")).await;
    assert_eq!(status, 200);
    let (_, d) = post(&s, "/v1/leases", &lease(60_000)).await;
    assert_eq!(d["allowed"], true, "a released slot is free: {d}");
    let b_id = b["id"].as_str().unwrap();
    let (status, gone) = post(
        &s,
        &format!("/v1/leases/{b_id}/heartbeat"),
        &json!({"ttl_ms": 1000}),
    )
    .await;
    assert_eq!(status, 404, "an expired lease is unknown: {gone}");
}
