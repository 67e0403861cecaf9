//! Prometheus text exposition of the tree's metrics, served at `/metrics`
//! by the [HTTP endpoint](super::http).
//!
//! The metrics are OpenTelemetry metrics; this exporter renders the SDK's
//! cumulative data in the Prometheus text format (version 0.0.4): counters
//! get a `_total` suffix if they lack one, histograms become `_bucket`,
//! `_sum` and `_count` series. A scrape forces a fresh collection, so the
//! values are current.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::{KeyValue, Value as OtelValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{SdkMeterProvider, Temporality};

/// Renders every export as Prometheus text and keeps the latest.
#[derive(Clone, Debug, Default)]
pub struct PrometheusExporter {
    latest: Arc<Mutex<String>>,
}

impl PrometheusExporter {
    /// An exporter with nothing collected yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The text of the latest collection.
    #[must_use]
    pub fn text(&self) -> String {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl PushMetricExporter for PrometheusExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let text = render(metrics);
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = text;
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// A metric or label name made valid for Prometheus (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

fn label_value(v: &OtelValue) -> String {
    match v {
        OtelValue::String(s) => escape(s.as_str()),
        other => escape(&other.to_string()),
    }
}

fn labels<'a>(attrs: impl Iterator<Item = &'a KeyValue>, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = attrs
        .map(|kv| {
            format!(
                "{}=\"{}\"",
                sanitize(kv.key.as_str()),
                label_value(&kv.value)
            )
        })
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".to_owned()
        } else {
            "-Inf".to_owned()
        }
    } else {
        format!("{v}")
    }
}

trait AsF64: Copy {
    fn as_f64(self) -> f64;
}

impl AsF64 for f64 {
    fn as_f64(self) -> f64 {
        self
    }
}

impl AsF64 for u64 {
    #[allow(clippy::cast_precision_loss)] // Prometheus values are doubles.
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl AsF64 for i64 {
    #[allow(clippy::cast_precision_loss)] // Prometheus values are doubles.
    fn as_f64(self) -> f64 {
        self as f64
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One sample line: `name{labels} value`.
fn sample(out: &mut String, name: &str, labels: &str, value: &str) {
    let _ = writeln!(out, "{name}{labels} {value}");
}

fn write_data<T: AsF64>(out: &mut String, name: &str, help: &str, data: &MetricData<T>) {
    match data {
        MetricData::Gauge(g) => {
            header(out, name, help, "gauge");
            for p in g.data_points() {
                let value = number(p.value().as_f64());
                sample(out, name, &labels(p.attributes(), None), &value);
            }
        }
        MetricData::Sum(s) => {
            let (name, kind) = match (s.is_monotonic(), name.ends_with("_total")) {
                (true, true) => (name.to_owned(), "counter"),
                (true, false) => (format!("{name}_total"), "counter"),
                (false, _) => (name.to_owned(), "gauge"),
            };
            header(out, &name, help, kind);
            for p in s.data_points() {
                let value = number(p.value().as_f64());
                sample(out, &name, &labels(p.attributes(), None), &value);
            }
        }
        MetricData::Histogram(h) => {
            header(out, name, help, "histogram");
            let bucket = format!("{name}_bucket");
            for p in h.data_points() {
                let mut cumulative = 0u64;
                for (bound, count) in p.bounds().zip(p.bucket_counts()) {
                    cumulative += count;
                    let le = labels(p.attributes(), Some(("le", number(bound))));
                    sample(out, &bucket, &le, &cumulative.to_string());
                }
                let inf = labels(p.attributes(), Some(("le", "+Inf".to_owned())));
                sample(out, &bucket, &inf, &p.count().to_string());
                let plain = labels(p.attributes(), None);
                write_sum_count(out, name, &plain, p.sum().as_f64(), p.count());
            }
        }
        MetricData::ExponentialHistogram(h) => {
            // Rendered as a summary of count and sum: Prometheus text has no
            // exponential buckets.
            header(out, name, help, "summary");
            for p in h.data_points() {
                let plain = labels(p.attributes(), None);
                write_sum_count(out, name, &plain, p.sum().as_f64(), p.count() as u64);
            }
        }
    }
}

fn write_sum_count(out: &mut String, name: &str, labels: &str, sum: f64, count: u64) {
    sample(out, &format!("{name}_sum"), labels, &number(sum));
    sample(out, &format!("{name}_count"), labels, &count.to_string());
}

/// Renders a collection as Prometheus text.
#[must_use]
pub fn render(metrics: &ResourceMetrics) -> String {
    let mut out = String::new();
    for scope in metrics.scope_metrics() {
        for metric in scope.metrics() {
            let name = sanitize(metric.name());
            let help = escape(metric.description());
            match metric.data() {
                AggregatedMetrics::F64(d) => write_data(&mut out, &name, &help, d),
                AggregatedMetrics::U64(d) => write_data(&mut out, &name, &help, d),
                AggregatedMetrics::I64(d) => write_data(&mut out, &name, &help, d),
            }
        }
    }
    out
}

/// Serves `/metrics` (and `/healthz`, `/readyz`, `/tree` once given a tree)
/// on `addr` until the returned server is dropped. Each scrape forces a
/// collection through `provider` first. Shorthand for
/// [`HttpServer::builder`](super::http::HttpServer::builder) with
/// [`metrics`](super::http::HttpServerBuilder::metrics) and the default
/// limits.
///
/// # Errors
///
/// When the address cannot be bound.
pub fn serve(
    addr: SocketAddr,
    provider: SdkMeterProvider,
    exporter: PrometheusExporter,
) -> std::io::Result<super::http::HttpServer> {
    super::http::HttpServer::builder()
        .metrics(provider, exporter)
        .bind(addr)
}
