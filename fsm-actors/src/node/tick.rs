//! The tick: what a node does each time its parent (or, at the top, the
//! tree's timer) ticks it. **This is the one statement of the tick's
//! order**; `docs/architecture.md` follows it step by step.
//!
//! Deriving the desired state is not a step of the tick: a node derives
//! when its inputs arrive (at start, with `UpdateSpec` or `ParentContext`),
//! if they changed by hash, so a tick finds it done (see `inputs`).
//!
//! One tick of one node, in order:
//!
//! 1. **Take the tick**: clear the mark that says a tick is waiting for the
//!    node, take the tree generation the tick carries, and count the tick.
//! 2. **Check the collector**: if it has made no good observation for
//!    longer than `collector_restart_after`, it is hung: the node fails
//!    (its parent restarts it) and the tick ends (see `observation`).
//! 3. **Update the circuit** from the children: open while any is failed,
//!    restarting or stale.
//! 4. **Reconcile the children** if the declaration changed since it was
//!    last applied or rejected: validate; stop removed ones, in reverse
//!    start order; then, in declaration order, add new ones, send
//!    `UpdateSpec` to changed ones and replace those whose worker type
//!    changed (see `reconcile`). Then start the children whose start or
//!    restart is due (see `supervise`).
//! 5. **Record the generation** the node has acted on, once its
//!    declaration is applied or rejected (see `reports`).
//! 6. **Map states**: send each child its mapped desired state and its
//!    inherited variables and location, if they changed (see `reconcile`).
//! 7. **Forward the tick** to every running child, but those started in
//!    this tick (they ran their first tick on their own) and those that
//!    still have one waiting (skipped, and counted).
//! 8. **Step the state machine**, unless the circuit is open, on the
//!    freshest observation — not while stale, nor before the last action's
//!    effect is observed; hand any action to the executor, at most one in
//!    flight (see `actions`). A signal ends the tick here: `NeedsRestart`
//!    restarts the node gracefully, `NeedsRemoval` finishes it.
//! 9. **Collect**: start the next collect, unless one is running or the
//!    node's worker type is observed only every so often and that is not
//!    due (see `observation`). A node's first tick, which runs as it
//!    starts, steps on the observation it has just made and does not
//!    collect again.
//! 10. **Report** upward, if anything changed — after every message, not
//!     only ticks (see `reports`).
//!
//! The common path (nothing to reconcile, start, fail or finish) runs in
//! place, without waiting; the rest is boxed, so that the handler future
//! ractor moves for every message stays small.

use std::sync::atomic::Ordering;
use std::time::Duration;

use fsm_core::{Signal, runtime::StepInput, supervision::CircuitChange};
use ractor::{ActorProcessingErr, ActorRef};
use tokio::time::Instant;
use tracing::Instrument;

use super::{NodeMsg, NodeState, Problem};
use crate::telemetry;

/// What the first half of a tick found.
pub(super) enum Prepared {
    /// Nothing to wait for.
    Ready,
    /// The declared children changed: reconcile.
    Reconcile,
    /// The collector has failed for too long: fail the node.
    CollectorFailed(String),
}

/// What is left of a tick that must wait, with the tick's span.
pub(super) enum TickRest {
    /// From after the first half (see `Prepared`).
    Prepared(tracing::Span, Prepared),
    /// Only the state machine's signal to act on.
    Signal(tracing::Span, Signal),
}

impl NodeState {
    /// One tick, inside its span: a child of the parent's tick span (the
    /// root's is the root of the tick's trace; the top node has none).
    ///
    /// The common path (nothing to reconcile, start, fail or finish) does
    /// not wait and runs in place; the rest is boxed, so that the handler
    /// future ractor moves for every message stays small.
    pub(super) async fn tick(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        parent: tracing::Span,
        now: Instant,
    ) -> Result<(), ActorProcessingErr> {
        let rest = match self.tick_in_place(myself, parent, now)? {
            None => return Ok(()),
            Some(rest) => Box::pin(self.tick_rest(myself, rest, now)),
        };
        rest.await
    }

    /// A tick as far as it goes without waiting: all of it, or up to what
    /// must wait.
    pub(super) fn tick_in_place(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        parent: tracing::Span,
        now: Instant,
    ) -> Result<Option<TickRest>, ActorProcessingErr> {
        let span = if self.is_top() {
            // The timer's ticks carry no span; a tick forwarded from a
            // parent on another node carries that parent's (see `cluster`).
            parent
        } else if telemetry::info_enabled() {
            self.tick_span(&parent)
        } else {
            tracing::Span::none()
        };
        if !span.is_disabled() {
            self.traced_tick(&span);
        }
        let prepared = span.in_scope(|| self.tick_prepare(now))?;
        let due = self.children.next_due().is_some_and(|due| due <= now);
        if !matches!(prepared, Prepared::Ready) || due {
            return Ok(Some(TickRest::Prepared(span, prepared)));
        }
        match span.in_scope(|| self.tick_run(myself, &span, now))? {
            None => {
                self.record_state_after(&span);
                Ok(None)
            }
            Some(signal) => Ok(Some(TickRest::Signal(span, signal))),
        }
    }

    /// The rest of a tick that must wait: a reconcile, children to start,
    /// a failure, a finish.
    pub(super) async fn tick_rest(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        rest: TickRest,
        now: Instant,
    ) -> Result<(), ActorProcessingErr> {
        let (span, signal) = match rest {
            TickRest::Prepared(span, prepared) => {
                match prepared {
                    Prepared::CollectorFailed(why) => {
                        return Err(self.fail(why).instrument(span).await);
                    }
                    Prepared::Reconcile => {
                        self.reconcile(myself).instrument(span.clone()).await?;
                    }
                    Prepared::Ready => {}
                }
                if self.children.next_due().is_some_and(|due| due <= now) {
                    self.start_due_children(myself)
                        .instrument(span.clone())
                        .await?;
                }
                let signal = span.in_scope(|| self.tick_run(myself, &span, now))?;
                (span, signal)
            }
            TickRest::Signal(span, signal) => (span, Some(signal)),
        };
        match signal {
            Some(Signal::NeedsRestart) => {
                let why = "the worker asked for a restart".to_owned();
                return self.restart_gracefully(why, myself).instrument(span).await;
            }
            Some(Signal::NeedsRemoval) => {
                return self.finish(myself).instrument(span).await;
            }
            None => {}
        }
        self.record_state_after(&span);
        Ok(())
    }

    /// The tick's span, while spans at `INFO` may be recorded. (Out of
    /// line, as is everything a traced tick adds: the untraced tick's code
    /// stays short, and so stays in the instruction cache.)
    #[cold]
    #[inline(never)]
    fn tick_span(&self, parent: &tracing::Span) -> tracing::Span {
        tracing::info_span!(
            target: "fsm_actors",
            parent: parent,
            "fsm.tick",
            node.path = %self.path,
            worker.type = %self.cold.spec.worker_type,
            state.before = self.driver.state_name(),
            state.after = tracing::field::Empty,
        )
    }

    /// Records the state the tick ended in on its span (the state is not
    /// even looked up for an untraced tick).
    fn record_state_after(&self, span: &tracing::Span) {
        if !span.is_disabled() {
            span.record("state.after", self.driver.state_name());
        }
    }

    /// What a recorded tick span adds: the trace's origin, and, in the
    /// node's first traced tick after a restore, the interrupted action.
    #[cold]
    #[inline(never)]
    fn traced_tick(&mut self, span: &tracing::Span) {
        match (telemetry::span_context(span), &mut self.cold.tick_origin) {
            (Some(origin), Some(slot)) => **slot = origin,
            (origin, slot) => *slot = origin.map(Box::new),
        }
        if let Some(record) = self.cold.interrupted.take() {
            // In the trace of the node's first traced tick after a
            // restore (read only while ticks are traced).
            let path = &self.path;
            span.in_scope(|| {
                tracing::info!(
                    node.path = %path,
                    action = %record.action,
                    action_id = record.id,
                    started_at_ms = record.started_at_ms,
                    outcome = "interrupted",
                    "action interrupted: its process ended while it ran"
                );
            });
        }
    }

    /// The first half of a tick: count it, check the collector, derive if
    /// the inputs changed, update the circuit; say whether the children
    /// need a reconcile.
    fn tick_prepare(&mut self, now: Instant) -> Result<Prepared, ActorProcessingErr> {
        self.ticks += 1;
        #[cfg(feature = "fault-injection")]
        self.inject_fault();
        if let Some(age) = self.collector_failed_for(now) {
            return Ok(Prepared::CollectorFailed(format!(
                "the collector has produced no good observation for {age:?} (restart threshold {:?}); last: {}",
                self.config().collector_restart_after,
                self.cold.collect_error().map_or("none", String::as_str),
            )));
        }
        // (Inputs are applied when they arrive: at start, `UpdateSpec`,
        // `ParentContext`.)
        if !self.children.is_unallocated() {
            // A node that never had a child has no circuit to update.
            self.update_circuit(now);
        }
        let declared = Some(self.desired_children);
        if self.applied_children == declared {
            // Back on the applied declaration (a rejected change was
            // reverted): whatever was rejected in between no longer applies.
            self.set_problem(Problem::Declaration, None);
            self.rejected_children = None;
            Ok(Prepared::Ready)
        } else if self.rejected_children == declared {
            Ok(Prepared::Ready)
        } else if self.declared_count == 0 && self.children.is_empty() {
            // A leaf: nothing declared, nothing running or stopping, so
            // there is nothing to plan and no reason to wait.
            self.applied_children = declared;
            self.set_problem(Problem::Declaration, None);
            self.rejected_children = None;
            Ok(Prepared::Ready)
        } else {
            Ok(Prepared::Reconcile)
        }
    }

    /// The second half of a tick: map states, forward the tick, run the
    /// state machine, collect.
    fn tick_run(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        span: &tracing::Span,
        now: Instant,
    ) -> Result<Option<Signal>, ActorProcessingErr> {
        self.observe_generation();
        self.map_states();
        let tick = self.ticks;
        let generation = self.tree_generation;
        for children in self.children.entries().chunks(64) {
            // Which of these children still have a tick waiting, read for
            // all of them before any is sent one: each flag is on a line
            // its child last wrote, on another core, and these reads
            // overlap, while a send's atomic operations would make each
            // read wait for the send before it. (Only the parent sets a
            // flag and only its child clears it, so a flag read here is
            // still set when the send below would test it, or was cleared
            // since, which only skips a tick the child could have taken.)
            let mut waiting = 0u64;
            for (i, child) in children.iter().enumerate() {
                waiting |= u64::from(child.tick_pending.load(Ordering::Relaxed)) << i;
            }
            for (i, child) in children.iter().enumerate() {
                // A child started in this tick has ticked on its own.
                if child.started_in_tick == tick {
                    continue;
                }
                let Some(actor) = child.actor() else {
                    continue;
                };
                if waiting & (1 << i) != 0 {
                    // Still busy with the last one: one pending tick at most.
                    let labels =
                        self.shared
                            .metrics
                            .labels(child.spec.worker_type.clone(), &child.path, []);
                    self.shared.metrics.ticks_skipped.add(1, &labels);
                    continue;
                }
                // A store, not a swap: nothing but this node sets the flag.
                child.tick_pending.store(true, Ordering::Relaxed);
                if actor.cast(NodeMsg::Tick(span.clone(), generation)).is_err() {
                    child.tick_pending.store(false, Ordering::Relaxed);
                }
            }
        }
        if !self.circuit_open()
            && let Some(signal) = self.run_state_machine(now, myself)?
        {
            return Ok(Some(signal));
        }
        if self.collector.fresh_from_start {
            // The node's first tick, on the observation it made as it
            // started: looking again in the same instant would only repeat it.
            self.collector.fresh_from_start = false;
        } else if self.collect_due(now) {
            self.start_collect(myself, span, now);
        }
        Ok(None)
    }

    /// Fault injection for chaos testing: panics with the configured
    /// probability. Never at the top node.
    #[cfg(feature = "fault-injection")]
    fn inject_fault(&mut self) {
        if self.is_top() {
            return;
        }
        let p = self.shared.chaos_probability();
        if p > 0.0 && self.cold.rng.next_f64() < p {
            // A real panic, so that the same path as a crashing worker runs.
            panic!(
                "node `{}` failed on purpose {}",
                self.path,
                crate::faults::INJECTED_FAULT_MARKER
            );
        }
    }

    /// Whether the circuit is open (never, for a node that never had a
    /// child; its circuit is not even read then).
    pub(super) fn circuit_open(&self) -> bool {
        !self.children.is_unallocated() && self.cold.circuit.is_open()
    }

    fn update_circuit(&mut self, now: Instant) {
        let any_faulty = self.children.any_faulty();
        match self.cold.circuit.update(any_faulty, now.into_std()) {
            Some(CircuitChange::Opened) => {
                tracing::warn!(
                    node.path = %self.path,
                    restarting = self.children.restarting_count(),
                    "circuit opened: a child failed, is restarting or is stale; pausing this node's state machine"
                );
                self.series().circuit(true);
            }
            Some(CircuitChange::Closed { open_for }) => {
                tracing::info!(
                    node.path = %self.path,
                    open_ms = u64::try_from(open_for.as_millis()).unwrap_or(u64::MAX),
                    "circuit closed: all children healthy again"
                );
                self.series().circuit(false);
            }
            None => {}
        }
        let every = self.config().recovery_heartbeat;
        if self.cold.circuit.heartbeat_due(now.into_std(), every) {
            let open_for = self.cold.circuit.open_since().map_or(Duration::ZERO, |t| {
                now.into_std().saturating_duration_since(t)
            });
            tracing::info!(
                node.path = %self.path,
                restarting = self.children.restarting_count(),
                open_ms = u64::try_from(open_for.as_millis()).unwrap_or(u64::MAX),
                restarts_in_window = self.cold.restart_window.len(),
                "subtree still recovering"
            );
        }
    }

    /// Runs one step; returns the signal it raised, if any.
    pub(super) fn run_state_machine(
        &mut self,
        now: Instant,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<Option<Signal>, ActorProcessingErr> {
        if self.is_stale(now) {
            return Ok(None);
        }
        if self.awaiting_action_effect() {
            return Ok(None);
        }
        let desired = self.parent_state.as_deref().unwrap_or(&self.desired_state);
        let input = StepInput::new(&self.path, desired)
            .with_children(self.children.statuses())
            .with_action_in_flight(self.action.is_some())
            .with_last_action(self.last_action.as_deref())
            .with_children_from_state(if self.has_state_children {
                self.cold
                    .from_state
                    .as_deref()
                    .map_or(&[], |f| f.state.specs())
            } else {
                // (Other nodes do not read `cold` here.)
                &[]
            });
        let outcome = match self.driver.step(&input) {
            Ok(Some(outcome)) => outcome,
            Ok(None) => return Ok(None),
            Err(e) => return Err(Box::new(e)),
        };
        if outcome.to.is_none()
            && outcome.children.is_none()
            && outcome.signal.is_none()
            && outcome.action.is_none()
        {
            // The common step: the machine stays where it is.
            return Ok(None);
        }
        Ok(self.stepped(outcome, now, myself))
    }

    /// Acts on a step that did something: a transition, children declared
    /// from the state, a signal, an action. (Out of line: most steps of a
    /// settled tree do none of it, and the tick's code stays short.)
    #[inline(never)]
    fn stepped(
        &mut self,
        outcome: fsm_core::runtime::StepOutcome,
        now: Instant,
        myself: &ActorRef<NodeMsg>,
    ) -> Option<Signal> {
        if let Some(to) = outcome.to {
            tracing::info!(
                node.path = %self.path,
                from = outcome.from,
                to,
                reason = %outcome.reason,
                "state transition"
            );
            self.cold.transition_reason = outcome.reason.clone();
            let in_state = now.saturating_duration_since(self.cold.state_since);
            self.series().transition(outcome.from, to, in_state);
            self.cold.state_since = now;
        }
        if let Some(children) = outcome.children {
            self.declare_from_state(children);
        }
        if let Some(signal) = outcome.signal {
            tracing::info!(node.path = %self.path, ?signal, reason = %outcome.reason, "signal raised");
        }
        if let Some(action) = outcome.action {
            self.offer_action(action, now, myself);
        }
        outcome.signal
    }
}
