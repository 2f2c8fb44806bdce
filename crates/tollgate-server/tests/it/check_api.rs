//! `POST /v1/check` over the wire: decisions, headers, errors.

use serde_json::{Value, json};

use crate::helpers::{POLICIES, TempDir, TestServer, body};

fn server() -> (TestServer, TempDir) {
    let dir = TempDir::new("check");
    let file = dir.write("shop.yaml", POLICIES);
    (TestServer::start(Some(&file)), dir)
}

/// POSTs a raw JSON text.
async fn json(s: &TestServer, raw: &'static str) -> reqwest::Response {
    s.post_raw("application/json", raw).await
}

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let v: Value = response.json().await.expect("problem json");
    assert_eq!(v["status"], status);
    assert!(
        v["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:tollgate:problem:")),
        "{v}"
    );
    assert!(v["title"].is_string() && v["detail"].is_string(), "{v}");
    v
}

#[tokio::test]
async fn allows_up_to_the_limit_then_denies_with_headers() {
    let (s, _dir) = server();
    for remaining in [2, 1, 0] {
        let r = s.check(&body("shop", &[&[("user", "alice")]], 1)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-policy"], "\"per_user\";q=3;w=3600");
        let header = r.headers()["ratelimit"].to_str().unwrap().to_owned();
        assert!(
            header.starts_with(&format!("\"per_user\";r={remaining};t=")),
            "{header}"
        );
        assert!(r.headers().get("retry-after").is_none());
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["allowed"], true);
        assert_eq!(v["statuses"][0]["remaining"], remaining);
        assert_eq!(v["statuses"][0]["policy"], "per_user");
        assert_eq!(v["statuses"][0]["limit"], 3);
        assert_eq!(v["statuses"][0]["unit"], "hour");
    }
    let r = s.check(&body("shop", &[&[("user", "alice")]], 1)).await;
    assert_eq!(r.status(), 200, "a denial is still 200");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["allowed"], false);
    assert_eq!(v["statuses"][0]["allowed"], false);
    assert_eq!(v["statuses"][0]["remaining"], 0);
    let retry_ms = v["statuses"][0]["retry_after_ms"].as_u64().unwrap();
    assert!(retry_ms > 0 && retry_ms <= 3_600_000);
    // Another user has their own counter.
    let v = s.check_json(&body("shop", &[&[("user", "bob")]], 1)).await;
    assert_eq!(v["allowed"], true);
}

#[tokio::test]
async fn one_status_per_descriptor_in_order_and_denials_consume_nothing() {
    let (s, _dir) = server();
    let both: [&[(&str, &str)]; 2] = [&[("user", "carol")], &[("plan", "free")]];
    let v = s.check_json(&body("shop", &both, 3)).await;
    assert_eq!(v["allowed"], true);
    assert_eq!(v["statuses"][0]["policy"], "per_user");
    assert_eq!(v["statuses"][1]["policy"], "per_plan");
    assert_eq!(v["statuses"][1]["remaining"], 97);
    for _ in 0..5 {
        let v = s.check_json(&body("shop", &both, 1)).await;
        assert_eq!(v["allowed"], false);
        assert_eq!(v["statuses"][0]["allowed"], false);
        assert_eq!(v["statuses"][1]["allowed"], true);
    }
    let v = s.check_json(&body("shop", &[&[("plan", "free")]], 1)).await;
    assert_eq!(
        v["statuses"][0]["remaining"], 96,
        "the five denials took nothing from the daily plan"
    );
}

#[tokio::test]
async fn unmatched_unlimited_and_shadow_descriptors() {
    let (s, _dir) = server();
    let v = s
        .check_json(&body(
            "shop",
            &[
                &[("nothing", "here")],
                &[("internal", "x")],
                &[("trial", "t")],
            ],
            1,
        ))
        .await;
    assert_eq!(v["statuses"][0]["policy"], Value::Null);
    assert_eq!(v["statuses"][0]["remaining"], Value::Null);
    assert_eq!(v["statuses"][1]["unlimited"], true);
    assert_eq!(v["statuses"][2]["shadow_denied"], false);
    let r = s.check(&body("shop", &[&[("trial", "t")]], 1)).await;
    assert!(r.headers().get("retry-after").is_none());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["allowed"], true, "shadow mode never denies");
    assert_eq!(v["statuses"][0]["shadow_denied"], true);
    let v = s
        .check_json(&body("elsewhere", &[&[("user", "x")]], 1))
        .await;
    assert_eq!(v["allowed"], true, "unknown domain: allowed, like envoy");
}

#[tokio::test]
async fn gcra_burst_and_per_descriptor_hits_and_overrides() {
    let (s, _dir) = server();
    let ip = body("shop", &[&[("ip", "10.0.0.1")]], 2);
    let v = s.check_json(&ip).await;
    assert_eq!(v["allowed"], true);
    assert_eq!(v["statuses"][0]["limit"], 2, "burst is the quota");
    let v = s.check_json(&ip).await;
    assert_eq!(v["allowed"], false);
    let req = json!({"domain": "shop", "descriptors": [
        {"entries": [{"key": "plan", "value": "pro"}], "hits": 10},
        {"entries": [{"key": "custom", "value": "c"}], "limit": {"requests_per_unit": 1, "unit": "hour"}}
    ]});
    let v = s.check_json(&req).await;
    assert_eq!(v["statuses"][0]["remaining"], 90);
    assert_eq!(v["statuses"][1]["policy"], "override");
    assert_eq!(v["statuses"][1]["unit"], "hour");
    let v = s.check_json(&req).await;
    assert_eq!(v["allowed"], false);
}

#[tokio::test]
async fn malformed_bodies_are_problems_naming_the_field() {
    let (s, _dir) = server();
    // (body, text the problem's detail must contain)
    let cases: [(&'static str, &str); 9] = [
        ("{not json", "line 1"),
        (
            r#"{"domain":"shop","descriptors":[{"entries":[{"key":"a","valu":"x"}]}]}"#,
            "descriptors[0].entries[0].valu: unknown field",
        ),
        (r#"{"descriptors":[]}"#, "missing field `domain`"),
        (
            r#"{"domain":"shop","descriptors":[],"hits":-1}"#,
            "hits: invalid value",
        ),
        (
            r#"{"domain":"","descriptors":[{"entries":[{"key":"a","value":"b"}]}]}"#,
            "domain must not be empty",
        ),
        (
            r#"{"domain":"shop","descriptors":[]}"#,
            "descriptors must not be empty",
        ),
        (
            r#"{"domain":"shop","descriptors":[{"entries":[{"key":"","value":"b"}]}]}"#,
            "descriptors[0].entries[0].key must not be empty",
        ),
        (
            r#"{"domain":"shop","descriptors":[{"entries":[{"key":"a","value":"b"}],"limit":{"requests_per_unit":1,"unit":"fortnight"}}]}"#,
            "descriptors[0].limit.unit: invalid unit 'fortnight'",
        ),
        (
            r#"{"domain":"shop","descriptors":[{"entries":[{"key":"a","value":"b"}]}]} trailing"#,
            "trailing characters",
        ),
    ];
    for (raw, expected) in cases {
        let v = problem(json(&s, raw).await, 400).await;
        let detail = v["detail"].as_str().unwrap();
        assert!(detail.contains(expected), "{raw}: {detail}");
    }
}

#[tokio::test]
async fn wrong_media_type_size_route_and_method_are_problems() {
    let (s, _dir) = server();
    let r = s.post_raw("text/plain", "{}").await;
    problem(r, 415).await;
    let huge = format!(
        r#"{{"domain":"shop","descriptors":[{{"entries":[{{"key":"a","value":"{}"}}]}}]}}"#,
        "x".repeat(100_000)
    );
    let r = s.post_raw("application/json", huge).await;
    problem(r, 413).await;
    let long = format!(
        r#"{{"domain":"shop","descriptors":[{{"entries":[{{"key":"a","value":"{}"}}]}}]}}"#,
        "x".repeat(2_000)
    );
    let r = s.post_raw("application/json", long).await;
    let v = problem(r, 400).await;
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("longer than 1024 bytes"),
        "{v}"
    );
    problem(s.client.get(s.url("/v1/nope")).send().await.unwrap(), 404).await;
    problem(s.client.get(s.url("/v1/check")).send().await.unwrap(), 405).await;
}

#[tokio::test]
async fn request_ids_are_generated_or_propagated() {
    let (s, _dir) = server();
    let r = s.check(&body("shop", &[&[("user", "id")]], 1)).await;
    assert!(!r.headers()["x-request-id"].is_empty());
    let r = s
        .client
        .post(s.url("/v1/check"))
        .header("x-request-id", "caller-chosen-42")
        .json(&body("shop", &[&[("user", "id")]], 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "caller-chosen-42");
    // A rejected request is logged once, with its id.
    let r = s
        .client
        .post(s.url("/v1/check"))
        .header("x-request-id", "bad-body-7")
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let line = s.log_line("bad-body-7").await;
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["message"], "malformed check request");
}

#[tokio::test]
async fn workers_share_one_set_of_counters() {
    let dir = TempDir::new("workers");
    let file = dir.write("shop.yaml", crate::helpers::POLICIES);
    // Workers that spin before they sleep decide exactly as those that do not.
    let s = TestServer::serve(Some(&file), &["--workers", "3", "--park-spin-us", "50"]);
    // 30 concurrent requests on fresh connections, spread by the kernel over 3 workers,
    // against a limit of 3 per hour: exactly 3 pass.
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let url = s.url("/v1/check");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let r = client
                .post(url)
                .json(&body("shop", &[&[("user", "shared")]], 1))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()["allowed"]
                .as_bool()
                .unwrap()
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    assert_eq!(allowed, 3);
}

#[tokio::test]
async fn a_connection_survives_a_too_large_body_and_is_closed_when_it_cannot() {
    let (s, _dir) = server();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let huge = "x".repeat(100_000);
    for _ in 0..3 {
        // 100 kB is read and discarded: the same connection answers the next request.
        let r = client
            .post(s.url("/v1/check"))
            .header("content-type", "application/json")
            .body(huge.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        assert!(r.headers().get("connection").is_none());
        r.bytes().await.unwrap();
        let r = client
            .post(s.url("/v1/check"))
            .json(&body("shop", &[&[("user", "reuse")]], 1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // 2 MB is not worth reading: the answer says the connection closes.
    let r = client
        .post(s.url("/v1/check"))
        .header("content-type", "application/json")
        .body("x".repeat(2 << 20))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
        assert_eq!(r.headers()["connection"], "close");
    }
    let r = client
        .post(s.url("/v1/check"))
        .json(&body("shop", &[&[("user", "reuse")]], 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the client opened a new connection");
}

#[tokio::test]
async fn envoy_counting_and_global_shadow_mode_are_options() {
    let dir = TempDir::new("modes");
    let file = dir.write("shop.yaml", crate::helpers::POLICIES);
    let serve = |flag: &str| TestServer::serve(Some(&file), &[flag]);
    let both: [&[(&str, &str)]; 2] = [&[("user", "m")], &[("plan", "m")]];

    let s = serve("--count-denied-requests");
    let mut allowed = 0;
    for _ in 0..5 {
        let v = s.check_json(&body("shop", &both, 1)).await;
        allowed += usize::from(v["allowed"] == true);
    }
    assert_eq!(allowed, 3);
    let v = s.check_json(&body("shop", &[&[("plan", "m")]], 1)).await;
    assert_eq!(
        v["statuses"][0]["remaining"],
        100 - 6,
        "denied requests were charged"
    );

    let s = serve("--shadow-mode");
    for i in 0..5 {
        let v = s.check_json(&body("shop", &[&[("user", "m")]], 1)).await;
        assert_eq!(v["allowed"], true, "shadow mode never denies");
        assert_eq!(v["statuses"][0]["shadow_denied"], i >= 3);
    }
}

/// A calendar quota over the wire: a day in Kolkata (UTC+5:30) ends at 18:30 UTC, and the
/// answer's reset says so, computed here from the clock alone.
#[tokio::test]
async fn a_calendar_quota_resets_at_the_zones_midnight() {
    let dir = TempDir::new("quota");
    let file = dir.write(
        "plans.yaml",
        "domain: plans
descriptors:
  - key: org
    rate_limit:
      name: daily_in_kolkata
      algorithm: quota
      period: day
      time_zone: Asia/Kolkata
      requests_per_unit: 2
",
    );
    let s = TestServer::start(Some(&file));
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let until_midnight_ms = (86_400 - (now_s + 19_800) % 86_400) * 1_000;
    for remaining in [1, 0] {
        let v = s.check_json(&body("plans", &[&[("org", "acme")]], 1)).await;
        assert_eq!(v["allowed"], true, "{v}");
        assert_eq!(v["statuses"][0]["remaining"], remaining, "{v}");
        assert_eq!(v["statuses"][0]["unit"], "day", "{v}");
        let reset = v["statuses"][0]["reset_after_ms"].as_u64().unwrap();
        // The server read its clock after ours, within a few seconds (unless midnight fell
        // in between, when the window is a whole day long).
        assert!(
            reset <= until_midnight_ms && until_midnight_ms - reset < 5_000 || reset > 86_395_000,
            "reset {reset} ms, midnight in Kolkata in {until_midnight_ms} ms"
        );
    }
    let v = s.check_json(&body("plans", &[&[("org", "acme")]], 1)).await;
    assert_eq!(v["allowed"], false, "{v}");
}

/// `RateLimit-Policy` gives a calendar quota's real window (this month's length, not a
/// nominal 30 days) and leaves a concurrency limit out: it is no quota over time.
#[tokio::test]
async fn rate_limit_policy_gives_a_months_real_length_and_no_concurrency_limit() {
    let dir = TempDir::new("quota-window");
    let file = dir.write(
        "plans.yaml",
        "domain: plans
descriptors:
  - key: org
    rate_limit:
      name: monthly
      algorithm: quota
      period: month
      requests_per_unit: 1000
  - key: streams
    rate_limit:
      name: in_flight
      algorithm: concurrency
      max_in_flight: 3
",
    );
    let s = TestServer::start(Some(&file));
    let month_seconds = || {
        let today = jiff::tz::TimeZone::UTC
            .to_datetime(jiff::Timestamp::now())
            .date();
        u64::try_from(today.days_in_month()).expect("a positive length") * 86_400
    };
    let before = month_seconds();
    let r = s
        .check(&body(
            "plans",
            &[&[("org", "acme")], &[("streams", "s")]],
            1,
        ))
        .await;
    let after = month_seconds();
    let policy = r.headers()["ratelimit-policy"].to_str().unwrap().to_owned();
    assert!(
        policy == format!("\"monthly\";q=1000;w={before}")
            || policy == format!("\"monthly\";q=1000;w={after}"),
        "{policy}: this month has {before} s"
    );
    let current = r.headers()["ratelimit"].to_str().unwrap();
    assert!(current.starts_with("\"monthly\";r=999;t="), "{current}");
    assert!(!current.contains("in_flight"), "{current}");
}
