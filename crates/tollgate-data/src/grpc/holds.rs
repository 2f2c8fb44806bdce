//! `tollgate.v1.Holds`: reservations and concurrency leases over gRPC, the operations of
//! `/v1/reservations` and `/v1/leases` with the same checks and the same answers
//! (`proto/tollgate/v1/holds.proto`).

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use tollgate_core::{
    CheckRequest, ExtendOutcome, HoldError, HoldId, HoldKind, Nanos, Reservation, Settle,
    SettleOutcome, Settled, ceil_units,
};
use tollgate_proto::tollgate::v1::holds_server::Holds;
use tollgate_proto::tollgate::v1::settle_response::Settled as PbSettled;
use tollgate_proto::tollgate::v1::{
    CommitRequest, HeartbeatRequest, HeartbeatResponse, HoldResponse, LeaseRequest, ReleaseRequest,
    ReserveRequest, SettleResponse,
};
use tonic::{Request, Response, Status};

use super::{
    HeaderNames, ResponseHeaders, authorize, counted, decode_descriptors, request_id, response,
};
use crate::data_plane;
use crate::http::request_id::RequestId;
use crate::state::AppState;

const MS: u64 = 1_000_000;

/// The `Holds` service over the shared application state.
pub struct HoldsGrpc {
    state: Arc<AppState>,
}

impl HoldsGrpc {
    /// The service.
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    /// Decides and holds `cost` on `domain`'s `descriptors`: the shared part of `Reserve`
    /// and `AcquireLease`, once the caller is authorized and the amount checked.
    async fn hold(
        &self,
        id: &RequestId,
        domain: &str,
        descriptors: &[RateLimitDescriptor],
        cost: u64,
        ttl_ms: u64,
        kind: HoldKind,
    ) -> Result<HoldResponse, Status> {
        let ttl = tollgate_core::hold_ttl_from_millis(ttl_ms)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(i) = descriptors.iter().position(|d| d.hits_addend.is_some()) {
            return Err(Status::invalid_argument(format!(
                "descriptors[{i}].hits_addend: every descriptor of a hold costs the same (the estimate, or the lease's hits); leave hits_addend out"
            )));
        }
        let (entries, parts) = decode_descriptors(descriptors)?;
        let descriptors = data_plane::descriptors(&entries, parts);
        let check = CheckRequest {
            domain,
            descriptors: &descriptors,
            hits: cost,
        };
        let Reservation {
            decision,
            id: hold,
            deadline,
        } = take(&self.state, id, &check, kind, ttl).await?;
        let now = self.state.limiter.clock().now();
        Ok(HoldResponse {
            decision: Some(response(
                &decision,
                ResponseHeaders::None,
                &HeaderNames::default(),
                0,
            )),
            id: hold.map(|h| h.to_string()).unwrap_or_default(),
            expires_in_ms: hold.map_or(0, |_| {
                ceil_units(u128::from(deadline.saturating_sub(now)), MS)
            }),
        })
    }

    async fn settle(&self, id_text: &str, how: Settle) -> Result<SettleResponse, Status> {
        let id = HoldId::parse(id_text).ok_or_else(|| unknown(id_text))?;
        match self.state.limiter.settle(id, how).await {
            Ok(SettleOutcome::Settled { how, repeated }) => {
                let (settled, actual) = match how {
                    Settled::Committed { actual } => (PbSettled::Committed, actual),
                    Settled::Released => (PbSettled::Released, 0),
                };
                Ok(SettleResponse {
                    id: id.to_string(),
                    settled: settled as i32,
                    actual,
                    repeated,
                })
            }
            Ok(SettleOutcome::Conflict { already }) => Err(Status::failed_precondition(
                data_plane::already_settled(id, already),
            )),
            Ok(SettleOutcome::Unknown) => Err(unknown(id_text)),
            Err(e) => Err(hold_status(HoldError::Store(e))),
        }
    }
}

/// Takes the hold `check` asks for and records its decision: every reservation and lease
/// over gRPC, Tollgate's and Kuadrant's, goes through here.
pub(super) async fn take(
    state: &AppState,
    id: &RequestId,
    check: &CheckRequest<'_>,
    kind: HoldKind,
    ttl: Nanos,
) -> Result<Reservation, Status> {
    let reservation = state
        .limiter
        .reserve(check, kind, ttl)
        .await
        .map_err(hold_status)?;
    data_plane::record(state, id, check, &reservation.decision);
    Ok(reservation)
}

/// NOT_FOUND for an id that names no hold, the same every time.
pub(super) fn unknown(id: &str) -> Status {
    Status::not_found(data_plane::unknown_hold(id))
}

/// The status of a hold that could not be taken or extended.
pub(super) fn hold_status(e: HoldError) -> Status {
    match e {
        HoldError::Request(e) => Status::invalid_argument(e.to_string()),
        HoldError::Ttl { .. } => Status::invalid_argument(e.to_string()),
        HoldError::Store(e) => Status::unavailable(format!(
            "the counter store could not keep or settle the hold: {e}"
        )),
    }
}

#[tonic::async_trait]
impl Holds for HoldsGrpc {
    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<HoldResponse>, Status> {
        let answer = async {
            authorize(&self.state, &request)?;
            let id = request_id(&request);
            let r = request.into_inner();
            let estimate = data_plane::hold_amount("estimate", r.estimate, 1)
                .map_err(Status::invalid_argument)?;
            let kind = HoldKind::Reservation;
            self.hold(&id, &r.domain, &r.descriptors, estimate, r.ttl_ms, kind)
                .await
        }
        .await;
        counted(&self.state, "Holds/Reserve", answer)
    }

    async fn commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<SettleResponse>, Status> {
        let answer = async {
            authorize(&self.state, &request)?;
            let c = request.into_inner();
            let actual =
                data_plane::hold_amount("actual", c.actual, 0).map_err(Status::invalid_argument)?;
            self.settle(&c.id, Settle::Commit(actual)).await
        }
        .await;
        counted(&self.state, "Holds/Commit", answer)
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<SettleResponse>, Status> {
        let answer = async {
            authorize(&self.state, &request)?;
            self.settle(&request.into_inner().id, Settle::Release).await
        }
        .await;
        counted(&self.state, "Holds/Release", answer)
    }

    async fn acquire_lease(
        &self,
        request: Request<LeaseRequest>,
    ) -> Result<Response<HoldResponse>, Status> {
        let answer = async {
            authorize(&self.state, &request)?;
            let id = request_id(&request);
            let r = request.into_inner();
            let hits = data_plane::hold_amount("hits", r.hits.max(1), 1)
                .map_err(Status::invalid_argument)?;
            let kind = HoldKind::Lease;
            self.hold(&id, &r.domain, &r.descriptors, hits, r.ttl_ms, kind)
                .await
        }
        .await;
        counted(&self.state, "Holds/AcquireLease", answer)
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let answer = async {
            authorize(&self.state, &request)?;
            let h = request.into_inner();
            let ttl = tollgate_core::hold_ttl_from_millis(h.ttl_ms)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let id = HoldId::parse(&h.id).ok_or_else(|| unknown(&h.id))?;
            match self.state.limiter.extend_hold(id, ttl).await {
                Ok(ExtendOutcome::Extended { deadline }) => {
                    let now = self.state.limiter.clock().now();
                    Ok(HeartbeatResponse {
                        id: id.to_string(),
                        expires_in_ms: ceil_units(u128::from(deadline.saturating_sub(now)), MS),
                    })
                }
                Ok(ExtendOutcome::Settled(already)) => Err(Status::failed_precondition(
                    data_plane::already_settled(id, already),
                )),
                Ok(ExtendOutcome::Unknown) => Err(unknown(&h.id)),
                Err(e) => Err(hold_status(e)),
            }
        }
        .await;
        counted(&self.state, "Holds/Heartbeat", answer)
    }
}
