//! The embedded layer in front of real axum routers: descriptors from the peer address, a
//! header, the path, a claim and a closure; denials as HTTP 429 and gRPC
//! `RESOURCE_EXHAUSTED`; counters shared through a real Redis.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tollgate_testkit::RedisServer;
use tollgate_tower::{Claims, FailMode, RateLimitLayer, Source, embedded};
use tower::ServiceExt;

const POLICIES: &str = "domain: app
descriptors:
  - key: api_key
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: path
    value: /slow
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 1}
";

fn app(layer: RateLimitLayer) -> Router {
    Router::new()
        .route("/items", get(|| async { "items" }))
        .route("/slow", get(|| async { "slow" }))
        .layer(layer)
}

fn limiter() -> Arc<tollgate_core::Limiter> {
    embedded::memory(embedded::policies([("app.yaml", POLICIES)]).expect("policies"))
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let response = router.clone().oneshot(request).await.expect("answer");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get_with(path: &str, header: Option<(&str, &str)>) -> Request<Body> {
    let mut b = Request::builder().uri(path);
    if let Some((k, v)) = header {
        b = b.header(k, v);
    }
    b.body(Body::empty()).expect("request")
}

#[tokio::test]
async fn a_header_limit_denies_the_fourth_request_with_429_and_retry_after() {
    let router = app(RateLimitLayer::embedded(limiter(), "app")
        .descriptor([("api_key", Source::header("x-api-key"))]));
    for i in 0..3 {
        let (status, _, body) = send(&router, get_with("/items", Some(("x-api-key", "k1")))).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "items"),
            "request {i}"
        );
    }
    let (status, headers, body) =
        send(&router, get_with("/items", Some(("x-api-key", "k1")))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(
        body.contains("app.api_key") || body.contains("over the limit"),
        "{body}"
    );
    // Another key has its own counter; a request without the header is not limited.
    let (status, _, _) = send(&router, get_with("/items", Some(("x-api-key", "k2")))).await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..5 {
        let (status, _, _) = send(&router, get_with("/items", None)).await;
        assert_eq!(status, StatusCode::OK, "no value, no descriptor, no limit");
    }
}

#[tokio::test]
async fn the_path_a_claim_and_a_closure_make_descriptors() {
    let router = app(RateLimitLayer::embedded(limiter(), "app")
        .descriptor([("path", Source::Path)])
        .descriptor([("user", Source::claim("sub"))])
        .descriptor([(
            "tenant",
            Source::from_fn(|r| r.uri.query()?.strip_prefix("tenant=").map(str::to_owned)),
        )]));
    assert_eq!(
        send(&router, get_with("/slow", None)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&router, get_with("/slow", None)).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "1 per hour on /slow"
    );
    assert_eq!(
        send(&router, get_with("/items", None)).await.0,
        StatusCode::OK,
        "other paths match no policy"
    );
    let with_claims = |sub: &str| {
        let mut request = get_with("/items", None);
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), sub.into());
        request.extensions_mut().insert(Claims(claims));
        request
    };
    for _ in 0..2 {
        assert_eq!(send(&router, with_claims("ann")).await.0, StatusCode::OK);
    }
    assert_eq!(
        send(&router, with_claims("ann")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(send(&router, with_claims("bob")).await.0, StatusCode::OK);
    assert_eq!(
        send(&router, get_with("/items?tenant=t1", None)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&router, get_with("/items?tenant=t1", None)).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn the_peer_address_comes_from_axums_connect_info_on_a_real_socket() {
    let router = app(RateLimitLayer::embedded(limiter(), "app")
        .descriptor([("remote_address", Source::PeerAddress)]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("serve");
    });
    let client = reqwest_like_get(addr);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(client("/items").await);
    }
    assert_eq!(statuses, [200, 200, 429], "2 per minute for 127.0.0.1");
    server.abort();
}

/// A minimal HTTP/1.1 GET over a fresh loopback connection: the status code.
fn reqwest_like_get(
    addr: SocketAddr,
) -> impl Fn(&'static str) -> std::pin::Pin<Box<dyn std::future::Future<Output = u16>>> {
    move |path| {
        Box::pin(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.expect("write");
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.expect("read");
            let text = String::from_utf8_lossy(&out);
            text.split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .expect("status line")
        })
    }
}

#[tokio::test]
async fn a_grpc_request_is_refused_with_resource_exhausted() {
    let router = app(RateLimitLayer::embedded(limiter(), "app")
        .descriptor([("tenant", Source::constant("grpc"))]));
    let grpc = || {
        Request::builder()
            .uri("/items")
            .header("content-type", "application/grpc")
            .body(Body::empty())
            .expect("request")
    };
    assert_eq!(send(&router, grpc()).await.0, StatusCode::OK);
    let (status, headers, body) = send(&router, grpc()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "gRPC carries its status in grpc-status"
    );
    assert_eq!(headers["grpc-status"], "8");
    assert_eq!(headers["content-type"], "application/grpc");
    assert!(body.is_empty());
}

#[tokio::test]
async fn a_refused_descriptor_fails_open_or_closed_as_configured() {
    // A value past the core's bound on entry size: no decision can be made.
    let long = "x".repeat(100_000);
    for (mode, expected) in [
        (FailMode::Open, StatusCode::OK),
        (FailMode::Closed, StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let value = long.clone();
        let router = app(RateLimitLayer::embedded(limiter(), "app")
            .descriptor([("user", Source::from_fn(move |_| Some(value.clone())))])
            .fail(mode));
        assert_eq!(
            send(&router, get_with("/items", None)).await.0,
            expected,
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn embedded_layers_over_one_redis_share_their_counters_exactly() {
    let redis = RedisServer::start();
    let mut routers = Vec::new();
    for _ in 0..2 {
        let policies = embedded::policies([("app.yaml", POLICIES)]).expect("policies");
        let limiter = embedded::redis(policies, &redis.url())
            .await
            .expect("redis");
        routers.push(app(RateLimitLayer::embedded(limiter, "app")
            .descriptor([("api_key", Source::header("x-api-key"))])));
    }
    let mut passed = 0;
    for i in 0..12 {
        let (status, _, _) = send(
            &routers[i % 2],
            get_with("/items", Some(("x-api-key", "shared"))),
        )
        .await;
        passed += usize::from(status == StatusCode::OK);
    }
    assert_eq!(passed, 3, "3 per minute across both services");
}
