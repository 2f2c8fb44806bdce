//! Logging and traces. Logs: `tracing` with one structured line per event, pretty on a
//! terminal and JSON otherwise, the level from `RUST_LOG` (default `info`). Traces (with
//! `--otlp-endpoint`): the data plane's decision spans and the store's call spans
//! (target [`tollgate_data::trace::TARGET`]) exported over OTLP/HTTP by a batch
//! processor on a thread of its own, so the decision path only hands finished spans over.

use std::io::IsTerminal;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::cli::LogFormat;
use crate::configuration::TraceOptions;

/// Keeps the trace exporter alive; dropping it sends the spans still buffered.
#[must_use = "traces stop being exported when the guard is dropped"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("tollgate: traces not all exported at shutdown: {e}");
        }
    }
}

/// Installs the global subscriber (logs, and traces when `traces` names a collector).
/// Call once, before anything logs.
pub fn init(format: LogFormat, traces: &TraceOptions) -> anyhow::Result<Telemetry> {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if traces.otlp_endpoint.is_none() {
        // No layer wants the trace spans: each callsite is then never interesting, and a
        // decision pays one cached check for it.
        filter = filter.add_directive("tollgate::trace=off".parse().context("trace filter")?);
    }
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let logs = if json {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_span_events(FmtSpan::NONE)
            .boxed()
    } else {
        fmt::layer().with_span_events(FmtSpan::NONE).boxed()
    };
    let (provider, otel) = match &traces.otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .build()
                .with_context(|| {
                    format!("--otlp-endpoint {endpoint}: cannot build the exporter")
                })?;
            // The data plane samples before it makes a span (tollgate_data::trace), so the
            // SDK keeps what it is given.
            tollgate_data::trace::export(traces.trace_sample_ratio);
            let provider = SdkTracerProvider::builder()
                .with_sampler(Sampler::AlwaysOn)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name("tollgate")
                        .build(),
                )
                .with_batch_exporter(exporter)
                .build();
            let tracer = provider.tracer("tollgate");
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(
                    Targets::new().with_target(tollgate_data::trace::TARGET, tracing::Level::INFO),
                );
            (Some(provider), Some(layer))
        }
    };
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(otel)
        .try_init();
    if let Some(endpoint) = &traces.otlp_endpoint {
        tracing::info!(
            endpoint,
            sample_ratio = traces.trace_sample_ratio,
            "exporting traces over OTLP/HTTP"
        );
    }
    Ok(Telemetry { traces: provider })
}

/// For commands whose output is data (`events tail`, `usage export`): warnings and errors
/// only (`RUST_LOG` overrides), on stderr, so stdout stays the data.
pub fn init_for_commands() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
