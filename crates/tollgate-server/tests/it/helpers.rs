//! Spawning the real binary on a free port and talking to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tollgate-it-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `tollgate serve`, killed on drop.
pub struct TestServer {
    pub child: Child,
    pub base: String,
    /// `http://` address of the gRPC listener.
    pub grpc: String,
    /// `http://` address of the admin listener.
    pub admin: String,
    /// `HOST:PORT` of the RESP listener, when `--resp-addr` turned it on.
    pub resp: Option<String>,
    /// The data directory given to `serve` (its default SQLite policy database lives
    /// there), unless the test chose a database itself.
    pub data_dir: Option<TempDir>,
    pub logs: Arc<Mutex<Vec<String>>>,
    /// Sends the admin key (when there is one) with every request.
    pub client: reqwest::Client,
    /// An admin key of every domain, made with `tollgate keys create` before the server
    /// started (none when the test chose `--admin-auth`).
    pub admin_key: Option<String>,
}

/// Runs `tollgate keys create` on the database `db_args` name and returns the key.
pub fn create_key(db_args: &[String], env: &[(&str, &str)], create: &[&str]) -> String {
    let mut cmd = Command::new(binary());
    cmd.arg("keys").args(db_args).arg("create").args(create);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run tollgate keys create");
    assert!(
        out.status.success(),
        "keys create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 key")
        .trim()
        .to_owned()
}

/// The database flags among `args` (`--database X`, `--data-dir X`).
fn database_flags(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for pair in args.windows(2) {
        if pair[0] == "--database" || pair[0] == "--data-dir" {
            out.extend(pair.iter().cloned());
        }
    }
    out
}

/// A client that sends `key` as its bearer credential.
pub fn client_with_key(key: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse().expect("header value"),
        );
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

impl TestServer {
    /// Starts `tollgate serve` with `policies` (or the built-in examples) on a free port.
    pub fn start(policies: Option<&Path>) -> Self {
        Self::serve(policies, &[])
    }

    /// Like [`TestServer::start`], with more `serve` flags.
    pub fn serve(policies: Option<&Path>, flags: &[&str]) -> Self {
        let mut args = vec![
            "serve".to_owned(),
            "--http-addr".into(),
            "127.0.0.1:0".into(),
        ];
        if let Some(p) = policies {
            args.push("--policies".into());
            args.push(p.display().to_string());
        }
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        Self::start_with(&args, &[])
    }

    /// Starts the binary with `args` and extra environment, waiting for its "listening" line.
    /// `serve` gets a free gRPC port unless `args` choose one.
    pub fn start_with(args: &[String], env: &[(&str, &str)]) -> Self {
        let mut args = args.to_vec();
        let serve = args.first().is_some_and(|a| a == "serve");
        let given = |args: &[String], flag: &str| args.iter().any(|a| a == flag);
        if serve && !given(&args, "--grpc-addr") {
            args.extend(["--grpc-addr".into(), "127.0.0.1:0".into()]);
        }
        if serve && !given(&args, "--admin-addr") {
            args.extend(["--admin-addr".into(), "127.0.0.1:0".into()]);
        }
        // Each server gets a policy database of its own unless the test shares one.
        let mut data_dir = None;
        if serve
            && !given(&args, "--database")
            && !given(&args, "--data-dir")
            && !env
                .iter()
                .any(|(k, _)| *k == "TOLLGATE_DATABASE" || *k == "TOLLGATE_DATA_DIR")
        {
            let dir = TempDir::new("data");
            args.extend(["--data-dir".into(), dir.0.display().to_string()]);
            data_dir = Some(dir);
        }

        let mut cmd = Command::new(binary());
        cmd.args(&args)
            .env("TOLLGATE_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tollgate");
        let stdout = child.stdout.take().expect("stdout");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                {
                    let addr = |field: &str| v[field].as_str().unwrap_or_default().to_owned();
                    let _ = tx.send((
                        addr("http_addr"),
                        addr("grpc_addr"),
                        addr("admin_addr"),
                        addr("resp_addr"),
                    ));
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let (addr, grpc, admin, resp) = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addrs) => addrs,
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "tollgate did not start listening; stderr:\n{}\nlogs:\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    logs.lock().expect("log lock").join("\n")
                );
            }
        };
        for a in [&addr, &grpc, &admin] {
            assert!(a.starts_with("127.0.0.1:"), "listens on loopback only: {a}");
        }
        // Made once the server has created (or migrated) its database.
        let admin_key = (serve && !given(&args, "--admin-auth")).then(|| {
            create_key(
                &database_flags(&args),
                env,
                &["--role", "admin", "--name", "tests"],
            )
        });
        Self {
            child,
            base: format!("http://{addr}"),
            grpc: format!("http://{grpc}"),
            admin: format!("http://{admin}"),
            resp: (!resp.is_empty()).then_some(resp),
            data_dir,
            logs,
            client: client_with_key(admin_key.as_deref()),
            admin_key,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("{}{path}", self.admin)
    }

    /// POSTs a JSON body to /v1/check.
    pub async fn check(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/check"))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Waits (up to 10 s) for a log line containing `text` and returns it.
    pub async fn log_line(&self, text: &str) -> String {
        for _ in 0..200 {
            let found = self
                .logs
                .lock()
                .expect("log lock")
                .iter()
                .find(|l| l.contains(text))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no log line with {text:?}");
    }

    /// POSTs a JSON body to /v1/check and decodes the JSON answer.
    pub async fn check_json(&self, body: &Value) -> Value {
        self.check(body).await.json().await.expect("a JSON answer")
    }

    /// GETs `path` from the HTTP listener.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .text()
            .await
            .expect("metrics text")
    }

    /// POSTs `body` to /v1/check as-is, with the given content type.
    pub async fn post_raw(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/v1/check"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request")
    }

    /// Sends SIGTERM and waits for the process; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        for _ in 0..200 {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tollgate did not stop within 10 s of SIGTERM");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request` and decodes its JSON answer, whatever the status.
pub async fn send_json(request: reqwest::RequestBuilder) -> Value {
    request
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON")
}

/// The value of one series (name with labels) in Prometheus text.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
}

/// A check body with one descriptor per `(key, value)` list.
pub fn body(domain: &str, descriptors: &[&[(&str, &str)]], hits: u64) -> Value {
    let descriptors: Vec<Value> = descriptors
        .iter()
        .map(|d| {
            let entries: Vec<Value> = d
                .iter()
                .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
                .collect();
            serde_json::json!({ "entries": entries })
        })
        .collect();
    serde_json::json!({"domain": domain, "descriptors": descriptors, "hits": hits})
}

/// Policies used by most tests.
pub const POLICIES: &str = "domain: shop
descriptors:
  - key: user
    rate_limit: {name: per_user, unit: hour, requests_per_unit: 3}
  - key: plan
    rate_limit: {name: per_plan, unit: day, requests_per_unit: 100}
  - key: ip
    rate_limit: {name: per_ip, unit: second, requests_per_unit: 5, algorithm: gcra, burst: 2}
  - key: internal
    rate_limit: {unlimited: true}
  - key: trial
    shadow_mode: true
    rate_limit: {name: trial, unit: hour, requests_per_unit: 1}
";

/// A WebSocket to the admin listener's GraphQL subscriptions.
pub type GraphqlWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/graphql/ws` (graphql-transport-ws) and sends `connection_init`, with `key` in
/// its payload as browsers must (they cannot set headers on a WebSocket).
pub async fn graphql_ws(s: &TestServer, key: Option<&str>) -> GraphqlWs {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let url = s.admin_url("/graphql/ws").replacen("http://", "ws://", 1);
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            url.as_str(),
        )
        .expect("websocket request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header value"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket");
    let init = match key {
        Some(key) => {
            serde_json::json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {key}")}})
        }
        None => serde_json::json!({"type": "connection_init"}),
    };
    ws.send(Message::text(init.to_string()))
        .await
        .expect("connection_init");
    ws
}
