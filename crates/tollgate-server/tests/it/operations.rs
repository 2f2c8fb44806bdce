//! Health, readiness, metrics, startup errors and graceful shutdown.

use std::process::Command;

use serde_json::Value;

use crate::helpers::{POLICIES, TempDir, TestServer, binary, body, metric};

#[tokio::test]
async fn health_and_readiness() {
    let s = TestServer::start(None);
    let r = s.get("/healthz").await;
    assert_eq!(r.status(), 200);
    let r = s.get("/readyz").await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn built_in_example_policies_are_served_by_default() {
    let s = TestServer::start(None);
    let v = s
        .check_json(&body("api", &[&[("remote_address", "10.1.1.1")]], 1))
        .await;
    assert_eq!(v["statuses"][0]["policy"], "per_ip");
}

#[tokio::test]
async fn metrics_count_decisions_with_bounded_labels() {
    let dir = TempDir::new("metrics");
    let file = dir.write("shop.yaml", POLICIES);
    let s = TestServer::start(Some(&file));
    for _ in 0..4 {
        s.check(&body("shop", &[&[("user", "secret-user-value")]], 1))
            .await;
    }
    s.check(&body("random-domain-xyz", &[&[("user", "u")]], 1))
        .await;
    s.check(&body("shop", &[&[("trial", "t")]], 2)).await;
    let text = s.metrics().await;
    let value = |series: &str| metric(&text, series);
    assert_eq!(
        value("tollgate_decisions_total{domain=\"shop\",result=\"allowed\"}"),
        4.0
    );
    assert_eq!(
        value("tollgate_decisions_total{domain=\"shop\",result=\"denied\"}"),
        1.0
    );
    assert_eq!(
        value("tollgate_decisions_total{domain=\"_unknown\",result=\"allowed\"}"),
        1.0
    );
    assert_eq!(value("tollgate_shadow_denials_total{domain=\"shop\"}"), 1.0);
    assert_eq!(value("tollgate_decision_duration_seconds_count"), 6.0);
    assert!(value("tollgate_store_keys") >= 1.0);
    assert!(
        !text.contains("secret-user-value"),
        "descriptor values never become labels"
    );
    assert!(
        !text.contains("random-domain-xyz"),
        "unknown domains are not labels"
    );
}

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly() {
    let mut s = TestServer::start(None);
    let r = s.get("/healthz").await;
    assert_eq!(r.status(), 200);
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    s.log_line("\"message\":\"stopped\"").await;
}

#[test]
fn invalid_policies_stop_startup_with_file_and_line() {
    let dir = TempDir::new("badserve");
    let file = dir.write("bad.yaml", "domain: x\ndescriptors:\n  - key: a\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n");
    let out = Command::new(binary())
        .args(["serve", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(&dir.0)
        .arg("--policies")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:4:", file.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("invalid rate limit unit 'fortnight'"),
        "{stderr}"
    );
}

fn serve_with_store(store: &str) -> String {
    let dir = TempDir::new("store");
    let out = Command::new(binary())
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--store",
            store,
        ])
        .arg("--data-dir")
        .arg(&dir.0)
        .output()
        .expect("run tollgate");
    assert!(!out.status.success(), "started with --store {store}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unsupported_store_is_refused_clearly() {
    let stderr = serve_with_store("memcached://127.0.0.1:11211");
    assert!(stderr.contains("unknown scheme 'memcached'"), "{stderr}");
    assert!(
        stderr.contains("redis://"),
        "names the supported schemes: {stderr}"
    );
}

#[test]
fn an_unreachable_redis_is_refused_with_what_to_do() {
    // Nothing listens on a port that was just free.
    let port = tollgate_testkit::free_port();
    let stderr = serve_with_store(&format!("redis://:secret@127.0.0.1:{port}"));
    assert!(stderr.contains("cannot use the store at"), "{stderr}");
    assert!(
        stderr.contains("redis-server"),
        "says how to get one: {stderr}"
    );
    assert!(
        !stderr.contains("secret"),
        "never prints the password: {stderr}"
    );
}

#[tokio::test]
async fn config_file_and_environment_are_layered() {
    let dir = TempDir::new("config");
    dir.write("shop.yaml", POLICIES);
    let cfg = dir.write(
        "tollgate.toml",
        "http_addr = \"127.0.0.1:1\"\npolicies = \"shop.yaml\"\n",
    );
    // The environment overrides the file's (unusable) address; the policy path is
    // resolved relative to the file.
    let s = TestServer::start_with(
        &["serve".into(), "--config".into(), cfg.display().to_string()],
        &[("TOLLGATE_HTTP_ADDR", "127.0.0.1:0")],
    );
    let v = s.check_json(&body("shop", &[&[("user", "u")]], 1)).await;
    assert_eq!(v["statuses"][0]["policy"], "per_user");
}

#[tokio::test]
async fn the_example_configuration_file_works_as_shown() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/tollgate.toml");
    let s = TestServer::start_with(
        &[
            "serve".into(),
            "--config".into(),
            cfg.into(),
            "--http-addr".into(),
            "127.0.0.1:0".into(),
        ],
        &[],
    );
    let v = s
        .check_json(&body("api", &[&[("path", "/login"), ("user", "u1")]], 1))
        .await;
    assert_eq!(v["statuses"][0]["policy"], "login_per_user");
}

#[tokio::test]
async fn debug_logs_carry_decisions_but_never_descriptor_values() {
    let s = TestServer::start_with(
        &["serve".into(), "--http-addr".into(), "127.0.0.1:0".into()],
        &[("RUST_LOG", "debug")],
    );
    let r = s
        .client
        .post(s.url("/v1/check"))
        .header("x-request-id", "log-probe-1")
        .json(&body(
            "api",
            &[&[("remote_address", "203.0.113.77-private")]],
            1,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = s.log_line("log-probe-1").await;
    let logs = s.logs.lock().unwrap().join("\n");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["message"], "decision");
    assert_eq!(v["allowed"], true);
    assert!(
        !logs.contains("203.0.113.77-private"),
        "descriptor values are never logged"
    );
}

/// A second `serve` on an address the first one serves exits with an error naming the
/// address and its flag, instead of silently sharing the port (`SO_REUSEPORT`) and
/// splitting the first one's traffic.
#[test]
fn a_second_server_on_an_address_in_use_is_refused() {
    let first = TestServer::start(None);
    let addr_of = |url: &str| url.trim_start_matches("http://").to_owned();
    for (flag, addr) in [
        ("--http-addr", addr_of(&first.base)),
        ("--grpc-addr", addr_of(&first.grpc)),
        ("--admin-addr", addr_of(&first.admin)),
    ] {
        let dir = TempDir::new("second");
        let mut args = vec!["serve".to_owned(), "--workers".to_owned(), "2".to_owned()];
        for own in ["--http-addr", "--grpc-addr", "--admin-addr"] {
            let value = if own == flag {
                addr.clone()
            } else {
                "127.0.0.1:0".to_owned()
            };
            args.extend([own.to_owned(), value]);
        }
        let mut second = Command::new(binary())
            .args(&args)
            .arg("--data-dir")
            .arg(&dir.0)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run tollgate");
        // It must exit by itself; one that serves instead is killed and fails the test.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Some(status) = second.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = second.kill();
                panic!("a second server on {addr} ({flag}) kept running");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut second.stderr.take().expect("stderr"), &mut stderr)
            .expect("read stderr");
        assert!(!status.success(), "{flag} {addr}: {stderr}");
        assert!(stderr.contains(&addr) && stderr.contains(flag), "{stderr}");
        assert!(stderr.contains("already in use"), "{stderr}");
    }
    // The first server still answers alone.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let v = rt.block_on(first.check_json(&body("api", &[&[("remote_address", "1.2.3.4")]], 1)));
    assert_eq!(v["allowed"], true);
}

#[tokio::test]
async fn a_malformed_check_is_logged_by_its_field_never_its_values() {
    let s = TestServer::start_with(
        &["serve".into(), "--http-addr".into(), "127.0.0.1:0".into()],
        &[],
    );
    // A value of the wrong type: serde's own message quotes it.
    let body =
        r#"{"domain":"api","descriptors":[{"entries":[{"key":"user","value":987654321012}]}]}"#;
    let r = s
        .client
        .post(s.url("/v1/check"))
        .header("content-type", "application/json")
        .header("x-request-id", "malformed-probe-1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.unwrap();
    // The caller is told exactly what is wrong, its own value included.
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("descriptors[0].entries[0].value"),
        "{detail}"
    );
    let line = s.log_line("malformed-probe-1").await;
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["message"], "malformed check request");
    assert_eq!(v["field"], "descriptors[0].entries[0].value");
    let logs = s.logs.lock().unwrap().join("\n");
    assert!(
        !logs.contains("987654321012"),
        "the value is never logged: {logs}"
    );
}
