//! What a node does when a child ends: decide from the child's restart
//! policy and the exit reason whether it restarts; count the restart against
//! the intensity window (escalating past it); stop the strategy's
//! bystanders in reverse start order; and start them all again, in start
//! order, once the backoff has passed — by a scheduled message, never a
//! sleep.

use foldhash::{HashSet, HashSetExt};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fsm_core::{
    NodePath, supervision::ExitReason, supervision::IntensityVerdict,
    supervision::affected_children,
};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use tokio::time::Instant;

use super::children::ChildRun;
use super::{NodeActor, NodeArgs, NodeMsg, NodeState, ms};
use crate::executor::ExecMsg;
use crate::runbook;
use crate::snapshot::{FatalError, StopOutcome, StopRecord};
use crate::telemetry;
use tracing::Instrument;

/// A supervisor gave up: more restarts than its intensity allows.
#[derive(Debug, thiserror::Error)]
#[error(
    "node `{path}` exceeded its restart intensity ({restarts} restarts within {period:?}); last failure: {last_failure}. It stopped its children and failed, so its parent's restart policy applies. See {}",
    runbook::INTENSITY
)]
pub(crate) struct Escalated {
    path: NodePath,
    restarts: u32,
    period: Duration,
    last_failure: String,
}

/// A node failed on purpose, after stopping its children in order.
#[derive(Debug, thiserror::Error)]
#[error("node `{path}` failed: {why}")]
pub(crate) struct NodeFailed {
    path: NodePath,
    why: String,
}

/// The error of a node that fails on purpose.
pub(super) fn node_failed(path: &NodePath, why: String) -> ActorProcessingErr {
    Box::new(NodeFailed {
        path: path.clone(),
        why,
    })
}

impl NodeState {
    /// A child's actor ended (ractor's supervision link told us).
    pub(super) async fn child_exited(
        &mut self,
        id: ActorId,
        reason: ExitReason,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if self.children.is_stopping(id) {
            // Stopped on purpose; `ChildStopped` does the bookkeeping.
            return Ok(());
        }
        let Some(i) = self.children.index_of_actor(id) else {
            return Ok(());
        };
        let entry = &self.children.entries()[i];
        let path = entry.path.clone();
        let policy = entry.spec.restart;
        // Its subtree is gone with it: so are its actions.
        let _ = self
            .shared
            .executor
            .cast(ExecMsg::CancelSubtree(path.clone()));
        if !policy.restarts_after(&reason) {
            tracing::info!(node.path = %path, ?reason, ?policy, "child ended and is not restarted under its policy");
            let entry = self.children.remove_at(i);
            self.children.complete(entry.name(), entry.hash);
            return Ok(());
        }
        let failure = match reason {
            ExitReason::Abnormal(why) => {
                tracing::warn!(node.path = %path, failure = %why, "child failed");
                why
            }
            ExitReason::Normal => {
                tracing::warn!(
                    node.path = %path,
                    "a permanent child finished and is restarted; declare it `transient` if it is meant to finish"
                );
                "finished (a permanent child is restarted)".to_owned()
            }
            ExitReason::Shutdown => "stopped".to_owned(),
        };
        self.restart_after_failure(i, failure, myself).await
    }

    /// Schedules the restart of the child in slot `failed` and of its
    /// bystanders under the strategy, after the backoff; or escalates when
    /// the restart intensity is exceeded.
    pub(super) async fn restart_after_failure(
        &mut self,
        failed: usize,
        failure: String,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        let supervision = self.supervision().clone();
        let Some(entry) = self.children.entries().get(failed) else {
            return Ok(());
        };
        let failed_path = entry.path.clone();
        let failed_name = entry.name().to_owned();
        let failed_type = entry.spec.worker_type.clone();
        match self
            .cold
            .restart_window
            .record(now.into_std(), supervision.intensity)
        {
            IntensityVerdict::Exceeded { in_window } => {
                let last_failure = format!("`{failed_path}`: {failure}");
                // It has ended already (or never started): nothing to stop,
                // and no stop record to make up for it.
                let _ = self.children.remove_at(failed);
                return self
                    .escalate(
                        in_window,
                        supervision.intensity.period,
                        last_failure,
                        failed_path,
                    )
                    .await;
            }
            IntensityVerdict::LastBeforeEscalation { in_window } => tracing::warn!(
                node.path = %self.path,
                child.path = %failed_path,
                restarts = in_window,
                period_ms = ms(supervision.intensity.period),
                runbook = runbook::INTENSITY,
                "one more restart within the period and this node escalates to its parent"
            ),
            IntensityVerdict::Allowed { .. } => {}
        }

        let started = match &entry.run {
            ChildRun::Running { started, .. } => *started,
            ChildRun::Waiting { .. } => now,
        };
        let attempt =
            supervision
                .backoff
                .next_attempt(entry.attempt, started.into_std(), now.into_std());
        let delay = supervision.backoff.delay(attempt, self.cold.rng.next_f64());
        let due = crate::deadline::after(now, delay);

        // Bystanders first, in reverse start order.
        let affected = affected_children(supervision.strategy, failed, self.children.len());
        let bystanders: Vec<String> = self.children.entries()[affected]
            .iter()
            .rev()
            .map(|e| e.name().to_owned())
            .filter(|n| *n != failed_name)
            .collect();
        for name in bystanders {
            let Some(i) = self.children.index_of(&name) else {
                continue;
            };
            let entry = &self.children.entries()[i];
            let path = entry.path.clone();
            let worker_type = entry.spec.worker_type.clone();
            let actor = if entry.spec.restart.restarts_as_bystander() {
                let actor = self.children.set_waiting(
                    i,
                    due,
                    Some(format!("restarted together with `{failed_name}`")),
                );
                self.children.update(i, |e| e.restarts += 1);
                self.shared.restarts.fetch_add(1, Ordering::Relaxed);
                actor
            } else {
                let entry = self.children.remove_at(i);
                self.children.complete(entry.name(), entry.hash);
                entry.actor().cloned()
            };
            if let Some(actor) = actor {
                self.stop_child(&path, &name, &worker_type, actor, myself);
            }
        }

        if let Some(i) = self.children.index_of(&failed_name) {
            // Its actor is gone already.
            let _ = self.children.set_waiting(i, due, Some(failure.clone()));
            self.children.update(i, |e| {
                e.attempt = attempt.saturating_add(1);
                e.restarts += 1;
            });
            self.shared.restarts.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(
            node.path = %failed_path,
            attempt,
            delay_ms = ms(delay),
            strategy = ?supervision.strategy,
            "restart scheduled"
        );
        // A restart happens between ticks: its span starts its own trace,
        // linked to this node's last tick.
        let span = tracing::info_span!(
            target: "fsm_actors",
            parent: None,
            "fsm.child.restart",
            node.path = %failed_path,
            worker.type = %failed_type,
            parent.path = %self.path,
            failure = %failure,
            attempt,
            delay_ms = ms(delay),
            strategy = ?supervision.strategy,
        );
        telemetry::link(&span, self.cold.tick_origin.as_deref());
        drop(span);
        let attrs = self.shared.metrics.labels(failed_type, &failed_path, []);
        self.shared.metrics.restarts.add(1, &attrs);
        if delay.is_zero() {
            // No timer for no delay (a timer rounds up to its 1 ms tick).
            let _ = myself.cast(NodeMsg::RestartDue);
        } else {
            // The timer task is detached: it sends one message and ends.
            drop(myself.send_after(delay, || NodeMsg::RestartDue));
        }
        Ok(())
    }

    /// Starts every waiting child whose time has come, in start order. A due
    /// child whose previous actor is still stopping waits for
    /// `ChildStopped`, and so do the due children after it.
    pub(super) async fn start_due_children(
        &mut self,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let mut failed_this_pass: HashSet<String> = HashSet::new();
        let mut i = 0;
        while i < self.children.len() {
            let entry = &self.children.entries()[i];
            let due = match entry.run {
                ChildRun::Waiting { due, .. } => due,
                ChildRun::Running { .. } => {
                    i += 1;
                    continue;
                }
            };
            if due > Instant::now() || failed_this_pass.contains(entry.name()) {
                i += 1;
                continue;
            }
            if self.children.is_name_stopping(entry.name()) {
                // Due, but its previous actor is still stopping: it starts
                // on `ChildStopped`, and so do the due children after it,
                // to keep the start order.
                break;
            }
            match self.start_child(i, myself).await {
                Ok(()) => i += 1,
                Err(why) => {
                    // A failed start is a failure like any other; ractor
                    // sends no event for it.
                    failed_this_pass.insert(self.children.entries()[i].name().to_owned());
                    self.restart_after_failure(i, why, myself).await?;
                    // Bystanders may have moved: scan again from the start.
                    i = 0;
                }
            }
        }
        Ok(())
    }

    /// Spawns the actor of the child in slot `i`.
    async fn start_child(&mut self, i: usize, myself: &ActorRef<NodeMsg>) -> Result<(), String> {
        let entry = &self.children.entries()[i];
        let spec = Arc::clone(&entry.spec);
        let spec_hash = entry.hash;
        let path = entry.path.clone();
        let restarts = entry.restarts;
        let attempt = entry.attempt;
        let spec_generation = entry.generation;
        let entry_tick_pending = Arc::clone(&entry.tick_pending);
        let decoded = self.children.update(i, |e| e.decoded.take()).flatten();
        let incarnation = self.cold.next_incarnation;
        self.cold.next_incarnation += 1;
        let mapped = spec.mapped_state(self.desired_state()).map(str::to_owned);
        let driver = self
            .cold
            .prebuilt_child
            .take()
            .and_then(|p| p.driver_for(&path, &spec.worker_type));
        let args = NodeArgs {
            path: path.clone(),
            spec,
            spec_hash,
            incarnation,
            spec_generation,
            tree_generation: self.tree_generation,
            tick_pending: Some(Arc::clone(&entry_tick_pending)),
            restarts,
            attempt,
            parent: Some(myself.clone()),
            parent_state: mapped.clone(),
            context: Arc::clone(self.children_context()),
            globals: Arc::clone(&self.cold.globals),
            shared: Arc::clone(&self.shared),
            driver,
            decoded,
            prebuilt_child: None,
            first_tick: Some(tracing::Span::current()),
        };
        let span = tracing::info_span!(
            target: "fsm_actors",
            "fsm.child.spawn",
            node.path = %path,
            worker.type = %args.spec.worker_type,
            restarts,
        );
        #[cfg(feature = "cluster")]
        let spawned = match (&args.spec.placement, &self.shared.config.cluster) {
            // Placed on a node of the cluster: a proxy stands for it here.
            (Some(_), Some(link)) => {
                let proxy = crate::cluster::ProxyArgs {
                    path: args.path.clone(),
                    spec: Arc::clone(&args.spec),
                    tree_generation: args.tree_generation,
                    tick_pending: args.tick_pending.clone(),
                    parent: myself.clone(),
                    parent_state: args.parent_state.clone(),
                    context: Arc::clone(&args.context),
                    link: link.clone(),
                    metrics: Arc::clone(&self.shared.metrics),
                };
                Actor::spawn_linked(None, crate::cluster::ProxyActor, proxy, myself.get_cell())
                    .instrument(span)
                    .await
            }
            _ => {
                Actor::spawn_linked(None, NodeActor, args, myself.get_cell())
                    .instrument(span)
                    .await
            }
        };
        #[cfg(not(feature = "cluster"))]
        let spawned = Actor::spawn_linked(None, NodeActor, args, myself.get_cell())
            .instrument(span)
            .await;
        match spawned {
            Ok((actor, _)) => {
                tracing::debug!(node.path = %path, restarts, "child started");
                self.children
                    .set_running(i, actor, Instant::now(), self.ticks);
                let context = self.children_context().hash;
                self.children.update(i, |e| {
                    e.sent_parent_state = mapped;
                    e.sent_context = context;
                });
                Ok(())
            }
            Err(e) => {
                tracing::warn!(node.path = %path, error = %e, "child failed to start");
                Err(format!("failed to start: {e}"))
            }
        }
    }

    /// A child this node stopped on purpose has finished stopping.
    pub(super) async fn child_stopped(
        &mut self,
        id: ActorId,
        records: &[StopRecord],
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if self.children.finish_stopping(id).is_none() {
            return Ok(());
        }
        for r in records {
            if let StopOutcome::Forced(why) = &r.outcome {
                tracing::warn!(node.path = %r.path, reason = %why, "child was stopped by force");
            }
        }
        // A replacement or a restart may have been waiting for the name.
        self.start_due_children(myself).await
    }

    /// Too many restarts: stop every child in order and fail, so that the
    /// parent's policy applies. At the top, the tree gives up instead.
    async fn escalate(
        &mut self,
        restarts: u32,
        period: Duration,
        last_failure: String,
        failed: NodePath,
    ) -> Result<(), ActorProcessingErr> {
        tracing::error!(
            node.path = %self.path,
            restarts,
            period_ms = ms(period),
            last_failure = %last_failure,
            runbook = runbook::INTENSITY,
            "restart intensity exceeded: stopping all children and escalating"
        );
        // At the top, the one child is the root: the node that gave up.
        let root = failed;
        let deadline = crate::deadline::from_now(self.config().stop_timeout);
        let records = self.stop_all_children(deadline).await;
        let _ = self
            .shared
            .executor
            .cast(ExecMsg::CancelSubtree(self.path.clone()));
        if self.is_top() {
            // What the tree's shutdown will answer: every node has stopped.
            self.cold.gave_up = Some(records.into_boxed_slice());
            let fatal = FatalError {
                path: root,
                restarts,
                period_ms: ms(period),
                last_failure,
                advice: "fix the cause of the last failure, then spawn the tree again; raise the root's restart intensity (TreeConfig::supervision) only if such failures are expected".to_owned(),
                runbook: runbook::INTENSITY.to_owned(),
            };
            tracing::error!(error = %fatal, "the tree gave up");
            self.shutting_down = true;
            self.shared.status.send_modify(|s| s.fatal = Some(fatal));
            return Ok(());
        }
        Err(Box::new(Escalated {
            path: self.path.clone(),
            restarts,
            period,
            last_failure,
        }))
    }

    /// Fails this node on purpose (`NeedsRestart`, a collector that keeps
    /// failing), after stopping its children in order so that their stop
    /// hooks run.
    pub(super) async fn fail(&mut self, why: String) -> ActorProcessingErr {
        tracing::warn!(node.path = %self.path, reason = %why, "node failing; stopping its children first");
        let deadline = crate::deadline::from_now(self.config().stop_timeout);
        let _ = self.stop_all_children(deadline).await;
        let _ = self
            .shared
            .executor
            .cast(ExecMsg::CancelSubtree(self.path.clone()));
        Box::new(NodeFailed {
            path: self.path.clone(),
            why,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_escalation_message_names_the_node_the_failure_and_the_runbook() {
        let e = Escalated {
            path: NodePath::parse("plant/line-1"),
            restarts: 11,
            period: Duration::from_secs(10),
            last_failure: "`plant/line-1/press`: panicked".to_owned(),
        };
        let msg = e.to_string();
        assert!(msg.contains("plant/line-1"), "{msg}");
        assert!(msg.contains("11 restarts within 10s"), "{msg}");
        assert!(msg.contains("panicked"), "{msg}");
        assert!(msg.contains("docs/runbook.md#"), "{msg}");
    }
}
