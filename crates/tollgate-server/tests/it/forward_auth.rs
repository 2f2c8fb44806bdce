//! Forward auth: a real nginx (`nginx-light`) in front of a static site with
//! `examples/nginx/`, and the endpoint as Traefik and Envoy call it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tollgate_testkit::{free_port, wait};

use crate::helpers::{TempDir, TestServer};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/nginx")
        .join(name)
}

/// nginx serving `examples/nginx/` on `port`, asking Tollgate at `tollgate` (`HOST:PORT`).
struct Nginx {
    child: Child,
    _dir: TempDir,
}

impl Nginx {
    fn start(tollgate: &str, port: u16) -> Self {
        let binary = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is needed (Debian: apt-get install nginx-light; scripts/test installs it as root)");
        let dir = TempDir::new("nginx");
        let conf = std::fs::read_to_string(example("nginx.conf")).expect("example config");
        let conf = conf
            .replace("127.0.0.1:8080", tollgate)
            .replace("listen 127.0.0.1:8000", &format!("listen 127.0.0.1:{port}"));
        std::fs::write(dir.0.join("nginx.conf"), conf).expect("config");
        std::fs::create_dir_all(dir.0.join("html")).expect("html");
        std::fs::copy(example("html/index.html"), dir.0.join("html/index.html")).expect("page");
        // Workers may run as nobody: the site must be readable by anyone.
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir.0)
            .status();
        let child = Command::new(binary)
            .arg("-p")
            .arg(&dir.0)
            .args(["-c", "nginx.conf", "-g", "daemon off; pid nginx.pid;"])
            // Not the test's own output: nginx's workers would hold it open after the test.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        Self { child, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers and then itself (SIGKILL would leave the
        // workers running, orphaned, on the port).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn nginx_in_front_answers_the_sixth_request_of_five_per_minute_with_429() {
    let tollgate = TestServer::start(Some(&example("policies.yaml")));
    let addr = tollgate.base.trim_start_matches("http://").to_owned();
    let port = free_port();
    let _nginx = Nginx::start(&addr, port);
    let site = format!("http://127.0.0.1:{port}/");
    let client = reqwest::Client::new();
    wait::until("nginx listens", || async {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    })
    .await;
    for i in 1..=5 {
        let response = client.get(&site).send().await.expect("nginx answers");
        assert_eq!(response.status(), 200, "request {i} of 5");
        assert!(
            response.headers().contains_key("ratelimit"),
            "request {i}: {:?}",
            response.headers()
        );
        assert!(
            response
                .text()
                .await
                .expect("page")
                .contains("behind Tollgate")
        );
    }
    let sixth = client.get(&site).send().await.expect("nginx answers");
    assert_eq!(sixth.status(), 429);
    let retry: u64 = sixth
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=60).contains(&retry), "retry after {retry} s");
}

#[tokio::test]
async fn the_endpoint_maps_requests_as_traefik_and_envoy_send_them() {
    let dir = TempDir::new("forward-auth");
    let policies = dir.write(
        "site.yaml",
        "domain: site
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: path
    value: /login
    descriptors:
      - key: method
        value: POST
        rate_limit: {unit: minute, requests_per_unit: 1}
  - key: x-api-key
    rate_limit: {unit: minute, requests_per_unit: 1}
",
    );
    let tollgate = TestServer::start(Some(&policies));
    let client = reqwest::Client::new();
    let url = |rest: &str| tollgate.url(&format!("/v1/forward-auth/site{rest}"));
    // Traefik: the original request in X-Forwarded-*; the client behind the trusted
    // loopback proxy is the right-most forwarded address.
    let traefik = |client_ip: &'static str| {
        client
            .get(url(""))
            .header("x-forwarded-for", format!("203.0.113.1, {client_ip}"))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", "/index.html?x=1")
    };
    for _ in 0..2 {
        assert_eq!(traefik("198.51.100.7").send().await.unwrap().status(), 200);
    }
    let denied = traefik("198.51.100.7").send().await.unwrap();
    assert_eq!(denied.status(), 429);
    assert!(denied.headers().contains_key("retry-after"));
    // Another client has its own counter.
    assert_eq!(traefik("198.51.100.8").send().await.unwrap().status(), 200);

    // Envoy's ext_authz: the original path after the prefix, the mapping in a header.
    let envoy = || {
        client
            .post(url("/login?next=/home"))
            .header("x-tollgate-descriptor", "path,method")
    };
    assert_eq!(envoy().send().await.unwrap().status(), 200);
    assert_eq!(
        envoy().send().await.unwrap().status(),
        429,
        "1 POST /login a minute"
    );
    // A header descriptor: left out when the header is absent (then nothing limits).
    let keyed = |key: Option<&'static str>| {
        let mut r = client.get(url("?descriptor=header:x-api-key"));
        if let Some(key) = key {
            r = r.header("x-api-key", key);
        }
        r
    };
    assert_eq!(keyed(Some("k1")).send().await.unwrap().status(), 200);
    assert_eq!(keyed(Some("k1")).send().await.unwrap().status(), 429);
    for _ in 0..3 {
        assert_eq!(keyed(None).send().await.unwrap().status(), 200);
    }
    // A bad mapping is a problem naming it.
    let bad = client
        .get(url("?descriptor=path,cookie"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");
    let text = bad.text().await.unwrap();
    assert!(text.contains("unknown entry 'cookie'"), "{text}");
    // nginx's variant: 403 instead of 429.
    let nginx = client
        .get(url("?deny_status=403"))
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(nginx.status(), 403);
}
