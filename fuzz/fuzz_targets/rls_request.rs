//! Envoy RLS v3 `ShouldRateLimit`: any protobuf message gets a response or an
//! `INVALID_ARGUMENT`, never a panic or another status.
#![no_main]

#[path = "common.rs"]
mod common;

use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tollgate_data::grpc::ResponseHeaders;
use tollgate_data::grpc::RateLimitGrpc;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = RateLimitRequest::decode(data) else {
        return;
    };
    let service = RateLimitGrpc::new(common::state(), ResponseHeaders::Draft11);
    match common::run(service.should_rate_limit(tonic::Request::new(request))) {
        Ok(response) => {
            let r = response.into_inner();
            assert!(
                r.overall_code == 1 || r.overall_code == 2,
                "code {}",
                r.overall_code
            );
        }
        Err(status) => assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}"),
    }
});
