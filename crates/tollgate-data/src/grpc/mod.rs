//! The gRPC data plane: Envoy RLS v3 (`envoy.service.ratelimit.v3.RateLimitService/
//! ShouldRateLimit`, here), Tollgate's reservations and leases (`tollgate.v1.Holds`,
//! [`holds`]), streams of checks decided together (`tollgate.v1.Checks`, [`checks`]),
//! Kuadrant's `RateLimitService` ([`kuadrant`]), the standard
//! `grpc.health.v1` service and server reflection.
//!
//! Message types come from `envoy-types` (generated from Envoy's protos). The mapping to
//! the core follows envoyproxy/ratelimit: a request's `hits_addend` of 0 means 1, a
//! descriptor's own `hits_addend` and `limit` override win, `unlimited` descriptors answer
//! OK with `limit_remaining` = 4 294 967 295, descriptors that match nothing answer OK
//! without `current_limit`, and shadow-mode policies never answer OVER_LIMIT.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;

use envoy_types::pb::envoy::config::core::v3::HeaderValue as PbHeaderValue;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit as PbUnit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{
    Duration as PbDuration, ListValue as PbList, Struct as PbStruct, Value as PbValue,
};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tollgate_core::{CheckRequest, Decision, Entry, LimitOverride, Unit};
use tollgate_proto::kuadrant::service::ratelimit::v1::rate_limit_service_server::RateLimitServiceServer as KuadrantServer;
use tollgate_proto::tollgate::v1::checks_server::ChecksServer;
use tollgate_proto::tollgate::v1::holds_server::HoldsServer;
use tonic::{Request, Response, Status};
use tower::ServiceExt;

use crate::data_plane::{self, DescriptorParts};
use crate::http::request_id::RequestId;
use crate::listener::MaxAge;
use crate::state::AppState;
use crate::trace::{self, TraceHeaders};
use tracing::Instrument;

pub mod checks;
pub mod holds;
pub mod kuadrant;

/// Path prefix of the `grpc.health.v1.Health` service.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Serves the RLS and health services on `listener` until `stop`, over hyper's HTTP/2
/// directly: tonic's transport adds a router, a timeout layer and boxed futures per call
/// that this two-service listener does not need (callgrind: about a fifth of the
/// instructions per call).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    options: GrpcOptions,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let GrpcOptions {
        headers,
        header_names,
        max_age,
        tls,
        keepalive,
        dynamic_metadata,
    } = options;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<RateLimitServiceServer<RateLimitGrpc>>()
        .await;
    reporter
        .set_serving::<HoldsServer<holds::HoldsGrpc>>()
        .await;
    reporter
        .set_serving::<KuadrantServer<kuadrant::KuadrantGrpc>>()
        .await;
    reporter
        .set_serving::<ChecksServer<checks::ChecksGrpc>>()
        .await;
    let holds = HoldsServer::new(holds::HoldsGrpc::new(state.clone()));
    let checks = ChecksServer::new(checks::ChecksGrpc::new(
        state.clone(),
        headers,
        header_names.clone(),
    ));
    let kuadrant = KuadrantServer::new(kuadrant::KuadrantGrpc::new(state.clone()));
    let rls = RateLimitServiceServer::new(
        RateLimitGrpc::new(state, headers)
            .with_header_names(header_names)
            .with_dynamic_metadata(dynamic_metadata),
    );
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tollgate_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_alpha = reflection()
        .build_v1alpha()
        .context("cannot build the gRPC reflection service")?;
    let reflection = reflection()
        .build_v1()
        .context("cannot build the gRPC reflection service")?;
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(keepalive));
    crate::listener::accept_until_stopped("grpc", listener, stop, max_age, tls, move |stream| {
        let services = (
            rls.clone(),
            health.clone(),
            reflection.clone(),
            reflection_alpha.clone(),
            holds.clone(),
            kuadrant.clone(),
            checks.clone(),
        );
        let service = service_fn(move |request: http::Request<Incoming>| {
            let (rls, health, reflection, reflection_alpha, holds, kuadrant, checks) =
                services.clone();
            async move {
                let path = request.uri().path();
                if path.starts_with(HOLDS_PREFIX) {
                    holds.oneshot(request).await
                } else if path.starts_with(CHECKS_PREFIX) {
                    checks.oneshot(request).await
                } else if path.starts_with(KUADRANT_PREFIX) {
                    kuadrant.oneshot(request).await
                } else if path.starts_with(HEALTH_PREFIX) {
                    health.oneshot(request).await
                } else if path.starts_with(REFLECTION_PREFIX) {
                    reflection.oneshot(request).await
                } else if path.starts_with(REFLECTION_ALPHA_PREFIX) {
                    reflection_alpha.oneshot(request).await
                } else {
                    rls.oneshot(request).await
                }
            }
        });
        http2.serve_connection(TokioIo::new(stream), service)
    })
    .await;
    Ok(())
}

/// Path prefix of `tollgate.v1.Holds`.
const HOLDS_PREFIX: &str = "/tollgate.v1.Holds/";
/// Path prefix of `tollgate.v1.Checks`.
const CHECKS_PREFIX: &str = "/tollgate.v1.Checks/";
/// Path prefix of Kuadrant's `RateLimitService`.
const KUADRANT_PREFIX: &str = "/kuadrant.service.ratelimit.v1.RateLimitService/";
const REFLECTION_PREFIX: &str = "/grpc.reflection.v1.ServerReflection/";
const REFLECTION_ALPHA_PREFIX: &str = "/grpc.reflection.v1alpha.ServerReflection/";

/// The Envoy RLS v3 front end (`--grpc-addr`).
pub struct GrpcFrontEnd {
    /// Its settings.
    pub options: GrpcOptions,
}

impl crate::front_end::FrontEnd for GrpcFrontEnd {
    fn name(&self) -> &'static str {
        "grpc"
    }

    fn serve(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        state: Arc<AppState>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> futures_util::future::LocalBoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            serve(listener, state, self.options.clone(), stop).await
        })
    }
}

/// Settings of the gRPC listener.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// Rate-limit headers returned for Envoy to add.
    pub headers: ResponseHeaders,
    /// The names of the draft-03 headers.
    pub header_names: HeaderNames,
    /// Connections are recycled at this age, so clients re-resolve and rebalance
    /// (envoyproxy/ratelimit's GRPC_MAX_CONNECTION_AGE and _GRACE).
    pub max_age: Option<MaxAge>,
    /// TLS (and client certificates), when configured.
    pub tls: Option<Arc<crate::tls::ReloadingTls>>,
    /// Interval of HTTP/2 pings on idle connections.
    pub keepalive: std::time::Duration,
    /// Return the request and the passing descriptors' `metadata` in the response's
    /// dynamic metadata (envoyproxy/ratelimit's `RESPONSE_DYNAMIC_METADATA`).
    pub dynamic_metadata: bool,
}

/// Which rate-limit headers the gRPC service returns for Envoy to add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ResponseHeaders {
    /// None (envoyproxy/ratelimit's default).
    #[default]
    None,
    /// envoyproxy/ratelimit's `LIMIT_RESPONSE_HEADERS_ENABLED` (IETF draft 03):
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (names configurable,
    /// as its `LIMIT_*_HEADER`), for the descriptor closest to its limit.
    Draft03,
    /// `RateLimit-Policy` and `RateLimit` (IETF draft 11), as `POST /v1/check` sends.
    Draft11,
}

impl ResponseHeaders {
    /// The time in seconds that [`response`] needs: only draft-03's reset reads the clock.
    fn now_seconds(self, state: &AppState) -> u64 {
        match self {
            Self::Draft03 => state.limiter.clock().now() / 1_000_000_000,
            Self::None | Self::Draft11 => 0,
        }
    }
}

/// The method name in metrics.
const METHOD: &str = "ShouldRateLimit";

/// The names of the draft-03 headers (envoyproxy/ratelimit's `LIMIT_LIMIT_HEADER`,
/// `LIMIT_REMAINING_HEADER`, `LIMIT_RESET_HEADER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNames {
    /// The limit's requests per unit.
    pub limit: String,
    /// What is left.
    pub remaining: String,
    /// Seconds until the limit's unit ends.
    pub reset: String,
}

impl Default for HeaderNames {
    fn default() -> Self {
        Self {
            limit: "RateLimit-Limit".into(),
            remaining: "RateLimit-Remaining".into(),
            reset: "RateLimit-Reset".into(),
        }
    }
}

/// The RLS service over the shared application state.
pub struct RateLimitGrpc {
    state: Arc<AppState>,
    headers: ResponseHeaders,
    names: Arc<HeaderNames>,
    dynamic_metadata: bool,
}

impl RateLimitGrpc {
    /// The service itself (for callers that drive it directly, such as fuzz targets).
    pub fn new(state: Arc<AppState>, headers: ResponseHeaders) -> Self {
        Self {
            state,
            headers,
            names: Arc::default(),
            dynamic_metadata: false,
        }
    }

    /// The same, returning dynamic metadata (see [`GrpcOptions::dynamic_metadata`]).
    pub fn with_dynamic_metadata(mut self, enabled: bool) -> Self {
        self.dynamic_metadata = enabled;
        self
    }

    /// The same with draft-03 header names of its own.
    pub fn with_header_names(mut self, names: HeaderNames) -> Self {
        self.names = Arc::new(names);
        self
    }
}

fn header(key: &str, value: String) -> PbHeaderValue {
    PbHeaderValue {
        key: key.into(),
        value,
        ..Default::default()
    }
}

/// `response_headers_to_add`: the rate-limit headers of `kind` for this decision, whose
/// gRPC `statuses` are already built.
fn rate_limit_headers(
    kind: ResponseHeaders,
    names: &HeaderNames,
    decision: &Decision,
    statuses: &[DescriptorStatus],
    now_seconds: u64,
) -> Vec<PbHeaderValue> {
    match kind {
        ResponseHeaders::None => Vec::new(),
        ResponseHeaders::Draft11 => {
            let (mut policy, mut current) = (Vec::new(), Vec::new());
            crate::http::render::policy_value(&mut policy, decision);
            crate::http::render::current_value(&mut current, decision);
            let text = |v: Vec<u8>| String::from_utf8(v).unwrap_or_default();
            if policy.is_empty() {
                return Vec::new();
            }
            vec![
                header("RateLimit-Policy", text(policy)),
                header("RateLimit", text(current)),
            ]
        }
        ResponseHeaders::Draft03 => {
            // envoyproxy/ratelimit's choice: the limited descriptor with the least left
            // (the first of equals), unless a regular one is over, the last of which wins.
            let mut chosen: Option<&DescriptorStatus> = None;
            let mut least = u32::MAX;
            for (status, core) in statuses.iter().zip(&decision.statuses) {
                if status.current_limit.is_some() && status.limit_remaining < least {
                    chosen = Some(status);
                    least = status.limit_remaining;
                }
                if status.code == Code::OverLimit as i32 && !core.quota_mode {
                    chosen = Some(status);
                    least = 0;
                }
            }
            let Some((status, limit)) = chosen.and_then(|s| Some((s, s.current_limit.as_ref()?)))
            else {
                return Vec::new();
            };
            // Seconds to the end of the limit's unit on the clock, as upstream computes it
            // (whatever the algorithm).
            let unit = core_unit(limit.unit).map_or(1, |u| u.seconds()).max(1);
            vec![
                header(&names.limit, limit.requests_per_unit.to_string()),
                header(&names.remaining, status.limit_remaining.to_string()),
                header(&names.reset, (unit - now_seconds % unit).to_string()),
            ]
        }
    }
}

fn core_unit(unit: i32) -> Option<Unit> {
    Some(match PbUnit::try_from(unit).ok()? {
        PbUnit::Second => Unit::Second,
        PbUnit::Minute => Unit::Minute,
        PbUnit::Hour => Unit::Hour,
        PbUnit::Day => Unit::Day,
        PbUnit::Week => Unit::Week,
        PbUnit::Month => Unit::Month,
        PbUnit::Year => Unit::Year,
        PbUnit::Unknown => return None,
    })
}

fn pb_unit(unit: Unit) -> PbUnit {
    match unit {
        Unit::Second => PbUnit::Second,
        Unit::Minute => PbUnit::Minute,
        Unit::Hour => PbUnit::Hour,
        Unit::Day => PbUnit::Day,
        Unit::Week => PbUnit::Week,
        Unit::Month => PbUnit::Month,
        Unit::Year => PbUnit::Year,
    }
}

/// The per-descriptor `limit` override and `hits_addend`, checked.
fn descriptor_parts(i: usize, d: &RateLimitDescriptor) -> Result<DescriptorParts, Status> {
    if d.is_negative_hits {
        return Err(Status::invalid_argument(format!(
            "descriptors[{i}].is_negative_hits: returning hits is not supported"
        )));
    }
    let limit_override = match &d.limit {
        None => None,
        Some(l) => match core_unit(l.unit) {
            Some(unit) => Some(LimitOverride {
                requests_per_unit: l.requests_per_unit,
                unit,
            }),
            None => {
                return Err(Status::invalid_argument(format!(
                    "descriptors[{i}].limit.unit: {} is not a known unit",
                    l.unit
                )));
            }
        },
    };
    Ok(DescriptorParts {
        entries: d.entries.len(),
        hits: d.hits_addend.as_ref().map(|h| h.value),
        limit_override,
    })
}

/// envoyproxy/ratelimit's `RESPONSE_DYNAMIC_METADATA`: the request's domain, its
/// descriptors (entries as `key=value`, a limit override in protobuf text, a hits
/// override), its `hitsAddend` when not 0, and under `metadata` the `metadata` of every
/// descriptor that passed (limited and not over; unlimited ones do not count), merged in
/// request order: a key already present is kept, maps merge.
fn dynamic_metadata(request: &RateLimitRequest, decision: &Decision) -> PbStruct {
    let text = |s: String| PbValue {
        kind: Some(Kind::StringValue(s)),
    };
    let number = |n: f64| PbValue {
        kind: Some(Kind::NumberValue(n)),
    };
    let descriptors = request
        .descriptors
        .iter()
        .map(|d| {
            let mut fields = HashMap::new();
            let entries = d
                .entries
                .iter()
                .map(|e| text(format!("{}={}", e.key, e.value)))
                .collect();
            fields.insert(
                "entries".to_owned(),
                PbValue {
                    kind: Some(Kind::ListValue(PbList { values: entries })),
                },
            );
            if let Some(limit) = &d.limit {
                // Go's protobuf text format of the override, as upstream's `Limit.String()`.
                let mut parts = Vec::new();
                if limit.requests_per_unit != 0 {
                    parts.push(format!("requests_per_unit:{}", limit.requests_per_unit));
                }
                if let Some(unit) = core_unit(limit.unit) {
                    parts.push(format!("unit:{}", unit.as_str().to_ascii_uppercase()));
                }
                fields.insert("limit".to_owned(), text(parts.join(" ")));
            }
            if let Some(hits) = &d.hits_addend {
                fields.insert("hitsAddend".to_owned(), number(hits.value as f64));
            }
            PbValue {
                kind: Some(Kind::StructValue(PbStruct { fields })),
            }
        })
        .collect();
    let mut fields = HashMap::new();
    fields.insert("domain".to_owned(), text(request.domain.clone()));
    fields.insert(
        "descriptors".to_owned(),
        PbValue {
            kind: Some(Kind::ListValue(PbList {
                values: descriptors,
            })),
        },
    );
    if request.hits_addend != 0 {
        fields.insert(
            "hitsAddend".to_owned(),
            number(f64::from(request.hits_addend)),
        );
    }
    let mut passed = tollgate_core::Metadata::new();
    for status in &decision.statuses {
        let unlimited = status.rule.as_ref().is_some_and(|r| !r.is_limited());
        if let (false, true, Some(tollgate_core::Rule::Policy(policy))) =
            (unlimited, status.allowed, &status.rule)
            && let Some(metadata) = &policy.metadata
        {
            tollgate_core::policy::merge_metadata(&mut passed, metadata);
        }
    }
    if !passed.is_empty() {
        fields.insert(
            "metadata".to_owned(),
            PbValue {
                kind: Some(Kind::StructValue(pb_struct(&passed))),
            },
        );
    }
    PbStruct { fields }
}

fn pb_struct(map: &tollgate_core::Metadata) -> PbStruct {
    PbStruct {
        fields: map.iter().map(|(k, v)| (k.clone(), pb_value(v))).collect(),
    }
}

fn pb_value(value: &tollgate_core::MetadataValue) -> PbValue {
    use tollgate_core::MetadataValue as M;
    let kind = match value {
        M::Null => Kind::NullValue(0),
        M::Bool(b) => Kind::BoolValue(*b),
        M::Number(n) => Kind::NumberValue(*n),
        M::String(s) => Kind::StringValue(s.clone()),
        M::List(items) => Kind::ListValue(PbList {
            values: items.iter().map(pb_value).collect(),
        }),
        M::Map(map) => Kind::StructValue(pb_struct(map)),
    };
    PbValue { kind: Some(kind) }
}

fn duration(ns: tollgate_core::Span) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX),
        nanos: (ns % 1_000_000_000) as i32,
    }
}

fn response(
    decision: &Decision,
    headers: ResponseHeaders,
    names: &HeaderNames,
    now_seconds: u64,
) -> RateLimitResponse {
    let code = |allowed: bool| if allowed { Code::Ok } else { Code::OverLimit } as i32;
    let statuses = decision
        .statuses
        .iter()
        .map(|s| {
            // A concurrency limit is no rate: Envoy gets what is left, no current_limit
            // (which would read as N per second) and no reset.
            let rate = s.rule.as_ref().and_then(|r| r.rate());
            let current_limit = rate
                .zip(s.rule.as_ref())
                .map(|((n, unit), rule)| RateLimit {
                    name: rule.name().to_owned(),
                    requests_per_unit: u32::try_from(n).unwrap_or(u32::MAX),
                    unit: pb_unit(unit) as i32,
                });
            let limit_remaining = match &s.rule {
                None => 0,
                Some(r) if !r.is_limited() => u32::MAX,
                Some(_) => u32::try_from(s.remaining).unwrap_or(u32::MAX),
            };
            DescriptorStatus {
                code: code(s.allowed),
                current_limit,
                limit_remaining,
                duration_until_reset: rate.map(|_| duration(s.reset_after)),
                ..Default::default()
            }
        })
        .collect::<Vec<_>>();
    RateLimitResponse {
        overall_code: code(decision.allowed),
        response_headers_to_add: rate_limit_headers(
            headers,
            names,
            decision,
            &statuses,
            now_seconds,
        ),
        statuses,
        ..Default::default()
    }
}

/// Refuses a call without the data-plane token, when the server requires one.
fn authorize<T>(state: &AppState, request: &Request<T>) -> Result<(), Status> {
    if let Some(token) = &state.data_token
        && !token.admits(
            request
                .metadata()
                .get("authorization")
                .map(|v| v.as_bytes()),
        )
    {
        state.metrics.rejected("unauthenticated");
        return Err(Status::unauthenticated(
            "this server requires the authorization metadata 'Bearer <data-plane token>'",
        ));
    }
    Ok(())
}

/// Counts a call of `method` by its gRPC code, and passes its answer on.
fn counted<T>(
    state: &AppState,
    method: &'static str,
    answer: Result<T, Status>,
) -> Result<Response<T>, Status> {
    let code = match &answer {
        Ok(_) => "ok",
        Err(status) => code_name(status.code()),
    };
    state.metrics.grpc_call(method, code);
    answer.map(Response::new)
}

/// The metric label of a gRPC code.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::InvalidArgument => "invalid_argument",
        Code::NotFound => "not_found",
        Code::FailedPrecondition => "failed_precondition",
        Code::Unavailable => "unavailable",
        Code::Unauthenticated => "unauthenticated",
        _ => "other",
    }
}

/// The caller's `x-request-id`, or a fresh one.
fn request_id<T>(request: &Request<T>) -> RequestId {
    RequestId::from_caller(
        request
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
    )
}

/// Every descriptor's entries in order, and each descriptor's other parts, checked.
fn decode_descriptors(
    descriptors: &[RateLimitDescriptor],
) -> Result<(Vec<Entry<'_>>, Vec<DescriptorParts>), Status> {
    let parts = descriptors
        .iter()
        .enumerate()
        .map(|(i, d)| descriptor_parts(i, d))
        .collect::<Result<Vec<_>, _>>()?;
    let entries = descriptors
        .iter()
        .flat_map(|d| {
            d.entries.iter().map(|e| Entry {
                key: &e.key,
                value: &e.value,
            })
        })
        .collect();
    Ok((entries, parts))
}

#[tonic::async_trait]
impl RateLimitService for RateLimitGrpc {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let started = std::time::Instant::now();
        authorize(&self.state, &request)?;
        let id = request_id(&request);
        let span = trace::decision("grpc", &id, TraceHeaders::of_metadata(request.metadata()));
        let request = request.into_inner();
        let (entries, parts) = match decode_descriptors(&request.descriptors) {
            Ok(decoded) => decoded,
            Err(status) => {
                self.state.metrics.rejected("invalid");
                self.state.metrics.grpc_call(METHOD, "invalid_argument");
                tracing::info!(
                    request_id = id.as_str(),
                    detail = status.message(),
                    "invalid ShouldRateLimit"
                );
                return Err(status);
            }
        };
        let descriptors = data_plane::descriptors(&entries, parts);
        let check = CheckRequest {
            domain: &request.domain,
            descriptors: &descriptors,
            hits: u64::from(request.hits_addend),
        };
        let decision = match self
            .state
            .limiter
            .check(&check)
            .instrument(span.clone())
            .await
        {
            Ok(decision) => decision,
            Err(e) => {
                self.state.metrics.rejected("invalid");
                self.state.metrics.grpc_call(METHOD, "invalid_argument");
                tracing::info!(request_id = id.as_str(), detail = %e, "invalid ShouldRateLimit");
                return Err(Status::invalid_argument(e.to_string()));
            }
        };
        span.in_scope(|| data_plane::record(&self.state, &id, &check, &decision));
        trace::decided(&span, check.domain, decision.allowed);
        self.state.metrics.observe_latency(started.elapsed());
        self.state.metrics.grpc_call(METHOD, "ok");
        let now_seconds = self.headers.now_seconds(&self.state);
        let mut answer = response(&decision, self.headers, &self.names, now_seconds);
        if self.dynamic_metadata {
            answer.dynamic_metadata = Some(dynamic_metadata(&request, &decision));
        }
        Ok(Response::new(answer))
    }
}
