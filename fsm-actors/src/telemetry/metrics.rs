//! The tree's metrics, as OpenTelemetry instruments from the global meter
//! (named after the FSMv2 design; see `docs/observability.md`). Values are
//! recorded when things happen, never on every tick, so that a tree costs
//! nothing per tick for them; without an installed meter provider the
//! instruments are no-ops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fsm_core::{NodePath, WorkerMetrics};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};

/// Seconds buckets for durations from 50 µs to 10 s.
const SECONDS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
    10.0,
];

/// The metric names, for users who build dashboards and alerts.
///
/// Every metric of a node carries its `worker_type`; with
/// [`TreeConfig::per_node_metrics`](crate::TreeConfig::per_node_metrics)
/// it carries the node's `path` too. Gauges that sum over nodes (children,
/// open circuits, nodes) are up-down counters, so that they add up across
/// the nodes of a worker type.
pub mod names {
    /// Up-down counter per `worker_type`: supervisors whose circuit is open.
    pub const CIRCUIT_OPEN: &str = "fsmv2_circuit_open";
    /// Counter per `worker_type` (of the supervisor): circuits that closed
    /// again.
    pub const INFRASTRUCTURE_RECOVERY: &str = "fsmv2_infrastructure_recovery_total";
    /// Histogram per `worker_type`, `action`, `outcome`: how long actions
    /// ran.
    pub const ACTION_DURATION: &str = "fsmv2_action_execution_duration_seconds";
    /// Counter per `worker_type`, `action`: actions that timed out.
    pub const ACTION_TIMEOUT: &str = "fsmv2_action_timeout_total";
    /// Counter per `worker_type`, `action`: actions handed to the executor.
    pub const ACTION_QUEUED: &str = "fsmv2_action_queued_total";
    /// Gauge: running actions / executor concurrency.
    pub const POOL_UTILIZATION: &str = "fsmv2_worker_pool_utilization";
    /// Gauge: actions waiting in the executor's queue.
    pub const EXECUTOR_QUEUE_DEPTH: &str = "fsmv2_executor_queue_depth";
    /// Gauge: actions the executor is running.
    pub const EXECUTOR_RUNNING: &str = "fsmv2_executor_running_actions";
    /// Up-down counter per `worker_type`: the children of its nodes
    /// (running or waiting to start). Summed over every worker type
    /// (`fsm.top` included, whose one child is the root) it is the number of
    /// nodes the tree declares.
    pub const CHILDREN_COUNT: &str = "fsmv2_children_count";
    /// Up-down counter per `worker_type`, `state`: live nodes (the root and
    /// below) in each state.
    pub const NODES: &str = "fsmv2_nodes";
    /// Histogram per `worker_type`: time to plan and apply a reconcile that
    /// changed something.
    pub const RECONCILE_DURATION: &str = "fsmv2_reconciliation_duration_seconds";
    /// Histogram per `worker_type`: time to render a node's templated spec.
    pub const TEMPLATE_DURATION: &str = "fsmv2_template_rendering_duration_seconds";
    /// Counter per `worker_type`, `from`, `to`: state transitions.
    pub const STATE_TRANSITIONS: &str = "fsmv2_state_transitions_total";
    /// Histogram per `worker_type`, `state`: how long nodes stayed in a
    /// state, recorded when they leave it.
    pub const STATE_DURATION: &str = "fsmv2_state_duration_seconds";
    /// Counter per `worker_type` (of the restarted child): restarts.
    pub const RESTARTS: &str = "fsmv2_restarts_total";
    /// Ticks a parent did not send a child because the child had not yet
    /// handled the one before (a subtree slower than the tick interval).
    pub const TICKS_SKIPPED: &str = "fsmv2_ticks_skipped_total";
    /// The prefix of the metrics workers record themselves through
    /// [`WorkerMetrics`](fsm_core::WorkerMetrics): `reads` becomes
    /// `fsmv2_worker_reads`.
    pub const WORKER_PREFIX: &str = "fsmv2_worker_";
}

/// Seconds buckets for how long nodes stay in a state: 10 ms to a day.
const STATE_SECONDS: [f64; 12] = [
    0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 21_600.0, 86_400.0,
];

/// The instruments of one tree.
pub(crate) struct Metrics {
    /// Whether node metrics carry the node's `path` too.
    pub(crate) per_node: bool,
    pub(crate) circuit_open: UpDownCounter<i64>,
    pub(crate) infrastructure_recovery: Counter<u64>,
    pub(crate) action_duration: Histogram<f64>,
    pub(crate) action_timeouts: Counter<u64>,
    pub(crate) action_queued: Counter<u64>,
    pub(crate) pool_utilization: Gauge<f64>,
    pub(crate) queue_depth: Gauge<u64>,
    pub(crate) running_actions: Gauge<u64>,
    pub(crate) children_count: UpDownCounter<i64>,
    pub(crate) nodes: UpDownCounter<i64>,
    pub(crate) reconcile_duration: Histogram<f64>,
    pub(crate) template_duration: Histogram<f64>,
    pub(crate) state_transitions: Counter<u64>,
    pub(crate) state_duration: Histogram<f64>,
    pub(crate) restarts: Counter<u64>,
    pub(crate) ticks_skipped: Counter<u64>,
    worker: WorkerInstruments,
}

impl Metrics {
    /// The instruments, from the global meter provider as it is now.
    pub(crate) fn from_global(per_node: bool) -> Self {
        Self::new(&opentelemetry::global::meter("fsmv2"), per_node)
    }

    pub(crate) fn new(meter: &Meter, per_node: bool) -> Self {
        let seconds = |name: &'static str, description: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_description(description)
                .with_unit("s")
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let counter = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_description(description)
                .build()
        };
        let up_down = |name: &'static str, description: &'static str| {
            meter
                .i64_up_down_counter(name)
                .with_description(description)
                .build()
        };
        let gauge = |name: &'static str, description: &'static str| {
            meter.u64_gauge(name).with_description(description).build()
        };
        Self {
            per_node,
            circuit_open: up_down(
                names::CIRCUIT_OPEN,
                "Supervisors whose circuit is open (a child failed, is restarting or is stale)",
            ),
            infrastructure_recovery: counter(
                names::INFRASTRUCTURE_RECOVERY,
                "Circuits that closed again after their children recovered",
            ),
            action_duration: seconds(
                names::ACTION_DURATION,
                "How long actions ran, by outcome",
                &SECONDS,
            ),
            action_timeouts: counter(names::ACTION_TIMEOUT, "Actions that ran past their timeout"),
            action_queued: counter(names::ACTION_QUEUED, "Actions handed to the executor"),
            pool_utilization: meter
                .f64_gauge(names::POOL_UTILIZATION)
                .with_description("Running actions divided by the executor's concurrency")
                .build(),
            queue_depth: gauge(
                names::EXECUTOR_QUEUE_DEPTH,
                "Actions waiting in the executor's queue",
            ),
            running_actions: gauge(names::EXECUTOR_RUNNING, "Actions the executor is running"),
            children_count: up_down(
                names::CHILDREN_COUNT,
                "Children of the nodes, running or waiting to start",
            ),
            nodes: up_down(names::NODES, "Live nodes, by state"),
            reconcile_duration: seconds(
                names::RECONCILE_DURATION,
                "Time to plan and apply a reconcile that changed something",
                &SECONDS,
            ),
            template_duration: seconds(
                names::TEMPLATE_DURATION,
                "Time to render a node's templated spec",
                &SECONDS,
            ),
            state_transitions: counter(
                names::STATE_TRANSITIONS,
                "State transitions, by from and to state",
            ),
            state_duration: seconds(
                names::STATE_DURATION,
                "How long nodes stayed in a state, recorded when they left it",
                &STATE_SECONDS,
            ),
            restarts: counter(names::RESTARTS, "Restarts of a node"),
            ticks_skipped: counter(
                names::TICKS_SKIPPED,
                "Ticks skipped because the node had not handled the one before",
            ),
            worker: WorkerInstruments::new(meter.clone()),
        }
    }

    /// The labels of a node's metric: `worker_type`, `path` when per-node
    /// metrics are on, then `extra`. On the stack: the names and values
    /// share their strings.
    pub(crate) fn labels<const N: usize>(
        &self,
        worker_type: impl Into<opentelemetry::Value>,
        path: &NodePath,
        extra: [KeyValue; N],
    ) -> Labels {
        const { assert!(N <= MAX_EXTRA) };
        let mut labels = Labels {
            kvs: std::array::from_fn(|_| KeyValue::new("", "")),
            len: 0,
        };
        labels.push(KeyValue::new(WORKER_TYPE, worker_type));
        if self.per_node {
            labels.push(KeyValue::new(PATH, Arc::clone(path.as_shared())));
        }
        for kv in extra {
            labels.push(kv);
        }
        labels
    }
}

const WORKER_TYPE: &str = "worker_type";
const PATH: &str = "path";
const MAX_EXTRA: usize = 3;

/// A metric's labels, without an allocation (see [`Metrics::labels`]).
#[derive(Clone, Debug)]
pub(crate) struct Labels {
    kvs: [KeyValue; 2 + MAX_EXTRA],
    len: usize,
}

impl Labels {
    fn push(&mut self, kv: KeyValue) {
        self.kvs[self.len] = kv;
        self.len += 1;
    }
}

impl std::ops::Deref for Labels {
    type Target = [KeyValue];

    fn deref(&self) -> &[KeyValue] {
        &self.kvs[..self.len]
    }
}

/// A node's part in the series that sum over nodes (children, open
/// circuits, nodes by state), as a view of what the node keeps anyway: the
/// node adds to them as it changes and takes its part back out when its
/// state is dropped, however it ends, so that the sums stay exact.
pub(crate) struct NodeSeries<'a> {
    pub(crate) metrics: &'a Metrics,
    pub(crate) worker_type: &'a Arc<str>,
    pub(crate) path: &'a NodePath,
    /// Counted in `fsmv2_nodes` (every node but the top).
    pub(crate) counted: bool,
}

impl NodeSeries<'_> {
    fn labels<const N: usize>(&self, extra: [KeyValue; N]) -> Labels {
        self.metrics
            .labels(Arc::clone(self.worker_type), self.path, extra)
    }

    fn count_state(&self, state: &'static str, delta: i64) {
        if self.counted {
            let labels = self.labels([KeyValue::new("state", state)]);
            self.metrics.nodes.add(delta, &labels);
        }
    }

    /// The node started in `state`.
    pub(crate) fn started(&self, state: &'static str) {
        self.count_state(state, 1);
    }

    /// The node had `before` children as last recorded, and has `now`.
    pub(crate) fn children(&self, before: Option<usize>, now: usize) {
        let delta = now.cast_signed() - before.unwrap_or(0).cast_signed();
        if delta != 0 {
            self.metrics
                .children_count
                .add(delta as i64, &self.labels([]));
        }
    }

    /// The node's circuit opened or closed.
    pub(crate) fn circuit(&self, open: bool) {
        let labels = self.labels([]);
        self.metrics
            .circuit_open
            .add(if open { 1 } else { -1 }, &labels);
        if !open {
            self.metrics.infrastructure_recovery.add(1, &labels);
        }
    }

    /// The node went from `from`, where it had been for `in_state`, to `to`.
    pub(crate) fn transition(&self, from: &'static str, to: &'static str, in_state: Duration) {
        self.metrics.state_duration.record(
            in_state.as_secs_f64(),
            &self.labels([KeyValue::new("state", from)]),
        );
        self.metrics.state_transitions.add(
            1,
            &self.labels([KeyValue::new("from", from), KeyValue::new("to", to)]),
        );
        self.count_state(from, -1);
        self.count_state(to, 1);
    }

    /// The node ended in `state`, with `children` as last recorded and its
    /// circuit open or not.
    pub(crate) fn ended(&self, state: &'static str, children: Option<usize>, circuit_open: bool) {
        self.count_state(state, -1);
        self.children(children, 0);
        if circuit_open {
            self.metrics.circuit_open.add(-1, &self.labels([]));
        }
    }
}

/// The instruments workers record through [`WorkerMetrics`], made on first
/// use and kept by name.
struct WorkerInstruments {
    meter: Meter,
    counters: Mutex<HashMap<String, Counter<u64>>>,
    gauges: Mutex<HashMap<String, Gauge<f64>>>,
    histograms: Mutex<HashMap<String, Histogram<f64>>>,
}

/// How many instruments of each kind workers may make: each is a metric of
/// its own, kept for the tree's lifetime.
const MAX_WORKER_INSTRUMENTS: usize = 256;

impl WorkerInstruments {
    fn new(meter: Meter) -> Self {
        Self {
            meter,
            counters: Mutex::new(HashMap::new()),
            gauges: Mutex::new(HashMap::new()),
            histograms: Mutex::new(HashMap::new()),
        }
    }

    /// Records through the instrument called `name` (prefixed), made by
    /// `make` on first use; refuses names that are not
    /// `[a-zA-Z_][a-zA-Z0-9_]*` (at most 64 bytes) or would shadow one of
    /// the tree's own metrics.
    fn with<I: Clone>(
        &self,
        map: &Mutex<HashMap<String, I>>,
        name: &str,
        make: impl FnOnce(&Meter, String) -> I,
        record: impl FnOnce(&I),
    ) {
        let instrument = {
            let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(instrument) = map.get(name) {
                instrument.clone()
            } else {
                let full = format!("{}{name}", names::WORKER_PREFIX);
                if !valid_worker_metric(name) || full == names::POOL_UTILIZATION {
                    tracing::warn!(
                        metric = name,
                        "worker metric ignored: name it with [a-zA-Z_][a-zA-Z0-9_]*, at most 64 bytes"
                    );
                    return;
                }
                if map.len() >= MAX_WORKER_INSTRUMENTS {
                    tracing::warn!(
                        metric = name,
                        limit = MAX_WORKER_INSTRUMENTS,
                        "worker metric ignored: workers made too many metrics of this kind"
                    );
                    return;
                }
                let instrument = make(&self.meter, full);
                map.insert(name.to_owned(), instrument.clone());
                instrument
            }
        };
        record(&instrument);
    }
}

fn valid_worker_metric(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The [`WorkerMetrics`] of one node: the tree's meter, the node's labels.
pub(crate) struct NodeWorkerMetrics {
    metrics: Arc<Metrics>,
    labels: Labels,
}

impl NodeWorkerMetrics {
    pub(crate) fn new(metrics: Arc<Metrics>, worker_type: Arc<str>, path: &NodePath) -> Self {
        let labels = metrics.labels(worker_type, path, []);
        Self { metrics, labels }
    }
}

impl std::fmt::Debug for NodeWorkerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeWorkerMetrics")
            .field("labels", &&*self.labels)
            .finish_non_exhaustive()
    }
}

impl WorkerMetrics for NodeWorkerMetrics {
    fn counter_add(&self, name: &str, value: u64) {
        let worker = &self.metrics.worker;
        worker.with(
            &worker.counters,
            name,
            |meter, full| meter.u64_counter(full).build(),
            |c| c.add(value, &self.labels),
        );
    }

    fn gauge_record(&self, name: &str, value: f64) {
        let worker = &self.metrics.worker;
        worker.with(
            &worker.gauges,
            name,
            |meter, full| meter.f64_gauge(full).build(),
            |g| g.record(value, &self.labels),
        );
    }

    fn histogram_record(&self, name: &str, value: f64) {
        let worker = &self.metrics.worker;
        worker.with(
            &worker.histograms,
            name,
            |meter, full| meter.f64_histogram(full).build(),
            |h| h.record(value, &self.labels),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_metric_names_are_checked() {
        assert!(valid_worker_metric("reads_total"));
        assert!(valid_worker_metric("_x1"));
        assert!(!valid_worker_metric(""));
        assert!(!valid_worker_metric("1x"));
        assert!(!valid_worker_metric("a.b"));
        assert!(!valid_worker_metric(&"a".repeat(65)));
    }

    #[test]
    fn labels_carry_the_path_only_for_per_node_metrics() {
        let meter = opentelemetry::global::meter("test");
        let path = NodePath::top().child("root");
        let worker_type: Arc<str> = Arc::from("probe");
        let keys = |m: &Metrics| {
            m.labels(Arc::clone(&worker_type), &path, [KeyValue::new("to", "x")])
                .iter()
                .map(|kv| kv.key.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&Metrics::new(&meter, false)), ["worker_type", "to"]);
        assert_eq!(
            keys(&Metrics::new(&meter, true)),
            ["worker_type", "path", "to"]
        );
    }
}
