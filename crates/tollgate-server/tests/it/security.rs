//! Security end to end, on the real binary: the authorization matrix (every admin
//! endpoint × role × domain scope, over REST and GraphQL), API keys and tokens through the
//! listener, revocation across nodes, the brute-force guard, the audit log, secrets kept
//! out of logs, TLS and mTLS with certificate reload, data-plane authentication, and
//! oversize or malformed input on every listener.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate_testkit::{PostgresDatabase, TestCa, wait};

use crate::helpers::{TempDir, TestServer, body, client_with_key};

const JWT_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Read the domain.
    Read,
    /// Write the domain's policies.
    Edit,
    /// Create, change or delete the domain.
    DomainAdmin,
    /// Admin of every domain (keys, audit log).
    GlobalAdmin,
    /// Any authenticated caller.
    Anyone,
}

/// A caller of the matrix.
struct Caller {
    label: &'static str,
    role: Option<&'static str>,
    domains: &'static [&'static str],
    credential: Option<String>,
}

impl Caller {
    fn may(&self, need: Need, domain: Option<&str>) -> bool {
        let Some(role) = self.role else { return false };
        let in_scope = |d: &str| self.domains.contains(&"*") || self.domains.contains(&d);
        let level = match role {
            "viewer" => 0,
            "editor" => 1,
            _ => 2,
        };
        match (need, domain) {
            (Need::Anyone, _) => true,
            (Need::GlobalAdmin, _) => level == 2 && self.domains.contains(&"*"),
            (Need::Read, Some(d)) => in_scope(d),
            (Need::Edit, Some(d)) => level >= 1 && in_scope(d),
            (Need::DomainAdmin, Some(d)) => level == 2 && in_scope(d),
            (_, None) => false,
        }
    }
}

const DOCUMENT: &str = "domain: {d}\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 5, name: p}\n";

fn document(domain: &str) -> String {
    DOCUMENT.replace("{d}", domain)
}

fn spec() -> Value {
    json!({"descriptor": [{"key": "user"}], "rate_limit": {"unit": "minute", "requests_per_unit": 5}})
}

fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn token(role: &str, domains: &[&str], exp_in: i64) -> String {
    hs256(&json!({
        "sub": "matrix-bot", "iss": "https://issuer.test", "aud": "tollgate",
        "exp": now() as i64 + exp_in, "role": role, "domains": domains,
    }))
}

/// A server with JWTs accepted and a guard loose enough for hundreds of calls.
/// The matrix's server, on its own SQLite database or on `database` (a PostgreSQL URL).
fn matrix_server_on(dir: &TempDir, database: Option<&str>) -> TestServer {
    let secret = dir.write("jwt.secret", JWT_SECRET);
    let secret = secret.display().to_string();
    let mut flags = vec![
        "--jwt-hs256-secret-file",
        &secret,
        "--jwt-issuer",
        "https://issuer.test",
        "--jwt-audience",
        "tollgate",
        "--admin-requests-per-second",
        "100000",
        "--admin-auth-failures-per-minute",
        "100000",
    ];
    if let Some(url) = database {
        flags.extend(["--database", url]);
    }
    TestServer::serve(None, &flags)
}

/// Whether `path` is an instance of the OpenAPI path `template` (`{name}` is one segment).
fn instance_of(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
}

async fn new_key(s: &TestServer, role: &str, domains: &[&str]) -> String {
    let r = s
        .client
        .post(s.admin_url("/v1/admin/keys"))
        .json(&json!({"name": format!("{role} key"), "role": role, "domains": domains}))
        .send()
        .await
        .expect("create key");
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.expect("json");
    created["key"].as_str().expect("key").to_owned()
}

async fn callers(s: &TestServer) -> Vec<Caller> {
    vec![
        Caller {
            label: "admin of *",
            role: Some("admin"),
            domains: &["*"],
            credential: s.admin_key.clone(),
        },
        Caller {
            label: "admin of alpha",
            role: Some("admin"),
            domains: &["alpha"],
            credential: Some(new_key(s, "admin", &["alpha"]).await),
        },
        Caller {
            label: "editor of alpha",
            role: Some("editor"),
            domains: &["alpha"],
            credential: Some(new_key(s, "editor", &["alpha"]).await),
        },
        Caller {
            label: "viewer of alpha",
            role: Some("viewer"),
            domains: &["alpha"],
            credential: Some(new_key(s, "viewer", &["alpha"]).await),
        },
        Caller {
            label: "viewer of *",
            role: Some("viewer"),
            domains: &["*"],
            credential: Some(new_key(s, "viewer", &["*"]).await),
        },
        Caller {
            label: "editor of alpha (JWT)",
            role: Some("editor"),
            domains: &["alpha"],
            credential: Some(token("editor", &["alpha"], 600)),
        },
        Caller {
            label: "no credentials",
            role: None,
            domains: &[],
            credential: None,
        },
        Caller {
            label: "unknown key",
            role: None,
            domains: &[],
            credential: Some(format!("tg_{}_{}", "a".repeat(20), "b".repeat(64))),
        },
        Caller {
            label: "expired JWT",
            role: None,
            domains: &[],
            credential: Some(token("admin", &["*"], -600)),
        },
    ]
}

async fn seed(s: &TestServer) {
    for d in ["alpha", "beta"] {
        let r = s
            .client
            .put(s.admin_url(&format!("/v1/admin/domains/{d}/document")))
            .body(document(d))
            .send()
            .await
            .expect("seed");
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{}",
            r.text().await.unwrap_or_default()
        );
    }
}

/// One REST call of the matrix: what it needs, and its status when allowed.
struct RestCase {
    method: Method,
    path: String,
    body: Option<String>,
    if_match: bool,
    need: Need,
    domain: Option<&'static str>,
    allowed: StatusCode,
}

fn rest_cases() -> Vec<RestCase> {
    let stale = true;
    let mut cases = Vec::new();
    let mut add = |method: Method,
                   path: String,
                   body: Option<String>,
                   if_match: bool,
                   need,
                   domain,
                   allowed| {
        cases.push(RestCase {
            method,
            path,
            body,
            if_match,
            need,
            domain,
            allowed,
        });
    };
    for d in ["alpha", "beta"] {
        let dom = format!("/v1/admin/domains/{d}");
        let pol = format!("{dom}/policies/p");
        add(
            Method::GET,
            dom.clone(),
            None,
            false,
            Need::Read,
            Some(d),
            StatusCode::OK,
        );
        add(
            Method::PUT,
            dom.clone(),
            Some(json!({"description": "x"}).to_string()),
            stale,
            Need::DomainAdmin,
            Some(d),
            StatusCode::PRECONDITION_FAILED,
        );
        add(
            Method::DELETE,
            dom.clone(),
            None,
            stale,
            Need::DomainAdmin,
            Some(d),
            StatusCode::PRECONDITION_FAILED,
        );
        add(
            Method::POST,
            "/v1/admin/domains".into(),
            Some(json!({"name": d}).to_string()),
            false,
            Need::DomainAdmin,
            Some(d),
            StatusCode::CONFLICT,
        );
        add(
            Method::GET,
            format!("{dom}/document"),
            None,
            false,
            Need::Read,
            Some(d),
            StatusCode::OK,
        );
        add(
            Method::PUT,
            format!("{dom}/document"),
            Some(document(d)),
            false,
            Need::Edit,
            Some(d),
            StatusCode::OK,
        );
        add(
            Method::GET,
            format!("{dom}/policies"),
            None,
            false,
            Need::Read,
            Some(d),
            StatusCode::OK,
        );
        add(
            Method::GET,
            pol.clone(),
            None,
            false,
            Need::Read,
            Some(d),
            StatusCode::OK,
        );
        add(
            Method::PUT,
            pol.clone(),
            Some(spec().to_string()),
            stale,
            Need::Edit,
            Some(d),
            StatusCode::PRECONDITION_FAILED,
        );
        add(
            Method::DELETE,
            pol.clone(),
            None,
            stale,
            Need::Edit,
            Some(d),
            StatusCode::PRECONDITION_FAILED,
        );
        add(
            Method::GET,
            format!("{pol}/history"),
            None,
            false,
            Need::Read,
            Some(d),
            StatusCode::OK,
        );
        add(
            Method::POST,
            "/v1/admin/validate".into(),
            Some(json!({"domain": d, "name": "p", "policy": spec()}).to_string()),
            false,
            Need::Read,
            Some(d),
            StatusCode::OK,
        );
        add(
            Method::GET,
            format!("/v1/admin/usage?domain={d}"),
            None,
            false,
            Need::Read,
            Some(d),
            StatusCode::OK,
        );
        add(
            Method::POST,
            "/v1/admin/explain".into(),
            Some(
                json!({"domain": d, "descriptors": [{"entries": [{"key": "user", "value": "u"}]}]})
                    .to_string(),
            ),
            false,
            Need::Read,
            Some(d),
            StatusCode::OK,
        );
    }
    add(
        Method::GET,
        "/v1/admin/domains".into(),
        None,
        false,
        Need::Anyone,
        None,
        StatusCode::OK,
    );
    // Without a domain: what the caller may read, for anyone.
    add(
        Method::GET,
        "/v1/admin/usage".into(),
        None,
        false,
        Need::Anyone,
        None,
        StatusCode::OK,
    );
    // The overview: the domains the caller may read, for anyone.
    add(
        Method::GET,
        "/v1/admin/overview".into(),
        None,
        false,
        Need::Anyone,
        None,
        StatusCode::OK,
    );
    add(
        Method::GET,
        "/v1/admin/keys".into(),
        None,
        false,
        Need::GlobalAdmin,
        None,
        StatusCode::OK,
    );
    add(
        Method::POST,
        "/v1/admin/keys".into(),
        Some(json!({"name": "", "role": "viewer", "domains": ["alpha"]}).to_string()),
        false,
        Need::GlobalAdmin,
        None,
        StatusCode::BAD_REQUEST,
    );
    add(
        Method::DELETE,
        format!("/v1/admin/keys/{}", "0".repeat(20)),
        None,
        false,
        Need::GlobalAdmin,
        None,
        StatusCode::NOT_FOUND,
    );
    add(
        Method::GET,
        "/v1/admin/audit".into(),
        None,
        false,
        Need::GlobalAdmin,
        None,
        StatusCode::OK,
    );
    cases
}

#[tokio::test]
async fn every_rest_endpoint_allows_and_denies_by_role_and_scope() {
    rest_matrix(None).await;
}

#[tokio::test]
async fn every_rest_endpoint_allows_and_denies_by_role_and_scope_on_postgres() {
    let db = PostgresDatabase::create();
    rest_matrix(Some(db.url())).await;
}

// Test code outside a #[test] function: a failed call is a failed test.
#[allow(clippy::unwrap_used)]
async fn rest_matrix(database: Option<&str>) {
    let dir = TempDir::new("matrix-rest");
    let s = matrix_server_on(&dir, database);
    seed(&s).await;
    let callers = callers(&s).await;
    let cases = rest_cases();
    // Derived from the OpenAPI document the server serves: every operation has cases, so a
    // new route without any fails here.
    let doc: Value = s
        .client
        .get(s.admin_url("/v1/admin/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("openapi json");
    let mut uncovered = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("operations").keys() {
            let covered = cases.iter().any(|c| {
                c.method.as_str().eq_ignore_ascii_case(method) && instance_of(template, &c.path)
            });
            if !covered {
                uncovered.push(format!("{} {template}", method.to_uppercase()));
            }
        }
    }
    assert!(
        uncovered.is_empty(),
        "operations without authorization cases: {uncovered:?}"
    );
    let mut cells = 0;
    let mut wrong = Vec::new();
    for caller in &callers {
        let client = client_with_key(caller.credential.as_deref());
        for case in &cases {
            let mut request = client.request(case.method.clone(), s.admin_url(&case.path));
            if let Some(b) = &case.body {
                request = request.body(b.clone());
            }
            if case.if_match {
                request = request.header("if-match", "\"999999\"");
            }
            let response = request.send().await.expect("send");
            let status = response.status();
            let expected = if caller.role.is_none() {
                StatusCode::UNAUTHORIZED
            } else if caller.may(case.need, case.domain) {
                case.allowed
            } else {
                StatusCode::FORBIDDEN
            };
            cells += 1;
            let text = response.text().await.unwrap_or_default();
            if status != expected {
                wrong.push(format!(
                    "{} {} {} as {}: {status}, expected {expected}: {text}",
                    case.method,
                    case.path,
                    case.need_label(),
                    caller.label
                ));
            } else if expected == StatusCode::FORBIDDEN || expected == StatusCode::UNAUTHORIZED {
                let problem: Value = serde_json::from_str(&text).expect("problem json");
                assert_eq!(problem["status"], expected.as_u16(), "{text}");
                // A refusal never reveals whether another tenant's domain exists.
                assert!(
                    !text.contains("not found") && !text.contains("exists"),
                    "{text}"
                );
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(cells, callers.len() * cases.len());

    // Listings show only the caller's domains.
    let viewer = client_with_key(callers[3].credential.as_deref());
    let page: Value = viewer
        .get(s.admin_url("/v1/admin/domains"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, ["alpha"], "{page}");
    // The refusal for a domain that exists and one that does not reads the same.
    let a = viewer
        .get(s.admin_url("/v1/admin/domains/beta"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let b = viewer
        .get(s.admin_url("/v1/admin/domains/zeta"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(a.replace("beta", "X"), b.replace("zeta", "X"));
    // 401 carries a challenge.
    let r = reqwest::Client::new()
        .get(s.admin_url("/v1/admin/domains"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
}

impl RestCase {
    fn need_label(&self) -> &'static str {
        match self.need {
            Need::Read => "(read)",
            Need::Edit => "(edit)",
            Need::DomainAdmin => "(domain admin)",
            Need::GlobalAdmin => "(admin of *)",
            Need::Anyone => "(anyone)",
        }
    }
}

/// GraphQL operations of the matrix: what each needs, and the error code when allowed
/// (`None`: no error).
fn graphql_cases() -> Vec<(String, Need, Option<&'static str>, Option<&'static str>)> {
    let policy = r#"{descriptor: [{key: "user"}], rateLimit: {unit: MINUTE, requestsPerUnit: 5}}"#;
    let mut cases = Vec::new();
    for d in ["alpha", "beta"] {
        let dd = Some(d);
        cases.extend([
            (format!(r#"{{ domain(name: "{d}") {{ name }} }}"#), Need::Read, dd, None),
            (format!(r#"{{ policies(domain: "{d}") {{ items {{ name }} }} }}"#), Need::Read, dd, None),
            (format!(r#"{{ policy(domain: "{d}", name: "p") {{ name history {{ items {{ revision }} }} }} }}"#), Need::Read, dd, None),
            (format!(r#"{{ history(domain: "{d}", policy: "p") {{ items {{ revision }} }} }}"#), Need::Read, dd, None),
            (format!(r#"{{ counters(domain: "{d}", descriptors: [{{entries: [{{key: "user", value: "u"}}]}}]) {{ wouldAllow }} }}"#), Need::Read, dd, None),
            (format!(r#"{{ usage(domain: "{d}") {{ enabled }} }}"#), Need::Read, dd, None),
            (format!(r#"mutation {{ validatePolicy(domain: "{d}", name: "p", input: {policy}) }}"#), Need::Read, dd, None),
            (format!(r#"mutation {{ createDomain(input: {{name: "{d}"}}) {{ name }} }}"#), Need::DomainAdmin, dd, Some("CONFLICT")),
            (format!(r#"mutation {{ updateDomain(name: "{d}", input: {{description: "x"}}, ifRevision: 999999) {{ name }} }}"#), Need::DomainAdmin, dd, Some("STALE_REVISION")),
            (format!(r#"mutation {{ deleteDomain(name: "{d}", ifRevision: 999999) }}"#), Need::DomainAdmin, dd, Some("STALE_REVISION")),
            (format!(r#"mutation {{ putPolicy(domain: "{d}", name: "p", input: {policy}, ifRevision: 999999) {{ name }} }}"#), Need::Edit, dd, Some("STALE_REVISION")),
            (format!(r#"mutation {{ deletePolicy(domain: "{d}", name: "p", ifRevision: 999999) }}"#), Need::Edit, dd, Some("STALE_REVISION")),
        ]);
    }
    cases.extend([
        ("{ domains { items { name } } }".to_owned(), Need::Anyone, None, None),
        ("{ usage { enabled } }".to_owned(), Need::Anyone, None, None),
        ("{ keys { items { id } } }".to_owned(), Need::GlobalAdmin, None, None),
        ("{ auditLog { items { action } } }".to_owned(), Need::GlobalAdmin, None, None),
        (r#"mutation { createKey(input: {name: "", role: viewer, domains: ["alpha"]}) { key } }"#.to_owned(), Need::GlobalAdmin, None, Some("BAD_USER_INPUT")),
        (format!(r#"mutation {{ revokeKey(id: "{}") {{ id }} }}"#, "0".repeat(20)), Need::GlobalAdmin, None, Some("NOT_FOUND")),
    ]);
    cases
}

#[tokio::test]
async fn every_graphql_field_allows_and_denies_by_role_and_scope() {
    graphql_matrix(None).await;
}

#[tokio::test]
async fn every_graphql_field_allows_and_denies_by_role_and_scope_on_postgres() {
    let db = PostgresDatabase::create();
    graphql_matrix(Some(db.url())).await;
}

// Test code outside a #[test] function: a failed call is a failed test.
#[allow(clippy::unwrap_used)]
async fn graphql_matrix(database: Option<&str>) {
    let dir = TempDir::new("matrix-graphql");
    let s = matrix_server_on(&dir, database);
    seed(&s).await;
    let callers = callers(&s).await;
    let cases = graphql_cases();
    let mut wrong = Vec::new();
    for caller in &callers {
        let client = client_with_key(caller.credential.as_deref());
        for (query, need, domain, allowed_code) in &cases {
            let response = client
                .post(s.admin_url("/graphql"))
                .json(&json!({"query": query}))
                .send()
                .await
                .expect("send");
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            let code = answer["errors"][0]["extensions"]["code"]
                .as_str()
                .map(str::to_owned);
            let outcome = if caller.role.is_none() {
                (status == StatusCode::UNAUTHORIZED).then_some(())
            } else if caller.may(*need, *domain) {
                let fine = match allowed_code {
                    // Served: data, and no error at all.
                    None => answer["errors"].is_null() && !answer["data"].is_null(),
                    Some(_) => code.as_deref() == *allowed_code,
                };
                (status == StatusCode::OK && fine).then_some(())
            } else {
                (status == StatusCode::OK
                    && code.as_deref() == Some("FORBIDDEN")
                    && answer["data"]
                        .as_object()
                        .is_none_or(|d| d.values().all(Value::is_null)))
                .then_some(())
            };
            if outcome.is_none() {
                wrong.push(format!("{query} as {}: {status} {answer}", caller.label));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Nested listings stay within the caller's domains, and no error names other tenants.
    let viewer = client_with_key(callers[3].credential.as_deref());
    let answer: Value = viewer
        .post(s.admin_url("/graphql"))
        .json(&json!({"query": "{ domains { items { name policies { items { name } } } } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["data"]["domains"]["items"],
        json!([{"name": "alpha", "policies": {"items": [{"name": "p"}]}}]),
        "{answer}"
    );
    assert!(!answer.to_string().contains("beta"));

    // Derived from the schema itself: every query, mutation and subscription field has
    // cases, so a new field without any fails here.
    let schema: Value = s
        .client
        .post(s.admin_url("/graphql"))
        .json(&json!({"query": "{ __schema { queryType { fields { name } } mutationType { fields { name } } subscriptionType { fields { name } } } }"}))
        .send()
        .await
        .expect("introspection")
        .json()
        .await
        .expect("introspection json");
    let mut fields = Vec::new();
    for kind in ["queryType", "mutationType", "subscriptionType"] {
        for f in schema["data"]["__schema"][kind]["fields"]
            .as_array()
            .expect("fields")
        {
            fields.push(f["name"].as_str().expect("name").to_owned());
        }
    }
    assert!(fields.len() > 10, "{schema}");
    let uncovered: Vec<&String> = fields
        .iter()
        .filter(|f| {
            let used = |q: &str| {
                q.contains(&format!("{{ {f}("))
                    || q.contains(&format!("{{ {f} "))
                    || q.contains(&format!("{{ {f} {{"))
            };
            *f != "decisions" && !cases.iter().any(|(q, ..)| used(q))
        })
        .collect();
    assert!(
        uncovered.is_empty(),
        "GraphQL fields without authorization cases: {uncovered:?}"
    );

    // The subscription (the `decisions` field) for every caller over the WebSocket: served
    // for a domain the caller may read, refused for any other.
    // (Callers without a valid credential are never acknowledged: tested below.)
    for caller in callers.iter().filter(|c| c.role.is_some()) {
        let key = caller.credential.clone().unwrap_or_default();
        for domain in ["alpha", "beta"] {
            let first = subscribe_once(&s, &key, domain).await;
            let refused = !caller.may(Need::Read, Some(domain));
            assert_eq!(
                first.contains("FORBIDDEN"),
                refused,
                "{} subscribing to {domain}: {first}",
                caller.label
            );
        }
    }
}

/// Opens a subscription to `domain`'s decisions with `key` and returns the first message
/// after the acknowledgement (an error, or the first event once a check is made).
async fn subscribe_once(s: &TestServer, key: &str, domain: &str) -> String {
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = crate::helpers::graphql_ws(s, Some(key)).await;
    let ack = ws
        .next()
        .await
        .expect("test fixture")
        .expect("test fixture");
    assert!(
        ack.to_text()
            .expect("test fixture")
            .contains("connection_ack"),
        "{ack:?}"
    );
    let q = format!(r#"subscription {{ decisions(domain: "{domain}") {{ allowed }} }}"#);
    ws.send(Message::text(
        json!({"id": "1", "type": "subscribe", "payload": {"query": q}}).to_string(),
    ))
    .await
    .expect("test fixture");
    for _ in 0..50 {
        s.check_json(&body(domain, &[&[("user", "u")]], 1)).await;
        if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(100), ws.next()).await {
            return m.to_text().unwrap_or_default().to_owned();
        }
    }
    panic!("no message on the subscription to {domain}");
}

#[tokio::test]
async fn a_websocket_without_credentials_is_not_acknowledged() {
    let s = TestServer::start(None);
    let mut ws = crate::helpers::graphql_ws(&s, None).await;
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an answer");
    let text = match reply {
        Some(Ok(m)) => m.to_string(),
        other => format!("{other:?}"),
    };
    assert!(!text.contains("connection_ack"), "{text}");
}

#[tokio::test]
async fn a_revoked_key_stops_working_on_every_node() {
    let db = PostgresDatabase::create();
    let a = TestServer::serve(None, &["--database", db.url()]);
    let b = TestServer::serve(None, &["--database", db.url()]);
    let key = new_key(&a, "viewer", &["*"]).await;
    let on_b = client_with_key(Some(&key));
    let r = on_b
        .get(b.admin_url("/v1/admin/domains"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let id = key.split('_').nth(1).unwrap().to_owned();
    let r = a
        .client
        .delete(a.admin_url(&format!("/v1/admin/keys/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The event: the second node refuses the key (it learns of the revocation through the
    // policy database).
    let revoked = Instant::now();
    wait::until("the second node refuses the revoked key", || async {
        let status = on_b
            .get(b.admin_url("/v1/admin/domains"))
            .send()
            .await
            .unwrap()
            .status();
        (status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    println!(
        "revocation seen on the second node after {:?}",
        revoked.elapsed()
    );
    // A key cannot revoke itself (the last admin could lock everyone out).
    let own = a.admin_key.clone().unwrap();
    let own_id = own.split('_').nth(1).unwrap();
    let r = a
        .client
        .delete(a.admin_url(&format!("/v1/admin/keys/{own_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn an_expired_key_is_refused_and_audited() {
    let s = TestServer::start(None);
    let expires = humantime::format_rfc3339_millis(
        std::time::SystemTime::now() + Duration::from_millis(1500),
    )
    .to_string();
    let r = s.client.post(s.admin_url("/v1/admin/keys"))
        .json(&json!({"name": "short-lived", "role": "viewer", "domains": ["*"], "expires_at": expires}))
        .send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let key = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = client_with_key(Some(&key));
    assert_eq!(
        client
            .get(s.admin_url("/v1/admin/domains"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    wait::until("the key is refused once it has expired", || async {
        let status = client
            .get(s.admin_url("/v1/admin/domains"))
            .send()
            .await
            .unwrap()
            .status();
        (status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    let log: Value = s
        .client
        .get(s.admin_url("/v1/admin/audit?action=authenticate"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log["items"][0]["detail"], "expired", "{log}");
    assert_eq!(log["items"][0]["remote"], "127.0.0.1", "{log}");
}

#[tokio::test]
async fn brute_force_on_keys_gets_429_and_every_failure_is_audited() {
    let s = TestServer::serve(None, &["--admin-auth-failures-per-minute", "3"]);
    let guess = |i: usize| format!("tg_{}_{i:064x}", "c".repeat(20));
    for i in 0..3 {
        let r = client_with_key(Some(&guess(i)))
            .get(s.admin_url("/v1/admin/domains"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let r = client_with_key(Some(&guess(3)))
        .get(s.admin_url("/v1/admin/domains"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Locked out: even a valid key from this address waits.
    let r = s
        .client
        .get(s.admin_url("/v1/admin/domains"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // The audit log (read straight from the database) holds the three failures.
    let url = format!(
        "sqlite://{}/tollgate.db",
        s.data_dir.as_ref().unwrap().0.display()
    );
    let db = tollgate_control::Database::connect(&url).await.unwrap();
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT action, outcome, detail FROM audit_events WHERE action = 'authenticate'",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows.iter()
            .all(|(_, outcome, detail)| outcome == "unauthenticated" && detail == "unknown key"),
        "{rows:?}"
    );
}

#[tokio::test]
async fn mutations_are_audited_with_who_what_where_and_outcome() {
    let s = TestServer::start(None);
    seed(&s).await;
    let viewer = new_key(&s, "viewer", &["alpha"]).await;
    let r = client_with_key(Some(&viewer))
        .put(s.admin_url("/v1/admin/domains/alpha/policies/q"))
        .json(&spec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let log: Value = s
        .client
        .get(s.admin_url("/v1/admin/audit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = log["items"].as_array().unwrap();
    let denied = &items[0];
    assert_eq!(denied["action"], "policy.put");
    assert_eq!(denied["target"], "alpha/q");
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["via"], "rest");
    assert_eq!(denied["remote"], "127.0.0.1");
    assert!(denied["actor"].as_str().unwrap().starts_with("key:"));
    let created = items
        .iter()
        .find(|e| e["action"] == "key.create")
        .expect("key creation audited");
    assert_eq!(created["outcome"], "ok");
    assert!(
        items.iter().any(|e| e["action"] == "document.apply"
            && e["via"] == "apply"
            && e["outcome"] == "ok"),
        "{log}"
    );
    // GraphQL reads the same log.
    let answer: Value = s
        .client
        .post(s.admin_url("/graphql"))
        .json(
            &json!({"query": "{ auditLog(action: \"policy.put\") { items { outcome target } } }"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["data"]["auditLog"]["items"][0],
        json!({"outcome": "denied", "target": "alpha/q"}),
        "{answer}"
    );
}

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let dir = TempDir::new("secrets");
    let token_file = dir.write("data.token", "data-plane-token-0123456789");
    let mut s = {
        let secret = dir.write("jwt.secret", JWT_SECRET);
        TestServer::serve(
            None,
            &[
                "--jwt-hs256-secret-file",
                &secret.display().to_string(),
                "--jwt-issuer",
                "https://issuer.test",
                "--jwt-audience",
                "tollgate",
                "--data-auth",
                "token",
                "--data-token-file",
                &token_file.display().to_string(),
            ],
        )
    };
    let admin = s.admin_key.clone().unwrap();
    let created = new_key(&s, "editor", &["alpha"]).await;
    let jwt = token("admin", &["*"], 600);
    let bad = format!("tg_{}_{}", "d".repeat(20), "e".repeat(64));
    for credential in [
        &admin,
        &created,
        &jwt,
        &bad,
        &"Bearer-but-malformed".to_owned(),
    ] {
        let _ = client_with_key(Some(credential))
            .get(s.admin_url("/v1/admin/domains"))
            .send()
            .await
            .unwrap();
        let _ = client_with_key(Some(credential))
            .post(s.admin_url("/graphql"))
            .json(&json!({"query": "{ keys { items { id } } }"}))
            .send()
            .await
            .unwrap();
    }
    let _ = reqwest::Client::new()
        .post(s.url("/v1/check"))
        .header("authorization", "Bearer wrong-data-token-xxxxxxxx")
        .json(&body("api", &[&[("user", "u")]], 1))
        .send()
        .await
        .unwrap();
    let _ = reqwest::Client::new()
        .post(s.url("/v1/check"))
        .header("authorization", "Bearer data-plane-token-0123456789")
        .json(&body("api", &[&[("user", "u")]], 1))
        .send()
        .await
        .unwrap();
    s.terminate();
    let mut logs = s.logs.lock().unwrap().join("\n");
    let stderr = {
        let mut text = String::new();
        if let Some(mut e) = s.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut text);
        }
        text
    };
    logs.push_str(&stderr);
    assert!(
        logs.contains("admin authentication failed"),
        "the failures are logged"
    );
    let secret_of = |key: &str| key.rsplit('_').next().unwrap().to_owned();
    for secret in [
        secret_of(&admin),
        secret_of(&created),
        secret_of(&bad),
        jwt.clone(),
        jwt.split('.').nth(2).unwrap().to_owned(),
        JWT_SECRET.to_owned(),
        "data-plane-token-0123456789".to_owned(),
        "wrong-data-token-xxxxxxxx".to_owned(),
    ] {
        assert!(
            !logs.contains(&secret),
            "a secret reached the logs: {secret}"
        );
    }
}

#[tokio::test]
async fn an_unauthenticated_admin_listener_must_be_loopback_and_explicit() {
    // 192.0.2.1 is a documentation address: refused before anything is bound.
    let out = std::process::Command::new(crate::helpers::binary())
        .args([
            "serve",
            "--admin-auth",
            "none",
            "--admin-addr",
            "192.0.2.1:8082",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("admin_auth is none"),
        "{err}"
    );
    // Explicitly without authentication on loopback: every caller is an admin.
    let s = TestServer::serve(None, &["--admin-auth", "none"]);
    let r = reqwest::Client::new()
        .post(s.admin_url("/v1/admin/domains"))
        .json(&json!({"name": "open"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // By default, nothing without a key.
    let s = TestServer::start(None);
    let r = reqwest::Client::new()
        .post(s.admin_url("/v1/admin/domains"))
        .json(&json!({"name": "closed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn oversize_and_malformed_admin_input_gets_4xx() {
    let s = TestServer::start(None);
    let big = "x".repeat(2 * 1024 * 1024);
    // A connection of its own: the server may close it without reading the rest.
    let r = client_with_key(s.admin_key.as_deref())
        .post(s.admin_url("/v1/admin/domains"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    for bad in [
        "{",
        "[]",
        r#"{"name": 1}"#,
        r#"{"name": "a", "extra": true}"#,
        "\u{0}",
    ] {
        let r = s
            .client
            .post(s.admin_url("/v1/admin/domains"))
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = s
        .client
        .post(s.admin_url("/graphql"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let deep = format!(
        "{{ domains {{ items {} }} }}",
        "{ name ".repeat(40) + &"}".repeat(40)
    );
    let r = s
        .client
        .post(s.admin_url("/graphql"))
        .json(&json!({"query": deep}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success() || r.status().is_client_error());
    // Headers beyond the limit: 431, on the admin and the data-plane listeners alike.
    let huge_header = "h".repeat(200 * 1024);
    for url in [s.admin_url("/v1/admin/domains"), s.url("/healthz")] {
        let r = s
            .client
            .get(&url)
            .header("x-big", &huge_header)
            .send()
            .await;
        match r {
            Ok(r) => assert_eq!(
                r.status(),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "{url}"
            ),
            Err(e) => panic!("{url}: {e}"),
        }
    }
    // The server is still answering.
    assert_eq!(
        s.client
            .get(s.admin_url("/v1/admin/domains"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

/// Files of a TLS setup.
struct Pki {
    ca: TestCa,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    client_ca: std::path::PathBuf,
}

fn pki(dir: &TempDir) -> Pki {
    let ca = TestCa::new("Tollgate test CA");
    let server = ca.server("tollgate-1");
    Pki {
        cert: dir.write("server.pem", &server.cert_pem),
        key: dir.write("server.key", &server.key_pem),
        client_ca: dir.write("ca.pem", &ca.cert_pem),
        ca,
    }
}

fn https(s: &TestServer, url: &str) -> String {
    let _ = s;
    url.replacen("http://", "https://", 1)
}

fn tls_client(ca: &TestCa, identity: Option<&tollgate_testkit::Issued>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).expect("test fixture")
        ]);
    if let Some(id) = identity {
        builder = builder.identity(
            reqwest::Identity::from_pem(id.identity_pem().as_bytes()).expect("test fixture"),
        );
    }
    builder.build().expect("test fixture")
}

#[tokio::test]
async fn tls_and_mtls_on_every_listener() {
    let dir = TempDir::new("tls");
    let p = pki(&dir);
    let s = TestServer::serve(
        None,
        &[
            "--tls-cert",
            &p.cert.display().to_string(),
            "--tls-key",
            &p.key.display().to_string(),
            "--tls-client-ca",
            &p.client_ca.display().to_string(),
            "--data-auth",
            "mtls",
        ],
    );
    let client_id = p.ca.client("envoy-1");
    let check = body("api", &[&[("remote_address", "10.0.0.1")]], 1);

    // HTTP data plane: a client certificate is required.
    let with_cert = tls_client(&p.ca, Some(&client_id));
    let r = with_cert
        .post(https(&s, &s.url("/v1/check")))
        .json(&check)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.json::<Value>().await.unwrap()["allowed"]
            .as_bool()
            .unwrap()
    );
    let without = tls_client(&p.ca, None);
    assert!(
        without
            .post(https(&s, &s.url("/v1/check")))
            .json(&check)
            .send()
            .await
            .is_err(),
        "no client certificate, no connection"
    );
    let other_ca = TestCa::new("someone else");
    let stranger = tls_client(&p.ca, Some(&other_ca.client("intruder")));
    assert!(
        stranger
            .post(https(&s, &s.url("/v1/check")))
            .json(&check)
            .send()
            .await
            .is_err(),
        "a certificate from another CA is refused"
    );
    // Plain HTTP to a TLS listener gets nowhere.
    assert!(
        reqwest::Client::new()
            .post(s.url("/v1/check"))
            .json(&check)
            .send()
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
    );

    // gRPC (Envoy RLS) over mTLS.
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
    let endpoint =
        tonic::transport::Endpoint::from_shared(s.grpc.replacen("http://", "https://", 1))
            .unwrap()
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(&p.ca.cert_pem))
                    .identity(tonic::transport::Identity::from_pem(
                        &client_id.cert_pem,
                        &client_id.key_pem,
                    ))
                    .domain_name("localhost"),
            )
            .unwrap();
    let mut grpc = RateLimitServiceClient::new(endpoint.connect().await.unwrap());
    let answer = grpc
        .should_rate_limit(crate::grpc::rls_request(
            "api",
            &[&[("remote_address", "10.0.0.2")]],
            1,
        ))
        .await
        .unwrap();
    assert_eq!(answer.get_ref().overall_code, 1, "OK");
    let no_identity =
        tonic::transport::Endpoint::from_shared(s.grpc.replacen("http://", "https://", 1))
            .unwrap()
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(&p.ca.cert_pem))
                    .domain_name("localhost"),
            )
            .unwrap();
    let refused = match no_identity.connect().await {
        Err(_) => true,
        Ok(channel) => RateLimitServiceClient::new(channel)
            .should_rate_limit(crate::grpc::rls_request(
                "api",
                &[&[("remote_address", "10.0.0.2")]],
                1,
            ))
            .await
            .is_err(),
    };
    assert!(refused, "gRPC without a client certificate is refused");

    // Admin over TLS, authenticated by its key (no client certificate needed).
    let admin = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(p.ca.cert_pem.as_bytes()).unwrap()])
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", s.admin_key.clone().unwrap())
                    .parse()
                    .unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap();
    let r = admin
        .get(https(&s, &s.admin_url("/v1/admin/domains")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The CLI reaches it with --ca-file.
    let out = std::process::Command::new(crate::helpers::binary())
        .args([
            "policy",
            "list",
            "--admin",
            &https(&s, &s.admin),
            "--ca-file",
            &p.client_ca.display().to_string(),
        ])
        .env("TOLLGATE_ADMIN_KEY", s.admin_key.clone().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("api"));
}

/// The certificate a TLS server at `addr` presents.
async fn presented_certificate(addr: &str, ca_pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes())
                .expect("test fixture"),
        )
        .expect("test fixture");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("test fixture")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("test fixture");
    let tls = connector
        .connect("localhost".try_into().expect("test fixture"), tcp)
        .await
        .expect("test fixture");
    tls.get_ref().1.peer_certificates().expect("test fixture")[0].to_vec()
}

#[tokio::test]
async fn certificates_are_reloaded_without_a_restart() {
    let dir = TempDir::new("tls-reload");
    let p = pki(&dir);
    let s = TestServer::serve(
        None,
        &[
            "--tls-cert",
            &p.cert.display().to_string(),
            "--tls-key",
            &p.key.display().to_string(),
        ],
    );
    let admin_addr = s.admin.trim_start_matches("http://").to_owned();
    let http_addr = s.base.trim_start_matches("http://").to_owned();
    let before = presented_certificate(&admin_addr, &p.ca.cert_pem).await;
    let next = p.ca.server("tollgate-2");
    let next_der = rustls::pki_types::pem::PemObject::from_pem_slice(next.cert_pem.as_bytes())
        .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
        .unwrap();
    assert_ne!(before, next_der);
    // Replace both files at once (write aside, rename over), as secret managers do.
    std::fs::write(dir.0.join("server.pem.new"), &next.cert_pem).unwrap();
    std::fs::write(dir.0.join("server.key.new"), &next.key_pem).unwrap();
    std::fs::rename(dir.0.join("server.key.new"), &p.key).unwrap();
    std::fs::rename(dir.0.join("server.pem.new"), &p.cert).unwrap();
    let started = Instant::now();
    wait::until("both listeners present the new certificate", || async {
        let admin_now = presented_certificate(&admin_addr, &p.ca.cert_pem).await;
        let http_now = presented_certificate(&http_addr, &p.ca.cert_pem).await;
        (admin_now == next_der && http_now == next_der).then_some(())
    })
    .await;
    println!("new certificate served after {:?}", started.elapsed());
    // A broken replacement is refused and the working certificate stays.
    std::fs::write(&p.cert, "not a certificate").unwrap();
    s.log_line("do not load").await;
    assert_eq!(
        presented_certificate(&admin_addr, &p.ca.cert_pem).await,
        next_der
    );
}

#[tokio::test]
async fn a_data_plane_token_guards_checks_over_http_and_grpc() {
    let dir = TempDir::new("data-token");
    let file = dir.write("token", "shared-data-plane-secret-42\n");
    let s = TestServer::serve(
        None,
        &[
            "--data-auth",
            "token",
            "--data-token-file",
            &file.display().to_string(),
        ],
    );
    let check = body("api", &[&[("remote_address", "10.0.0.1")]], 1);
    let plain = reqwest::Client::new();
    let r = plain
        .post(s.url("/v1/check"))
        .json(&check)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = plain
        .post(s.url("/v1/check"))
        .header("authorization", "Bearer shared-data-plane-secret-4")
        .json(&check)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = plain
        .post(s.url("/v1/check"))
        .header("authorization", "Bearer shared-data-plane-secret-42")
        .json(&check)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The CLI sends the token from TOLLGATE_DATA_TOKEN.
    let cli = |token: Option<&str>| {
        let mut cmd = std::process::Command::new(crate::helpers::binary());
        cmd.args([
            "check",
            "--server",
            &s.base,
            "-D",
            "api",
            "-d",
            "remote_address=10.0.0.9",
        ]);
        if let Some(t) = token {
            cmd.env("TOLLGATE_DATA_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    assert_eq!(
        cli(Some("shared-data-plane-secret-42")).status.code(),
        Some(0)
    );
    let refused = cli(None);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Probes stay open.
    assert_eq!(
        plain.get(s.url("/healthz")).send().await.unwrap().status(),
        StatusCode::OK
    );

    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
    let mut grpc = RateLimitServiceClient::connect(s.grpc.clone())
        .await
        .unwrap();
    let err = grpc
        .should_rate_limit(crate::grpc::rls_request(
            "api",
            &[&[("remote_address", "10.0.0.3")]],
            1,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut request = crate::grpc::rls_request("api", &[&[("remote_address", "10.0.0.3")]], 1);
    request.metadata_mut().insert(
        "authorization",
        "Bearer shared-data-plane-secret-42".parse().unwrap(),
    );
    let answer = grpc.should_rate_limit(request).await.unwrap();
    assert_eq!(answer.get_ref().overall_code, 1);
    // Holds and Kuadrant's service are guarded the same way.
    use tollgate_proto::kuadrant::service::ratelimit::v1::rate_limit_service_client::RateLimitServiceClient as KuadrantClient;
    use tollgate_proto::tollgate::v1::holds_client::HoldsClient;
    let mut holds = HoldsClient::connect(s.grpc.clone()).await.unwrap();
    let err = holds
        .release(tollgate_proto::tollgate::v1::ReleaseRequest { id: "0".repeat(32) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    use tollgate_proto::tollgate::v1::checks_client::ChecksClient;
    let mut checks = ChecksClient::connect(s.grpc.clone()).await.unwrap();
    let request = crate::grpc::rls_request("api", &[&[("remote_address", "10.0.0.3")]], 1);
    let err = checks
        .check_stream(futures_util::stream::iter([request.into_inner()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut kuadrant = KuadrantClient::connect(s.grpc.clone()).await.unwrap();
    let err = kuadrant
        .report(crate::grpc::rls_request(
            "api",
            &[&[("remote_address", "10.0.0.3")]],
            1,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn cors_is_off_unless_origins_are_listed() {
    let preflight = |s: &TestServer, origin: &str| {
        reqwest::Client::new()
            .request(Method::OPTIONS, s.admin_url("/v1/admin/domains"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let closed = TestServer::start(None);
    let r = preflight(&closed, "https://console.test").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let open = TestServer::serve(None, &["--admin-cors-origin", "https://console.test"]);
    let r = preflight(&open, "https://console.test").await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://console.test"
    );
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    let r = preflight(&open, "https://evil.test").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // A listed origin still needs a key for the call itself.
    let r = reqwest::Client::new()
        .get(open.admin_url("/v1/admin/domains"))
        .header("origin", "https://console.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn oversize_and_malformed_grpc_requests_get_errors_and_the_listener_lives_on() {
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
    let s = TestServer::start(None);
    let mut grpc = RateLimitServiceClient::connect(s.grpc.clone())
        .await
        .unwrap();
    // 5 MB in one value: beyond the 4 MB message limit.
    let huge = "v".repeat(5 * 1024 * 1024);
    let err = grpc
        .should_rate_limit(crate::grpc::rls_request(
            "api",
            &[&[("remote_address", &huge)]],
            1,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange | tonic::Code::InvalidArgument
        ),
        "{err:?}"
    );
    // Malformed protobuf bytes are the `rls_request` fuzz target's daily bread.
    // Still serving.
    let answer = grpc
        .should_rate_limit(crate::grpc::rls_request(
            "api",
            &[&[("remote_address", "10.0.0.1")]],
            1,
        ))
        .await
        .unwrap();
    assert_eq!(answer.get_ref().overall_code, 1);
}
