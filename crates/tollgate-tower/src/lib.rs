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
    Grpc(tollgate_client::GrpcCheckClient),
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
        Self::new(Decider::Grpc(client), domain)
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

/// The values a request gave each configured descriptor's entries, in order; `None`
/// where some entry had none (the descriptor is left out).
struct Extracted {
    values: SmallVec<[String; 4]>,
    present: SmallVec<[bool; 2]>,
    grpc: bool,
}

impl Config {
    fn extract(&self, request: &RequestView<'_>) -> Extracted {
        let mut values: SmallVec<[String; 4]> = SmallVec::new();
        let mut present = SmallVec::new();
        for entries in &self.descriptors {
            let start = values.len();
            let mut all = true;
            for (_, source) in entries {
                let mut value = String::new();
                if !source.read(request, &mut value) {
                    all = false;
                    break;
                }
                values.push(value);
            }
            if !all {
                values.truncate(start);
            }
            present.push(all);
        }
        let grpc = request
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
        Extracted {
            values,
            present,
            grpc,
        }
    }

    /// The verdict for the extracted values: `None` lets the request through.
    async fn verdict(&self, x: &Extracted) -> Option<http::Response<Full<Bytes>>> {
        let mut entries: SmallVec<[Entry<'_>; 4]> = SmallVec::new();
        let mut lengths: SmallVec<[usize; 2]> = SmallVec::new();
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
        if lengths.is_empty() {
            return None;
        }
        let mut at = 0;
        let descriptors: SmallVec<[Descriptor<'_>; 2]> = lengths
            .iter()
            .map(|&n| {
                let d = Descriptor {
                    entries: &entries[at..at + n],
                    hits: None,
                    limit_override: None,
                };
                at += n;
                d
            })
            .collect();
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
                match tokio::time::timeout(self.timeout, client.check(&wire)).await {
                    Ok(Ok((answer, _))) => Ok(respond::Answer::of_response(&answer)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {:?}", self.timeout)),
                }
            }
            Decider::Grpc(client) => {
                let wire = wire_request(&request);
                match tokio::time::timeout(self.timeout, client.check(&wire)).await {
                    Ok(Ok(answer)) => Ok(respond::Answer::of_response(&answer)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {:?}", self.timeout)),
                }
            }
        };
        match answer {
            Ok(answer) if answer.allowed => None,
            Ok(answer) => Some(respond::denied(&answer, x.grpc)),
            Err(error) => {
                tracing::warn!(domain = %self.domain, %error, fail = ?self.fail, "no rate-limit decision");
                match self.fail {
                    FailMode::Open => None,
                    FailMode::Closed => Some(respond::unavailable(x.grpc)),
                }
            }
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

/// The response body: the inner service's, or this layer's own refusal.
pub type LimitedBody<B> = Either<B, Full<Bytes>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RateLimit<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = http::Response<LimitedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // The clone that was made ready is the one that serves (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        let extracted = config.extract(&RequestView::of(&request));
        Box::pin(async move {
            match config.verdict(&extracted).await {
                None => Ok(inner.call(request).await?.map(Either::Left)),
                Some(refusal) => Ok(refusal.map(Either::Right)),
            }
        })
    }
}
