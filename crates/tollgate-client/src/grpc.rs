//! Checks over gRPC: Envoy's RLS v3 `ShouldRateLimit`, the protocol Envoy itself speaks,
//! and many at once over `tollgate.v1.Checks/CheckStream`, answered into `tollgate-api`'s
//! [`CheckResponse`] so callers read one type whichever transport they use.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
    RateLimitDescriptor, rate_limit_descriptor::Entry,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use futures_util::StreamExt;
use tollgate_api::{CheckRequest, CheckResponse, DescriptorStatus};
use tollgate_proto::tollgate::v1::checks_client::ChecksClient;
use tonic::transport::{Channel, Endpoint};

use crate::ClientError;

/// A client of the gRPC listener (`http://127.0.0.1:8081`): one HTTP/2 connection,
/// multiplexed, cheap to clone.
#[derive(Clone)]
pub struct GrpcCheckClient {
    url: String,
    client: RateLimitServiceClient<Channel>,
    streams: ChecksClient<Channel>,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl GrpcCheckClient {
    /// Connects to the gRPC listener at `url`, sending the data-plane `token` when the
    /// server requires one.
    pub async fn connect(url: &str, token: Option<&str>) -> Result<Self, ClientError> {
        let token = token
            .map(|t| format!("Bearer {}", t.trim()).parse())
            .transpose()
            .map_err(|_| ClientError::Credential { what: "token" })?;
        let endpoint =
            Endpoint::from_shared(url.to_owned()).map_err(|e| ClientError::Build(e.to_string()))?;
        let channel = endpoint
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| ClientError::Build(format!("cannot connect to {url}: {e}")))?;
        Ok(Self {
            url: url.to_owned(),
            client: RateLimitServiceClient::new(channel.clone()),
            streams: ChecksClient::new(channel),
            token,
        })
    }

    /// One decision. RLS carries less than the HTTP answer: a status has no `policy` but
    /// the limit's name, and no `retry_after_ms`.
    pub async fn check(&self, request: &CheckRequest<'_>) -> Result<CheckResponse, ClientError> {
        let call = self.authorized(rls_request(request));
        let answer = self.client.clone().should_rate_limit(call).await;
        match answer {
            Ok(response) => Ok(check_response(&response.into_inner())),
            Err(status) => Err(self.refused(&status)),
        }
    }

    /// Many decisions over one `tollgate.v1.Checks/CheckStream`: the server decides the
    /// checks that arrive together at once (one store round trip per domain) and answers
    /// in order. A check the server cannot decide is an `Err` with its reason, in its place.
    pub async fn check_stream(
        &self,
        requests: &[CheckRequest<'_>],
    ) -> Result<Vec<Result<CheckResponse, String>>, ClientError> {
        let outbound: Vec<RateLimitRequest> = requests.iter().map(rls_request).collect();
        let call = self.authorized(futures_util::stream::iter(outbound));
        let mut answers = match self.streams.clone().check_stream(call).await {
            Ok(response) => response.into_inner(),
            Err(status) => return Err(self.refused(&status)),
        };
        let mut out = Vec::with_capacity(requests.len());
        while let Some(answer) = answers.next().await {
            let answer = answer.map_err(|status| self.refused(&status))?;
            out.push(match answer.decision {
                Some(decision) if answer.error.is_empty() => Ok(check_response(&decision)),
                _ => Err(answer.error),
            });
        }
        if out.len() != requests.len() {
            return Err(ClientError::Refused {
                url: self.url.clone(),
                status: tonic::Code::DataLoss as u16,
                detail: format!("{} answers to {} checks", out.len(), requests.len()),
            });
        }
        Ok(out)
    }

    /// `message` as a call, with the data-plane token when there is one.
    fn authorized<T>(&self, message: T) -> tonic::Request<T> {
        let mut call = tonic::Request::new(message);
        if let Some(token) = &self.token {
            call.metadata_mut().insert("authorization", token.clone());
        }
        call
    }

    fn refused(&self, status: &tonic::Status) -> ClientError {
        ClientError::Refused {
            url: self.url.clone(),
            status: status.code() as u16,
            detail: status.message().to_owned(),
        }
    }
}

/// The RLS request for a check.
pub fn rls_request(request: &CheckRequest<'_>) -> RateLimitRequest {
    RateLimitRequest {
        domain: request.domain.to_string(),
        descriptors: request
            .descriptors
            .iter()
            .map(|d| RateLimitDescriptor {
                entries: d
                    .entries
                    .iter()
                    .map(|e| Entry {
                        key: e.key.to_string(),
                        value: e.value.to_string(),
                    })
                    .collect(),
                hits_addend: d
                    .hits
                    .map(|h| envoy_types::pb::google::protobuf::UInt64Value { value: h }),
                ..Default::default()
            })
            .collect(),
        hits_addend: u32::try_from(request.hits.unwrap_or(1)).unwrap_or(u32::MAX),
    }
}

/// An RLS answer as `tollgate-api`'s check response.
pub fn check_response(response: &RateLimitResponse) -> CheckResponse {
    let ok = |code: i32| code == Code::Ok as i32;
    CheckResponse {
        allowed: ok(response.overall_code),
        statuses: response
            .statuses
            .iter()
            .map(|s| {
                let limit = s.current_limit.as_ref();
                let ms = |d: &envoy_types::pb::google::protobuf::Duration| {
                    u64::try_from(d.seconds).unwrap_or(0) * 1000
                        + u64::try_from(d.nanos).unwrap_or(0).div_ceil(1_000_000)
                };
                DescriptorStatus {
                    allowed: ok(s.code),
                    policy: limit.map(|l| l.name.clone()).filter(|n| !n.is_empty()),
                    limit: limit.map(|l| u64::from(l.requests_per_unit)),
                    requests_per_unit: limit.map(|l| u64::from(l.requests_per_unit)),
                    unit: limit.map(|l| unit_name(l.unit).to_owned()),
                    remaining: limit.map(|_| u64::from(s.limit_remaining)),
                    reset_after_ms: s.duration_until_reset.as_ref().map_or(0, ms),
                    retry_after_ms: None,
                    unlimited: limit.is_none() && s.limit_remaining == u32::MAX,
                    shadow_denied: false,
                    quota_mode: false,
                    store_failed: false,
                }
            })
            .collect(),
    }
}

fn unit_name(unit: i32) -> &'static str {
    match unit {
        1 => "second",
        2 => "minute",
        3 => "hour",
        4 => "day",
        5 => "month",
        6 => "year",
        7 => "week",
        _ => "unknown",
    }
}
