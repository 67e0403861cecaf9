//! A tree's metrics, read back with the SDK's in-memory metric exporter,
//! and served on the Prometheus endpoint, scraped over HTTP.

// Test helpers outside `#[test]` functions unwrap too: a panic fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use fsm_actors::Tree;
use fsm_actors::telemetry::prometheus::{PrometheusExporter, serve};
use fsm_core::{Backoff, Supervision};
use integration::{Fault, ProbeWorld, probe_registry, small_tree, test_config};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

/// The sum (or gauge value) of a metric's points whose attributes include
/// `attrs`.
fn metric_value(
    provider: &SdkMeterProvider,
    exporter: &InMemoryMetricExporter,
    name: &str,
    attrs: &[(&str, &str)],
) -> f64 {
    provider.force_flush().unwrap();
    let all = exporter.get_finished_metrics().unwrap();
    let Some(latest) = all.last() else {
        return 0.0;
    };
    let matches = |kvs: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| {
        let kvs: Vec<_> = kvs.collect();
        attrs.iter().all(|(k, v)| {
            kvs.iter()
                .any(|kv| kv.key.as_str() == *k && kv.value.to_string() == *v)
        })
    };
    let mut total = 0.0;
    for scope in latest.scope_metrics() {
        for metric in scope.metrics().filter(|m| m.name() == name) {
            #[allow(clippy::cast_precision_loss)]
            match metric.data() {
                AggregatedMetrics::U64(MetricData::Sum(s)) => {
                    total += s
                        .data_points()
                        .filter(|p| matches(&mut p.attributes()))
                        .map(|p| p.value() as f64)
                        .sum::<f64>();
                }
                AggregatedMetrics::U64(MetricData::Gauge(g)) => {
                    total += g
                        .data_points()
                        .filter(|p| matches(&mut p.attributes()))
                        .map(|p| p.value() as f64)
                        .sum::<f64>();
                }
                AggregatedMetrics::F64(MetricData::Gauge(g)) => {
                    total += g
                        .data_points()
                        .filter(|p| matches(&mut p.attributes()))
                        .map(|p| p.value())
                        .sum::<f64>();
                }
                AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                    total += h
                        .data_points()
                        .filter(|p| matches(&mut p.attributes()))
                        .map(|p| p.count() as f64)
                        .sum::<f64>();
                }
                _ => {}
            }
        }
    }
    total
}

#[tokio::test(start_paused = true)]
async fn metrics_count_children_transitions_restarts_actions_and_circuits() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let mut config = test_config();
    config.meter = Some(provider.meter("fsmv2"));
    // Restarts wait long enough for the parent to see its circuit open.
    config.supervision = Supervision::default().with_backoff(Backoff {
        base: Duration::from_secs(1),
        ..Backoff::default()
    });
    let world = ProbeWorld::default();
    let tree = Tree::spawn(small_tree(), probe_registry(&world), config)
        .await
        .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    let value =
        |name: &str, attrs: &[(&str, &str)]| metric_value(&provider, &exporter, name, attrs);

    assert_eq!(value("fsmv2_children_count", &[("path", "root")]), 2.0);
    assert_eq!(value("fsmv2_children_count", &[("path", "root/a")]), 1.0);
    assert_eq!(value("fsmv2_children_count", &[("path", "root/b")]), 0.0);
    assert!(
        value(
            "fsmv2_state_transitions_total",
            &[("path", "root/a/a1"), ("to", "running")]
        ) >= 1.0
    );
    assert_eq!(
        value(
            "fsmv2_action_queued_total",
            &[("path", "root/b"), ("action", "start")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "fsmv2_action_execution_duration_seconds",
            &[("path", "root/b"), ("outcome", "succeeded")]
        ),
        1.0,
        "one start action ran for root/b"
    );
    assert!(value("fsmv2_reconciliation_duration_seconds", &[("path", "root")]) >= 1.0);
    assert_eq!(value("fsmv2_restarts_total", &[]), 0.0);

    world.arm("root/a/a1", Fault::Crash, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        value("fsmv2_circuit_open", &[("path", "root/a")]),
        1.0,
        "open while a1 restarts"
    );
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    assert_eq!(value("fsmv2_restarts_total", &[("path", "root/a/a1")]), 1.0);
    assert_eq!(value("fsmv2_circuit_open", &[("path", "root/a")]), 0.0);
    assert_eq!(
        value("fsmv2_infrastructure_recovery_total", &[("path", "root/a")]),
        1.0
    );
    tree.shutdown(Duration::from_secs(5)).await;
}

fn scrape(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[tokio::test(start_paused = true)]
async fn the_prometheus_endpoint_serves_current_values_over_http() {
    let exporter = PrometheusExporter::new();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let addr = serve("127.0.0.1:0".parse().unwrap(), provider.clone(), exporter).unwrap();
    let mut config = test_config();
    config.meter = Some(provider.meter("fsmv2"));
    let world = ProbeWorld::default();
    let tree = Tree::spawn(small_tree(), probe_registry(&world), config)
        .await
        .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();

    let response = scrape(addr, "/metrics");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.contains("Content-Type: text/plain; version=0.0.4"),
        "{response}"
    );
    assert!(
        response.contains("# TYPE fsmv2_children_count gauge"),
        "{response}"
    );
    assert!(
        response.contains("fsmv2_children_count{path=\"root\"} 2"),
        "{response}"
    );
    assert!(
        response.contains("# TYPE fsmv2_state_transitions_total counter"),
        "{response}"
    );
    let transitions: f64 = response
        .lines()
        .filter(|l| l.starts_with("fsmv2_state_transitions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(transitions >= 4.0, "{response}");
    assert!(
        response.contains("fsmv2_action_execution_duration_seconds_bucket{"),
        "{response}"
    );
    assert!(scrape(addr, "/nope").starts_with("HTTP/1.1 404"));
    tree.shutdown(Duration::from_secs(5)).await;
}
