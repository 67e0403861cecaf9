//! [`WorkerMetrics`]: how a worker records metrics of its own under its
//! node's labels, without depending on a metrics library.

use std::fmt;

/// Records a worker's own metrics, labelled like the framework's metrics of
/// the worker's node (its worker type, and its path when the tree records
/// per-node series).
///
/// Reached from [`ActionContext::metrics`](crate::ActionContext::metrics)
/// in an action, and from [`WorkerInit::metrics`](crate::WorkerInit::metrics)
/// in a worker's constructor (keep it for `collect`).
/// The runtime implements it over the tree's meter; names are checked and
/// prefixed there (see `docs/observability.md`). Without a runtime behind
/// it (in unit tests, for instance) every call does nothing.
///
/// ```
/// use fsm_core::{NoMetrics, WorkerMetrics};
///
/// fn record(metrics: &dyn WorkerMetrics) {
///     metrics.counter_add("reads", 1);
///     metrics.gauge_record("buffer_fill", 0.25);
///     metrics.histogram_record("read_seconds", 0.002);
/// }
/// record(&NoMetrics);
/// ```
pub trait WorkerMetrics: Send + Sync + fmt::Debug {
    /// Adds `value` to the counter `name`.
    fn counter_add(&self, name: &str, value: u64);

    /// Sets the gauge `name` to `value`. A gauge keeps the last value per
    /// label set: with metrics summed per worker type, the last node of
    /// the type to record wins (counters and histograms add up).
    fn gauge_record(&self, name: &str, value: f64);

    /// Records `value` in the histogram `name`.
    fn histogram_record(&self, name: &str, value: f64);
}

/// A [`WorkerMetrics`] that records nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMetrics;

impl WorkerMetrics for NoMetrics {
    fn counter_add(&self, _name: &str, _value: u64) {}

    fn gauge_record(&self, _name: &str, _value: f64) {}

    fn histogram_record(&self, _name: &str, _value: f64) {}
}
