//! Kuadrant's `kuadrant.service.ratelimit.v1.RateLimitService`, answered as Limitador
//! answers it, so that Kuadrant's wasm-shim (or any Limitador client) can point at
//! Tollgate unchanged:
//!
//! - `CheckRateLimit`: whether one more hit would pass, charging nothing (Limitador checks
//!   a delta of 1 whatever `hits_addend` says). `overall_code` only, no statuses.
//! - `Report`: charges `hits_addend` (0 means 1) to every matched counter, past its limit;
//!   always `OK`.
//! - `Reserve` / `Commit`: a reservation of `amount` for `ttl`, settled at
//!   `actual_amount`; a `Commit` without a `reservation_id` is a report of `actual_amount`.
//! - An empty `domain` answers `UNKNOWN` (Limitador's answer), not an error.
//!
//! Limitador reads descriptors' entries only; so does this service (a descriptor's own
//! `hits_addend` or `limit` is ignored).

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code as RlsCode;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tollgate_core::{CheckRequest, Decision, HoldId, HoldKind, Settle, SettleOutcome};
use tollgate_proto::kuadrant::service::ratelimit::v1::rate_limit_service_server::RateLimitService;
use tollgate_proto::kuadrant::service::ratelimit::v1::{
    CommitRequest, CommitResponse, ReserveRequest, ReserveResponse,
};
use tonic::{Request, Response, Status};

use super::holds::{hold_status, take, unknown};
use super::{authorize, counted, decode_descriptors, request_id};
use crate::data_plane;
use crate::http::request_id::RequestId;
use crate::state::AppState;

/// A reservation's TTL when the caller sets none.
pub const DEFAULT_RESERVATION_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Kuadrant's service over the shared application state.
pub struct KuadrantGrpc {
    state: Arc<AppState>,
}

/// What a call asks of the limiter.
#[derive(Clone, Copy)]
enum Ask {
    Probe,
    Report,
}

impl KuadrantGrpc {
    /// The service.
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    /// Probes or reports `hits` on `domain`'s `descriptors` (entries only).
    async fn decide(
        &self,
        id: &RequestId,
        domain: &str,
        descriptors: &[RateLimitDescriptor],
        hits: u64,
        ask: Ask,
    ) -> Result<Decision, Status> {
        let (entries, parts) = entries_only(descriptors)?;
        let descriptors = data_plane::descriptors(&entries, parts);
        let check = CheckRequest {
            domain,
            descriptors: &descriptors,
            hits,
        };
        let decided = match ask {
            Ask::Probe => self.state.limiter.probe(&check).await,
            Ask::Report => self.state.limiter.report(&check).await,
        };
        let decision = decided.map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Ask::Probe = ask {
            data_plane::record(&self.state, id, &check, &decision);
        }
        Ok(decision)
    }

    /// Charges `hits` (a report), or UNAVAILABLE when the store could not take them.
    async fn charge(
        &self,
        id: &RequestId,
        domain: &str,
        descriptors: &[RateLimitDescriptor],
        hits: u64,
    ) -> Result<(), Status> {
        let decision = self
            .decide(id, domain, descriptors, hits, Ask::Report)
            .await?;
        match decision.store_error {
            Some(e) => Err(Status::unavailable(format!(
                "the counter store could not be charged: {e}"
            ))),
            None => Ok(()),
        }
    }
}

/// The descriptors as Limitador reads them: their entries, nothing else.
fn entries_only(
    descriptors: &[RateLimitDescriptor],
) -> Result<
    (
        Vec<tollgate_core::Entry<'_>>,
        Vec<data_plane::DescriptorParts>,
    ),
    Status,
> {
    let (entries, mut parts) = decode_descriptors(descriptors)?;
    for part in &mut parts {
        part.hits = None;
        part.limit_override = None;
    }
    Ok((entries, parts))
}

fn answer(code: RlsCode) -> RateLimitResponse {
    RateLimitResponse {
        overall_code: code as i32,
        ..Default::default()
    }
}

fn verdict(decision: &Decision) -> RlsCode {
    if decision.allowed {
        RlsCode::Ok
    } else {
        RlsCode::OverLimit
    }
}

/// A reservation's TTL in nanoseconds: unset means [`DEFAULT_RESERVATION_TTL`].
fn reservation_ttl(
    ttl: Option<&envoy_types::pb::google::protobuf::Duration>,
) -> Result<u64, Status> {
    let Some(ttl) = ttl else {
        return Ok(DEFAULT_RESERVATION_TTL.as_nanos() as u64);
    };
    let ns = u64::try_from(ttl.seconds)
        .ok()
        .zip(u64::try_from(ttl.nanos).ok())
        .and_then(|(s, n)| s.checked_mul(1_000_000_000)?.checked_add(n))
        .filter(|&ns| ns > 0 && ns <= tollgate_core::hold::MAX_HOLD_TTL);
    ns.ok_or_else(|| {
        Status::invalid_argument(format!(
            "ttl must be more than 0 and at most 86400 s (a day), got {} s {} ns",
            ttl.seconds, ttl.nanos
        ))
    })
}

#[tonic::async_trait]
impl RateLimitService for KuadrantGrpc {
    async fn check_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let result = async {
            authorize(&self.state, &request)?;
            let id = request_id(&request);
            let r = request.into_inner();
            if r.domain.is_empty() {
                return Ok(answer(RlsCode::Unknown));
            }
            let decision = self
                .decide(&id, &r.domain, &r.descriptors, 1, Ask::Probe)
                .await?;
            Ok(answer(verdict(&decision)))
        }
        .await;
        counted(&self.state, "Kuadrant/CheckRateLimit", result)
    }

    async fn report(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let result = async {
            authorize(&self.state, &request)?;
            let id = request_id(&request);
            let r = request.into_inner();
            if r.domain.is_empty() {
                return Ok(answer(RlsCode::Unknown));
            }
            let hits = u64::from(r.hits_addend.max(1));
            self.charge(&id, &r.domain, &r.descriptors, hits).await?;
            Ok(answer(RlsCode::Ok))
        }
        .await;
        counted(&self.state, "Kuadrant/Report", result)
    }

    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<ReserveResponse>, Status> {
        let result = async {
            authorize(&self.state, &request)?;
            let id = request_id(&request);
            let r = request.into_inner();
            if r.domain.is_empty() {
                return Ok(ReserveResponse {
                    code: RlsCode::Unknown as i32,
                    reservation_id: String::new(),
                });
            }
            let amount =
                data_plane::hold_amount("amount", r.amount, 1).map_err(Status::invalid_argument)?;
            let ttl = reservation_ttl(r.ttl.as_ref())?;
            let (entries, parts) = entries_only(&r.descriptors)?;
            let descriptors = data_plane::descriptors(&entries, parts);
            let check = CheckRequest {
                domain: &r.domain,
                descriptors: &descriptors,
                hits: amount,
            };
            let reservation = take(&self.state, &id, &check, HoldKind::Reservation, ttl).await?;
            Ok(ReserveResponse {
                code: verdict(&reservation.decision) as i32,
                reservation_id: reservation.id.map(|h| h.to_string()).unwrap_or_default(),
            })
        }
        .await;
        counted(&self.state, "Kuadrant/Reserve", result)
    }

    async fn commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        let result = async {
            authorize(&self.state, &request)?;
            let id = request_id(&request);
            let c = request.into_inner();
            let actual = data_plane::hold_amount("actual_amount", c.actual_amount, 0)
                .map_err(Status::invalid_argument)?;
            if c.reservation_id.is_empty() {
                // No reservation was held (RFC 0021): what was used is reported.
                if c.domain.is_empty() {
                    return Err(Status::invalid_argument(
                        "domain: a commit without a reservation_id reports its actual_amount and needs the domain",
                    ));
                }
                if actual > 0 {
                    self.charge(&id, &c.domain, &c.descriptors, actual).await?;
                }
                return Ok(CommitResponse {});
            }
            let hold = HoldId::parse(&c.reservation_id).ok_or_else(|| unknown(&c.reservation_id))?;
            match self.state.limiter.settle(hold, Settle::Commit(actual)).await {
                Ok(SettleOutcome::Settled { .. }) => Ok(CommitResponse {}),
                Ok(SettleOutcome::Conflict { already }) => Err(Status::failed_precondition(
                    data_plane::already_settled(hold, already),
                )),
                Ok(SettleOutcome::Unknown) => Err(unknown(&c.reservation_id)),
                Err(e) => Err(hold_status(tollgate_core::HoldError::Store(e))),
            }
        }
        .await;
        counted(&self.state, "Kuadrant/Commit", result)
    }
}
