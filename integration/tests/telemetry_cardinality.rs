//! A tree of 10,000 workers keeps its metrics exact: series are per worker
//! type, far below the SDK's cardinality limit, and their totals equal what
//! the tree shows of itself.

// Test helpers outside `#[test]` functions unwrap too: a panic fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fsm_actors::{NodeSnapshot, Tree};
use integration::{ProbeSpec, ProbeWorld, probe_registry, probe_spec, test_config};
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, SdkMeterProvider};

const MIDDLE: usize = 100;
const LEAVES_EACH: usize = 100;

/// One point of a sum, gauge or histogram (its count).
struct Point {
    metric: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn points(provider: &SdkMeterProvider, exporter: &InMemoryMetricExporter) -> Vec<Point> {
    provider.force_flush().unwrap();
    let all = exporter.get_finished_metrics().unwrap();
    let latest = all.last().expect("a collection");
    let labels = |kvs: &mut dyn Iterator<Item = &KeyValue>| {
        kvs.map(|kv| (kv.key.as_str().to_owned(), kv.value.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    let mut out = Vec::new();
    for scope in latest.scope_metrics() {
        for metric in scope.metrics() {
            let mut push = |labels, value| {
                out.push(Point {
                    metric: metric.name().to_owned(),
                    labels,
                    value,
                });
            };
            #[allow(clippy::cast_precision_loss)]
            match metric.data() {
                AggregatedMetrics::U64(MetricData::Sum(s)) => s
                    .data_points()
                    .for_each(|p| push(labels(&mut p.attributes()), p.value() as f64)),
                AggregatedMetrics::I64(MetricData::Sum(s)) => s
                    .data_points()
                    .for_each(|p| push(labels(&mut p.attributes()), p.value() as f64)),
                AggregatedMetrics::U64(MetricData::Gauge(g)) => g
                    .data_points()
                    .for_each(|p| push(labels(&mut p.attributes()), p.value() as f64)),
                AggregatedMetrics::F64(MetricData::Gauge(g)) => g
                    .data_points()
                    .for_each(|p| push(labels(&mut p.attributes()), p.value())),
                AggregatedMetrics::F64(MetricData::Histogram(h)) => h
                    .data_points()
                    .for_each(|p| push(labels(&mut p.attributes()), p.count() as f64)),
                _ => {}
            }
        }
    }
    out
}

/// The sum of `metric`'s points, by the values of `keys`.
fn totals(points: &[Point], metric: &str, keys: &[&str]) -> BTreeMap<Vec<String>, u64> {
    let mut out = BTreeMap::new();
    for p in points.iter().filter(|p| p.metric == metric) {
        let key = keys
            .iter()
            .map(|k| p.labels.get(*k).cloned().unwrap_or_default())
            .collect();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let value = p.value as u64;
        *out.entry(key).or_insert(0) += value;
    }
    out.retain(|_, v| *v != 0);
    out
}

fn walk(node: &NodeSnapshot, visit: &mut impl FnMut(&NodeSnapshot)) {
    visit(node);
    for child in &node.children {
        walk(child, visit);
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_of_ten_thousand_workers_add_up_to_the_trees_own_counts() {
    let (provider, exporter) = integration::in_memory_meter();
    let mut config = test_config();
    config.meter = Some(provider.meter("fsmv2"));
    config.executor.concurrency = 64;
    config.executor.queue_capacity = 20_000;
    // root → 100 `other-probe`s → 100 `probe` leaves each.
    let middle = (0..MIDDLE)
        .map(|m| {
            let leaves = (0..LEAVES_EACH)
                .map(|l| ProbeSpec::default().named(&format!("l{l}")))
                .collect();
            ProbeSpec::default()
                .with_children(leaves)
                .named_as(&format!("m{m}"), "other-probe")
        })
        .collect();
    let world = ProbeWorld::default();
    let started = Instant::now();
    let tree = Tree::spawn(probe_spec("root", middle), probe_registry(&world), config)
        .await
        .unwrap();
    tree.wait_converged(Duration::from_secs(120)).await.unwrap();
    let snapshot = tree.inspect().await.unwrap();
    let points = points(&provider, &exporter);
    let elapsed = started.elapsed();

    // What the tree shows: nodes by type and state, children by type.
    let mut nodes = BTreeMap::new();
    let mut children = BTreeMap::new();
    walk(&snapshot, &mut |n| {
        *nodes
            .entry(vec![n.worker_type.clone(), n.state.clone()])
            .or_insert(0u64) += 1;
        *children.entry(vec![n.worker_type.clone()]).or_insert(0u64) += n.children.len() as u64;
    });
    children.retain(|_, v| *v != 0);
    let total: u64 = nodes.values().sum();
    assert_eq!(total, 1 + (MIDDLE * (1 + LEAVES_EACH)) as u64);
    assert_eq!(
        nodes.get(&vec!["probe".to_owned(), "running".to_owned()]),
        Some(&(1 + (MIDDLE * LEAVES_EACH) as u64)),
        "the root and the leaves"
    );

    // No series fell into the SDK's overflow series, and none is per node.
    for p in &points {
        assert!(
            !p.labels.contains_key("otel.metric.overflow"),
            "{} overflowed",
            p.metric
        );
    }
    for p in &points {
        assert!(!p.labels.contains_key("path"), "{} has a path", p.metric);
    }

    // The exported totals are the tree's.
    assert_eq!(
        totals(&points, "fsmv2_nodes", &["worker_type", "state"]),
        nodes
    );
    let mut exported_children = totals(&points, "fsmv2_children_count", &["worker_type"]);
    // The invisible top node's one child is the root.
    assert_eq!(
        exported_children.remove(&vec!["fsm.top".to_owned()]),
        Some(1)
    );
    assert_eq!(exported_children, children);
    assert_eq!(
        totals(&points, "fsmv2_restarts_total", &[]),
        BTreeMap::new()
    );
    // Without restarts every node entered `running` once, after one start
    // action.
    let running: BTreeMap<Vec<String>, u64> = nodes
        .iter()
        .filter(|(k, _)| k[1] == "running")
        .map(|(k, v)| (vec![k[0].clone()], *v))
        .collect();
    let to_running: BTreeMap<_, _> = totals(
        &points,
        "fsmv2_state_transitions_total",
        &["worker_type", "to"],
    )
    .into_iter()
    .filter(|(k, _)| k[1] == "running")
    .map(|(k, v)| (vec![k[0].clone()], v))
    .collect();
    assert_eq!(to_running, running);
    // A worker's own counter is named after its worker type.
    let mut flips = totals(&points, "fsmv2_probe_flips", &["worker_type"]);
    flips.extend(totals(&points, "fsmv2_other_probe_flips", &["worker_type"]));
    assert_eq!(flips, running);

    tree.shutdown(Duration::from_secs(60)).await;
    // Debug builds on a shared CI machine: spawning, converging and reading
    // 10,101 nodes must stay well within a test's budget.
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}
