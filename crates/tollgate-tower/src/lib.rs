//! Tollgate inside a Rust service: a tower [`Layer`] for axum and tonic that builds
//! descriptors from each request ([`Source`]: peer address, header, path, method, a claim,
//! a constant or a closure), asks a limiter, and answers a denied request itself: HTTP 429
//! with `Retry-After` and a problem document, or gRPC `RESOURCE_EXHAUSTED`.
//!
//! Two ways to decide:
//! - **embedded** ([`RateLimitLayer::embedded`]): a [`tollgate_core::Limiter`] in this
//!   process, over memory ([`embedded::memory`]) or over Redis shared with other nodes and
//!   with `tollgate serve` ([`embedded::redis`]). No server, no network hop in memory.
//! - **remote** ([`RateLimitLayer::remote_http`], [`RateLimitLayer::remote_grpc`]): a
//!   running Tollgate (a sidecar on loopback, or a central service), through
//!   `tollgate-client`, under a deadline.
//!
//! When no decision can be had (the remote does not answer in time, a descriptor is
//! refused), [`FailMode`] says what happens: pass the request (`Open`, the default: a rate
//! limiter should not take a service down with it) or answer 503 (`Closed`). In embedded
//! mode over Redis, a store outage is answered by each policy's `on_store_error`, as in the
//! server.

pub mod embedded;
mod extract;
mod respond;

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use smallvec::SmallVec;
use tollgate_core::{CheckRequest, Descriptor, Entry, Limiter};
use tower::{Layer, Service};

pub use extract::{Claims, RequestView, Source, ValueFn};

/// What a request gets when no decision could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// It passes (the default).
    #[default]
    Open,
    /// It is refused: HTTP 503, gRPC `UNAVAILABLE`.
    Closed,
}

#[derive(Clone)]
enum Decider {
    Embedded(Arc<Limiter>),
    Http(Arc<tollgate_client::CheckClient>),
    Grpc(Arc<tollgate_client::GrpcCheckClient>),
}

#[derive(Clone)]
struct Config {
    decider: Decider,
    domain: String,
    /// Each descriptor's entries: key and source.
    descriptors: Vec<Vec<(String, Source)>>,
    fail: FailMode,
    timeout: Duration,
}

/// The layer: one per policy domain; cheap to clone.
#[derive(Clone)]
pub struct RateLimitLayer {
    config: Arc<Config>,
}

impl RateLimitLayer {
    fn new(decider: Decider, domain: &str) -> Self {
        Self {
            config: Arc::new(Config {
                decider,
                domain: domain.to_owned(),
                descriptors: Vec::new(),
                fail: FailMode::default(),
                timeout: Duration::from_millis(50),
            }),
        }
    }

    /// Decides with `limiter`, in this process, against `domain`'s policies.
    pub fn embedded(limiter: Arc<Limiter>, domain: &str) -> Self {
        Self::new(Decider::Embedded(limiter), domain)
    }

    /// Decides with a running Tollgate over HTTP (`POST /v1/check`).
    pub fn remote_http(client: tollgate_client::CheckClient, domain: &str) -> Self {
        Self::new(Decider::Http(Arc::new(client)), domain)
    }

    /// Decides with a running Tollgate over gRPC (Envoy's RLS).
    pub fn remote_grpc(client: tollgate_client::GrpcCheckClient, domain: &str) -> Self {
        Self::new(Decider::Grpc(Arc::new(client)), domain)
    }

    /// Adds a descriptor made of `entries` (key, where its value comes from), checked with
    /// every request that has a value for each entry.
    pub fn descriptor<K: Into<String>>(
        mut self,
        entries: impl IntoIterator<Item = (K, Source)>,
    ) -> Self {
        let entries = entries.into_iter().map(|(k, s)| (k.into(), s)).collect();
        Arc::make_mut(&mut self.config).descriptors.push(entries);
        self
    }

    /// What a request gets when no decision could be had.
    pub fn fail(mut self, mode: FailMode) -> Self {
        Arc::make_mut(&mut self.config).fail = mode;
        self
    }

    /// The deadline of a remote decision (default 50 ms); past it, [`FailMode`] answers.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        Arc::make_mut(&mut self.config).timeout = timeout;
        self
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service [`RateLimitLayer`] wraps around another.
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    config: Arc<Config>,
}

/// The values a request gave each configured descriptor's entries, in order (borrowed
/// from the request where they can be), and which descriptors have all of theirs.
struct Values<'a> {
    values: SmallVec<[Cow<'a, str>; 4]>,
    present: SmallVec<[bool; 2]>,
}

impl Values<'_> {
    fn into_owned(self) -> Values<'static> {
        Values {
            values: self
                .values
                .into_iter()
                .map(|v| Cow::Owned(v.into_owned()))
                .collect(),
            present: self.present,
        }
    }
}

/// A request's entries laid out for the core. Filled in place ([`Config::build`]): at
/// 160 bytes, returning it by value cost a `memmove` per request.
#[derive(Default)]
struct Built<'a> {
    entries: SmallVec<[Entry<'a>; 4]>,
    lengths: SmallVec<[usize; 2]>,
}

impl Built<'_> {
    fn descriptors(&self) -> SmallVec<[Descriptor<'_>; 2]> {
        let mut at = 0;
        self.lengths
            .iter()
            .map(|&n| {
                let d = Descriptor {
                    entries: &self.entries[at..at + n],
                    hits: None,
                    limit_override: None,
                };
                at += n;
                d
            })
            .collect()
    }
}

impl Config {
    fn extract<'a>(&'a self, request: &RequestView<'a>) -> Values<'a> {
        let mut values = SmallVec::new();
        let mut present = SmallVec::new();
        for entries in &self.descriptors {
            let start = values.len();
            let mut all = true;
            for (_, source) in entries {
                match source.read(request) {
                    Some(value) => values.push(value),
                    None => {
                        all = false;
                        break;
                    }
                }
            }
            if !all {
                values.truncate(start);
            }
            present.push(all);
        }
        Values { values, present }
    }

    fn build<'a>(&'a self, x: &'a Values<'_>, built: &mut Built<'a>) {
        let Built { entries, lengths } = built;
        let mut values = x.values.iter();
        for (descriptor, &present) in self.descriptors.iter().zip(&x.present) {
            if !present {
                continue;
            }
            for ((key, _), value) in descriptor.iter().zip(values.by_ref()) {
                entries.push(Entry { key, value });
            }
            lengths.push(descriptor.len());
        }
    }

    /// What a decision (or its absence) comes to: `None` lets the request through.
    fn conclude(&self, answer: Result<respond::Answer, String>) -> Option<respond::Refusal> {
        match answer {
            Ok(answer) if answer.allowed => None,
            Ok(answer) => Some(respond::Refusal::Denied(answer)),
            Err(error) => {
                tracing::warn!(domain = %self.domain, %error, fail = ?self.fail, "no rate-limit decision");
                match self.fail {
                    FailMode::Open => None,
                    FailMode::Closed => Some(respond::Refusal::Unavailable),
                }
            }
        }
    }

    /// The verdict without waiting, when the limiter is embedded over memory; `None` when
    /// it must be waited for ([`Config::verdict`]). `Some(None)` lets the request through.
    fn verdict_now(&self, x: &Values<'_>) -> Option<Option<respond::Refusal>> {
        let Decider::Embedded(limiter) = &self.decider else {
            return None;
        };
        let mut built = Built::default();
        self.build(x, &mut built);
        if built.lengths.is_empty() {
            return Some(None);
        }
        let descriptors = built.descriptors();
        let request = CheckRequest {
            domain: &self.domain,
            descriptors: &descriptors,
            hits: 1,
        };
        let answer = limiter.check_now(&request)?;
        let answer = answer
            .map(|d| respond::Answer::of_decision(&d))
            .map_err(|e| e.to_string());
        Some(self.conclude(answer))
    }

    /// The verdict, waiting for the store or the remote server.
    async fn verdict(&self, x: &Values<'_>) -> Option<respond::Refusal> {
        let mut built = Built::default();
        self.build(x, &mut built);
        if built.lengths.is_empty() {
            return None;
        }
        let descriptors = built.descriptors();
        let request = CheckRequest {
            domain: &self.domain,
            descriptors: &descriptors,
            hits: 1,
        };
        let answer = match &self.decider {
            Decider::Embedded(limiter) => limiter
                .check(&request)
                .await
                .map(|d| respond::Answer::of_decision(&d))
                .map_err(|e| e.to_string()),
            Decider::Http(client) => {
                let wire = wire_request(&request);
                self.remote(async { client.check(&wire).await.map(|(answer, _)| answer) })
                    .await
            }
            Decider::Grpc(client) => {
                let wire = wire_request(&request);
                self.remote(client.check(&wire)).await
            }
        };
        self.conclude(answer)
    }
}

impl Config {
    /// A remote server's answer, under the deadline.
    async fn remote(
        &self,
        answer: impl Future<Output = Result<tollgate_api::CheckResponse, tollgate_client::ClientError>>,
    ) -> Result<respond::Answer, String> {
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(answer)) => Ok(respond::Answer::of_response(&answer)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

/// The check as `tollgate-api` sends it.
fn wire_request<'a>(request: &'a CheckRequest<'a>) -> tollgate_api::CheckRequest<'a> {
    use std::borrow::Cow::Borrowed;
    tollgate_api::CheckRequest {
        domain: Borrowed(request.domain),
        descriptors: request
            .descriptors
            .iter()
            .map(|d| tollgate_api::DescriptorRequest {
                entries: d
                    .entries
                    .iter()
                    .map(|e| tollgate_api::EntryRequest {
                        key: Borrowed(e.key),
                        value: Borrowed(e.value),
                    })
                    .collect(),
                hits: None,
                limit: None,
            })
            .collect(),
        hits: Some(request.hits),
    }
}

/// The response body: the inner service's, or this layer's own refusal. The refusal's
/// body is boxed so that a response that passes is no larger than the inner service's
/// by more than a pointer: responses are moved several times on their way out, and past
/// 128 bytes each move is a `memmove` call (measured: 55 ns a request with `Full` inline).
pub type LimitedBody<B> = Either<B, RefusalBody>;

/// The body of a response this layer answers by itself.
pub type RefusalBody = Box<Full<Bytes>>;

/// A refusal's response with its body as [`LimitedBody`] carries it.
fn refused<B>(response: http::Response<Full<Bytes>>) -> http::Response<LimitedBody<B>> {
    response.map(|body| Either::Right(Box::new(body)))
}

type Boxed<B, E> = Pin<Box<dyn Future<Output = Result<http::Response<LimitedBody<B>>, E>> + Send>>;

pin_project_lite::pin_project! {
    #[project = StateProjection]
    enum State<F, B, E> {
        // The request passed; the inner service answers.
        Inner { #[pin] future: F },
        // Refused by the layer (boxed: a response is large, and this future is moved
        // with every request that passes too).
        Refused { response: Option<Box<http::Response<Full<Bytes>>>> },
        // Waiting for the decision, then for the inner service.
        Waiting { future: Boxed<B, E> },
    }
}

pin_project_lite::pin_project! {
    /// The future of [`RateLimit`]'s answer: the inner service's when decided at once (no
    /// allocation), this layer's refusal, or a boxed wait for a store or a server.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    fn of(state: State<F, B, E>) -> Self {
        Self { state }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<LimitedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProjection::Inner { future } => future
                .poll(cx)
                .map(|answer| answer.map(|r| r.map(Either::Left))),
            StateProjection::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(refused(*response))),
                None => Poll::Pending,
            },
            StateProjection::Waiting { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RateLimit<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = http::Response<LimitedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let later = {
            let config = &*self.config;
            let values = config.extract(&RequestView::of(&request));
            match config.verdict_now(&values) {
                Some(verdict) => Err(verdict),
                None => Ok(values.into_owned()),
            }
        };
        let values = match later {
            Ok(values) => values,
            Err(None) => {
                return ResponseFuture::of(State::Inner {
                    future: self.inner.call(request),
                });
            }
            Err(Some(refusal)) => {
                return ResponseFuture::of(State::Refused {
                    response: Some(Box::new(refusal.response(request.headers()))),
                });
            }
        };
        // The clone that was made ready is the one that serves (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        ResponseFuture::of(State::Waiting {
            future: Box::pin(async move {
                match config.verdict(&values).await {
                    None => Ok(inner.call(request).await?.map(Either::Left)),
                    Some(refusal) => Ok(refused(refusal.response(request.headers()))),
                }
            }),
        })
    }
}
