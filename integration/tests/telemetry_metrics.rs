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
use integration::exposition::{self, Kind};
use integration::{
    ActionMode, Fault, ProbeSpec, ProbeWorld, probe_registry, small_tree, test_config,
};
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
                AggregatedMetrics::I64(MetricData::Sum(s)) => {
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
    let (provider, exporter) = integration::in_memory_meter();
    let mut config = test_config();
    config.meter = Some(provider.meter("fsmv2"));
    // Per-node series, so that each node's values can be read by path.
    config.per_node_metrics = true;
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

/// The names and label keys of every point of the latest collection.
fn label_keys(
    provider: &SdkMeterProvider,
    exporter: &InMemoryMetricExporter,
) -> Vec<(String, Vec<String>)> {
    provider.force_flush().unwrap();
    let all = exporter.get_finished_metrics().unwrap();
    let mut out = Vec::new();
    let Some(latest) = all.last() else {
        return out;
    };
    let keys = |kvs: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| {
        kvs.map(|kv| kv.key.as_str().to_owned()).collect::<Vec<_>>()
    };
    // Each kind of point is its own type: one line each.
    macro_rules! keys_of {
        ($data:expr) => {
            $data
                .data_points()
                .map(|p| keys(&mut p.attributes()))
                .collect::<Vec<_>>()
        };
    }
    for scope in latest.scope_metrics() {
        for metric in scope.metrics() {
            let points = match metric.data() {
                AggregatedMetrics::U64(MetricData::Sum(s)) => keys_of!(s),
                AggregatedMetrics::I64(MetricData::Sum(s)) => keys_of!(s),
                AggregatedMetrics::U64(MetricData::Gauge(g)) => keys_of!(g),
                AggregatedMetrics::F64(MetricData::Gauge(g)) => keys_of!(g),
                AggregatedMetrics::F64(MetricData::Histogram(h)) => keys_of!(h),
                _ => Vec::new(),
            };
            let name = metric.name();
            out.extend(points.into_iter().map(|k| (name.to_owned(), k)));
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn metrics_are_summed_by_worker_type_and_carry_no_path_by_default() {
    let (provider, exporter) = integration::in_memory_meter();
    let mut config = test_config();
    config.meter = Some(provider.meter("fsmv2"));
    let world = ProbeWorld::default();
    let tree = Tree::spawn(small_tree(), probe_registry(&world), config)
        .await
        .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    let value =
        |name: &str, attrs: &[(&str, &str)]| metric_value(&provider, &exporter, name, attrs);

    let points = label_keys(&provider, &exporter);
    assert!(
        points
            .iter()
            .any(|(name, _)| name == "fsmv2_children_count"),
        "{points:?}"
    );
    for (name, keys) in &points {
        assert!(
            !keys.iter().any(|k| k == "path"),
            "{name} has a path: {keys:?}"
        );
    }
    // root has 2 children, a 1; the top node's one child is the root.
    assert_eq!(
        value("fsmv2_children_count", &[("worker_type", "probe")]),
        3.0
    );
    assert_eq!(
        value("fsmv2_children_count", &[("worker_type", "fsm.top")]),
        1.0
    );
    assert_eq!(
        value(
            "fsmv2_nodes",
            &[("worker_type", "probe"), ("state", "running")]
        ),
        4.0
    );
    assert_eq!(
        value("fsmv2_nodes", &[]),
        4.0,
        "the top node is not counted"
    );
    assert_eq!(
        value(
            "fsmv2_state_transitions_total",
            &[("worker_type", "probe"), ("to", "running")]
        ),
        4.0
    );
    // Every probe left `stopped` once: four durations recorded.
    assert_eq!(
        value(
            "fsmv2_state_duration_seconds",
            &[("worker_type", "probe"), ("state", "stopped")]
        ),
        4.0
    );
    assert_eq!(
        value(
            "fsmv2_action_queued_total",
            &[("worker_type", "probe"), ("action", "start")]
        ),
        4.0
    );

    // A crashed and restarted node is counted once, in its new state.
    world.arm("root/a/a1", Fault::Crash, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        value("fsmv2_restarts_total", &[("worker_type", "probe")]),
        1.0
    );
    assert_eq!(
        value(
            "fsmv2_nodes",
            &[("worker_type", "probe"), ("state", "running")]
        ),
        4.0
    );
    assert_eq!(value("fsmv2_nodes", &[]), 4.0);
    assert_eq!(value("fsmv2_circuit_open", &[]), 0.0);

    // Removing a subtree takes its nodes and children out of the sums.
    tree.update_root_spec(integration::probe_spec(
        "root",
        vec![integration::probe_spec("b", vec![])],
    ))
    .unwrap();
    for _ in 0..100 {
        if tree.live_nodes() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tree.live_nodes(), 2);
    assert_eq!(
        value("fsmv2_children_count", &[("worker_type", "probe")]),
        1.0
    );
    assert_eq!(value("fsmv2_nodes", &[]), 2.0);
    tree.shutdown(Duration::from_secs(5)).await;
    // The nodes' states are dropped as their actors end.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(value("fsmv2_nodes", &[]), 0.0, "every node stopped");
    assert_eq!(value("fsmv2_children_count", &[]), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_workers_own_counter_shows_up_with_its_worker_type() {
    let (provider, exporter) = integration::in_memory_meter();
    let mut config = test_config();
    config.meter = Some(provider.meter("fsmv2"));
    let world = ProbeWorld::default();
    let spec = integration::probe_spec(
        "root",
        vec![
            ProbeSpec::default().named_as("x", "other-probe"),
            ProbeSpec::default().named_as("y", "other-probe"),
        ],
    );
    let tree = Tree::spawn(spec, probe_registry(&world), config)
        .await
        .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    let value =
        |name: &str, attrs: &[(&str, &str)]| metric_value(&provider, &exporter, name, attrs);
    // Each probe's start action counted one flip, under its worker type's
    // name and labels.
    assert_eq!(
        value("fsmv2_other_probe_flips", &[("worker_type", "other-probe")]),
        2.0
    );
    assert_eq!(value("fsmv2_probe_flips", &[("worker_type", "probe")]), 1.0);
    assert_eq!(
        value("fsmv2_probe_flips", &[("worker_type", "other-probe")]),
        0.0,
        "each worker type's metrics under its own name"
    );
    // And each probe counted its collects through the handle its
    // constructor got.
    assert!(
        value(
            "fsmv2_other_probe_collects",
            &[("worker_type", "other-probe")]
        ) >= 2.0
    );
    assert!(value("fsmv2_probe_collects", &[("worker_type", "probe")]) >= 1.0);
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn the_executor_records_its_queue_depth_and_running_actions() {
    let (provider, exporter) = integration::in_memory_meter();
    let mut config = test_config();
    config.meter = Some(provider.meter("fsmv2"));
    config.executor.concurrency = 1;
    let world = ProbeWorld::default();
    let hang = ProbeSpec::default().with_action(ActionMode::Hang);
    let spec = hang
        .clone()
        .with_children(vec![hang.named("a"), hang.named("b"), hang.named("c")])
        .named("root");
    let tree = Tree::spawn(spec, probe_registry(&world), config)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let value =
        |name: &str, attrs: &[(&str, &str)]| metric_value(&provider, &exporter, name, attrs);
    // One start action runs (and hangs); the other three wait.
    assert_eq!(value("fsmv2_executor_running_actions", &[]), 1.0);
    assert_eq!(value("fsmv2_executor_queue_depth", &[]), 3.0);
    tree.shutdown(Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(value("fsmv2_executor_queue_depth", &[]), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_says_how_long_each_node_has_been_in_its_state() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(small_tree(), probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    let before = tree.inspect().await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = tree.inspect().await.unwrap();
    assert_eq!(after.state, "running");
    assert!(
        after.in_state_for_ms >= before.in_state_for_ms + 5_000,
        "{} then {}",
        before.in_state_for_ms,
        after.in_state_for_ms
    );
    assert!(after.children[0].in_state_for_ms >= 5_000);
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
    let server = serve("127.0.0.1:0".parse().unwrap(), provider.clone(), exporter).unwrap();
    let addr = server.local_addr();
    let mut config = test_config();
    config.meter = Some(provider.meter("fsmv2"));
    let world = ProbeWorld::default();
    let tree = Tree::spawn(small_tree(), probe_registry(&world), config)
        .await
        .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();

    let response = scrape(addr, "/metrics");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    // Checked against the format, not by substring.
    let exposition = exposition::parse(body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let kind = |name: &str| exposition.family(name).map(|f| f.kind);
    assert_eq!(kind("fsmv2_children_count"), Some(Kind::Gauge), "{body}");
    // The children of the three probes that have any (root 2, a 1).
    assert_eq!(
        exposition.sum("fsmv2_children_count", &[("worker_type", "probe")]),
        3.0,
        "{body}"
    );
    assert_eq!(
        kind("fsmv2_state_transitions_total"),
        Some(Kind::Counter),
        "{body}"
    );
    let transitions = exposition.sum("fsmv2_state_transitions_total", &[]);
    assert!(transitions >= 4.0, "{body}");
    assert_eq!(
        kind("fsmv2_action_execution_duration_seconds"),
        Some(Kind::Histogram),
        "{body}"
    );
    assert!(scrape(addr, "/nope").starts_with("HTTP/1.1 404"));
    tree.shutdown(Duration::from_secs(5)).await;
}
