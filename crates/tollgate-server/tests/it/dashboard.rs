//! The dashboard: its sign-in, sessions and CSRF rules over plain HTTP, and the whole UI
//! in a real browser (`tests/browser/dashboard.mjs`: playwright-core driving Debian's
//! Chromium, both installed by `scripts/browser-tools`). Screenshots land in
//! `target/dashboard/`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{TestServer, client_with_key, send_json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A server with usage kept per second, the `shop` domain in its database with three
/// policies (one named like markup, one in shadow mode), and a viewer key.
async fn shop() -> (TestServer, String) {
    let s = TestServer::serve(None, &["--usage", "--usage-interval", "1s"]);
    let admin = |path: &str| s.admin_url(path);
    let put = |path: String, body: Value| {
        let c = s.client.clone();
        async move {
            let r = c.put(path).json(&body).send().await.expect("answered");
            assert!(
                r.status().is_success(),
                "{}",
                r.text().await.unwrap_or_default()
            );
        }
    };
    let r = s
        .client
        .post(admin("/v1/admin/domains"))
        .json(&json!({"name": "shop", "description": "the web shop"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 201);
    let policy = |name: &str| {
        admin(&format!(
            "/v1/admin/domains/shop/policies/{}",
            urlencode(name)
        ))
    };
    put(
        policy("per_user"),
        json!({"descriptor": [{"key": "user"}], "rate_limit": {"unit": "minute", "requests_per_unit": 5}, "description": "five a minute per user"}),
    )
    .await;
    put(
        policy("per_user_shadow"),
        json!({"descriptor": [{"key": "plan", "value": "free"}], "rate_limit": {"unit": "minute", "requests_per_unit": 1}, "shadow_mode": true}),
    )
    .await;
    put(
        policy("<img src=x onerror=alert(1)>"),
        json!({"descriptor": [{"key": "path", "value": "/x"}], "rate_limit": {"unit": "second", "requests_per_unit": 9}}),
    )
    .await;
    let viewer: Value = send_json(
        s.client
            .post(admin("/v1/admin/keys"))
            .json(&json!({"name": "viewer", "role": "viewer", "domains": ["shop"]})),
    )
    .await;
    let viewer = viewer["key"].as_str().expect("a key").to_owned();
    (s, viewer)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn sessions_need_the_csrf_token_end_on_sign_out_and_on_revocation() {
    let (s, viewer) = shop().await;
    let plain = reqwest::Client::new();
    let sign_in = |credential: String| {
        let plain = plain.clone();
        let url = s.admin_url("/ui/session");
        async move {
            plain
                .post(url)
                .json(&json!({"credential": credential}))
                .send()
                .await
                .expect("answered")
        }
    };
    // A wrong key: 401, audited.
    let r = sign_in("tg_nosuch_secret".into()).await;
    assert_eq!(r.status(), 401);
    // The right one: a cookie with every attribute, and a CSRF token.
    let key = s.admin_key.clone().expect("admin key");
    let r = sign_in(key.clone()).await;
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    for part in ["HttpOnly", "SameSite=Strict", "Max-Age=", "Path=/"] {
        assert!(cookie.contains(part), "{cookie} lacks {part}");
    }
    assert!(!cookie.contains("Secure"), "no TLS here: {cookie}");
    let session: Value = r.json().await.expect("JSON");
    assert_eq!(session["role"], "admin");
    let csrf = session["csrf"].as_str().expect("a CSRF token").to_owned();
    let id = cookie.split(';').next().expect("pair").to_owned();
    let with_cookie = |method: reqwest::Method, path: &str| {
        plain
            .request(method, s.admin_url(path))
            .header("cookie", &id)
    };
    // Reads need only the cookie; changes need the token too.
    let r = with_cookie(reqwest::Method::GET, "/v1/admin/domains/shop/policies")
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 200);
    let r = with_cookie(
        reqwest::Method::DELETE,
        "/v1/admin/domains/shop/policies/per_user",
    )
    .send()
    .await
    .expect("answered");
    assert_eq!(r.status(), 403);
    let p: Value = r.json().await.expect("problem");
    assert_eq!(p["type"], "urn:tollgate:problem:csrf");
    let r = with_cookie(
        reqwest::Method::DELETE,
        "/v1/admin/domains/shop/policies/per_user",
    )
    .header("x-csrf-token", "not-the-token")
    .send()
    .await
    .expect("answered");
    assert_eq!(r.status(), 403);
    let r = with_cookie(reqwest::Method::POST, "/graphql")
        .json(&json!({"query": "{ domains { items { name } } }"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(
        r.status(),
        403,
        "GraphQL over a session needs the token too"
    );
    let r = with_cookie(reqwest::Method::POST, "/graphql")
        .header("x-csrf-token", &csrf)
        .json(&json!({"query": "{ domains { items { name } } }"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 200);
    // A change with the token is made, and audited as made through the dashboard.
    let r = with_cookie(
        reqwest::Method::DELETE,
        "/v1/admin/domains/shop/policies/per_user_shadow",
    )
    .header("x-csrf-token", &csrf)
    .send()
    .await
    .expect("answered");
    assert_eq!(r.status(), 204);
    let audit: Value = send_json(
        s.client
            .get(s.admin_url("/v1/admin/audit?action=policy.delete")),
    )
    .await;
    assert_eq!(audit["items"][0]["via"], "ui", "{audit}");
    let failed: Value = send_json(
        s.client
            .get(s.admin_url("/v1/admin/audit?action=authenticate")),
    )
    .await;
    assert!(
        failed["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|e| e["via"] == "ui" && e["outcome"] == "unauthenticated"),
        "the failed sign-in is audited: {failed}"
    );
    // Sign out: the cookie no longer works.
    let r = with_cookie(reqwest::Method::DELETE, "/ui/session")
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 204);
    let r = with_cookie(reqwest::Method::GET, "/ui/session")
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 401);
    // A session of a key that is then revoked ends with it.
    let r = sign_in(viewer.clone()).await;
    assert_eq!(r.status(), 200);
    let viewer_cookie = r.headers()["set-cookie"].to_str().expect("ASCII");
    let viewer_id = viewer_cookie.split(';').next().expect("pair").to_owned();
    let viewer_key_id = viewer.split('_').nth(1).expect("key id");
    let r = s
        .client
        .delete(s.admin_url(&format!("/v1/admin/keys/{viewer_key_id}")))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 200);
    let r = plain
        .get(s.admin_url("/ui/session"))
        .header("cookie", &viewer_id)
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 401, "a revoked key's session ends");
    // The page and its assets: a CSP without inline code; every asset served.
    let r = plain
        .get(s.admin_url("/ui"))
        .send()
        .await
        .expect("answered");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let page = r.text().await.expect("text");
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "no inline code"
    );
    let r = plain
        .get(s.admin_url("/ui/assets/app.js"))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ASCII")
            .starts_with("text/javascript")
    );
    // Sign-in takes JSON only (no cross-site form posts).
    let r = plain
        .post(s.admin_url("/ui/session"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("credential={key}"))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 415);
}

#[tokio::test]
async fn a_session_websocket_from_another_origin_is_refused() {
    let (s, _) = shop().await;
    let key = s.admin_key.clone().expect("admin key");
    let r = reqwest::Client::new()
        .post(s.admin_url("/ui/session"))
        .json(&json!({"credential": key}))
        .send()
        .await
        .expect("answered");
    let cookie = r.headers()["set-cookie"].to_str().expect("ASCII");
    let id = cookie.split(';').next().expect("pair").to_owned();
    let host = s.admin.trim_start_matches("http://").to_owned();
    let upgrade = |origin: &str| {
        reqwest::Client::new()
            .get(s.admin_url("/graphql/ws"))
            .header("cookie", &id)
            .header("origin", origin)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-protocol", "graphql-transport-ws")
            .send()
    };
    let r = upgrade("http://evil.example").await.expect("answered");
    assert_eq!(r.status(), 403);
    let r = upgrade(&format!("http://{host}")).await.expect("answered");
    assert_eq!(r.status(), 101, "the dashboard's own origin may open it");
}

#[tokio::test]
async fn the_overview_shows_each_domain_s_decisions_per_second() {
    let (s, viewer) = shop().await;
    for _ in 0..3 {
        s.check(&crate::helpers::body("shop", &[&[("user", "bob")]], 1))
            .await;
    }
    let viewer = client_with_key(Some(&viewer));
    let o = tollgate_testkit::wait::until("the overview counts shop's three decisions", || async {
        let o: Value = viewer
            .get(s.admin_url("/v1/admin/overview"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (o["domains"][0]["allowed"] == 3).then_some(o)
    })
    .await;
    assert_eq!(o["domains"][0]["domain"], "shop");
    assert_eq!(
        o["domains"].as_array().map(Vec::len),
        Some(1),
        "a viewer of shop sees shop only: {o}"
    );
    assert_eq!(o["health"]["store"], "memory");
    assert_eq!(o["health"]["store_available"], true);
    assert_eq!(o["interval_ms"], 1000);
}

#[tokio::test]
async fn the_dashboard_works_in_a_real_browser() {
    let tools = repo().join("scripts/browser-tools");
    let out = Command::new(&tools)
        .output()
        .expect("run scripts/browser-tools");
    assert!(
        out.status.success(),
        "the browser suite needs playwright-core and Chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let modules = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let chromium = which("chromium").expect("chromium on PATH (apt-get install chromium)");
    let (s, viewer) = shop().await;
    // scripts/dashboard-screenshots points these at docs/dashboard with a minute of load.
    let shots = std::env::var_os("TOLLGATE_DASHBOARD_SHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/dashboard"));
    let load_seconds = std::env::var("TOLLGATE_DASHBOARD_LOAD_SECONDS").unwrap_or_default();
    let run = tokio::process::Command::new("node")
        .arg(repo().join("tests/browser/dashboard.mjs"))
        .env("TOLLGATE_ADMIN", &s.admin)
        .env("TOLLGATE_DATA", &s.base)
        .env("ADMIN_KEY", s.admin_key.clone().expect("admin key"))
        .env("VIEWER_KEY", &viewer)
        .env("MODULES", &modules)
        .env("CHROMIUM", &chromium)
        .env("SHOTS", &shots)
        .env("LOAD_SECONDS", &load_seconds)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(300), run)
        .await
        .expect("the browser suite finished within 5 minutes")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser suite failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# all dashboard checks passed"));
    for view in [
        "sign-in",
        "overview",
        "policies",
        "policy-history",
        "live",
        "usage",
        "keys",
        "audit",
        "viewer-phone",
    ] {
        assert!(
            shots.join(format!("{view}.png")).exists(),
            "no screenshot of {view}"
        );
    }
}

fn which(name: &str) -> Option<String> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).is_file())
}
