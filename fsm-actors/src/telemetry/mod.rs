//! Observability: `tracing` spans exported through OpenTelemetry, metrics
//! through the OpenTelemetry meter, a JSON-lines span file for offline
//! inspection, and an HTTP endpoint for probes and Prometheus
//! ([`http`]).
//!
//! The library itself only emits `tracing` spans and events (target
//! `fsm_actors`) and records metrics on the meter it is given. Nothing is
//! exported until an application installs exporters — most simply with
//! [`Telemetry`]:
//!
//! ```no_run
//! use fsm_actors::telemetry::Telemetry;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let _telemetry = Telemetry::new("my-service")
//!     .otlp("http://localhost:4318")          // traces and metrics to a collector
//!     .json_file("trace.jsonl")               // spans for `fsm-trace`
//!     .prometheus("127.0.0.1:9464".parse()?)  // GET /metrics, /healthz
//!     .install()?;
//! // ... spawn a tree, then `_telemetry.serve_tree(&tree)` adds /readyz
//! // and /tree; the guard flushes everything when dropped.
//! # Ok(())
//! # }
//! ```
//!
//! Without it, spans are disabled `tracing` spans (a relaxed atomic load
//! each) and the metric instruments are no-ops.
//!
//! # Spans
//!
//! One trace per root tick: the root's `fsm.tick` span is the trace root and
//! every node's `fsm.tick` is a child of its parent's (the span travels in
//! the tick message; ractor's own message-span propagation is off). Inside
//! a tick: `fsm.reconcile` (with `spawned`, `updated`, `replaced`,
//! `stopped`), `fsm.child.spawn`, `fsm.child.stop`, `fsm.collect`.
//! `fsm.child.restart` (with `failure`, `attempt`, `delay_ms`) and
//! `fsm.action` (with `action`, `outcome`) happen between ticks: they start
//! their own traces and carry a link to the tick they came from. Every span
//! carries `node.path` and `worker.type`; tick spans carry `state.before`
//! and `state.after`.

pub mod http;
mod jsonl;
pub(crate) mod metrics;
pub mod prometheus;

use std::net::SocketAddr;
use std::path::PathBuf;

use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use jsonl::JsonLinesExporter;
pub use metrics::names;

/// Installing telemetry failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A filter does not parse.
    #[error("invalid {which} filter `{directives}`: {message}")]
    Filter {
        /// Which filter.
        which: &'static str,
        /// The directives given.
        directives: String,
        /// The parser's message.
        message: String,
    },
    /// The span file cannot be created.
    #[error("cannot create the span file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An OTLP exporter cannot be built.
    #[error("cannot build the OTLP exporter for {endpoint}: {message}")]
    Otlp {
        /// The endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// The metrics endpoint cannot be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A global subscriber is installed already.
    #[error(
        "a global tracing subscriber is installed already; install telemetry once, at start-up"
    )]
    AlreadyInstalled,
}

/// Sets up logs, traces and metrics for a process, in one call.
///
/// * logs go to stderr, filtered by `RUST_LOG` (or [`log_filter`]);
/// * spans matching the trace filter (default `fsm_actors=info`) go to the
///   OTLP endpoint and/or the JSON-lines file;
/// * metrics go to the OTLP endpoint every 10 s and/or are served for
///   Prometheus.
///
/// [`log_filter`]: Telemetry::log_filter
#[derive(Debug, Clone)]
#[must_use]
pub struct Telemetry {
    service_name: String,
    log_filter: Option<String>,
    logs: bool,
    trace_filter: String,
    otlp: Option<String>,
    json_file: Option<PathBuf>,
    prometheus: Option<SocketAddr>,
}

impl Telemetry {
    /// Telemetry for a service called `service_name`: logs to stderr only,
    /// until exporters are added.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            log_filter: None,
            logs: true,
            trace_filter: "fsm_actors=info".to_owned(),
            otlp: None,
            json_file: None,
            prometheus: None,
        }
    }

    /// The log filter (`EnvFilter` directives); default: `RUST_LOG`, or
    /// `warn`.
    pub fn log_filter(mut self, directives: impl Into<String>) -> Self {
        self.log_filter = Some(directives.into());
        self
    }

    /// No logs on stderr.
    pub fn without_logs(mut self) -> Self {
        self.logs = false;
        self
    }

    /// Which spans are exported (`EnvFilter` directives); default
    /// `fsm_actors=info`. Add your own targets to trace your code too.
    pub fn trace_filter(mut self, directives: impl Into<String>) -> Self {
        self.trace_filter = directives.into();
        self
    }

    /// Export traces and metrics over OTLP/HTTP (protobuf) to `endpoint`
    /// (`http://host:4318`; `/v1/traces` and `/v1/metrics` are appended).
    pub fn otlp(mut self, endpoint: impl Into<String>) -> Self {
        self.otlp = Some(endpoint.into());
        self
    }

    /// Write every finished span to `path`, one JSON object per line.
    pub fn json_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.json_file = Some(path.into());
        self
    }

    /// Serve the metrics in Prometheus text format at
    /// `http://{addr}/metrics`, and `/healthz`; `/readyz` and `/tree` once
    /// [`TelemetryGuard::serve_tree`] names the tree (see [`http`] for the
    /// endpoints and their limits). Port 0 picks a free port
    /// ([`TelemetryGuard::metrics_addr`] tells which). Use a loopback
    /// address unless the endpoint must be reached from elsewhere.
    pub fn prometheus(mut self, addr: SocketAddr) -> Self {
        self.prometheus = Some(addr);
        self
    }

    /// Installs the global subscriber and meter provider.
    ///
    /// # Errors
    ///
    /// A [`TelemetryError`] saying which part failed; nothing is installed
    /// then.
    pub fn install(self) -> Result<TelemetryGuard, TelemetryError> {
        let resource = Resource::builder()
            .with_service_name(self.service_name.clone())
            .build();
        let otlp_url = |signal: &str| {
            self.otlp
                .as_ref()
                .map(|base| format!("{}/v1/{signal}", base.trim_end_matches('/')))
        };

        let log_filter = match &self.log_filter {
            Some(d) => EnvFilter::try_new(d).map_err(|e| TelemetryError::Filter {
                which: "log",
                directives: d.clone(),
                message: e.to_string(),
            })?,
            None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        };
        let trace_filter =
            EnvFilter::try_new(&self.trace_filter).map_err(|e| TelemetryError::Filter {
                which: "trace",
                directives: self.trace_filter.clone(),
                message: e.to_string(),
            })?;

        // Traces.
        let mut tracer_provider = None;
        if self.otlp.is_some() || self.json_file.is_some() {
            let mut builder = SdkTracerProvider::builder().with_resource(resource.clone());
            if let Some(url) = otlp_url("traces") {
                use opentelemetry_otlp::WithExportConfig as _;
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(url.clone())
                    .build()
                    .map_err(|e| TelemetryError::Otlp {
                        endpoint: url.clone(),
                        message: e.to_string(),
                    })?;
                builder = builder.with_batch_exporter(exporter);
            }
            if let Some(path) = &self.json_file {
                let exporter =
                    JsonLinesExporter::create(path).map_err(|source| TelemetryError::File {
                        path: path.clone(),
                        source,
                    })?;
                builder =
                    builder.with_span_processor(BatchSpanProcessor::builder(exporter).build());
            }
            tracer_provider = Some(builder.build());
        }

        // Metrics.
        let mut meter_provider = None;
        let mut http = None;
        if self.otlp.is_some() || self.prometheus.is_some() {
            let mut builder = SdkMeterProvider::builder().with_resource(resource);
            if let Some(url) = otlp_url("metrics") {
                use opentelemetry_otlp::WithExportConfig as _;
                let exporter = opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_endpoint(url.clone())
                    .build()
                    .map_err(|e| TelemetryError::Otlp {
                        endpoint: url.clone(),
                        message: e.to_string(),
                    })?;
                builder = builder.with_reader(PeriodicReader::builder(exporter).build());
            }
            let prometheus = self
                .prometheus
                .map(|addr| (addr, prometheus::PrometheusExporter::new()));
            if let Some((_, exporter)) = &prometheus {
                // Collected on every scrape (a forced flush); the period is a
                // fallback.
                builder = builder.with_reader(
                    PeriodicReader::builder(exporter.clone())
                        .with_interval(std::time::Duration::from_secs(60))
                        .build(),
                );
            }
            let provider = builder.build();
            if let Some((addr, exporter)) = prometheus {
                http = Some(
                    prometheus::serve(addr, provider.clone(), exporter)
                        .map_err(|source| TelemetryError::Bind { addr, source })?,
                );
            }
            opentelemetry::global::set_meter_provider(provider.clone());
            meter_provider = Some(provider);
        }

        let fmt = self.logs.then(|| {
            // Colour codes only for a person at a terminal, not for a file
            // or a log collector.
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr)
                .with_filter(log_filter)
        });
        let otel = tracer_provider.as_ref().map(|p| {
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("fsm-actors"))
                .with_filter(trace_filter)
        });
        tracing_subscriber::registry()
            .with(fmt)
            .with(otel)
            .try_init()
            .map_err(|_| TelemetryError::AlreadyInstalled)?;

        Ok(TelemetryGuard {
            tracer_provider,
            meter_provider,
            http,
        })
    }
}

/// Keeps telemetry running; flushes and shuts the exporters down when
/// dropped (keep it alive until the end of `main`).
#[derive(Debug)]
#[must_use = "dropping the guard shuts telemetry down"]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    http: Option<http::HttpServer>,
}

impl TelemetryGuard {
    /// Where `/metrics` is served, if it is.
    #[must_use]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(http::HttpServer::local_addr)
    }

    /// Serves `tree` at `/tree` and judges `/healthz` and `/readyz` by it
    /// (see [`http::HttpServer::serve_tree`]); nothing without
    /// [`Telemetry::prometheus`].
    pub fn serve_tree(&self, tree: &crate::Tree) {
        if let Some(http) = &self.http {
            http.serve_tree(tree);
        }
    }

    /// Exports everything recorded so far.
    pub fn flush(&self) {
        if let Some(p) = &self.tracer_provider {
            let _ = p.force_flush();
        }
        if let Some(p) = &self.meter_provider {
            let _ = p.force_flush();
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // No scrape after the providers shut down.
        drop(self.http.take());
        if let Some(p) = self.tracer_provider.take() {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
        if let Some(p) = self.meter_provider.take() {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
    }
}

/// Whether a span or event at `INFO` may be recorded at all (the global
/// level filter, one atomic load). The hot paths check it before they build
/// a span out of line; the span's own callsite still decides whether it is
/// enabled.
pub(crate) fn info_enabled() -> bool {
    tracing::Level::INFO <= tracing::level_filters::STATIC_MAX_LEVEL
        && tracing::Level::INFO <= tracing::level_filters::LevelFilter::current()
}

/// The OpenTelemetry context of a `tracing` span, for links; `None` when
/// the span is disabled or not exported.
pub(crate) fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// Links `span` to `origin`, if both are exported.
pub(crate) fn link(span: &tracing::Span, origin: Option<&SpanContext>) {
    if let Some(origin) = origin
        && !span.is_disabled()
    {
        span.add_link(origin.clone());
    }
}

/// The W3C `traceparent` of a span (`00-trace-span-flags`), to continue its
/// trace on another node; `None` when the span is not exported.
#[cfg(feature = "cluster")]
pub(crate) fn traceparent(span: &tracing::Span) -> Option<String> {
    let sc = span_context(span)?;
    Some(format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    ))
}

/// A span whose parent is the remote span a `traceparent` names (see
/// [`traceparent`]): the tick of a placed subtree, under its parent's tick
/// on another node. Disabled when the header does not parse or ticks are
/// not traced.
#[cfg(feature = "cluster")]
pub(crate) fn remote_parent_span(traceparent: &str) -> tracing::Span {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    let mut parts = traceparent.split('-');
    let (Some("00"), Some(trace), Some(span), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return tracing::Span::none();
    };
    let (Ok(trace), Ok(span_id), Ok(flags)) = (
        TraceId::from_hex(trace),
        SpanId::from_hex(span),
        u8::from_str_radix(flags, 16),
    ) else {
        return tracing::Span::none();
    };
    let remote = SpanContext::new(
        trace,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    let span = tracing::info_span!(target: "fsm_actors", "fsm.remote_tick");
    if !span.is_disabled() {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    span
}

#[cfg(all(test, feature = "cluster"))]
mod cluster_tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::{EnvFilter, Layer};

    #[test]
    fn a_tick_forwarded_to_another_node_continues_its_parents_trace() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("test"))
            .with_filter(EnvFilter::new("fsm_actors=info"));
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

        let parent = tracing::info_span!(target: "fsm_actors", "fsm.tick");
        let header = super::traceparent(&parent).expect("an exported span has a traceparent");
        // What the other node makes of the header it receives.
        let remote = super::remote_parent_span(&header);
        assert!(!remote.is_disabled());
        drop(remote);
        drop(parent);
        let _ = provider.force_flush();
        let spans = exporter.get_finished_spans().unwrap();
        let parent = spans.iter().find(|s| s.name == "fsm.tick").unwrap();
        let remote = spans.iter().find(|s| s.name == "fsm.remote_tick").unwrap();
        assert_eq!(
            remote.span_context.trace_id(),
            parent.span_context.trace_id(),
            "one trace across the boundary"
        );
        assert_eq!(remote.parent_span_id, parent.span_context.span_id());

        // A header that does not parse starts nothing.
        for bad in ["", "00-zz-yy-01", "01-a-b-c-d"] {
            assert!(super::remote_parent_span(bad).is_disabled(), "{bad}");
        }
        assert_eq!(super::traceparent(&tracing::Span::none()), None);
    }
}
