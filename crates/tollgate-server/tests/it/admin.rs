//! The admin API end to end, on the real binary: REST on SQLite and on PostgreSQL,
//! GraphQL (queries, mutations, limits, the live-decision subscription), the CLI clients.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tollgate_testkit::{PostgresDatabase, wait};

use crate::helpers::{POLICIES, TempDir, TestServer, binary, body};

/// Starts a server with the shared test policies (domain `shop`, from a file) and either
/// its own SQLite database or `database`.
fn server(dir: &TempDir, database: Option<&str>) -> TestServer {
    let policies = dir.write("shop.yaml", POLICIES);
    match database {
        Some(url) => TestServer::serve(Some(&policies), &["--database", url]),
        None => TestServer::serve(Some(&policies), &[]),
    }
}

async fn send(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = s.client.request(method, s.admin_url(path));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    if let Some(b) = body {
        request = request.json(&b);
    }
    let response = request.send().await.expect("admin request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, headers, value)
}

fn per(key: &str, n: u64, unit: &str) -> Value {
    json!({"descriptor": [{"key": key}], "rate_limit": {"unit": unit, "requests_per_unit": n}})
}

/// Waits until the node's limiter decides `descriptor` in `domain` by `policy` (or by
/// nothing, when `policy` is None), asking through explain so that nothing is consumed;
/// returns how long that took (for the log, not for a verdict).
pub async fn wait_for_policy(
    s: &TestServer,
    domain: &str,
    descriptor: &[(&str, &str)],
    policy: Option<&str>,
) -> Duration {
    let entries: Vec<Value> = descriptor
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    let ask = json!({"domain": domain, "descriptors": [{"entries": entries}]});
    let start = Instant::now();
    wait::until(
        &format!("policy {policy:?} in force in {domain}"),
        || async {
            let answer: Value = s
                .client
                .post(s.admin_url("/v1/admin/explain"))
                .json(&ask)
                .send()
                .await
                .expect("explain")
                .json()
                .await
                .expect("explanation");
            (answer["descriptors"][0]["policy"].as_str() == policy).then_some(())
        },
    )
    .await;
    start.elapsed()
}

async fn rest_round_trip(s: &TestServer) {
    use reqwest::Method as M;
    // Domains: create, read with ETag, conflict, file-owned refusal.
    let (status, headers, d) = send(
        s,
        M::POST,
        "/v1/admin/domains",
        Some(json!({"name": "payments", "description": "card traffic"})),
        &[],
    )
    .await;
    assert_eq!(status, 201, "{d}");
    assert_eq!(headers["location"], "/v1/admin/domains/payments");
    let etag = headers["etag"]
        .to_str()
        .expect("an ASCII header")
        .to_owned();
    assert_eq!(etag, format!("\"{}\"", d["revision"]));
    let (status, _, p) = send(
        s,
        M::POST,
        "/v1/admin/domains",
        Some(json!({"name": "payments"})),
        &[],
    )
    .await;
    assert_eq!(
        (status, p["type"].as_str()),
        (409, Some("urn:tollgate:problem:conflict"))
    );
    let (status, _, p) = send(
        s,
        M::POST,
        "/v1/admin/domains",
        Some(json!({"name": "shop"})),
        &[],
    )
    .await;
    assert_eq!(status, 409);
    assert!(
        p["detail"]
            .as_str()
            .expect("a string")
            .contains("shop.yaml"),
        "{p}"
    );
    let (status, _, p) = send(
        s,
        M::POST,
        "/v1/admin/domains",
        Some(json!({"name": "x", "colour": 1})),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        p["detail"]
            .as_str()
            .expect("a string")
            .contains("unknown field `colour`"),
        "{p}"
    );

    // A policy: created, enforced, replaced under If-Match, refused when stale.
    let (status, headers, created) = send(
        s,
        M::PUT,
        "/v1/admin/domains/payments/policies/per_card",
        Some(per("card", 2, "minute")),
        &[("if-none-match", "*")],
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        headers["location"],
        "/v1/admin/domains/payments/policies/per_card"
    );
    let policy_etag = headers["etag"]
        .to_str()
        .expect("an ASCII header")
        .to_owned();
    wait_for_policy(s, "payments", &[("card", "c1")], Some("per_card")).await;
    let card = body("payments", &[&[("card", "c1")]], 1);
    assert_eq!(s.check_json(&card).await["allowed"], true);
    assert_eq!(s.check_json(&card).await["allowed"], true);
    assert_eq!(
        s.check_json(&card).await["allowed"],
        false,
        "the REST policy is enforced"
    );

    let (status, _, p) = send(
        s,
        M::PUT,
        "/v1/admin/domains/payments/policies/per_card",
        Some(per("card", 2, "minute")),
        &[("if-none-match", "*")],
    )
    .await;
    assert_eq!(status, 409, "{p}");
    let (status, headers, replaced) = send(
        s,
        M::PUT,
        "/v1/admin/domains/payments/policies/per_card",
        Some(per("card", 5, "minute")),
        &[("if-match", &policy_etag)],
    )
    .await;
    assert_eq!(status, 200, "{replaced}");
    assert_ne!(
        headers["etag"].to_str().expect("an ASCII header"),
        policy_etag
    );
    let (status, _, p) = send(
        s,
        M::PUT,
        "/v1/admin/domains/payments/policies/per_card",
        Some(per("card", 9, "minute")),
        &[("if-match", &policy_etag)],
    )
    .await;
    assert_eq!(status, 412, "{p}");
    assert_eq!(p["type"], "urn:tollgate:problem:stale");
    // Not an entity tag at all: malformed, 400, and nothing written.
    let (status, _, p) = send(
        s,
        M::PUT,
        "/v1/admin/domains/payments/policies/per_card",
        Some(per("card", 9, "minute")),
        &[("if-match", "7")],
    )
    .await;
    assert_eq!(status, 400, "{p}");
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains("If-Match")),
        "{p}"
    );

    // Validation names fields; collisions are conflicts; a dry run saves nothing.
    let mut bad = per("ip", 5, "second");
    bad["rate_limit"]["burst"] = json!(3);
    let (status, _, p) = send(
        s,
        M::PUT,
        "/v1/admin/domains/payments/policies/bad",
        Some(bad.clone()),
        &[],
    )
    .await;
    assert_eq!(status, 400, "{p}");
    assert_eq!(p["errors"][0]["field"], "rate_limit.burst");
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .expect("a string")
            .contains("burst applies only to algorithm gcra"),
        "{p}"
    );
    let (status, _, p) = send(
        s,
        M::PUT,
        "/v1/admin/domains/payments/policies/bad",
        Some(json!({"descriptor": [{"key": "card"}], "rate_limit": {"unit": "fortnight"}})),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        p["detail"]
            .as_str()
            .expect("a string")
            .contains("rate_limit.unit"),
        "{p}"
    );
    let (status, _, p) = send(
        s,
        M::PUT,
        "/v1/admin/domains/payments/policies/other",
        Some(per("card", 1, "hour")),
        &[],
    )
    .await;
    assert_eq!(status, 409);
    assert!(
        p["detail"]
            .as_str()
            .expect("a string")
            .contains("same descriptor as policy 'per_card'"),
        "{p}"
    );
    let (status, _, v) = send(
        s,
        M::POST,
        "/v1/admin/validate",
        Some(json!({"domain": "payments", "name": "bad", "policy": bad})),
        &[],
    )
    .await;
    assert_eq!(
        (status, &v["errors"][0]["field"]),
        (400, &json!("rate_limit.burst")),
        "a dry run answers like the write: {v}"
    );
    let (status, _, v) = send(
        s,
        M::POST,
        "/v1/admin/validate",
        Some(json!({"domain": "payments", "name": "new", "policy": per("ip", 1, "second")})),
        &[],
    )
    .await;
    assert_eq!((status, &v["valid"]), (200, &json!(true)), "{v}");
    let (status, _, _) = send(
        s,
        M::GET,
        "/v1/admin/domains/payments/policies/bad",
        None,
        &[],
    )
    .await;
    assert_eq!(status, 404);

    // Counters of unchanged limits survive other policies' changes.
    let (status, _, _) = send(
        s,
        M::PUT,
        "/v1/admin/domains/payments/policies/per_merchant",
        Some(per("merchant", 100, "second")),
        &[],
    )
    .await;
    assert_eq!(status, 201);
    wait_for_policy(s, "payments", &[("merchant", "m")], Some("per_merchant")).await;
    let left = s.check_json(&card).await["statuses"][0]["remaining"]
        .as_u64()
        .expect("a number");
    assert_eq!(
        left, 2,
        "2 of 5 used before (the denial took nothing), one more now; a reset counter would show 4"
    );

    // Explain: what a request would meet, consuming nothing.
    let ask = json!({"domain": "payments", "descriptors": [{"entries": [{"key": "card", "value": "c1"}]}], "hits": 1});
    for _ in 0..2 {
        let (status, _, e) = send(s, M::POST, "/v1/admin/explain", Some(ask.clone()), &[]).await;
        assert_eq!(status, 200, "{e}");
        assert_eq!(e["descriptors"][0]["policy"], "per_card");
        assert_eq!(e["descriptors"][0]["remaining"], 2);
        assert_eq!(e["would_allow"], true);
    }

    // Listing pages by cursor; history newest first.
    let (_, _, page) = send(
        s,
        M::GET,
        "/v1/admin/domains/payments/policies?limit=1",
        None,
        &[],
    )
    .await;
    assert_eq!(page["items"][0]["name"], "per_card");
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, _, page) = send(
        s,
        M::GET,
        &format!("/v1/admin/domains/payments/policies?limit=1&cursor={cursor}"),
        None,
        &[],
    )
    .await;
    assert_eq!(page["items"][0]["name"], "per_merchant");
    assert!(page.get("next_cursor").is_none(), "{page}");
    let (status, _, p) = send(s, M::GET, "/v1/admin/domains?limit=0", None, &[]).await;
    assert_eq!(status, 400, "{p}");
    let (_, _, history) = send(
        s,
        M::GET,
        "/v1/admin/domains/payments/policies/per_card/history",
        None,
        &[],
    )
    .await;
    let actions: Vec<&str> = history["items"]
        .as_array()
        .expect("an array")
        .iter()
        .map(|c| c["action"].as_str().expect("a string"))
        .collect();
    assert_eq!(actions, ["updated", "created"]);
    assert_eq!(
        history["items"][0]["before"]["rate_limit"]["requests_per_unit"],
        2
    );

    // Deleting: the policy stops applying.
    let (_, headers, _) = send(
        s,
        M::GET,
        "/v1/admin/domains/payments/policies/per_card",
        None,
        &[],
    )
    .await;
    let current = headers["etag"]
        .to_str()
        .expect("an ASCII header")
        .to_owned();
    let (status, _, _) = send(
        s,
        M::DELETE,
        "/v1/admin/domains/payments/policies/per_card",
        None,
        &[("if-match", &current)],
    )
    .await;
    assert_eq!(status, 204);
    wait_for_policy(s, "payments", &[("card", "c1")], None).await;
    let (status, _, p) = send(s, M::DELETE, "/v1/admin/domains/payments", None, &[]).await;
    assert_eq!(status, 409, "still has per_merchant: {p}");
    let (status, _, _) = send(
        s,
        M::DELETE,
        "/v1/admin/domains/payments?cascade=true",
        None,
        &[],
    )
    .await;
    assert_eq!(status, 204);
    let (status, headers, p) = send(s, M::GET, "/v1/admin/domains/payments", None, &[]).await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(
        p["detail"]
            .as_str()
            .expect("a string")
            .contains("domain 'payments'")
    );
}

#[tokio::test]
async fn rest_manages_policies_that_the_data_plane_enforces_on_sqlite() {
    let dir = TempDir::new("admin-sqlite");
    let s = server(&dir, None);
    rest_round_trip(&s).await;
    // The default database is a SQLite file in the data directory.
    let data = s.data_dir.as_ref().expect("a data dir");
    assert!(data.0.join("tollgate.db").is_file());
}

#[tokio::test]
async fn rest_manages_policies_that_the_data_plane_enforces_on_postgres() {
    let dir = TempDir::new("admin-pg");
    let db = PostgresDatabase::create();
    let s = server(&dir, Some(db.url()));
    rest_round_trip(&s).await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let dir = TempDir::new("admin-openapi");
    let s = server(&dir, None);
    let (status, _, doc) = send(
        &s,
        reqwest::Method::GET,
        "/v1/admin/openapi.json",
        None,
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/admin/domains",
        "/v1/admin/domains/{domain}",
        "/v1/admin/domains/{domain}/document",
        "/v1/admin/domains/{domain}/policies",
        "/v1/admin/domains/{domain}/policies/{policy}",
        "/v1/admin/domains/{domain}/policies/{policy}/history",
        "/v1/admin/validate",
        "/v1/admin/explain",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(doc["components"]["schemas"].get("PolicySpec").is_some());
}

async fn graphql(s: &TestServer, query: &str) -> Value {
    s.client
        .post(s.admin_url("/graphql"))
        .json(&json!({"query": query}))
        .send()
        .await
        .expect("graphql request")
        .json()
        .await
        .expect("graphql answer")
}

#[tokio::test]
async fn graphql_mirrors_rest_and_streams_live_decisions() {
    let dir = TempDir::new("admin-graphql");
    let s = server(&dir, None);
    let created = graphql(
        &s,
        r#"mutation { createDomain(input: {name: "search"}) { name source revision } }"#,
    )
    .await;
    assert_eq!(
        created["data"]["createDomain"]["source"], "DATABASE",
        "{created}"
    );
    let put = graphql(&s, r#"mutation { putPolicy(domain: "search", name: "per_user", input: {descriptor: [{key: "user"}], rateLimit: {unit: MINUTE, requestsPerUnit: 1}}) { name revision } }"#).await;
    let revision = put["data"]["putPolicy"]["revision"]
        .as_i64()
        .expect("revision");

    // The same validation as REST, with the field named.
    let bad = graphql(&s, r#"mutation { putPolicy(domain: "search", name: "bad", input: {descriptor: [{key: "ip"}], rateLimit: {unit: SECOND, requestsPerUnit: 1, burst: 2}}) { name } }"#).await;
    assert_eq!(
        bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{bad}"
    );
    assert_eq!(
        bad["errors"][0]["extensions"]["errors"][0]["field"],
        "rate_limit.burst"
    );
    let stale = graphql(&s, &format!(r#"mutation {{ putPolicy(domain: "search", name: "per_user", ifRevision: {}, input: {{descriptor: [{{key: "user"}}], rateLimit: {{unit: MINUTE, requestsPerUnit: 2}}}}) {{ name }} }}"#, revision - 1)).await;
    assert_eq!(
        stale["errors"][0]["extensions"]["code"], "STALE_REVISION",
        "{stale}"
    );
    let missing = graphql(&s, r#"{ domain(name: "nope") { name } }"#).await;
    assert_eq!(missing["errors"][0]["extensions"]["code"], "NOT_FOUND");

    // One round trip for a nested dashboard view.
    let view = graphql(&s, r#"{ domains { items { name source policyCount } } policies(domain: "search") { items { name descriptor { key } rateLimit { unit requestsPerUnit } } } history(domain: "search", policy: "per_user") { items { action actor } } }"#).await;
    assert!(view.get("errors").is_none(), "{view}");
    let names: Vec<&str> = view["data"]["domains"]["items"]
        .as_array()
        .expect("an array")
        .iter()
        .map(|d| d["name"].as_str().expect("a string"))
        .collect();
    assert_eq!(names, ["search", "shop"]);
    assert_eq!(
        view["data"]["policies"]["items"][0]["rateLimit"]["requestsPerUnit"],
        1
    );
    assert_eq!(view["data"]["history"]["items"][0]["action"], "CREATED");

    // Depth is bounded.
    let deep = graphql(&s, "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { name } } } } } } } } }").await;
    assert!(
        deep["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("nested too deep"),
        "{deep}"
    );

    // Live decisions over WebSocket (graphql-transport-ws).
    wait_for_policy(&s, "search", &[("user", "u1")], Some("per_user")).await;
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = crate::helpers::graphql_ws(&s, s.admin_key.as_deref()).await;
    let ack = ws.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack:?}");
    ws.send(Message::text(json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { decisions(domain: \"search\") { allowed descriptors { entries policy remaining } } }"}}).to_string())).await.unwrap();
    // The subscription is live once the server counts a watcher; keep checking until an
    // event arrives (bounded).
    let mut event = None;
    for _ in 0..50 {
        s.check_json(&body("shop", &[&[("user", "ignored")]], 1))
            .await;
        s.check_json(&body("search", &[&[("user", "u1")]], 1)).await;
        if let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(100), ws.next()).await
        {
            event = Some(serde_json::from_str::<Value>(msg.to_text().unwrap()).unwrap());
            break;
        }
    }
    let event = event.expect("a decision event within 5 s");
    assert_eq!(event["type"], "next", "{event}");
    let decision = &event["payload"]["data"]["decisions"];
    assert_eq!(
        decision["descriptors"][0]["entries"][0], "user=u1",
        "only the watched domain: {event}"
    );
    assert_eq!(decision["descriptors"][0]["policy"], "per_user");
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(binary())
        .args(args)
        .output()
        .expect("run tollgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn migrate_reports_applies_and_dry_runs() {
    let dir = TempDir::new("migrate");
    let data = dir.0.display().to_string();
    let (code, out, _) = run(&["migrate", "--data-dir", &data, "status"]);
    assert_eq!(
        code, 1,
        "pending migrations are not a current schema: {out}"
    );
    assert!(out.contains("PENDING"), "{out}");
    let (code, out, _) = run(&["migrate", "--data-dir", &data, "up", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("-- migration 1 policies") && out.contains("CREATE TABLE domains"),
        "{out}"
    );
    let (code, out, _) = run(&["migrate", "--data-dir", &data, "status"]);
    assert_eq!(code, 1, "a dry run changes nothing: {out}");
    let (code, out, _) = run(&["migrate", "--data-dir", &data, "up"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("applied 1") && out.contains("applied 2"),
        "{out}"
    );
    let (code, out, _) = run(&["migrate", "--data-dir", &data, "status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("schema is current"), "{out}");
}

#[tokio::test]
async fn serve_refuses_a_database_with_pending_migrations_unless_told_to_migrate() {
    let db = PostgresDatabase::create();
    let conn = tollgate_control::Database::connect(db.url()).await.unwrap();
    tollgate_control::migrations::up_to(&conn, 1).await.unwrap();
    conn.close().await;
    let (code, _, err) = run(&[
        "serve",
        "--database",
        db.url(),
        "--http-addr",
        "127.0.0.1:0",
        "--grpc-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("unapplied migrations (2, 3, 4)") && err.contains("tollgate migrate up"),
        "{err}"
    );
    let s = TestServer::serve(None, &["--database", db.url(), "--migrate"]);
    s.log_line("policy database migrated").await;
}

#[tokio::test]
async fn policy_apply_shows_the_difference_and_pushes_files() {
    let dir = TempDir::new("apply");
    let s = server(&dir, None);
    let key = s.admin_key.clone().unwrap();
    let file = dir.write("gitops.yaml", "domain: gitops\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 10, name: per_user}\n");
    let file = file.display().to_string();
    let (code, out, err) = run(&["policy", "apply", "--admin", &s.admin, "--key", &key, &file]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("+    requests_per_unit: 10"), "{out}");
    assert!(out.contains("created: [per_user]"), "{out}");
    wait_for_policy(&s, "gitops", &[("user", "u")], Some("per_user")).await;

    let (code, out, _) = run(&["policy", "apply", "--admin", &s.admin, "--key", &key, &file]);
    assert_eq!(code, 0);
    assert!(out.contains("unchanged"), "{out}");

    std::fs::write(&file, "domain: gitops\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 20, name: per_user}\n").unwrap();
    let (code, out, _) = run(&[
        "policy",
        "apply",
        "--admin",
        &s.admin,
        "--key",
        &key,
        "--dry-run",
        &file,
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains("-    requests_per_unit: 10") && out.contains("+    requests_per_unit: 20"),
        "{out}"
    );
    let (_, out, _) = run(&[
        "policy", "get", "--admin", &s.admin, "--key", &key, "gitops",
    ]);
    assert!(
        out.contains("requests_per_unit: 10"),
        "the dry run changed nothing: {out}"
    );

    let (code, out, _) = run(&["policy", "list", "--admin", &s.admin, "--key", &key]);
    assert_eq!(code, 0);
    assert!(
        out.contains("gitops\tdatabase, 1 policies") && out.contains("shop\tfile "),
        "{out}"
    );
    let (_, out, _) = run(&[
        "policy", "list", "--admin", &s.admin, "--key", &key, "gitops",
    ]);
    assert!(out.contains("per_user\tuser\t10/minute"), "{out}");

    std::fs::write(&file, "domain: gitops\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unt: 20}\n").unwrap();
    let (code, _, err) = run(&["policy", "apply", "--admin", &s.admin, "--key", &key, &file]);
    assert_eq!(code, 1);
    assert!(
        err.contains("gitops.yaml:") && err.contains("requests_per_unt"),
        "{err}"
    );

    let (code, out, _) = run(&[
        "policy", "delete", "--admin", &s.admin, "--key", &key, "gitops", "per_user",
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = run(&[
        "policy", "get", "--admin", &s.admin, "--key", &key, "gitops", "per_user",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("404"), "{err}");
}

/// One dashboard row per policy: (domain, policy, requests per unit, last actor).
type Row = (String, String, u64, String);

#[tokio::test]
async fn a_dashboard_view_costs_one_graphql_round_trip_against_many_rest_ones() {
    const DOMAINS: usize = 5;
    const POLICIES: usize = 4;
    let dir = TempDir::new("dashboard");
    let s = server(&dir, None);
    for d in 0..DOMAINS {
        let domain = format!("tenant{d}");
        let created = s
            .client
            .post(s.admin_url("/v1/admin/domains"))
            .json(&json!({"name": domain}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        for p in 0..POLICIES {
            let path = format!("/v1/admin/domains/{domain}/policies/p{p}");
            let put = s
                .client
                .put(s.admin_url(&path))
                .json(&per(&format!("k{p}"), 10 + p as u64, "minute"))
                .send()
                .await
                .unwrap();
            assert_eq!(put.status(), 201);
        }
    }

    // REST: the domain list, each domain's policies, each policy's latest change.
    let (mut trips, mut bytes) = (0usize, 0usize);
    let mut get = async |path: String| -> Value {
        let text = s
            .client
            .get(s.admin_url(&path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        trips += 1;
        bytes += text.len();
        serde_json::from_str(&text).unwrap()
    };
    let mut rest_rows: Vec<Row> = Vec::new();
    let domains = get("/v1/admin/domains".into()).await;
    for d in domains["items"].as_array().unwrap() {
        if d["source"] != "database" {
            continue;
        }
        let name = d["name"].as_str().unwrap().to_owned();
        let policies = get(format!("/v1/admin/domains/{name}/policies")).await;
        for p in policies["items"].as_array().unwrap() {
            let policy = p["name"].as_str().unwrap().to_owned();
            let history = get(format!(
                "/v1/admin/domains/{name}/policies/{policy}/history?limit=1"
            ))
            .await;
            rest_rows.push((
                name.clone(),
                policy,
                p["rate_limit"]["requests_per_unit"].as_u64().unwrap(),
                history["items"][0]["actor"].as_str().unwrap().to_owned(),
            ));
        }
    }

    // GraphQL: the same view in one request.
    let query = "{ domains { items { name source policies { items { name rateLimit { requestsPerUnit } history(limit: 1) { items { actor } } } } } } }";
    let text = s
        .client
        .post(s.admin_url("/graphql"))
        .json(&json!({"query": query}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let graphql_bytes = text.len();
    let view: Value = serde_json::from_str(&text).unwrap();
    assert!(view.get("errors").is_none(), "{view}");
    let mut graphql_rows: Vec<Row> = Vec::new();
    for d in view["data"]["domains"]["items"].as_array().unwrap() {
        for p in d["policies"]["items"].as_array().unwrap() {
            graphql_rows.push((
                d["name"].as_str().unwrap().to_owned(),
                p["name"].as_str().unwrap().to_owned(),
                p["rateLimit"]["requestsPerUnit"].as_u64().unwrap(),
                p["history"]["items"][0]["actor"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ));
        }
    }
    assert_eq!(graphql_rows, rest_rows, "both views show the same data");
    assert_eq!(rest_rows.len(), DOMAINS * POLICIES);
    assert_eq!(trips, 1 + DOMAINS + DOMAINS * POLICIES);
    eprintln!(
        "dashboard of {DOMAINS} domains x {POLICIES} policies: REST {trips} round trips, {bytes} response bytes; \
         GraphQL 1 round trip, {graphql_bytes} response bytes (query {} bytes)",
        query.len()
    );
}

#[tokio::test]
async fn a_domain_in_both_a_file_and_the_database_stops_startup() {
    let dir = TempDir::new("owner");
    let data = TempDir::new("owner-data");
    let data_dir = data.0.display().to_string();
    {
        let a = TestServer::serve(None, &["--data-dir", &data_dir]);
        let created = a
            .client
            .post(a.admin_url("/v1/admin/domains"))
            .json(&json!({"name": "shop"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    let policies = dir.write("shop.yaml", POLICIES);
    let (code, _, err) = run(&[
        "serve",
        "--data-dir",
        &data_dir,
        "--policies",
        &policies.display().to_string(),
        "--http-addr",
        "127.0.0.1:0",
        "--grpc-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("domain 'shop' is already defined"), "{err}");
    assert!(
        err.contains("a policy file or the policy database, not both"),
        "{err}"
    );
}

#[tokio::test]
async fn graphiql_is_served_to_browsers() {
    let dir = TempDir::new("graphiql");
    let s = server(&dir, None);
    let page = s.client.get(s.admin_url("/graphql")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("graphiql")
    );
}
