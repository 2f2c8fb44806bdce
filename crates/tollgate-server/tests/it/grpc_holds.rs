//! Reservations and leases over gRPC (`tollgate.v1.Holds`) and Kuadrant's
//! `RateLimitService` (check-then-report, reserve-commit), against the real binary with
//! generated clients.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use serde_json::json;
use tollgate_proto::kuadrant::service::ratelimit::v1 as kuadrant;
use tollgate_proto::kuadrant::service::ratelimit::v1::rate_limit_service_client::RateLimitServiceClient as KuadrantClient;
use tollgate_proto::tollgate::v1 as pb;
use tollgate_proto::tollgate::v1::holds_client::HoldsClient;
use tollgate_proto::tollgate::v1::settle_response::Settled;
use tonic::Code as GrpcCode;
use tonic::transport::Channel;

use crate::helpers::{TempDir, TestServer, metric};

const POLICIES: &str = "domain: llm
descriptors:
  - key: api_key
    rate_limit: {name: tokens_per_day, unit: day, requests_per_unit: 1000}
  - key: streams_of
    rate_limit: {name: streams, algorithm: concurrency, max_in_flight: 2}
  - key: calls
    rate_limit: {name: calls_per_day, unit: day, requests_per_unit: 3}
";

async fn start() -> (
    TestServer,
    TempDir,
    HoldsClient<Channel>,
    KuadrantClient<Channel>,
) {
    let dir = TempDir::new("grpc-holds");
    let file = dir.write("llm.yaml", POLICIES);
    let s = TestServer::start(Some(&file));
    let holds = HoldsClient::connect(s.grpc.clone()).await.expect("connect");
    let kuadrant = KuadrantClient::connect(s.grpc.clone())
        .await
        .expect("connect");
    (s, dir, holds, kuadrant)
}

fn descriptors(key: &str, value: &str) -> Vec<RateLimitDescriptor> {
    vec![RateLimitDescriptor {
        entries: vec![Entry {
            key: key.into(),
            value: value.into(),
        }],
        ..Default::default()
    }]
}

fn reserve(key: &str, estimate: u64) -> pb::ReserveRequest {
    pb::ReserveRequest {
        domain: "llm".into(),
        descriptors: descriptors("api_key", key),
        estimate,
        ttl_ms: 60_000,
    }
}

/// What the first status of a hold's decision says is left.
fn left(r: &pb::HoldResponse) -> u32 {
    r.decision.as_ref().expect("a decision").statuses[0].limit_remaining
}

#[tokio::test]
async fn reserve_commit_and_release_over_grpc() {
    let (s, _dir, mut holds, _k) = start().await;
    let held = holds.reserve(reserve("k", 600)).await.unwrap().into_inner();
    let decision = held.decision.clone().unwrap();
    assert_eq!(decision.overall_code, Code::Ok as i32);
    assert_eq!(left(&held), 400);
    assert_eq!(held.id.len(), 32, "{held:?}");
    assert!(held.expires_in_ms > 0 && held.expires_in_ms <= 60_000);
    // 600 more do not fit: denied, no id, nothing taken.
    let denied = holds.reserve(reserve("k", 600)).await.unwrap().into_inner();
    assert_eq!(
        denied.decision.as_ref().unwrap().overall_code,
        Code::OverLimit as i32
    );
    assert_eq!((denied.id.as_str(), denied.expires_in_ms), ("", 0));
    // Commit at 250: 350 of the estimate come back (400 + 350 = 750 left).
    let commit = pb::CommitRequest {
        id: held.id.clone(),
        actual: 250,
    };
    let settled = holds.commit(commit.clone()).await.unwrap().into_inner();
    assert_eq!(settled.settled, Settled::Committed as i32);
    assert_eq!((settled.actual, settled.repeated), (250, false));
    let probe = holds.reserve(reserve("k", 1)).await.unwrap().into_inner();
    assert_eq!(left(&probe), 749, "750 left before this 1");
    // The same commit again answers the same, marked repeated; a release conflicts.
    let again = holds.commit(commit).await.unwrap().into_inner();
    assert!(again.repeated);
    let conflict = holds
        .release(pb::ReleaseRequest {
            id: held.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), GrpcCode::FailedPrecondition);
    assert!(
        conflict.message().contains("already committed at 250"),
        "{conflict:?}"
    );
    // A reservation made over HTTP is settled over gRPC: one hold table.
    let over_http: serde_json::Value = s
        .client
        .post(s.url("/v1/reservations"))
        .json(&json!({
            "domain": "llm",
            "descriptors": [{"entries": [{"key": "api_key", "value": "k"}]}],
            "estimate": 100,
            "ttl_ms": 60_000,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = over_http["id"].as_str().unwrap().to_owned();
    let released = holds
        .release(pb::ReleaseRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.settled, Settled::Released as i32);
    let metrics = s.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "tollgate_grpc_requests_total{method=\"Holds/Reserve\",code=\"ok\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &metrics,
            "tollgate_grpc_requests_total{method=\"Holds/Release\",code=\"failed_precondition\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn bad_holds_over_grpc_are_refused_naming_the_field() {
    let (_s, _dir, mut holds, _k) = start().await;
    let unknown = pb::CommitRequest {
        id: "0123456789abcdef0123456789abcdef".into(),
        actual: 1,
    };
    let first = holds.commit(unknown.clone()).await.unwrap_err();
    let second = holds.commit(unknown).await.unwrap_err();
    assert_eq!(first.code(), GrpcCode::NotFound);
    assert_eq!(
        first.message(),
        second.message(),
        "the same answer every time"
    );
    let not_hex = holds
        .release(pb::ReleaseRequest {
            id: "not-an-id".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_hex.code(), GrpcCode::NotFound);
    for (request, field) in [
        (reserve("k", 0), "estimate"),
        (
            pb::ReserveRequest {
                ttl_ms: 0,
                ..reserve("k", 1)
            },
            "ttl_ms",
        ),
        (
            pb::ReserveRequest {
                ttl_ms: 86_400_001,
                ..reserve("k", 1)
            },
            "ttl_ms",
        ),
        (reserve("k", u64::MAX), "estimate"),
    ] {
        let err = holds.reserve(request).await.unwrap_err();
        assert_eq!(err.code(), GrpcCode::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().contains(field), "{field}: {err:?}");
    }
    let mut with_hits = reserve("k", 1);
    with_hits.descriptors[0].hits_addend =
        Some(envoy_types::pb::google::protobuf::UInt64Value { value: 3 });
    let err = holds.reserve(with_hits).await.unwrap_err();
    assert_eq!(err.code(), GrpcCode::InvalidArgument);
    assert!(
        err.message().contains("descriptors[0].hits_addend"),
        "{err:?}"
    );
    let err = holds
        .commit(pb::CommitRequest {
            id: "0123456789abcdef0123456789abcdef".into(),
            actual: u64::MAX,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), GrpcCode::InvalidArgument);
    assert!(err.message().contains("actual"), "{err:?}");
}

#[tokio::test]
async fn leases_over_grpc_cap_what_is_in_flight() {
    let (_s, _dir, mut holds, _k) = start().await;
    let lease = || pb::LeaseRequest {
        domain: "llm".into(),
        descriptors: descriptors("streams_of", "k"),
        hits: 0,
        ttl_ms: 30_000,
    };
    let a = holds.acquire_lease(lease()).await.unwrap().into_inner();
    let b = holds.acquire_lease(lease()).await.unwrap().into_inner();
    let c = holds.acquire_lease(lease()).await.unwrap().into_inner();
    assert!(!a.id.is_empty() && !b.id.is_empty());
    assert_eq!(c.id, "", "a third stream of 2 is refused");
    let status = &c.decision.as_ref().unwrap().statuses[0];
    assert_eq!(status.code, Code::OverLimit as i32);
    // A concurrency limit is no rate: no current_limit (it would read as 2 per second).
    assert_eq!(status.current_limit, None, "{status:?}");
    assert_eq!(status.limit_remaining, 0);
    let first = &a.decision.as_ref().unwrap().statuses[0];
    assert_eq!(
        (first.current_limit.as_ref(), first.limit_remaining),
        (None, 1)
    );
    let beat = holds
        .heartbeat(pb::HeartbeatRequest {
            id: a.id.clone(),
            ttl_ms: 120_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(beat.expires_in_ms > 30_000 && beat.expires_in_ms <= 120_000);
    holds
        .release(pb::ReleaseRequest { id: a.id.clone() })
        .await
        .unwrap();
    let d = holds.acquire_lease(lease()).await.unwrap().into_inner();
    assert!(!d.id.is_empty(), "a released slot is free again");
    let late = holds
        .heartbeat(pb::HeartbeatRequest {
            id: a.id,
            ttl_ms: 1_000,
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), GrpcCode::FailedPrecondition);
}

fn rls(domain: &str, key: &str, value: &str, hits: u32) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors: descriptors(key, value),
        hits_addend: hits,
    }
}

#[tokio::test]
async fn kuadrant_check_takes_nothing_and_report_charges_past_the_limit() {
    let (_s, _dir, _h, mut k) = start().await;
    let code = |r: tonic::Response<
        envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse,
    >| { r.into_inner().overall_code };
    // Five checks of a 3-per-day limit all pass: a check charges nothing.
    for _ in 0..5 {
        let r = k
            .check_rate_limit(rls("llm", "calls", "c", 1))
            .await
            .unwrap();
        assert_eq!(code(r), Code::Ok as i32);
    }
    // A report of hits_addend 0 counts 1 (Limitador's default); then 5 more, past 3.
    let r = k.report(rls("llm", "calls", "c", 0)).await.unwrap();
    assert_eq!(code(r), Code::Ok as i32);
    let r = k
        .check_rate_limit(rls("llm", "calls", "c", 1))
        .await
        .unwrap();
    assert_eq!(code(r), Code::Ok as i32, "1 of 3 used");
    let r = k.report(rls("llm", "calls", "c", 5)).await.unwrap();
    assert_eq!(code(r), Code::Ok as i32, "a report always answers OK");
    let r = k
        .check_rate_limit(rls("llm", "calls", "c", 1))
        .await
        .unwrap();
    assert_eq!(code(r), Code::OverLimit as i32, "6 of 3 used");
    // Limitador answers an empty domain with UNKNOWN, not an error.
    let r = k.check_rate_limit(rls("", "calls", "c", 1)).await.unwrap();
    assert_eq!(code(r), Code::Unknown as i32);
    let r = k.report(rls("", "calls", "c", 1)).await.unwrap();
    assert_eq!(code(r), Code::Unknown as i32);
}

#[tokio::test]
async fn kuadrant_reserve_and_commit_hold_and_settle() {
    let (_s, _dir, mut holds, mut k) = start().await;
    let hold = |amount: u64, ttl: Option<PbDuration>| kuadrant::ReserveRequest {
        domain: "llm".into(),
        descriptors: descriptors("api_key", "kq"),
        amount,
        ttl,
    };
    let ttl = Some(PbDuration {
        seconds: 30,
        nanos: 0,
    });
    let r = k.reserve(hold(700, ttl)).await.unwrap().into_inner();
    assert_eq!(r.code, Code::Ok as i32);
    assert_eq!(r.reservation_id.len(), 32);
    let over = k.reserve(hold(400, ttl)).await.unwrap().into_inner();
    assert_eq!(
        (over.code, over.reservation_id.as_str()),
        (Code::OverLimit as i32, "")
    );
    // Commit at 100 gives 600 back; repeating it is harmless.
    let commit = kuadrant::CommitRequest {
        domain: "llm".into(),
        descriptors: descriptors("api_key", "kq"),
        reservation_id: r.reservation_id.clone(),
        actual_amount: 100,
    };
    k.commit(commit.clone()).await.unwrap();
    k.commit(commit).await.unwrap();
    let probe = holds.reserve(reserve("kq", 1)).await.unwrap().into_inner();
    assert_eq!(left(&probe), 899, "100 used, then this 1");
    // A commit without a reservation id reports what was used (RFC 0021).
    k.commit(kuadrant::CommitRequest {
        domain: "llm".into(),
        descriptors: descriptors("api_key", "kq"),
        reservation_id: String::new(),
        actual_amount: 400,
    })
    .await
    .unwrap();
    let probe = holds.reserve(reserve("kq", 1)).await.unwrap().into_inner();
    assert_eq!(left(&probe), 498);
    // No TTL: the default applies; a TTL past a day or not positive is refused.
    let default_ttl = k.reserve(hold(1, None)).await.unwrap().into_inner();
    assert_eq!(default_ttl.code, Code::Ok as i32);
    for bad in [
        PbDuration {
            seconds: 0,
            nanos: 0,
        },
        PbDuration {
            seconds: -5,
            nanos: 0,
        },
        PbDuration {
            seconds: 86_401,
            nanos: 0,
        },
    ] {
        let err = k.reserve(hold(1, Some(bad))).await.unwrap_err();
        assert_eq!(err.code(), GrpcCode::InvalidArgument, "{bad:?}");
        assert!(err.message().contains("ttl"), "{err:?}");
    }
    let err = k.reserve(hold(0, ttl)).await.unwrap_err();
    assert!(err.message().contains("amount"), "{err:?}");
    let unknown = k
        .commit(kuadrant::CommitRequest {
            reservation_id: "0123456789abcdef0123456789abcdef".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), GrpcCode::NotFound);
}
