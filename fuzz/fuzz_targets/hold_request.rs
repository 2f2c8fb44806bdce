//! Holds over gRPC: any protobuf message to `tollgate.v1.Holds` or to Kuadrant's
//! `RateLimitService` gets an answer or one of the documented statuses, never a panic.
//! The first byte picks the method; the rest is the message.
#![no_main]

#[path = "common.rs"]
mod common;

use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tollgate_data::grpc::holds::HoldsGrpc;
use tollgate_data::grpc::kuadrant::KuadrantGrpc;
use tollgate_proto::kuadrant::service::ratelimit::v1 as kuadrant;
use tollgate_proto::kuadrant::service::ratelimit::v1::rate_limit_service_server::RateLimitService;
use tollgate_proto::tollgate::v1 as holds;
use tollgate_proto::tollgate::v1::holds_server::Holds;
use tonic::{Code, Request, Status};

/// The statuses these services document: bad input, unknown or settled holds, a store
/// (here a full hold table) that cannot keep one.
fn documented(status: &Status) {
    assert!(
        matches!(
            status.code(),
            Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::Unavailable
        ),
        "{status:?}"
    );
}

fn check<T>(answer: Result<tonic::Response<T>, Status>) {
    if let Err(status) = answer {
        documented(&status);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, message)) = data.split_first() else {
        return;
    };
    let state = common::state();
    let h = HoldsGrpc::new(state.clone());
    let k = KuadrantGrpc::new(state);
    macro_rules! call {
        ($service:expr, $method:ident, $type:ty) => {
            if let Ok(m) = <$type>::decode(message) {
                check(common::run($service.$method(Request::new(m))));
            }
        };
    }
    match which % 9 {
        0 => call!(h, reserve, holds::ReserveRequest),
        1 => call!(h, commit, holds::CommitRequest),
        2 => call!(h, release, holds::ReleaseRequest),
        3 => call!(h, acquire_lease, holds::LeaseRequest),
        4 => call!(h, heartbeat, holds::HeartbeatRequest),
        5 => call!(k, check_rate_limit, RateLimitRequest),
        6 => call!(k, report, RateLimitRequest),
        7 => call!(k, reserve, kuadrant::ReserveRequest),
        _ => call!(k, commit, kuadrant::CommitRequest),
    }
});
