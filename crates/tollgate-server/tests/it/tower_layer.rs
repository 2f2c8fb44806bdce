//! `tollgate-tower` against the real server: the layer deciding remotely over HTTP and
//! over gRPC (sharing counters with direct checks), failing open or closed when the server
//! is gone, and in front of a tonic service.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use tollgate_client::{CheckClient, GrpcCheckClient};
use tollgate_tower::{FailMode, RateLimitLayer, Source, embedded};
use tower::ServiceExt;

use crate::helpers::{TempDir, TestServer, body};

const POLICIES: &str = "domain: svc
descriptors:
  - key: api_key
    rate_limit: {unit: minute, requests_per_unit: 3}
";

fn app(layer: RateLimitLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer.descriptor([("api_key", Source::header("x-api-key"))]))
}

async fn status(router: &Router, key: &str) -> StatusCode {
    let request = Request::builder()
        .uri("/")
        .header("x-api-key", key)
        .body(Body::empty())
        .expect("request");
    router
        .clone()
        .oneshot(request)
        .await
        .expect("answer")
        .status()
}

#[tokio::test]
async fn remote_layers_over_http_and_grpc_share_the_servers_counters() {
    let dir = TempDir::new("tower-remote");
    let server = TestServer::start(Some(&dir.write("svc.yaml", POLICIES)));
    let http = app(RateLimitLayer::remote_http(
        CheckClient::new(&server.base, None, None).expect("client"),
        "svc",
    )
    .timeout(Duration::from_secs(5)));
    let grpc = app(RateLimitLayer::remote_grpc(
        GrpcCheckClient::connect(&server.grpc, None)
            .await
            .expect("gRPC"),
        "svc",
    )
    .timeout(Duration::from_secs(5)));
    // One counter: a direct check, the HTTP layer, the gRPC layer, then the limit.
    let direct = server.check(&body("svc", &[&[("api_key", "k")]], 1)).await;
    assert_eq!(direct.status(), 200);
    assert_eq!(status(&http, "k").await, StatusCode::OK);
    assert_eq!(status(&grpc, "k").await, StatusCode::OK);
    assert_eq!(status(&http, "k").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(status(&grpc, "k").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(status(&grpc, "other").await, StatusCode::OK);
}

#[tokio::test]
async fn a_layer_whose_server_is_gone_fails_open_or_closed() {
    // A port nobody listens on.
    let gone = format!("http://127.0.0.1:{}", tollgate_testkit::free_port());
    for (mode, expected) in [
        (FailMode::Open, StatusCode::OK),
        (FailMode::Closed, StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let client = CheckClient::new(&gone, None, None).expect("client");
        let router = app(RateLimitLayer::remote_http(client, "svc").fail(mode));
        assert_eq!(status(&router, "k").await, expected, "{mode:?}");
    }
}

#[tokio::test]
async fn an_embedded_layer_on_redis_shares_counters_with_tollgate_serve() {
    let redis = tollgate_testkit::RedisServer::start();
    let dir = TempDir::new("tower-redis");
    let server = TestServer::serve(
        Some(&dir.write("svc.yaml", POLICIES)),
        &["--store", &redis.url(), "--store-timeout", "2s"],
    );
    let policies = embedded::policies([("svc.yaml", POLICIES)]).expect("policies");
    let limiter = embedded::redis(policies, &redis.url())
        .await
        .expect("redis");
    let router = app(RateLimitLayer::embedded(limiter, "svc"));
    assert_eq!(status(&router, "shared").await, StatusCode::OK);
    assert_eq!(status(&router, "shared").await, StatusCode::OK);
    let v: serde_json::Value = server
        .check(&body("svc", &[&[("api_key", "shared")]], 1))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(v["allowed"], true, "{v}");
    assert_eq!(
        v["statuses"][0]["remaining"], 0,
        "the layer's two were counted: {v}"
    );
    assert_eq!(
        status(&router, "shared").await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn a_tonic_server_behind_the_layer_answers_resource_exhausted() {
    use tonic_health::pb::health_client::HealthClient;
    let policies = embedded::policies([("svc.yaml", POLICIES)]).expect("policies");
    let layer = RateLimitLayer::embedded(embedded::memory(policies), "svc")
        .descriptor([("api_key", Source::constant("grpc-caller"))]);
    let (_, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming(tokio_stream_of(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = HealthClient::new(channel);
    let mut codes = Vec::new();
    for _ in 0..4 {
        let answer = client
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await;
        codes.push(answer.err().map(|s| s.code()));
    }
    assert_eq!(
        codes,
        [None, None, None, Some(tonic::Code::ResourceExhausted)],
        "3 per minute, then RESOURCE_EXHAUSTED"
    );
    server.abort();
}

/// A listener as the stream of connections tonic serves.
fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(s, _)| s);
        Some((accepted, listener))
    })
}
