//! `tollgate.v1.Checks/CheckStream`: ShouldRateLimit over one bidirectional stream. The
//! requests that have arrived together are decided together
//! ([`crate::data_plane::decide_many`]: one round trip to a shared store per hash-tag group
//! instead of one per check) and answered in the order asked; a request ShouldRateLimit
//! would refuse is answered in its place with the reason, and the stream goes on.

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use futures_util::{FutureExt, Stream, StreamExt};
use tollgate_core::CheckRequest;
use tollgate_proto::tollgate::v1::StreamedDecision;
use tollgate_proto::tollgate::v1::checks_server::Checks;
use tonic::{Request, Response, Status, Streaming};

use super::{HeaderNames, ResponseHeaders, authorize, decode_descriptors, request_id, response};
use crate::data_plane;
use crate::http::request_id::RequestId;
use crate::state::AppState;

/// The method name in metrics.
const METHOD: &str = "CheckStream";

/// Most requests decided together; what arrived beyond waits for the next batch.
pub const MAX_TOGETHER: usize = 256;

/// The stream of answers.
pub type DecisionStream = Pin<Box<dyn Stream<Item = Result<StreamedDecision, Status>> + Send>>;

/// The service over the shared application state.
pub struct ChecksGrpc {
    state: Arc<AppState>,
    headers: ResponseHeaders,
    names: Arc<HeaderNames>,
}

impl ChecksGrpc {
    /// The service, answering rate-limit headers as ShouldRateLimit does on this listener.
    pub fn new(state: Arc<AppState>, headers: ResponseHeaders, names: HeaderNames) -> Self {
        Self {
            state,
            headers,
            names: Arc::new(names),
        }
    }
}

/// What one wait on the inbound stream brought: the requests that arrived together, and
/// how the stream goes on.
#[derive(Debug)]
pub struct Batch<T> {
    /// At least one request, at most [`MAX_TOGETHER`].
    pub requests: Vec<T>,
    /// The stream failed after these requests (answered after them, then the stream ends).
    pub failed: Option<Status>,
    /// The caller closed its side after these requests.
    pub ended: bool,
}

/// Waits for the next request, then takes every one that is already there with it (up to
/// `max`) without waiting again. `None` when the caller closed the stream with nothing
/// left to answer; `Err` when the stream failed before a request came.
pub async fn next_batch<T, S>(inbound: &mut S, max: usize) -> Option<Result<Batch<T>, Status>>
where
    S: Stream<Item = Result<T, Status>> + Unpin,
{
    let first = match inbound.next().await? {
        Ok(first) => first,
        Err(status) => return Some(Err(status)),
    };
    let mut batch = Batch {
        requests: vec![first],
        failed: None,
        ended: false,
    };
    // `next()` keeps no state of its own (the stream does), so a poll that finds nothing
    // ready can be dropped: the request waits in the stream for the next batch.
    while batch.requests.len() < max {
        match inbound.next().now_or_never() {
            None => break,
            Some(None) => {
                batch.ended = true;
                break;
            }
            Some(Some(Ok(request))) => batch.requests.push(request),
            Some(Some(Err(status))) => {
                batch.failed = Some(status);
                break;
            }
        }
    }
    Some(Ok(batch))
}

/// Decides `requests` together and answers each in its place.
async fn answer(
    state: &AppState,
    headers: ResponseHeaders,
    names: &HeaderNames,
    id: &RequestId,
    requests: &[RateLimitRequest],
) -> Vec<Result<StreamedDecision, Status>> {
    let started = std::time::Instant::now();
    let decoded: Vec<_> = requests
        .iter()
        .map(|r| decode_descriptors(&r.descriptors))
        .collect();
    let descriptors: Vec<_> = decoded
        .iter()
        .map(|d| {
            d.as_ref()
                .ok()
                .map(|(entries, parts)| data_plane::descriptors(entries, parts.iter().copied()))
        })
        .collect();
    let checks: Vec<Option<CheckRequest<'_>>> = requests
        .iter()
        .zip(&descriptors)
        .map(|(r, d)| {
            d.as_ref().map(|descriptors| CheckRequest {
                domain: &r.domain,
                descriptors,
                hits: u64::from(r.hits_addend),
            })
        })
        .collect();
    let decisions = data_plane::decide_many(state, Some(id), &checks).await;
    let elapsed = started.elapsed();
    let now_seconds = headers.now_seconds(state);
    decoded
        .iter()
        .zip(decisions)
        .map(|(decoded, decision)| {
            // No decision only where the descriptors could not be decoded.
            let answer = match decision {
                Some(Ok(decision)) => Ok(decision),
                Some(Err(e)) => Err(e.to_string()),
                None => Err(decoded
                    .as_ref()
                    .err()
                    .map_or_else(String::new, |status| status.message().to_owned())),
            };
            Ok(match answer {
                Ok(decision) => {
                    state.metrics.observe_latency(elapsed);
                    state.metrics.grpc_call(METHOD, "ok");
                    StreamedDecision {
                        decision: Some(response(&decision, headers, names, now_seconds)),
                        error: String::new(),
                    }
                }
                Err(error) => {
                    state.metrics.rejected("invalid");
                    state.metrics.grpc_call(METHOD, "invalid_argument");
                    tracing::info!(request_id = id.as_str(), detail = %error, "invalid CheckStream request");
                    StreamedDecision {
                        decision: None,
                        error,
                    }
                }
            })
        })
        .collect()
}

#[tonic::async_trait]
impl Checks for ChecksGrpc {
    type CheckStreamStream = DecisionStream;

    async fn check_stream(
        &self,
        request: Request<Streaming<RateLimitRequest>>,
    ) -> Result<Response<DecisionStream>, Status> {
        if let Err(status) = authorize(&self.state, &request) {
            self.state.metrics.grpc_call(METHOD, "unauthenticated");
            return Err(status);
        }
        let id = request_id(&request);
        let inbound = request.into_inner();
        let (state, headers, names) = (self.state.clone(), self.headers, self.names.clone());
        let answers = futures_util::stream::unfold(Some(inbound), move |inbound| {
            let (state, names, id) = (state.clone(), names.clone(), id.clone());
            async move {
                let mut inbound = inbound?;
                let batch = match next_batch(&mut inbound, MAX_TOGETHER).await? {
                    Ok(batch) => batch,
                    Err(status) => return Some((vec![Err(status)], None)),
                };
                let mut answers = answer(&state, headers, &names, &id, &batch.requests).await;
                let more = match batch.failed {
                    Some(status) => {
                        answers.push(Err(status));
                        None
                    }
                    None if batch.ended => None,
                    None => Some(inbound),
                };
                Some((answers, more))
            }
        })
        .flat_map(futures_util::stream::iter);
        Ok(Response::new(Box::pin(answers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(n: u32) -> Vec<Result<u32, Status>> {
        (0..n).map(Ok).collect()
    }

    #[tokio::test]
    async fn requests_that_arrived_together_make_one_batch() {
        let mut inbound = futures_util::stream::iter(ready(5));
        let batch = next_batch(&mut inbound, 256).await.unwrap().unwrap();
        assert_eq!(batch.requests, [0, 1, 2, 3, 4]);
        assert!(batch.ended, "the stream closed after them");
        assert!(next_batch(&mut inbound, 256).await.is_none());
    }

    #[tokio::test]
    async fn a_batch_stops_at_its_size_and_the_rest_waits_for_the_next() {
        let mut inbound = futures_util::stream::iter(ready(5));
        let batch = next_batch(&mut inbound, 3).await.unwrap().unwrap();
        assert_eq!(batch.requests, [0, 1, 2]);
        assert!(!batch.ended);
        let batch = next_batch(&mut inbound, 3).await.unwrap().unwrap();
        assert_eq!(batch.requests, [3, 4]);
    }

    #[tokio::test]
    async fn a_batch_takes_what_is_there_and_does_not_wait_for_more() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<u32, Status>>();
        let mut inbound = tokio_stream_of(rx);
        for i in 0..3 {
            tx.send(Ok(i)).unwrap();
        }
        let batch = next_batch(&mut inbound, 256).await.unwrap().unwrap();
        assert_eq!(batch.requests, [0, 1, 2]);
        assert!(!batch.ended, "the sender is still there");
        tx.send(Ok(3)).unwrap();
        drop(tx);
        let batch = next_batch(&mut inbound, 256).await.unwrap().unwrap();
        assert_eq!(batch.requests, [3]);
        assert!(batch.ended);
    }

    #[tokio::test]
    async fn a_failure_after_requests_is_kept_for_after_their_answers() {
        let items = vec![Ok(1), Ok(2), Err(Status::data_loss("cut")), Ok(3)];
        let mut inbound = futures_util::stream::iter(items);
        let batch = next_batch(&mut inbound, 256).await.unwrap().unwrap();
        assert_eq!(batch.requests, [1, 2]);
        assert_eq!(batch.failed.map(|s| s.code()), Some(tonic::Code::DataLoss));
        let mut failing = futures_util::stream::iter(vec![Err::<u32, _>(Status::aborted("x"))]);
        let first = next_batch(&mut failing, 256).await.unwrap();
        assert_eq!(first.unwrap_err().code(), tonic::Code::Aborted);
    }

    /// An mpsc receiver as a stream, without a dependency on tokio-stream.
    fn tokio_stream_of<T>(
        rx: tokio::sync::mpsc::UnboundedReceiver<T>,
    ) -> impl Stream<Item = T> + Unpin {
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }
}
