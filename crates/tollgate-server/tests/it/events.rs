//! Events on a real NATS JetStream (private `nats-server -js` instances on free ports):
//! audit and change events through the outbox across a broker restart, two nodes relaying
//! from one PostgreSQL, a broker unreachable at startup, a paused broker, usage and
//! denial events, the Parquet export read back by DuckDB after crashes, and every event
//! received validated against its JSON Schema in `docs/events/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tollgate_testkit::{NatsServer, PostgresDatabase, TestCa, wait};

use crate::helpers::{TempDir, TestServer, binary, body};

/// How often a test reads a whole stream while waiting for what it should hold.
const STREAM_POLL: Duration = Duration::from_millis(200);

/// One message of a stream: its sequence, `Nats-Msg-Id` and CloudEvent.
#[derive(Debug, Clone)]
struct Stored {
    seq: u64,
    msg_id: String,
    event: Value,
}

/// Every message of `stream` on `subject` (a filter), read from the start by a fresh
/// consumer; empty when the stream does not exist yet.
async fn stored(url: &str, stream: &str, subject: &str) -> Vec<Stored> {
    stored_via(async_nats::ConnectOptions::new(), url, stream, subject).await
}

/// [`stored`] through a client made with `options` (TLS, a password).
async fn stored_via(
    options: async_nats::ConnectOptions,
    url: &str,
    stream: &str,
    subject: &str,
) -> Vec<Stored> {
    let Ok(client) = options.connect(url).await else {
        return Vec::new();
    };
    let js = jetstream::new(client);
    let Ok(stream) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: subject.into(),
            ack_policy: jetstream::consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .expect("create a consumer");
    let mut out = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .expect("fetch");
        let mut got = 0;
        while let Some(Ok(m)) = batch.next().await {
            got += 1;
            let seq = m.info().expect("info").stream_sequence;
            let msg_id = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.to_string())
                .unwrap_or_default();
            let event = serde_json::from_slice(&m.payload).expect("a JSON event");
            out.push(Stored { seq, msg_id, event });
        }
        if got == 0 {
            return out;
        }
    }
}

/// The venv's Python with DuckDB and jsonschema (`scripts/python-tools` installs it).
fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join("target/py-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-tools (DuckDB and jsonschema from PyPI; scripts/test does)",
        python.display()
    );
    python
}

/// Validates every event against `docs/events/<type>.schema.json`.
fn assert_valid(events: &[Value]) {
    assert!(!events.is_empty());
    let dir = TempDir::new("schemas");
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    let file = dir.write("events.jsonl", &(lines.join("\n") + "\n"));
    let schemas = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/events");
    let script = r#"
import json, sys, jsonschema
schemas, path = sys.argv[1], sys.argv[2]
bad = 0
for n, line in enumerate(open(path), 1):
    event = json.loads(line)
    kind = event.get("type", "").removeprefix("dev.tollgate.").removesuffix(".v1")
    schema = json.load(open(f"{schemas}/{kind}.schema.json"))
    v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    for e in v.iter_errors(event):
        bad += 1
        print(f"event {n} ({kind}): {e.json_path}: {e.message}")
print(f"{n} events checked, {bad} errors")
sys.exit(1 if bad else 0)
"#;
    let out = Command::new(python())
        .args(["-c", script])
        .arg(&schemas)
        .arg(&file)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "events do not match their schemas:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A policy on its own descriptor key (two policies of a domain may not match the same).
fn policy(key: &str, n: u64) -> Value {
    json!({"descriptor": [{"key": key}], "rate_limit": {"unit": "minute", "requests_per_unit": n}})
}

async fn admin(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> u16 {
    let mut request = server.client.request(method, server.admin_url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request
        .send()
        .await
        .expect("admin request")
        .status()
        .as_u16()
}

/// Every audit log entry's id, read through the admin API.
async fn audit_ids(server: &TestServer) -> BTreeSet<i64> {
    let mut ids = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = server.admin_url("/v1/admin/audit?limit=500");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = server
            .client
            .get(url)
            .send()
            .await
            .expect("audit")
            .json()
            .await
            .expect("json");
        for e in page["items"].as_array().expect("items") {
            ids.insert(e["id"].as_i64().expect("id"));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
}

/// The audit ids the control stream holds, asserting that no message is stored twice.
fn audit_ids_stored(messages: &[Stored]) -> BTreeSet<i64> {
    let ids: Vec<&str> = messages.iter().map(|m| m.msg_id.as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a message id is stored twice");
    messages
        .iter()
        .filter(|m| m.event["type"] == "dev.tollgate.audit.v1")
        .map(|m| m.event["data"]["id"].as_i64().expect("audit id"))
        .collect()
}

/// Waits until the control stream holds an audit event for every audit log entry.
async fn all_audit_events(nats: &str, server: &TestServer) -> Vec<Stored> {
    wait::until_polling(
        "every audit entry published to TOLLGATE_CONTROL",
        STREAM_POLL,
        || async {
            let want = audit_ids(server).await;
            let messages = stored(nats, "TOLLGATE_CONTROL", "tollgate.>").await;
            (audit_ids_stored(&messages) == want).then_some(messages)
        },
    )
    .await
}

/// Each domain's events in the stream are in outbox-row order.
fn assert_in_order_per_domain(messages: &[Stored]) {
    assert!(
        messages.windows(2).all(|w| w[0].seq < w[1].seq),
        "read in stream order"
    );
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for m in messages {
        let domain = m.event["subject"].as_str().unwrap_or("_").to_owned();
        let id: i64 = m.msg_id.parse().expect("outbox ids are numbers");
        if let Some(prev) = last.insert(domain.clone(), id) {
            assert!(prev < id, "{domain}: row {id} stored after row {prev}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_audit_event_arrives_once_across_a_broker_restart() {
    let mut nats = NatsServer::start();
    let server = TestServer::serve(None, &["--events", &nats.url()]);
    assert_eq!(
        admin(
            &server,
            reqwest::Method::POST,
            "/v1/admin/domains",
            Some(json!({"name": "shop"}))
        )
        .await,
        201
    );
    for i in 0..90u64 {
        if i == 30 {
            nats.kill();
        }
        if i == 60 {
            nats.restart();
        }
        let path = format!("/v1/admin/domains/shop/policies/p{i}");
        assert!(matches!(
            admin(
                &server,
                reqwest::Method::PUT,
                &path,
                Some(policy(&format!("k{i}"), i + 1))
            )
            .await,
            200 | 201
        ));
    }
    // A refused change and a failed sign-in are audit events too.
    assert_eq!(
        admin(
            &server,
            reqwest::Method::POST,
            "/v1/admin/domains",
            Some(json!({"name": "shop"}))
        )
        .await,
        409
    );
    let anonymous = reqwest::Client::new();
    let status = anonymous
        .get(server.admin_url("/v1/admin/domains"))
        .bearer_auth("tg_0000000000000000_wrong")
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(status, 401);

    let messages = all_audit_events(&nats.url(), &server).await;
    let changes = messages
        .iter()
        .filter(|m| m.event["type"] == "dev.tollgate.change.v1")
        .count();
    assert_eq!(
        changes, 92,
        "one change event per committed change (the test's key, 1 domain, 90 policies)"
    );
    assert_in_order_per_domain(&messages);
    let events: Vec<Value> = messages.iter().map(|m| m.event.clone()).collect();
    assert_valid(&events);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_relay_from_one_postgres_without_storing_a_row_twice() {
    let nats = NatsServer::start();
    let pg = PostgresDatabase::create();
    let flags = ["--database", pg.url(), "--events", &nats.url()];
    let a = TestServer::serve(None, &flags);
    let b = TestServer::serve(None, &flags);
    for (node, domain) in [(&a, "alpha"), (&b, "beta")] {
        assert_eq!(
            admin(
                node,
                reqwest::Method::POST,
                "/v1/admin/domains",
                Some(json!({"name": domain}))
            )
            .await,
            201
        );
    }
    let writes = |node: &'static str, server: &TestServer| {
        let server_client = server.client.clone();
        let base = server.admin.clone();
        async move {
            for i in 0..40 {
                let domain = if i % 2 == 0 { "alpha" } else { "beta" };
                let url = format!("{base}/v1/admin/domains/{domain}/policies/{node}{i}");
                let status = server_client
                    .put(url)
                    .json(&policy(&format!("{node}{i}"), 5))
                    .send()
                    .await
                    .expect("put")
                    .status();
                assert!(status.is_success(), "{status}");
            }
        }
    };
    tokio::join!(writes("a", &a), writes("b", &b));
    let messages = all_audit_events(&nats.url(), &a).await;
    // 2 keys (one per node), 2 domains and 80 policies changed; every row once
    // (audit_ids_stored checks ids).
    let changes = messages
        .iter()
        .filter(|m| m.event["type"] == "dev.tollgate.change.v1")
        .count();
    assert_eq!(changes, 84);
    assert_in_order_per_domain(&messages);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_unreachable_at_startup_is_reported_and_its_rows_wait_until_it_is_back() {
    let port = tollgate_testkit::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let server = TestServer::serve(None, &["--events", &url]);
    server.log_line("event broker unreachable").await;
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status(), 200, "events never make a node unready");
    let text = ready.text().await.expect("body");
    assert!(text.contains("events: broker unreachable"), "{text}");
    for name in ["one", "two", "three"] {
        assert_eq!(
            admin(
                &server,
                reqwest::Method::POST,
                "/v1/admin/domains",
                Some(json!({"name": name}))
            )
            .await,
            201
        );
    }
    // The backlog is a metric while the broker is away.
    wait::until("the outbox backlog reported", || async {
        let metrics = server.metrics().await;
        (crate::helpers::metric(&metrics, "tollgate_outbox_backlog") >= 6.0).then_some(())
    })
    .await;
    let nats = NatsServer::start_on(port);
    let messages = all_audit_events(&nats.url(), &server).await;
    assert_eq!(
        messages.len(),
        8,
        "the test's key and 3 domains: 4 changes and their 4 audit entries"
    );
    assert_in_order_per_domain(&messages);
    wait::until("/readyz without the events line", || async {
        let text = server.get("/readyz").await.text().await.ok()?;
        (!text.contains("events:")).then_some(())
    })
    .await;
}

#[test]
fn a_malformed_broker_url_or_credentials_file_refuses_to_start_naming_the_flag() {
    let dir = TempDir::new("events-flags");
    let creds = dir.write("bad.creds", "not a credentials file");
    for (flags, says) in [
        (
            vec!["--events", "127.0.0.1:4222"],
            "--events: '127.0.0.1:4222' has no scheme",
        ),
        (vec!["--events", "nats://h"], "--events: 'h' has no port"),
        (
            vec![
                "--events",
                "nats://127.0.0.1:4222",
                "--events-credentials",
                creds.to_str().expect("path"),
            ],
            "--events-credentials:",
        ),
        (
            vec!["--events-ca", "/nonexistent"],
            "--events-ca is set but --events is not",
        ),
    ] {
        let out = Command::new(binary())
            .args(["serve", "--data-dir"])
            .arg(&dir.0)
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
            ])
            .args(&flags)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{flags:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
}

const SHOP: &str = "domain: shop
descriptors:
  - key: user
    rate_limit: {name: per_user, algorithm: gcra, unit: hour, requests_per_unit: 5, burst: 5}
";

const API: &str = "domain: api.v1
descriptors:
  - key: client
    rate_limit: {name: per_client, unit: hour, requests_per_unit: 1000}
    shadow_mode: true
";

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_broker_never_holds_a_decision_and_what_does_not_fit_is_counted() {
    let nats = NatsServer::start();
    let dir = TempDir::new("paused");
    dir.write("shop.yaml", SHOP);
    let server = TestServer::serve(
        Some(&dir.0),
        &[
            "--events",
            &nats.url(),
            "--events-queue",
            "8",
            "--denial-events-per-second",
            "1000000",
        ],
    );
    // Events flow before the pause.
    let first = server
        .check_json(&body("shop", &[&[("user", "warm")]], 1))
        .await;
    assert_eq!(first["allowed"], true);
    nats.signal("STOP");
    let answered = wait::finishes("2,000 decisions with the broker paused", async {
        let mut denied = 0;
        for _ in 0..2000 {
            let r = server
                .check_json(&body("shop", &[&[("user", "u")]], 1))
                .await;
            denied += u32::from(r["allowed"] == false);
        }
        denied
    })
    .await;
    assert_eq!(
        answered, 1995,
        "5 admitted, the rest denied, every one answered"
    );
    let metrics = server.metrics().await;
    let dropped = crate::helpers::metric(&metrics, "tollgate_events_dropped_total");
    nats.signal("CONT");
    assert!(dropped > 0.0, "a full queue drops and counts: {dropped}");
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_is_exported_to_parquet_and_duckdb_totals_equal_what_was_sent() {
    let nats = NatsServer::start();
    let dir = TempDir::new("usage");
    dir.write("shop.yaml", SHOP);
    dir.write("api.yaml", API);
    let server = TestServer::serve(
        Some(&dir.0),
        &[
            "--events",
            &nats.url(),
            "--usage-interval",
            "200ms",
            "--heavy-hitters",
            "3",
        ],
    );
    // shop: user u0 sends 12 requests, u1..u9 one to seven: 5 allowed per user at most.
    let mut sent: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for user in 0..10u64 {
        let n = if user == 0 { 12 } else { user.min(7) };
        for _ in 0..n {
            let r = server
                .check_json(&body("shop", &[&[("user", &format!("u{user}"))]], 1))
                .await;
            let e = sent.entry("shop").or_default();
            if r["allowed"] == true {
                e.0 += 1
            } else {
                e.1 += 1
            }
        }
    }
    // api.v1 (a name with a dot): shadow mode, everything admitted.
    for i in 0..25u64 {
        let r = server
            .check_json(&body("api.v1", &[&[("client", &format!("c{}", i % 3))]], 2))
            .await;
        assert_eq!(r["allowed"], true);
        sent.entry("api.v1").or_default().0 += 1;
    }
    assert_eq!(
        sent["shop"],
        (5 + 1 + 2 + 3 + 4 + 5 + 5 + 5 + 5 + 5, 7 + 1 + 2 + 2 + 2)
    );

    // Every decision is in some usage event before exporting.
    let usage = wait::until_polling("usage events for every decision", STREAM_POLL, || async {
        let messages = stored(&nats.url(), "TOLLGATE_USAGE", "tollgate.usage.>").await;
        let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for m in &messages {
            let d = &m.event["data"];
            let t = totals
                .entry(d["domain"].as_str().unwrap_or("").to_owned())
                .or_default();
            t.0 += d["allowed"].as_u64().unwrap_or(0);
            t.1 += d["denied"].as_u64().unwrap_or(0);
        }
        let want: BTreeMap<String, (u64, u64)> =
            sent.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        (totals == want).then_some(messages)
    })
    .await;
    let denials = wait::until("a denial event per denied request", || async {
        let d = stored(&nats.url(), "TOLLGATE_USAGE", "tollgate.denial.>").await;
        (d.len() as u64 == sent["shop"].1).then_some(d)
    })
    .await;
    assert!(denials.iter().all(|d| d.event["subject"] == "shop"));
    // The heaviest user of the shop in the interval that saw it is u0.
    let u0 = usage
        .iter()
        .filter(|m| m.event["data"]["domain"] == "shop")
        .flat_map(|m| {
            m.event["data"]["heavy_hitters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|h| h["value"] == "user=u0")
        .map(|h| h["count"].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert!(u0 >= 12, "user=u0's 12 hits are in its heavy hitters: {u0}");
    let mut all: Vec<Value> = usage.iter().map(|m| m.event.clone()).collect();
    all.extend(denials.iter().map(|m| m.event.clone()));
    assert_valid(&all);

    // Export with a crash before a block is ready, then one while it is moved into place,
    // then to the end; and once more, uninterrupted, elsewhere. Same files, same bytes.
    let crashed = TempDir::new("export-crashed");
    let clean = TempDir::new("export-clean");
    let export = |to: &Path, consumer: &str, crash: Option<&str>| {
        let mut cmd = Command::new(binary());
        cmd.args([
            "usage",
            "export",
            "--events",
            &nats.url(),
            "--block",
            "3",
            "--until-idle",
            "1s",
            "--consumer",
            consumer,
            "--to",
        ])
        .arg(to);
        if let Some(at) = crash {
            cmd.env("TOLLGATE_EXPORT_CRASH_AT", at);
        }
        cmd.output().expect("run usage export")
    };
    for crash in ["staged", "moving"] {
        let out = export(&crashed.0, "crashed", Some(crash));
        assert!(!out.status.success(), "the {crash} crash happened");
    }
    let out = export(&crashed.0, "crashed", None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = export(&clean.0, "clean", None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = |root: &Path| -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
                let path = entry.path();
                if path.is_dir() && !path.ends_with("_tollgate") {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "parquet") {
                    let name = path
                        .strip_prefix(root)
                        .expect("under root")
                        .display()
                        .to_string();
                    out.insert(name, std::fs::read(&path).expect("read"));
                }
            }
        }
        out
    };
    let (a, b) = (files(&crashed.0), files(&clean.0));
    assert!(
        a.keys().any(|k| k.contains("domain=api.v1/")),
        "{:?}",
        a.keys()
    );
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same files"
    );
    assert!(a == b, "the same bytes in every file");

    // DuckDB reads the table with its Hive partitions; totals equal what was sent.
    let query = format!(
        "import duckdb, json\n\
         rows = duckdb.sql(\"SELECT domain, sum(allowed)::BIGINT, sum(denied)::BIGINT, count(DISTINCT event_id)::BIGINT, count(*)::BIGINT \
         FROM read_parquet('{}/**/*.parquet', hive_partitioning = true) GROUP BY domain ORDER BY domain\").fetchall()\n\
         print(json.dumps(rows))",
        crashed.0.display()
    );
    let out = Command::new(python())
        .args(["-c", &query])
        .output()
        .expect("run duckdb");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(String, u64, u64, u64, u64)> =
        serde_json::from_slice(&out.stdout).expect("rows");
    let totals: BTreeMap<String, (u64, u64)> =
        rows.iter().map(|r| (r.0.clone(), (r.1, r.2))).collect();
    let want: BTreeMap<String, (u64, u64)> =
        sent.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
    assert_eq!(totals, want);
    for r in &rows {
        assert_eq!(r.3, r.4, "{}: no usage event exported twice", r.0);
    }
}

/// Every usage view the admin API shows until the intervals seen hold `total` decisions
/// of `domain`, one view per interval.
async fn usage_views(server: &TestServer, domain: &str, total: u64) -> Vec<Value> {
    let seen: std::cell::RefCell<BTreeMap<String, Value>> = Default::default();
    wait::until("usage views covering every decision", || async {
        let view: Value = server
            .client
            .get(server.admin_url(&format!("/v1/admin/usage?domain={domain}")))
            .send()
            .await
            .expect("usage")
            .json()
            .await
            .expect("json");
        assert_eq!(view["enabled"], true, "{view}");
        let mut seen = seen.borrow_mut();
        if let Some(start) = view["start"].as_str() {
            seen.entry(start.to_owned()).or_insert(view);
        }
        let counted: u64 = seen
            .values()
            .flat_map(|v| v["policies"].as_array().cloned().unwrap_or_default())
            .map(|p| p["allowed"].as_u64().unwrap_or(0) + p["denied"].as_u64().unwrap_or(0))
            .sum();
        (counted == total).then(|| seen.values().cloned().collect())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_shows_each_policys_usage_and_heavy_hitters_within_their_bound() {
    let dir = TempDir::new("usage-view");
    dir.write("shop.yaml", SHOP);
    let server = TestServer::serve(
        Some(&dir.0),
        &["--usage", "--usage-interval", "1s", "--heavy-hitters", "2"],
    );
    let none: Value = server
        .client
        .get(server.admin_url("/v1/admin/usage"))
        .send()
        .await
        .expect("usage")
        .json()
        .await
        .expect("json");
    assert_eq!(none["enabled"], true);
    // u0 is the heavy hitter: 30 hits; 20 other users 1 hit each.
    for _ in 0..30 {
        server
            .check_json(&body("shop", &[&[("user", "u0")]], 1))
            .await;
    }
    for user in 1..=20 {
        server
            .check_json(&body("shop", &[&[("user", &format!("u{user}"))]], 1))
            .await;
    }
    let views = usage_views(&server, "shop", 50).await;
    let (mut allowed, mut denied, mut upper, mut lower) = (0, 0, 0, 0);
    for view in &views {
        for p in view["policies"].as_array().expect("policies") {
            assert_eq!(p["policy"], "per_user");
            allowed += p["allowed"].as_u64().expect("allowed");
            denied += p["denied"].as_u64().expect("denied");
            let hitters = p["heavy_hitters"].as_array().expect("hitters");
            assert!(hitters.len() <= 2, "--heavy-hitters 2");
            for h in hitters.iter().filter(|h| h["value"] == "user=u0") {
                let (count, error) = (
                    h["count"].as_u64().expect("count"),
                    h["error"].as_u64().expect("error"),
                );
                assert!(error <= p["error_bound"].as_u64().expect("bound"));
                upper += count;
                lower += count - error;
            }
        }
    }
    assert_eq!(
        (allowed, denied),
        (5 + 20, 25),
        "u0: 5 of 30 admitted; the 20 others: 1 each"
    );
    assert!(
        lower <= 30 && 30 <= upper,
        "u0's true 30 hits within [{lower}, {upper}]"
    );

    // A viewer of another domain sees none of it, and may not ask for it.
    let key = crate::helpers::create_key(
        &[
            "--data-dir".to_owned(),
            server
                .data_dir
                .as_ref()
                .expect("data dir")
                .0
                .display()
                .to_string(),
        ],
        &[],
        &["--role", "viewer", "--domain", "other", "--name", "viewer"],
    );
    let viewer = crate::helpers::client_with_key(Some(&key));
    let theirs: Value = viewer
        .get(server.admin_url("/v1/admin/usage"))
        .send()
        .await
        .expect("usage")
        .json()
        .await
        .expect("json");
    assert!(
        theirs["policies"]
            .as_array()
            .expect("policies")
            .iter()
            .all(|p| p["domain"] != "shop"),
        "{theirs}"
    );
    let status = viewer
        .get(server.admin_url("/v1/admin/usage?domain=shop"))
        .send()
        .await
        .expect("usage")
        .status();
    assert_eq!(status, 403);
    // GraphQL answers the same view.
    let gql: Value = server
        .client
        .post(server.admin_url("/graphql"))
        .json(&json!({"query": "{ usage(domain: \"shop\") { enabled intervalMs policies { policy heavyHitters { value count error } } } }"}))
        .send()
        .await
        .expect("graphql")
        .json()
        .await
        .expect("json");
    assert_eq!(gql["data"]["usage"]["enabled"], true, "{gql}");
    assert_eq!(gql["data"]["usage"]["intervalMs"], 1000, "{gql}");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_tail_prints_the_events_of_a_type_and_domain_as_json_lines_when_piped() {
    let nats = NatsServer::start();
    let server = TestServer::serve(None, &["--events", &nats.url()]);
    let tail = std::process::Command::new(binary())
        .args([
            "events",
            "tail",
            "--events",
            &nats.url(),
            "--type",
            "change",
            "--domain",
            "wanted",
            "--count",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tail");
    // tail subscribes once connected; keep changing until it has printed its one event.
    let tail = std::cell::RefCell::new(tail);
    wait::until_polling(
        "events tail printed the change",
        Duration::from_millis(100),
        || async {
            for name in ["unwanted", "wanted"] {
                admin(
                    &server,
                    reqwest::Method::POST,
                    "/v1/admin/domains",
                    Some(json!({"name": name})),
                )
                .await;
                admin(
                    &server,
                    reqwest::Method::DELETE,
                    &format!("/v1/admin/domains/{name}"),
                    None,
                )
                .await;
            }
            tail.borrow_mut().try_wait().expect("wait").map(|_| ())
        },
    )
    .await;
    let tail = tail.into_inner();
    let out = tail.wait_with_output().expect("tail output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let event: Value = serde_json::from_str(lines[0]).expect("a JSON line");
    assert_eq!(event["type"], "dev.tollgate.change.v1");
    assert_eq!(event["subject"], "wanted");
    assert_valid(&[event]);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_reach_a_broker_that_requires_tls_and_a_password_which_is_never_logged() {
    // The test's own NATS client uses rustls's process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = TestCa::new("tollgate nats test CA");
    let issued = ca.server("127.0.0.1");
    let dir = TempDir::new("nats-tls");
    let cert = dir.write("server.pem", &issued.cert_pem);
    let key = dir.write("server.key", &issued.key_pem);
    let ca_file = dir.write("ca.pem", &ca.cert_pem);
    let path = |p: &Path| p.display().to_string();
    let (cert, key) = (path(&cert), path(&key));
    let nats = NatsServer::start_with(&[
        "--tls",
        "--tlscert",
        &cert,
        "--tlskey",
        &key,
        "--user",
        "tollgate",
        "--pass",
        "s3cret-pw",
    ]);
    let url = format!("tls://tollgate:s3cret-pw@127.0.0.1:{}", nats.port());
    let server = TestServer::serve(None, &["--events", &url, "--events-ca", &path(&ca_file)]);
    server.log_line("events on").await;
    assert_eq!(
        admin(
            &server,
            reqwest::Method::POST,
            "/v1/admin/domains",
            Some(json!({"name": "secure"}))
        )
        .await,
        201
    );
    let options = || {
        async_nats::ConnectOptions::with_user_and_password("tollgate".into(), "s3cret-pw".into())
            .add_root_certificates(ca_file.clone())
            .require_tls(true)
    };
    let url = format!("tls://127.0.0.1:{}", nats.port());
    let messages = wait::until("the change published over TLS", || async {
        let m = stored_via(
            options(),
            &url,
            "TOLLGATE_CONTROL",
            "tollgate.change.secure",
        )
        .await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(messages[0].event["data"]["action"], "domain.create");
    // Without the password the broker refuses; the server never logged it.
    let refused = async_nats::ConnectOptions::new()
        .add_root_certificates(ca_file.clone())
        .require_tls(true)
        .connect(url.as_str())
        .await;
    assert!(refused.is_err(), "the broker requires the password");
    let logs = server.logs.lock().expect("logs").join("\n");
    assert!(
        !logs.contains("s3cret-pw"),
        "the broker's password reached the logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_publishes_the_interval_in_progress() {
    let nats = NatsServer::start();
    let dir = TempDir::new("stop-flush");
    dir.write("shop.yaml", SHOP);
    let mut server = TestServer::serve(
        Some(&dir.0),
        &["--events", &nats.url(), "--usage-interval", "1h"],
    );
    for _ in 0..3 {
        server
            .check_json(&body("shop", &[&[("user", "last")]], 1))
            .await;
    }
    assert!(server.terminate().success());
    let usage = stored(&nats.url(), "TOLLGATE_USAGE", "tollgate.usage.>").await;
    assert_eq!(usage.len(), 1, "one aggregate, made at the stop");
    assert_eq!(usage[0].event["data"]["allowed"], 3);
}
