//! Observing: starting collects, receiving their observations, and deciding
//! from them whether the node is stale (its state machine pauses, it
//! reports unhealthy) or its collector is hung (the node fails, so that its
//! parent restarts it).
//!
//! The maths of those decisions is pure and lives in
//! [`fsm_core::freshness`]; this file feeds it the node's clock readings.
//! A collect is polled once, in place, when it starts: one that is ready at
//! once costs no task and no message. One that is not runs in its own task
//! (aborted with the node), under `TreeConfig::observation_timeout`, and
//! its result comes back as `NodeMsg::Observed`. Only the latest collect's
//! result is installed.
//!
//! A node of a worker type with an observation interval
//! (`TreeConfig::observation_intervals`) starts a collect on a tick only
//! once the interval has passed since its last collect started, and its
//! freshness thresholds allow for the interval
//! ([`FreshnessLimits::with_interval`]). Other nodes pay one branch.

use std::time::Duration;

use fsm_core::freshness::{FreshnessLimits, is_quiet};
use fsm_core::{runtime::CollectStart, runtime::panic_message};
use futures::FutureExt;
use ractor::ActorRef;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::{CollectTrouble, NodeMsg, NodeState};
use crate::config::TreeConfig;
use crate::telemetry;

/// A task that is aborted when its handle is dropped (with the node).
pub(super) struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The thresholds a node's observations are judged by, allowing for its
/// observation interval if it has one.
pub(super) fn limits(config: &TreeConfig, interval: Option<&Interval>) -> FreshnessLimits {
    let limits = FreshnessLimits::new(config.stale_after, config.collector_restart_after);
    match interval {
        None => limits,
        Some(interval) => limits.with_interval(interval.every),
    }
}

/// How often a node whose worker type has an observation interval is
/// observed, and when it last started a collect.
pub(crate) struct Interval {
    every: Duration,
    last_started: Option<std::time::Instant>,
}

impl Interval {
    /// The interval of nodes of `worker_type`, if it has one.
    pub(super) fn of(config: &TreeConfig, worker_type: &str) -> Option<Box<Self>> {
        if config.observation_intervals.is_empty() {
            return None;
        }
        let every = *config.observation_intervals.get(worker_type)?;
        Some(Box::new(Self {
            every,
            last_started: None,
        }))
    }
}

impl NodeState {
    /// Whether the tick should start a collect: always, unless the node's
    /// worker type is observed only every so often and that is not due.
    pub(super) fn collect_due(&self, now: Instant) -> bool {
        match &self.collector.interval {
            None => true,
            Some(interval) => fsm_core::freshness::collect_due(
                interval.last_started,
                interval.every,
                now.into_std(),
            ),
        }
    }

    /// The thresholds this node's observations are judged by.
    pub(super) fn freshness_limits(&self) -> FreshnessLimits {
        limits(self.config(), self.collector.interval.as_deref())
    }

    /// See `Collector::quiet_until`.
    fn quiet_from(&mut self, since: Instant) {
        self.collector.quiet_until = self
            .freshness_limits()
            .quiet_until(since.into_std())
            .map(Instant::from_std);
    }

    /// How long the node has gone without a good observation (measured
    /// from its start before the first), if it is stale now. Nothing is
    /// measured during the quiet period, so a healthy node only compares.
    pub(super) fn stale_for(&self, now: Instant) -> Option<Duration> {
        // Nothing to observe before a spec is installed.
        if !self.installed {
            return None;
        }
        let quiet_until = self.collector.quiet_until.map(Instant::into_std);
        // The quiet check first: a healthy node then reads nothing more (the
        // start time is in the cold part, a cache miss per node per tick).
        if is_quiet(quiet_until, now.into_std()) {
            return None;
        }
        self.freshness_limits()
            .stale_for(quiet_until, self.cold.started.into_std(), now.into_std())
    }

    pub(super) fn is_stale(&self, now: Instant) -> bool {
        self.stale_for(now).is_some()
    }

    /// How long the collector has gone without a good observation, if
    /// that is past `collector_restart_after`: it is hung, and the node
    /// must fail so that its parent restarts it.
    pub(super) fn collector_failed_for(&self, now: Instant) -> Option<Duration> {
        // Nothing to observe before a spec is installed.
        if !self.installed {
            return None;
        }
        let quiet_until = self.collector.quiet_until.map(Instant::into_std);
        // As in `stale_for`: a healthy node only compares.
        if is_quiet(quiet_until, now.into_std()) {
            return None;
        }
        self.freshness_limits()
            .hung_for(quiet_until, self.cold.started.into_std(), now.into_std())
    }

    /// Whether the latest collect is over and its observation installed:
    /// the newest observation is as fresh as the node can make it.
    pub(super) fn has_fresh_observation(&self) -> bool {
        let c = &self.collector;
        c.seq > 0 && !c.in_flight && c.observed_seq == c.seq
    }

    /// Starts a collect in its own task, with a span under `parent` (the
    /// tick's, or none between ticks).
    pub(super) fn start_collect(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        parent: &tracing::Span,
        now: Instant,
    ) {
        if self.collector.in_flight || !self.installed {
            return;
        }
        let span = if !self.is_top() && telemetry::info_enabled() {
            self.collect_span(parent)
        } else {
            tracing::Span::none()
        };
        self.collector.seq += 1;
        if let Some(interval) = &mut self.collector.interval {
            interval.last_started = Some(now.into_std());
        }
        // Polled once, here: a collect that is ready at once costs no task
        // and no message.
        let desired = self.parent_state.as_deref().unwrap_or(&self.desired_state);
        let version = self.desired_version;
        let started = span.in_scope(|| self.driver.start_collect(&self.path, desired, version));
        let future = match started {
            CollectStart::Done(result) => {
                if let Err(e) = &result {
                    span.record("error", e.as_str());
                }
                self.collected(result, now);
                return;
            }
            CollectStart::Pending(future) => future,
        };
        self.collect_elsewhere(future, span, myself);
    }

    /// The collect's span, while spans at `INFO` may be recorded (out of
    /// line, as the tick's: see `tick_span`).
    #[cold]
    #[inline(never)]
    fn collect_span(&self, parent: &tracing::Span) -> tracing::Span {
        tracing::info_span!(
            target: "fsm_actors",
            parent: parent,
            "fsm.collect",
            node.path = %self.path,
            worker.type = %self.cold.spec.worker_type,
            error = tracing::field::Empty,
        )
    }

    /// Runs a collect that waits on a task of its own, with a timeout; its
    /// result comes back as `Observed`. (Out of line: the collect that is
    /// ready at once is the one the tick's code is kept short for.)
    #[inline(never)]
    fn collect_elsewhere(
        &mut self,
        future: futures::future::BoxFuture<
            'static,
            Result<fsm_core::runtime::Observation, fsm_core::BoxError>,
        >,
        span: tracing::Span,
        myself: &ActorRef<NodeMsg>,
    ) {
        self.collector.in_flight = true;
        self.collector.again = false;
        let seq = self.collector.seq;
        let timeout = self.config().observation_timeout;
        let me = myself.clone();
        self.cold.collect_task = Some(AbortOnDrop(tokio::spawn(
            async move {
                let guarded = std::panic::AssertUnwindSafe(future).catch_unwind();
                let result = match tokio::time::timeout(timeout, guarded).await {
                    Err(_) => Err(format!("collect timed out after {timeout:?}")),
                    Ok(Err(panic)) => Err(format!(
                        "collect panicked: {}",
                        panic_message(panic.as_ref())
                    )),
                    Ok(Ok(Err(e))) => Err(format!("collect failed: {e}")),
                    Ok(Ok(Ok(observation))) => Ok(observation),
                };
                if let Err(e) = &result {
                    tracing::Span::current().record("error", e.as_str());
                }
                let _ = me.cast(NodeMsg::Observed { seq, result });
            }
            .instrument(span),
        )));
    }

    /// Records how a collect ended (its observation is installed already).
    fn collected(&mut self, result: Result<(), String>, now: Instant) {
        match result {
            Ok(()) => {
                self.collector.observed_seq = self.collector.seq;
                self.quiet_from(now);
                if self.collector.failed {
                    self.collector.failed = false;
                    if let Some(trouble) = &mut self.cold.collect_trouble {
                        trouble.error = None;
                    }
                }
            }
            Err(e) => self.collect_failed(e, now),
        }
    }

    /// Counts a failed collect, keeps its error with its time, and logs it
    /// (the first of a streak at once, then at most once per
    /// `recovery_heartbeat`).
    fn collect_failed(&mut self, error: String, now: Instant) {
        self.collector.failed = true;
        let every = self.shared.config.recovery_heartbeat;
        let (trouble, log) = match &mut self.cold.collect_trouble {
            Some(trouble) => {
                let log = now.saturating_duration_since(trouble.logged_at) >= every;
                (trouble, log)
            }
            slot @ None => (
                slot.insert(Box::new(CollectTrouble {
                    failures: 0,
                    error: None,
                    failed_at: now,
                    logged_at: now,
                })),
                true,
            ),
        };
        trouble.failures += 1;
        trouble.failed_at = now;
        if log {
            trouble.logged_at = now;
            tracing::warn!(
                node.path = %self.path,
                error = %error,
                failures = trouble.failures,
                "collect failed"
            );
        } else {
            tracing::trace!(node.path = %self.path, error = %error, "collect failed");
        }
        trouble.error = Some(error);
    }

    pub(super) fn observed(
        &mut self,
        seq: u64,
        result: Result<fsm_core::runtime::Observation, String>,
        myself: &ActorRef<NodeMsg>,
    ) {
        if seq != self.collector.seq {
            return;
        }
        self.collector.in_flight = false;
        // The task has finished; dropping its handle aborts nothing.
        self.cold.collect_task = None;
        match result {
            Ok(observation) => {
                if self.driver.set_observation(observation) {
                    self.collected(Ok(()), Instant::now());
                }
            }
            Err(e) => self.collected(Err(e), Instant::now()),
        }
        if self.collector.again {
            self.start_collect(myself, &tracing::Span::none(), Instant::now());
        }
    }
}
