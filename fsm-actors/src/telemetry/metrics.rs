//! The tree's metrics, as OpenTelemetry instruments from the global meter
//! (named after the FSMv2 design; see `docs/observability.md`). Values are
//! recorded when things happen, never on every tick, so that a tree costs
//! nothing per tick for them; without an installed meter provider the
//! instruments are no-ops.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};

/// Seconds buckets for durations from 50 µs to 10 s.
const SECONDS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
    10.0,
];

/// The metric names, for users who build dashboards and alerts.
pub mod names {
    /// Gauge per supervisor `path`: 1 while its circuit is open.
    pub const CIRCUIT_OPEN: &str = "fsmv2_circuit_open";
    /// Counter per supervisor `path`: circuits that closed again.
    pub const INFRASTRUCTURE_RECOVERY: &str = "fsmv2_infrastructure_recovery_total";
    /// Histogram per `path`, `action`, `outcome`: how long actions ran.
    pub const ACTION_DURATION: &str = "fsmv2_action_execution_duration_seconds";
    /// Counter per `path`, `action`: actions that timed out.
    pub const ACTION_TIMEOUT: &str = "fsmv2_action_timeout_total";
    /// Counter per `path`, `action`: actions handed to the executor.
    pub const ACTION_QUEUED: &str = "fsmv2_action_queued_total";
    /// Gauge: running actions / executor concurrency.
    pub const POOL_UTILIZATION: &str = "fsmv2_worker_pool_utilization";
    /// Gauge per `path`: the node's children (running or waiting to start).
    pub const CHILDREN_COUNT: &str = "fsmv2_children_count";
    /// Histogram per `path`: time to plan and apply a reconcile that changed
    /// something.
    pub const RECONCILE_DURATION: &str = "fsmv2_reconciliation_duration_seconds";
    /// Histogram per `path`: time to render a node's templated spec.
    pub const TEMPLATE_DURATION: &str = "fsmv2_template_rendering_duration_seconds";
    /// Counter per `path`, `from`, `to`: state transitions.
    pub const STATE_TRANSITIONS: &str = "fsmv2_state_transitions_total";
    /// Counter per `path` (the restarted child): restarts.
    pub const RESTARTS: &str = "fsmv2_restarts_total";
    /// Ticks a parent did not send a child because the child had not yet
    /// handled the one before (a subtree slower than the tick interval).
    pub const TICKS_SKIPPED: &str = "fsmv2_ticks_skipped_total";
}

/// The instruments of one tree.
pub(crate) struct Metrics {
    pub(crate) circuit_open: Gauge<u64>,
    pub(crate) infrastructure_recovery: Counter<u64>,
    pub(crate) action_duration: Histogram<f64>,
    pub(crate) action_timeouts: Counter<u64>,
    pub(crate) action_queued: Counter<u64>,
    pub(crate) pool_utilization: Gauge<f64>,
    pub(crate) children_count: Gauge<u64>,
    pub(crate) reconcile_duration: Histogram<f64>,
    pub(crate) template_duration: Histogram<f64>,
    pub(crate) state_transitions: Counter<u64>,
    pub(crate) restarts: Counter<u64>,
    pub(crate) ticks_skipped: Counter<u64>,
}

impl Metrics {
    /// The instruments, from the global meter provider as it is now.
    pub(crate) fn from_global() -> Self {
        Self::new(&opentelemetry::global::meter("fsmv2"))
    }

    pub(crate) fn new(meter: &Meter) -> Self {
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_description(description)
                .with_unit("s")
                .with_boundaries(SECONDS.to_vec())
                .build()
        };
        let counter = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_description(description)
                .build()
        };
        let gauge = |name: &'static str, description: &'static str| {
            meter.u64_gauge(name).with_description(description).build()
        };
        Self {
            circuit_open: gauge(
                names::CIRCUIT_OPEN,
                "1 while the supervisor's circuit is open (a child failed, is restarting or is stale)",
            ),
            infrastructure_recovery: counter(
                names::INFRASTRUCTURE_RECOVERY,
                "Circuits that closed again after their children recovered",
            ),
            action_duration: seconds(names::ACTION_DURATION, "How long actions ran, by outcome"),
            action_timeouts: counter(names::ACTION_TIMEOUT, "Actions that ran past their timeout"),
            action_queued: counter(names::ACTION_QUEUED, "Actions handed to the executor"),
            pool_utilization: meter
                .f64_gauge(names::POOL_UTILIZATION)
                .with_description("Running actions divided by the executor's concurrency")
                .build(),
            children_count: gauge(
                names::CHILDREN_COUNT,
                "Children of the node, running or waiting to start",
            ),
            reconcile_duration: seconds(
                names::RECONCILE_DURATION,
                "Time to plan and apply a reconcile that changed something",
            ),
            template_duration: seconds(
                names::TEMPLATE_DURATION,
                "Time to render a node's templated spec",
            ),
            state_transitions: counter(
                names::STATE_TRANSITIONS,
                "State transitions, by from and to state",
            ),
            restarts: counter(names::RESTARTS, "Restarts of a node"),
            ticks_skipped: counter(
                names::TICKS_SKIPPED,
                "Ticks skipped because the node had not handled the one before",
            ),
        }
    }
}

/// The `path` attribute of a node.
pub(crate) fn path_attr(path: &fsm_core::NodePath) -> KeyValue {
    KeyValue::new("path", std::sync::Arc::clone(path.as_shared()))
}
