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

    /// Every metric of the tree's own, above.
    pub const ALL: [&str; 16] = [
        CIRCUIT_OPEN,
        INFRASTRUCTURE_RECOVERY,
        ACTION_DURATION,
        ACTION_TIMEOUT,
        ACTION_QUEUED,
        POOL_UTILIZATION,
        EXECUTOR_QUEUE_DEPTH,
        EXECUTOR_RUNNING,
        CHILDREN_COUNT,
        NODES,
        RECONCILE_DURATION,
        TEMPLATE_DURATION,
        STATE_TRANSITIONS,
        STATE_DURATION,
        RESTARTS,
        TICKS_SKIPPED,
    ];

    /// The words the tree's own metric names begin with (after `fsmv2_`).
    /// A worker type whose sanitised name begins with one of them (as a
    /// whole word: `state` and `state_x`, not `stateful`) names its metrics
    /// `fsmv2_worker_<type>_<name>` instead; no metric of the tree's own
    /// begins `fsmv2_worker_` followed by one of these words.
    pub const RESERVED_WORDS: [&str; 12] = [
        "action",
        "children",
        "circuit",
        "executor",
        "infrastructure",
        "nodes",
        "reconciliation",
        "restarts",
        "state",
        "template",
        "ticks",
        "worker",
    ];

    /// Where the metrics of a worker type with a reserved first word go.
    const RESERVED_TYPE_PREFIX: &str = "fsmv2_worker_";

    /// The name of the metric `name` that a worker of `worker_type` records
    /// through [`WorkerMetrics`](fsm_core::WorkerMetrics):
    /// `fsmv2_<worker_type>_<name>` (Prometheus' namespace, subsystem,
    /// name), with the worker type lower-cased and every character other
    /// than `[a-z0-9_]` replaced by `_`: `("communicator", "logins")` gives
    /// `fsmv2_communicator_logins`, `("Modbus-TCP", "reads")`
    /// `fsmv2_modbus_tcp_reads`.
    ///
    /// It never names a metric of the tree's own: those begin with one of
    /// the [`RESERVED_WORDS`] after `fsmv2_`, and a worker type that begins
    /// with one of them gets `fsmv2_worker_<type>_<name>` (`("state",
    /// "x")` gives `fsmv2_worker_state_x`), a name the tree never uses.
    #[must_use]
    pub fn worker_metric(worker_type: &str, name: &str) -> String {
        let mut full = worker_prefix(worker_type);
        full.push_str(name);
        full
    }

    /// `worker_metric(worker_type, "")`.
    pub(crate) fn worker_prefix(worker_type: &str) -> String {
        let sanitised: String = worker_type
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '_') => c,
                _ => '_',
            })
            .collect();
        let first = sanitised.split('_').next().unwrap_or_default();
        let namespace = if RESERVED_WORDS.contains(&first) {
            RESERVED_TYPE_PREFIX
        } else {
            "fsmv2_"
        };
        format!("{namespace}{sanitised}_")
    }
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
/// use and kept by worker type and name.
struct WorkerInstruments {
    meter: Meter,
    made: Mutex<Made>,
}

/// The kinds of instrument a worker records through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The worker instruments made so far.
#[derive(Default)]
struct Made {
    by_type: HashMap<Arc<str>, TypeInstruments>,
    /// Every full name made, with its kind: a metric has one kind, even
    /// where two worker types come to the same name (`a_b` + `c`, `a` +
    /// `b_c`).
    kinds: HashMap<String, Kind>,
    /// How many names of each kind were made.
    made: [usize; 3],
}

/// One worker type's instruments, by the name the worker gave.
struct TypeInstruments {
    /// `fsmv2_<worker_type>_` (see [`names::worker_metric`]).
    prefix: String,
    counters: HashMap<String, Counter<u64>>,
    gauges: HashMap<String, Gauge<f64>>,
    histograms: HashMap<String, Histogram<f64>>,
}

/// How many instruments of each kind workers may make: each is a metric of
/// its own, kept for the tree's lifetime.
const MAX_WORKER_INSTRUMENTS: usize = 256;

impl WorkerInstruments {
    fn new(meter: Meter) -> Self {
        Self {
            meter,
            made: Mutex::new(Made::default()),
        }
    }

    /// Records through the instrument `name` of `worker_type` (named
    /// [`names::worker_metric`]), made by `make` on first use; refuses
    /// names that are not `[a-zA-Z_][a-zA-Z0-9_]*` (at most 64 bytes), and
    /// a full name made already with another kind.
    fn with<I: Clone>(
        &self,
        worker_type: &Arc<str>,
        kind: Kind,
        pick: fn(&mut TypeInstruments) -> &mut HashMap<String, I>,
        name: &str,
        make: impl FnOnce(&Meter, String) -> I,
        record: impl FnOnce(&I),
    ) {
        let instrument = {
            let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
            let made = &mut *made;
            let known = made
                .by_type
                .get_mut(&**worker_type)
                .and_then(|t| pick(t).get(name).cloned());
            if let Some(instrument) = known {
                instrument
            } else {
                if !valid_worker_metric(name) {
                    tracing::warn!(
                        metric = name,
                        "worker metric ignored: name it with [a-zA-Z_][a-zA-Z0-9_]*, at most 64 bytes"
                    );
                    return;
                }
                let of_type = made
                    .by_type
                    .entry(Arc::clone(worker_type))
                    .or_insert_with(|| TypeInstruments {
                        prefix: names::worker_prefix(worker_type),
                        counters: HashMap::new(),
                        gauges: HashMap::new(),
                        histograms: HashMap::new(),
                    });
                let full = format!("{}{name}", of_type.prefix);
                match made.kinds.get(&full) {
                    Some(other) if *other != kind => {
                        tracing::warn!(
                            metric = %full,
                            worker_type = %worker_type,
                            "worker metric ignored: another worker type records a metric of this name as another kind"
                        );
                        return;
                    }
                    // Another worker type's: the same instrument, told
                    // apart by the `worker_type` label.
                    Some(_) => {}
                    None if made.made[kind as usize] >= MAX_WORKER_INSTRUMENTS => {
                        tracing::warn!(
                            metric = %full,
                            limit = MAX_WORKER_INSTRUMENTS,
                            "worker metric ignored: workers made too many metrics of this kind"
                        );
                        return;
                    }
                    None => {
                        made.made[kind as usize] += 1;
                        made.kinds.insert(full.clone(), kind);
                    }
                }
                let instrument = make(&self.meter, full);
                pick(of_type).insert(name.to_owned(), instrument.clone());
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
    worker_type: Arc<str>,
    labels: Labels,
}

impl NodeWorkerMetrics {
    pub(crate) fn new(metrics: Arc<Metrics>, worker_type: Arc<str>, path: &NodePath) -> Self {
        let labels = metrics.labels(Arc::clone(&worker_type), path, []);
        Self {
            metrics,
            worker_type,
            labels,
        }
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
        self.metrics.worker.with(
            &self.worker_type,
            Kind::Counter,
            |t| &mut t.counters,
            name,
            |meter, full| meter.u64_counter(full).build(),
            |c| c.add(value, &self.labels),
        );
    }

    fn gauge_record(&self, name: &str, value: f64) {
        self.metrics.worker.with(
            &self.worker_type,
            Kind::Gauge,
            |t| &mut t.gauges,
            name,
            |meter, full| meter.f64_gauge(full).build(),
            |g| g.record(value, &self.labels),
        );
    }

    fn histogram_record(&self, name: &str, value: f64) {
        self.metrics.worker.with(
            &self.worker_type,
            Kind::Histogram,
            |t| &mut t.histograms,
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
    fn a_workers_metrics_are_named_after_its_worker_type() {
        use names::worker_metric;
        assert_eq!(
            worker_metric("communicator", "logins"),
            "fsmv2_communicator_logins"
        );
        assert_eq!(
            worker_metric("communicator_pull", "pulled"),
            "fsmv2_communicator_pull_pulled"
        );
        assert_eq!(
            worker_metric("Modbus-TCP.v2", "reads"),
            "fsmv2_modbus_tcp_v2_reads"
        );
        // A reserved first word, as a whole word only.
        assert_eq!(worker_metric("state", "x"), "fsmv2_worker_state_x");
        assert_eq!(
            worker_metric("action_runner", "timeout_total"),
            "fsmv2_worker_action_runner_timeout_total"
        );
        assert_eq!(worker_metric("stateful", "x"), "fsmv2_stateful_x");
    }

    #[test]
    fn no_worker_metric_can_take_the_name_of_one_of_the_trees_own() {
        for own in names::ALL {
            let rest = own.strip_prefix("fsmv2_").unwrap_or_default();
            let first = rest.split('_').next().unwrap_or_default();
            assert!(names::RESERVED_WORDS.contains(&first), "{own}");
            if let Some(after) = rest.strip_prefix("worker_") {
                let next = after.split('_').next().unwrap_or_default();
                assert!(!names::RESERVED_WORDS.contains(&next), "{own}");
            }
            // Every worker type and name that could spell it, spelt: none
            // comes out as the tree's metric.
            for tail in [Some(rest), rest.strip_prefix("worker_")]
                .into_iter()
                .flatten()
            {
                for (i, _) in tail.match_indices('_') {
                    let (worker_type, name) = (&tail[..i], &tail[i + 1..]);
                    assert_ne!(names::worker_metric(worker_type, name), *own);
                }
            }
        }
    }

    #[test]
    fn worker_metrics_reach_the_meter_under_their_worker_types_names() {
        use opentelemetry::metrics::MeterProvider as _;
        use opentelemetry_sdk::metrics::{
            InMemoryMetricExporter, PeriodicReader, SdkMeterProvider,
        };
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let metrics = Arc::new(Metrics::new(&provider.meter("test"), false));
        let path = NodePath::top().child("root");
        let node = |worker_type: &str| {
            NodeWorkerMetrics::new(Arc::clone(&metrics), Arc::from(worker_type), &path)
        };
        node("communicator").counter_add("logins", 2);
        node("communicator").counter_add("logins", 1);
        node("state").gauge_record("x", 1.0);
        // `a_b` + `c` and `a` + `b_c` come to one name: a second kind is
        // refused.
        node("a_b").counter_add("c", 1);
        node("a").histogram_record("b_c", 1.0);
        provider.force_flush().unwrap_or_else(|e| panic!("{e}"));
        let finished = exporter
            .get_finished_metrics()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut made: Vec<String> = finished
            .iter()
            .flat_map(|rm| rm.scope_metrics())
            .flat_map(|sm| sm.metrics())
            .map(|m| m.name().to_owned())
            .collect();
        made.sort();
        made.dedup();
        assert_eq!(
            made,
            [
                "fsmv2_a_b_c",
                "fsmv2_communicator_logins",
                "fsmv2_worker_state_x"
            ]
        );
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
