//! Acting: handing the actions the state machine asks for to the tree's
//! executor, receiving their outcomes, and holding back a failed action.
//!
//! * At most one action of a node is in flight; one asked for meanwhile is
//!   dropped (actions are idempotent: the state machine asks again).
//! * **The act-after gate**: after an action ends, the state machine next
//!   runs on an observation from a collect started after it ended, so it
//!   cannot ask for the same action again on an observation that predates
//!   the action's effect. The node collects again at once when an action
//!   ends.
//! * **Retry backoff**: an action that failed or timed out and is asked for
//!   again is held back for `TreeConfig::action_backoff` (growing per
//!   failure in a row, with jitter; a success or a change of the node's
//!   spec resets it).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fsm_core::{ActionOutcome, ActionReport, BoxedAction};
use ractor::{ActorId, ActorRef};
use tokio::time::Instant;

use super::{ActionRetry, NodeMsg, NodeState, ms};
use crate::executor::{ActionDone, ActionId, ActionRequest, ExecMsg, OutcomeSink};

/// The executor hands a node its actions' outcomes as its own message.
impl OutcomeSink for ActorRef<NodeMsg> {
    fn owner(&self) -> ActorId {
        self.get_id()
    }

    fn deliver(&self, done: ActionDone) {
        // A node that is gone cannot receive its outcome.
        let _ = self.cast(NodeMsg::ActionDone {
            id: done.id,
            report: Box::new(done.report),
        });
    }
}

impl NodeState {
    /// The act-after gate: whether the last action's effect is not observed
    /// yet. Acting on an older observation would ask for the same action
    /// again, so the state machine does not run until it is.
    pub(super) fn awaiting_action_effect(&self) -> bool {
        self.collector.observed_seq <= self.collector.act_after
    }

    /// Hands an action the state machine asked for to the executor, unless
    /// one is in flight already or the same action is backing off after a
    /// failure (then it is dropped: the state machine asks again).
    pub(super) fn offer_action(
        &mut self,
        action: BoxedAction,
        now: Instant,
        myself: &ActorRef<NodeMsg>,
    ) {
        if self.action.is_some() {
            tracing::trace!(node.path = %self.path, action = action.name(), "action dropped: one is already in flight");
        } else if let Some(retry) = self.retry_wait(action.name(), now) {
            tracing::trace!(node.path = %self.path, action = action.name(), retry_in_ms = ms(retry), "action dropped: it failed, and its retry is not due yet");
        } else {
            self.enqueue(action, myself);
        }
    }

    fn enqueue(&mut self, action: BoxedAction, myself: &ActorRef<NodeMsg>) {
        let id = self.shared.next_action_id.fetch_add(1, Ordering::Relaxed);
        let name = action.name();
        // With a store, the outcome goes to the store too, whoever hears it.
        let recorded = self.store_action_record(id, name, myself);
        let owner: Box<dyn OutcomeSink> = match &recorded {
            Some((_, sink)) => Box::new(sink.clone()),
            None => Box::new(myself.clone()),
        };
        let request = ActionRequest {
            id,
            path: self.path.clone(),
            owner,
            action,
            worker_type: Arc::clone(&self.cold.worker_type),
            origin: self.cold.tick_origin.as_deref().cloned(),
        };
        if let Some((store, sink)) = recorded {
            // The action runs once its started record is written.
            store.action_started(sink.record, request.into());
            self.action = Some((id, name));
            self.store_dirty = true;
            return;
        }
        match self.shared.executor.cast(ExecMsg::Enqueue(request.into())) {
            Ok(()) => self.action = Some((id, name)),
            Err(_) => {
                self.last_action = Some(Box::new(ActionReport {
                    action: name.to_owned(),
                    outcome: ActionOutcome::Rejected("the executor is not running".to_owned()),
                }));
            }
        }
    }

    /// How long until the failed action `name` may run again, if it is
    /// backing off.
    fn retry_wait(&self, name: &str, now: Instant) -> Option<Duration> {
        let retry = self.cold.action_retry.as_ref()?;
        (retry.action == name && now < retry.due).then(|| retry.due.saturating_duration_since(now))
    }

    pub(super) fn action_done(
        &mut self,
        id: ActionId,
        report: Box<ActionReport>,
        myself: &ActorRef<NodeMsg>,
    ) {
        if self.action.map(|(i, _)| i) != Some(id) {
            return;
        }
        self.action = None;
        // (Its record with the outcome went to the store with the outcome.)
        self.store_dirty = true;
        // Whatever it did, the state machine next sees an observation taken
        // after it ended (the collect now in flight, if any, started before).
        self.collector.act_after = self.collector.seq;
        let failure = match &report.outcome {
            ActionOutcome::Succeeded => {
                self.cold.action_error = None;
                self.cold.action_retry = None;
                None
            }
            ActionOutcome::Failed(e) => Some(format!("action `{}` failed: {e}", report.action)),
            ActionOutcome::TimedOut => Some(format!("action `{}` timed out", report.action)),
            ActionOutcome::Cancelled | ActionOutcome::Rejected(_) | ActionOutcome::Interrupted => {
                None
            }
        };
        if let Some(failure) = failure {
            self.action_failed(&report.action, failure);
        }
        self.last_action = Some(report);
        // The world just changed: look again at once.
        if self.collector.in_flight {
            self.collector.again = true;
        } else {
            self.start_collect(myself, &tracing::Span::none(), Instant::now());
        }
    }

    /// Records a failed (or timed-out) action: logs it and holds back the
    /// same action for an exponentially growing wait, reset by a success.
    fn action_failed(&mut self, action: &str, failure: String) {
        let now = Instant::now();
        let backoff = self.shared.config.action_backoff;
        let cold = &mut *self.cold;
        let attempt = match &cold.action_retry {
            Some(retry) if retry.action == action => retry.attempt.saturating_add(1),
            _ => 0,
        };
        let delay = backoff.delay(attempt, cold.rng.next_f64());
        tracing::warn!(
            node.path = %self.path,
            error = %failure,
            retry_in_ms = ms(delay),
            "action failed"
        );
        cold.action_retry = Some(Box::new(ActionRetry {
            action: action.to_owned(),
            attempt,
            due: crate::deadline::after(now, delay),
        }));
        cold.action_error = Some(failure);
    }
}
