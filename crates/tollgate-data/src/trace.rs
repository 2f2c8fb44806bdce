//! Traces of decisions: one span per decision, continuing the caller's W3C `traceparent`
//! (an HTTP header, or gRPC metadata as Envoy sends it), with the store's calls as child
//! spans (`tollgate-redis`). Every span has the target [`TARGET`]. Unless the server
//! exports traces (`--otlp-endpoint`, [`export`]), a decision pays one atomic load for
//! them and nothing is parsed.
//!
//! Sampling is decided here, before a span exists: a span that is made costs about as much
//! as the decision itself even when the exporter drops it (the subscriber's span record,
//! the OpenTelemetry builder, the log layer's fields), so an unsampled decision makes none.
//! A caller's `traceparent` decides for its request (its sampled flag); a decision without
//! one is sampled at the ratio [`export`] sets. The SDK then keeps every span it is given.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing::field::{Empty, display};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::http::request_id::RequestId;

/// The target of every span made for traces.
pub const TARGET: &str = "tollgate::trace";

/// The share of decisions without a caller's trace that start one (an `f64`'s bits).
static ROOT_SAMPLE_RATIO: AtomicU64 = AtomicU64::new(0);

/// Whether traces are exported: set once by the server, read once per decision. (Not
/// `tracing::enabled!`, which with per-layer filters leaves the filter state set for the
/// thread's next event, so that the log layer drops it.)
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Turns decision spans on (the server calls this when it exports traces), sampling
/// `ratio` (0 to 1) of the decisions without a caller's `traceparent`.
pub fn export(ratio: f64) {
    set_root_sample_ratio(ratio);
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Sets the share (0 to 1) of decisions without a caller's `traceparent` that are traced.
pub fn set_root_sample_ratio(ratio: f64) {
    ROOT_SAMPLE_RATIO.store(ratio.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
}

fn sample_root() -> bool {
    let ratio = f64::from_bits(ROOT_SAMPLE_RATIO.load(Ordering::Relaxed));
    ratio >= 1.0 || (ratio > 0.0 && fastrand::f64() < ratio)
}

/// The W3C trace-context fields of a request, as its transport carried them.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceHeaders<'a> {
    /// `traceparent`: version, trace id, parent span id, flags.
    pub traceparent: Option<&'a [u8]>,
    /// `tracestate`: vendors' entries, passed on unchanged.
    pub tracestate: Option<&'a [u8]>,
}

impl<'a> TraceHeaders<'a> {
    /// The fields from a header map (hyper's side of HTTP, forward auth).
    pub fn of(headers: &'a http::HeaderMap) -> Self {
        Self {
            traceparent: headers.get("traceparent").map(http::HeaderValue::as_bytes),
            tracestate: headers.get("tracestate").map(http::HeaderValue::as_bytes),
        }
    }

    /// The fields from gRPC metadata.
    pub fn of_metadata(metadata: &'a tonic::metadata::MetadataMap) -> Self {
        let get = |name| metadata.get(name).map(|v| v.as_bytes());
        Self {
            traceparent: get("traceparent"),
            tracestate: get("tracestate"),
        }
    }
}

impl Extractor for TraceHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }?;
        std::str::from_utf8(value).ok()
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The span of one decision over `protocol` (`http`, `grpc`, `forward_auth`): a child of
/// the caller's span when `headers` carry a valid `traceparent` (a malformed one starts a
/// new trace, as the W3C recommendation says), and carrying the request id and the trace
/// id, so that log lines written inside it name both.
pub fn decision(protocol: &'static str, request_id: &RequestId, headers: TraceHeaders<'_>) -> Span {
    if !EXPORTING.load(Ordering::Relaxed) {
        return Span::none();
    }
    let parent = headers
        .traceparent
        .map(|_| TraceContextPropagator::new().extract(&headers))
        .filter(|cx| cx.span().span_context().is_valid());
    let sampled = match &parent {
        Some(cx) => cx.span().span_context().is_sampled(),
        None => sample_root(),
    };
    if !sampled {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "decision",
        otel.kind = "server",
        protocol,
        request_id = request_id.as_str(),
        trace_id = Empty,
        domain = Empty,
        allowed = Empty,
    );
    if let Some(parent) = parent {
        // Refused only when the span is not one the OpenTelemetry layer knows (never here).
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", display(trace_id));
    span
}

/// Records a decision's domain and outcome on its span.
pub fn decided(span: &Span, domain: &str, allowed: bool) {
    if !span.is_disabled() {
        span.record("domain", domain);
        span.record("allowed", allowed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_fields_are_read_and_nothing_else() {
        let headers = TraceHeaders {
            traceparent: Some(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            tracestate: Some(b"congo=t61rcWkgMzE"),
        };
        assert_eq!(
            headers.get("traceparent"),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(headers.get("tracestate"), Some("congo=t61rcWkgMzE"));
        assert_eq!(headers.get("x-request-id"), None);
    }

    #[test]
    fn a_valid_traceparent_is_the_parent_and_a_malformed_one_is_ignored() {
        let propagator = TraceContextPropagator::new();
        let good = TraceHeaders {
            traceparent: Some(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            tracestate: None,
        };
        let cx = propagator.extract(&good);
        let parent = cx.span().span_context().clone();
        assert!(parent.is_valid() && parent.is_remote() && parent.is_sampled());
        assert_eq!(
            parent.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        for bad in [
            &b"00-00000000000000000000000000000000-b7ad6b7169203331-01"[..],
            b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            b"\xff\xfe",
        ] {
            let headers = TraceHeaders {
                traceparent: Some(bad),
                tracestate: None,
            };
            let cx = propagator.extract(&headers);
            assert!(!cx.span().span_context().is_valid(), "{bad:?}");
        }
    }

    #[test]
    fn decisions_without_a_caller_are_sampled_at_the_ratio() {
        let share = |ratio: f64| {
            set_root_sample_ratio(ratio);
            (0..20_000).filter(|_| sample_root()).count() as f64 / 20_000.0
        };
        assert_eq!(share(0.0), 0.0);
        assert_eq!(share(1.0), 1.0);
        assert_eq!(share(7.0), 1.0, "clamped to 1");
        let quarter = share(0.25);
        assert!((0.22..0.28).contains(&quarter), "{quarter}");
        set_root_sample_ratio(0.0);
    }

    #[test]
    fn without_a_subscriber_that_wants_them_spans_are_disabled() {
        let span = decision("http", &RequestId::generate(), TraceHeaders::default());
        assert!(span.is_disabled());
    }
}
