//! The Envoy RLS v3 gRPC service over the wire, with a generated client, on policies in
//! envoyproxy/ratelimit's format.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
    Entry, RateLimitOverride,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use envoy_types::pb::google::protobuf::value::Kind;
use tonic::Code as GrpcCode;
use tonic::transport::Channel;

use crate::helpers::{TempDir, TestServer, body, metric};

const ENVOY_CONFIG: &str = "domain: edge
descriptors:
  - key: remote_address
    rate_limit:
      unit: hour
      requests_per_unit: 2
  - key: remote_address
    value: 50.0.0.5
    rate_limit:
      unit: second
      requests_per_unit: 0
  - key: path
    value: /health
    rate_limit:
      unlimited: true
  - key: path
    value: /beta
    shadow_mode: true
    rate_limit:
      unit: hour
      requests_per_unit: 1
";

async fn start() -> (TestServer, TempDir, RateLimitServiceClient<Channel>) {
    let dir = TempDir::new("grpc");
    let file = dir.write("edge.yaml", ENVOY_CONFIG);
    let s = TestServer::start(Some(&file));
    let client = RateLimitServiceClient::connect(s.grpc.clone())
        .await
        .expect("connect");
    (s, dir, client)
}

fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        ..Default::default()
    }
}

fn request(domain: &str, descriptors: Vec<RateLimitDescriptor>, hits: u32) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors,
        hits_addend: hits,
    }
}

/// A `ShouldRateLimit` call with one descriptor per entry list.
pub fn rls_request(
    domain: &str,
    descriptors: &[&[(&str, &str)]],
    hits: u32,
) -> tonic::Request<RateLimitRequest> {
    tonic::Request::new(request(
        domain,
        descriptors.iter().map(|d| descriptor(d)).collect(),
        hits,
    ))
}

async fn ask(
    client: &mut RateLimitServiceClient<Channel>,
    r: RateLimitRequest,
) -> RateLimitResponse {
    client
        .should_rate_limit(r)
        .await
        .expect("ShouldRateLimit")
        .into_inner()
}

#[tokio::test]
async fn allows_then_denies_with_envoy_fields() {
    let (_s, _dir, mut c) = start().await;
    for remaining in [1, 0] {
        let r = ask(
            &mut c,
            request(
                "edge",
                vec![descriptor(&[("remote_address", "10.0.0.1")])],
                0,
            ),
        )
        .await;
        assert_eq!(r.overall_code, Code::Ok as i32);
        let status = &r.statuses[0];
        assert_eq!(status.code, Code::Ok as i32);
        assert_eq!(status.limit_remaining, remaining);
        let limit = status.current_limit.as_ref().expect("current_limit");
        assert_eq!(limit.name, "edge.remote_address");
        assert_eq!(limit.requests_per_unit, 2);
        assert_eq!(limit.unit, Unit::Hour as i32);
        let reset = status
            .duration_until_reset
            .as_ref()
            .expect("duration_until_reset");
        assert!(reset.seconds <= 3600 && (reset.seconds > 0 || reset.nanos > 0));
    }
    let r = ask(
        &mut c,
        request(
            "edge",
            vec![descriptor(&[("remote_address", "10.0.0.1")])],
            0,
        ),
    )
    .await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].limit_remaining, 0);
}

#[tokio::test]
async fn statuses_follow_request_order_for_every_kind_of_descriptor() {
    let (_s, _dir, mut c) = start().await;
    let r = ask(
        &mut c,
        request(
            "edge",
            vec![
                descriptor(&[("path", "/health")]),
                descriptor(&[("nothing", "matches")]),
                descriptor(&[("remote_address", "50.0.0.5")]),
                descriptor(&[("path", "/beta")]),
            ],
            1,
        ),
    )
    .await;
    assert_eq!(r.statuses.len(), 4);
    let unlimited = &r.statuses[0];
    assert_eq!(
        (unlimited.code, unlimited.limit_remaining),
        (Code::Ok as i32, u32::MAX)
    );
    let unmatched = &r.statuses[1];
    assert_eq!(unmatched.code, Code::Ok as i32);
    assert!(unmatched.current_limit.is_none());
    let blocked = &r.statuses[2];
    assert_eq!(
        blocked.code,
        Code::OverLimit as i32,
        "requests_per_unit: 0 always denies"
    );
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    // Shadow mode: over its limit after one request, still OK.
    for _ in 0..3 {
        let r = ask(
            &mut c,
            request("edge", vec![descriptor(&[("path", "/beta")])], 1),
        )
        .await;
        assert_eq!(r.overall_code, Code::Ok as i32);
        assert_eq!(r.statuses[0].code, Code::Ok as i32);
    }
}

#[tokio::test]
async fn hits_addend_and_overrides() {
    let (_s, _dir, mut c) = start().await;
    let r = ask(
        &mut c,
        request("edge", vec![descriptor(&[("remote_address", "h")])], 2),
    )
    .await;
    assert_eq!(r.statuses[0].limit_remaining, 0, "hits_addend 2 of 2");
    let mut own = descriptor(&[("remote_address", "h2")]);
    own.hits_addend = Some(UInt64Value { value: 3 });
    let r = ask(&mut c, request("edge", vec![own], 1)).await;
    assert_eq!(
        r.overall_code,
        Code::OverLimit as i32,
        "the descriptor's own hits_addend wins"
    );
    let mut custom = descriptor(&[("anything", "x")]);
    custom.limit = Some(RateLimitOverride {
        requests_per_unit: 1,
        unit: Unit::Hour as i32,
    });
    let r = ask(&mut c, request("edge", vec![custom.clone()], 0)).await;
    let limit = r.statuses[0]
        .current_limit
        .as_ref()
        .expect("override limit");
    assert_eq!(
        (limit.requests_per_unit, limit.unit),
        (1, Unit::Hour as i32)
    );
    let r = ask(&mut c, request("edge", vec![custom], 0)).await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
}

#[tokio::test]
async fn bad_requests_are_invalid_argument_with_the_field_named() {
    let (_s, _dir, mut c) = start().await;
    let mut negative = descriptor(&[("remote_address", "n")]);
    negative.is_negative_hits = true;
    let mut bad_unit = descriptor(&[("remote_address", "u")]);
    bad_unit.limit = Some(RateLimitOverride {
        requests_per_unit: 1,
        unit: 42,
    });
    let cases = [
        (
            request("", vec![descriptor(&[("remote_address", "1")])], 1),
            "domain must not be empty",
        ),
        (request("edge", vec![], 1), "descriptors must not be empty"),
        (
            request("edge", vec![descriptor(&[("", "x")])], 1),
            "descriptors[0].entries[0].key must not be empty",
        ),
        (
            request("edge", vec![descriptor(&[])], 1),
            "descriptors[0].entries must not be empty",
        ),
        (
            request("edge", vec![negative], 1),
            "descriptors[0].is_negative_hits",
        ),
        (
            request("edge", vec![bad_unit], 1),
            "descriptors[0].limit.unit",
        ),
    ];
    for (r, expected) in cases {
        let status = c.should_rate_limit(r).await.expect_err("must be refused");
        assert_eq!(status.code(), GrpcCode::InvalidArgument);
        assert!(status.message().contains(expected), "{}", status.message());
    }
}

#[tokio::test]
async fn grpc_and_http_share_counters_and_health_is_served() {
    let (s, _dir, mut c) = start().await;
    let r = ask(
        &mut c,
        request("edge", vec![descriptor(&[("remote_address", "shared")])], 1),
    )
    .await;
    assert_eq!(r.statuses[0].limit_remaining, 1);
    let v = s
        .check_json(&body("edge", &[&[("remote_address", "shared")]], 1))
        .await;
    assert_eq!(
        v["statuses"][0]["remaining"], 0,
        "HTTP saw the gRPC decision"
    );
    let metrics = s.metrics().await;
    let ok_calls = "tollgate_grpc_requests_total{method=\"ShouldRateLimit\",code=\"ok\"} 1";
    assert!(metrics.contains(ok_calls), "{metrics}");
    let decisions = "tollgate_decisions_total{domain=\"edge\",result=\"allowed\"} 2";
    assert!(metrics.contains(decisions), "{metrics}");

    let channel = Channel::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in [
        "",
        "envoy.service.ratelimit.v3.RateLimitService",
        "tollgate.v1.Holds",
        "tollgate.v1.Checks",
        "kuadrant.service.ratelimit.v1.RateLimitService",
    ] {
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            reply.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
}

#[tokio::test]
async fn rate_limit_headers_for_envoy_on_request() {
    let dir = TempDir::new("grpc-headers");
    let file = dir.write("edge.yaml", ENVOY_CONFIG);
    let start_with_headers =
        |kind: &str| TestServer::serve(Some(&file), &["--grpc-response-headers", kind]);
    let headers = |r: &RateLimitResponse| -> Vec<(String, String)> {
        r.response_headers_to_add
            .iter()
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect()
    };

    let s = start_with_headers("draft03");
    let mut c = RateLimitServiceClient::connect(s.grpc.clone())
        .await
        .unwrap();
    let r = ask(
        &mut c,
        request("edge", vec![descriptor(&[("remote_address", "hd")])], 1),
    )
    .await;
    // As envoyproxy/ratelimit's LIMIT_RESPONSE_HEADERS_ENABLED: the limit's requests per
    // unit, what is left, and the seconds to the end of the unit (an hour here).
    let h = headers(&r);
    assert_eq!(h[0], ("RateLimit-Limit".into(), "2".into()));
    assert_eq!(h[1], ("RateLimit-Remaining".into(), "1".into()));
    assert_eq!(h[2].0, "RateLimit-Reset");
    let reset: u64 = h[2].1.parse().expect("whole seconds");
    assert!((1..=3600).contains(&reset), "{reset}");
    // With two limited descriptors, the one over its limit is described, and an unlimited
    // or unmatched descriptor never is.
    let over = request(
        "edge",
        vec![
            descriptor(&[("remote_address", "hd")]),
            descriptor(&[("remote_address", "50.0.0.5")]),
            descriptor(&[("path", "/health")]),
            descriptor(&[("nothing", "x")]),
        ],
        1,
    );
    let r = ask(&mut c, over).await;
    let h = headers(&r);
    assert_eq!(h[0], ("RateLimit-Limit".into(), "0".into()), "{h:?}");
    assert_eq!(h[1], ("RateLimit-Remaining".into(), "0".into()));
    assert_eq!(
        h[2],
        ("RateLimit-Reset".into(), "1".into()),
        "a per-second limit"
    );

    // Names of one's own, as upstream's LIMIT_*_HEADER.
    let s = TestServer::serve(
        Some(&file),
        &[
            "--grpc-response-headers",
            "draft03",
            "--grpc-limit-header",
            "A-Ratelimit-Limit",
            "--grpc-remaining-header",
            "A-Ratelimit-Remaining",
            "--grpc-reset-header",
            "A-Ratelimit-Reset",
        ],
    );
    let mut custom = RateLimitServiceClient::connect(s.grpc.clone())
        .await
        .unwrap();
    let r = ask(
        &mut custom,
        request("edge", vec![descriptor(&[("remote_address", "named")])], 1),
    )
    .await;
    let names: Vec<String> = headers(&r).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        names,
        [
            "A-Ratelimit-Limit",
            "A-Ratelimit-Remaining",
            "A-Ratelimit-Reset"
        ]
    );

    let s = start_with_headers("draft11");
    let mut c = RateLimitServiceClient::connect(s.grpc.clone())
        .await
        .unwrap();
    let r = ask(
        &mut c,
        request("edge", vec![descriptor(&[("remote_address", "hd")])], 1),
    )
    .await;
    let h = headers(&r);
    assert_eq!(
        h[0],
        (
            "RateLimit-Policy".into(),
            "\"edge.remote_address\";q=2;w=3600".into()
        )
    );
    assert!(
        h[1].1.starts_with("\"edge.remote_address\";r=1;t="),
        "{:?}",
        h[1]
    );

    // Off by default.
    let (_s, _dir2, mut c) = start().await;
    let r = ask(
        &mut c,
        request("edge", vec![descriptor(&[("remote_address", "hd")])], 1),
    )
    .await;
    assert!(r.response_headers_to_add.is_empty());
}

#[tokio::test]
async fn server_reflection_describes_every_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let (s, _dir, _c) = start().await;
    let channel = Channel::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let ask = |message: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    };
    let requests = tokio_stream_iter(vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "envoy.service.ratelimit.v3.RateLimitService".into(),
        )),
    ]);
    let mut responses = client
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();
    let listed = responses
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap();
    let MessageResponse::ListServicesResponse(list) = listed else {
        panic!("{listed:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "envoy.service.ratelimit.v3.RateLimitService",
        "tollgate.v1.Holds",
        "tollgate.v1.Checks",
        "kuadrant.service.ratelimit.v1.RateLimitService",
    ] {
        assert!(names.contains(&service.to_owned()), "{service}: {names:?}");
    }
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    let file = responses
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap();
    let MessageResponse::FileDescriptorResponse(files) = file else {
        panic!("{file:?}")
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

/// A request stream made of `items`.
fn tokio_stream_iter<T: Send + 'static>(
    items: Vec<T>,
) -> impl tonic::codegen::tokio_stream::Stream<Item = T> {
    tonic::codegen::tokio_stream::iter(items)
}

#[tokio::test]
async fn connections_are_recycled_at_their_maximum_age_without_failing_calls() {
    let dir = TempDir::new("grpc-age");
    let file = dir.write("edge.yaml", ENVOY_CONFIG);
    let s = TestServer::serve(
        Some(&file),
        &[
            "--grpc-max-connection-age",
            "200ms",
            "--grpc-max-connection-age-grace",
            "1s",
        ],
    );
    let mut c = RateLimitServiceClient::connect(s.grpc.clone())
        .await
        .unwrap();
    // Calls spread over about a second, on one client channel: every one succeeds while
    // the server closes the connection under it a few times. A call written in the instant
    // between the server's final GOAWAY and the client reading it never reaches the
    // service; gRPC clients retry those transparently, and so does this one (once).
    for i in 0..12 {
        let call = || request("edge", vec![descriptor(&[("path", "/health")])], 1);
        let mut r = c.should_rate_limit(call()).await;
        if let Err(status) = &r
            && status.code() == tonic::Code::Cancelled
            && status.message().contains("canceled")
        {
            r = c.should_rate_limit(call()).await;
        }
        assert!(r.is_ok(), "call {i}: {r:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let metrics = s.metrics().await;
    // No call was served twice: a retried one had never reached the service.
    assert_eq!(
        metric(
            &metrics,
            "tollgate_grpc_requests_total{method=\"ShouldRateLimit\",code=\"ok\"}"
        ),
        12.0
    );
    let connections = metric(&metrics, "tollgate_connections_total{listener=\"grpc\"}");
    assert!(
        connections >= 2.0,
        "the client had to reconnect: {connections} connection(s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_redis_share_the_limit_over_grpc() {
    let redis = tollgate_testkit::RedisServer::start();
    let dir = TempDir::new("grpc-redis");
    let file = dir.write(
        "shared.yaml",
        "domain: shared\ndescriptors:\n  - key: user\n    rate_limit: {unit: day, requests_per_unit: 10, algorithm: gcra}\n",
    );
    let nodes: Vec<TestServer> = (0..2)
        // A generous store deadline: a missed one would be answered by on_store_error.
        .map(|_| {
            TestServer::serve(
                Some(&file),
                &["--store", &redis.url(), "--store-timeout", "2s"],
            )
        })
        .collect();
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(
            RateLimitServiceClient::connect(node.grpc.clone())
                .await
                .expect("connect"),
        );
    }
    let (mut ok, mut over) = (0, 0);
    for i in 0..30 {
        let r = ask(
            &mut clients[i % 2],
            request("shared", vec![descriptor(&[("user", "u1")])], 1),
        )
        .await;
        if r.overall_code == Code::Ok as i32 {
            ok += 1;
        } else if r.overall_code == Code::OverLimit as i32 {
            over += 1;
        }
    }
    assert_eq!((ok, over), (10, 20), "one limit of 10 shared by both nodes");
}

const METADATA_CONFIG: &str = "domain: meta
descriptors:
  - key: team
    metadata: {owner: payments, labels: {tier: gold}}
    rate_limit: {unit: hour, requests_per_unit: 5}
  - key: region
    metadata: {owner: ops, labels: {zone: eu, tier: silver}, list: [1, two, true, null]}
    rate_limit: {unit: hour, requests_per_unit: 5}
  - key: tight
    metadata: {denied: yes}
    rate_limit: {unit: hour, requests_per_unit: 0}
  - key: free
    metadata: {unlimited: yes}
    rate_limit: {unlimited: true}
";

fn string_of(v: &envoy_types::pb::google::protobuf::Value) -> Option<&str> {
    match &v.kind {
        Some(Kind::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn struct_of(
    v: &envoy_types::pb::google::protobuf::Value,
) -> &envoy_types::pb::google::protobuf::Struct {
    match &v.kind {
        Some(Kind::StructValue(s)) => s,
        other => panic!("not a struct: {other:?}"),
    }
}

fn list_of(
    v: &envoy_types::pb::google::protobuf::Value,
) -> &[envoy_types::pb::google::protobuf::Value] {
    match &v.kind {
        Some(Kind::ListValue(l)) => &l.values,
        other => panic!("not a list: {other:?}"),
    }
}

#[tokio::test]
async fn dynamic_metadata_carries_the_request_and_the_passing_descriptors_metadata() {
    let dir = TempDir::new("grpc-metadata");
    let file = dir.write("meta.yaml", METADATA_CONFIG);
    let s = TestServer::serve(Some(&file), &["--grpc-response-dynamic-metadata"]);
    let mut client = RateLimitServiceClient::connect(s.grpc.clone())
        .await
        .expect("connect");
    let mut with_override = descriptor(&[("region", "eu")]);
    with_override.limit = Some(RateLimitOverride {
        requests_per_unit: 42,
        unit: Unit::Hour as i32,
    });
    with_override.hits_addend = Some(UInt64Value { value: 2 });
    let mut team = descriptor(&[("team", "a")]);
    team.hits_addend = Some(UInt64Value { value: 1 });
    let r = client
        .should_rate_limit(tonic::Request::new(request(
            "meta",
            vec![
                team,
                descriptor(&[("region", "eu")]),
                descriptor(&[("tight", "x")]),
                descriptor(&[("free", "x")]),
                with_override,
            ],
            3,
        )))
        .await
        .expect("answer")
        .into_inner();
    assert_eq!(r.overall_code, Code::OverLimit as i32, "tight is over");
    let md = r.dynamic_metadata.expect("dynamic metadata when enabled");
    assert_eq!(string_of(&md.fields["domain"]), Some("meta"));
    assert!(matches!(md.fields["hitsAddend"].kind, Some(Kind::NumberValue(n)) if n == 3.0));
    let descriptors = list_of(&md.fields["descriptors"]);
    assert_eq!(descriptors.len(), 5);
    let first = struct_of(&descriptors[0]);
    assert_eq!(
        list_of(&first.fields["entries"])
            .iter()
            .map(|v| string_of(v).unwrap())
            .collect::<Vec<_>>(),
        ["team=a"]
    );
    assert!(matches!(first.fields["hitsAddend"].kind, Some(Kind::NumberValue(n)) if n == 1.0));
    assert!(!first.fields.contains_key("limit"));
    let last = struct_of(&descriptors[4]);
    assert_eq!(
        string_of(&last.fields["limit"]),
        Some("requests_per_unit:42 unit:HOUR")
    );
    // The passing descriptors' metadata, merged in order: the first owner wins, maps merge;
    // the denied one and the unlimited one add nothing; an override carries none.
    let merged = struct_of(&md.fields["metadata"]);
    assert_eq!(string_of(&merged.fields["owner"]), Some("payments"));
    let labels = struct_of(&merged.fields["labels"]);
    assert_eq!(string_of(&labels.fields["tier"]), Some("gold"));
    assert_eq!(string_of(&labels.fields["zone"]), Some("eu"));
    assert_eq!(list_of(&merged.fields["list"]).len(), 4);
    assert!(!merged.fields.contains_key("denied"), "{merged:?}");
    assert!(!merged.fields.contains_key("unlimited"), "{merged:?}");

    // Off by default, as upstream.
    let plain = TestServer::start(Some(&file));
    let mut client = RateLimitServiceClient::connect(plain.grpc.clone())
        .await
        .expect("connect");
    let r = client
        .should_rate_limit(rls_request("meta", &[&[("team", "a")]], 1))
        .await
        .expect("answer")
        .into_inner();
    assert_eq!(r.dynamic_metadata, None);
}
