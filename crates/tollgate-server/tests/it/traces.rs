//! Traces over OTLP/HTTP: a collector's trace endpoint (`POST /v1/traces`, the
//! `ExportTraceServiceRequest` of the published OTLP protos) served by the test, and a
//! server over a private Redis that exports to it. Decisions continue the caller's W3C
//! `traceparent` from HTTP headers and gRPC metadata, each store call is a child span of
//! its decision, the sampling ratio governs decisions without a parent, and log lines
//! written during a decision name its request id and trace id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde_json::Value;
use tollgate_testkit::{RedisServer, wait};

use crate::helpers::{TempDir, TestServer, body, send_json};

const POLICIES: &str = "domain: traced
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 100}
";

/// One exported span, as the collector received it.
#[derive(Debug, Clone)]
struct Exported {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
    service: String,
}

/// The collector: every span of every export, in arrival order.
async fn collector() -> (String, Arc<Mutex<Vec<Exported>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP export");
                let mut sink = sink.lock().expect("spans");
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .map(|a| value(a.value.as_ref()))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            sink.push(Exported {
                                name: span.name,
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent: hex(&span.parent_span_id),
                                attributes: span
                                    .attributes
                                    .iter()
                                    .map(|a| (a.key.clone(), value(a.value.as_ref())))
                                    .collect(),
                                service: service.clone(),
                            });
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    match v.and_then(|v| v.value.as_ref()) {
        Some(V::StringValue(s)) => s.clone(),
        Some(V::BoolValue(b)) => b.to_string(),
        Some(V::IntValue(i)) => i.to_string(),
        Some(V::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

/// The spans of `trace_id` once its decision and its store call have both arrived.
async fn trace_of(spans: &Arc<Mutex<Vec<Exported>>>, trace_id: &str) -> (Exported, Exported) {
    wait::until(
        &format!("the decision and store call of trace {trace_id}"),
        || async {
            let spans = spans.lock().expect("spans");
            let of = |name: &str| {
                spans
                    .iter()
                    .find(|s| s.trace_id == trace_id && s.name == name)
                    .cloned()
            };
            Some((of("decision")?, of("store.call")?))
        },
    )
    .await
}

#[tokio::test]
async fn decisions_continue_the_callers_trace_with_a_span_per_store_call() {
    let redis = RedisServer::start();
    let (endpoint, spans) = collector().await;
    let dir = TempDir::new("traces");
    let policies = dir.write("traced.yaml", POLICIES);
    let args: Vec<String> = [
        "serve",
        "--http-addr",
        "127.0.0.1:0",
        "--policies",
        &policies.display().to_string(),
        "--store",
        &redis.url(),
        "--otlp-endpoint",
        &endpoint,
        // Decisions without a sampled caller are not traced: what arrives is what the
        // callers asked for.
        "--trace-sample-ratio",
        "0",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // Export every 100 ms instead of every 5 s (the SDK's standard variable).
    let s = TestServer::start_with(
        &args,
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("RUST_LOG", "info,tollgate_data=debug"),
        ],
    );
    let client = reqwest::Client::new();
    let check = |traceparent: Option<&'static str>, id: &'static str| {
        let mut request = client
            .post(s.url("/v1/check"))
            .header("x-request-id", id)
            .json(&body("traced", &[&[("user", "ada")]], 1));
        if let Some(tp) = traceparent {
            request = request.header("traceparent", tp);
        }
        async move {
            let v: Value = send_json(request).await;
            assert_eq!(v["allowed"], true, "{v}");
        }
    };
    // Not sampled: no parent (ratio 0), and a parent that says not sampled.
    check(None, "no-parent").await;
    check(
        Some("00-11111111111111111111111111111111-2222222222222222-00"),
        "unsampled-parent",
    )
    .await;
    // Sampled by the caller, over HTTP and over gRPC.
    const HTTP_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    check(
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        "traced-http",
    )
    .await;
    const GRPC_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    let mut grpc = envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient::connect(s.grpc.clone())
        .await
        .expect("connect");
    let mut request = crate::grpc::rls_request("traced", &[&[("user", "grace")]], 1);
    request.metadata_mut().insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            .parse()
            .expect("metadata"),
    );
    request
        .metadata_mut()
        .insert("x-request-id", "traced-grpc".parse().expect("metadata"));
    grpc.should_rate_limit(request)
        .await
        .expect("ShouldRateLimit");

    let (decision, store) = trace_of(&spans, HTTP_TRACE).await;
    assert_eq!(
        decision.parent, "00f067aa0ba902b7",
        "the caller's span is the parent"
    );
    assert_eq!(
        store.parent, decision.span_id,
        "the store call is the decision's child"
    );
    assert_eq!(decision.attributes["protocol"], "http");
    assert_eq!(decision.attributes["request_id"], "traced-http");
    assert_eq!(decision.attributes["domain"], "traced");
    assert_eq!(decision.attributes["allowed"], "true");
    assert_eq!(decision.attributes["trace_id"], HTTP_TRACE);
    assert_eq!(store.attributes["db.system"], "redis");
    assert_eq!(store.attributes["outcome"], "ok");
    assert_eq!(decision.service, "tollgate");

    let (decision, store) = trace_of(&spans, GRPC_TRACE).await;
    assert_eq!(decision.parent, "b7ad6b7169203331");
    assert_eq!(store.parent, decision.span_id);
    assert_eq!(decision.attributes["protocol"], "grpc");
    assert_eq!(decision.attributes["request_id"], "traced-grpc");

    // Spans end and are exported in order, so the unsampled decisions, made first, would
    // have arrived by now.
    let traces: Vec<String> = spans
        .lock()
        .expect("spans")
        .iter()
        .map(|s| s.trace_id.clone())
        .collect();
    assert!(
        traces.iter().all(|t| t == HTTP_TRACE || t == GRPC_TRACE),
        "only the sampled traces are exported: {traces:?}"
    );

    // The decision's log line names the request id and the trace id.
    let line = s.log_line("\"request_id\":\"traced-http\"").await;
    let v: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(v["span"]["trace_id"], HTTP_TRACE, "{line}");
}

#[test]
fn a_collector_url_that_is_not_http_or_a_ratio_past_one_is_refused_by_name() {
    for (args, expected) in [
        (["--otlp-endpoint", "127.0.0.1:4318"], "--otlp-endpoint"),
        (
            ["--otlp-endpoint", "grpc://127.0.0.1:4317"],
            "must be an http:// or https:// URL",
        ),
        (["--trace-sample-ratio", "two"], "ratio from 0 to 1"),
        (["--trace-sample-ratio", "1.5"], "ratio from 0 to 1"),
    ] {
        let out = std::process::Command::new(crate::helpers::binary())
            .arg("serve")
            .args(args)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
