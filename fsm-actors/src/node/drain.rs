//! Stopping gracefully: a node that stops for good (removed, finished, or
//! stopped with the tree) or restarts on its own request first stops its
//! children in order, then, if its worker has a state named `stopped`,
//! drives itself there through its own state machine: its desired state
//! becomes `stopped`, and it keeps observing and stepping (ticking itself by
//! scheduled messages, since its parent no longer ticks it) until it is
//! `stopped` with no action in flight. Only then does its stop hook run (or,
//! for a restart, does it fail so that its parent restarts it).
//!
//! The stop hook runs without that when the worker has no `stopped` state,
//! when the node is failing (stale, never configured), or when the removal
//! budget (`TreeConfig::removal_timeout`, within the node's share of the
//! stop deadline) runs out first. A crash stays a crash: nothing is driven
//! anywhere.

use std::time::Duration;

use ractor::{ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;

use super::stop::{EXIT_NORMAL, EXIT_SHUTDOWN};
use super::{NodeMsg, NodeState, Waiting};
use crate::executor::ExecMsg;
use crate::snapshot::StopRecord;

/// The state a worker is driven to before it stops.
pub(crate) const STOPPED: &str = "stopped";

/// How often a draining node steps when the tree has no tick timer.
const DRAIN_TICK: Duration = Duration::from_millis(100);

/// What a node does once it has stopped driving itself to `stopped`.
pub(super) enum DrainEnd {
    /// Stopped by its parent (removal, replacement, the tree's shutdown):
    /// run the stop hook, answer with the stop records, exit.
    Reply(RpcReplyPort<Vec<StopRecord>>),
    /// The worker finished (`NeedsRemoval`): run the stop hook, exit
    /// normally.
    Finish,
    /// The worker asked for a restart (`NeedsRestart`): fail, so that the
    /// parent restarts it.
    Restart(String),
}

/// A node driving itself to `stopped`.
pub(super) struct Drain {
    /// When to give up and run the stop hook anyway.
    until: Instant,
    /// The node's stop deadline (the stop hook's bound).
    deadline: Instant,
    end: DrainEnd,
    /// The children's stop records.
    records: Vec<StopRecord>,
}

impl NodeState {
    /// Stops the children in order, drives this node to `stopped` if it can,
    /// then ends as `end` says. Returns at once while the node drives
    /// itself (the node goes on handling its observations, actions and
    /// `DrainTick`s; see `while_shutting_down`).
    pub(super) async fn stop_gracefully(
        &mut self,
        deadline: Instant,
        end: DrainEnd,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        self.shutting_down = true;
        let records = self.stop_all_children(deadline).await;
        let now = Instant::now();
        let Some(until) = self.drain_until(deadline, now) else {
            return self.end_stop(records, deadline, end, myself).await;
        };
        tracing::debug!(node.path = %self.path, "driving the node to `stopped` before it stops");
        self.set_parent_state(Some(STOPPED.to_owned()));
        self.cold.drain = Some(Box::new(Drain {
            until,
            deadline,
            end,
            records,
        }));
        // One step at once, with what the node knows; then with every
        // observation, finished action and tick.
        if self.drain_step(myself, now) {
            return self.end_drain(myself).await;
        }
        self.schedule_drain_tick(myself, now);
        Ok(())
    }

    /// `NeedsRestart`: stop the children in order, drive this node to
    /// `stopped` if it can, then fail so that the parent restarts it.
    pub(super) async fn restart_gracefully(
        &mut self,
        why: String,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        tracing::warn!(node.path = %self.path, reason = %why, "node restarting; stopping it first");
        let deadline = crate::deadline::from_now(self.config().stop_timeout);
        self.stop_gracefully(deadline, DrainEnd::Restart(why), myself)
            .await
    }

    /// Until when the node may drive itself to `stopped`; `None` when it
    /// should not: no such state, nothing to do, failing, or no time.
    fn drain_until(&self, deadline: Instant, now: Instant) -> Option<Instant> {
        let budget = self.config().removal_timeout;
        if budget.is_zero()
            || !self.driver.state_names().contains(&STOPPED)
            || (self.driver.state_name() == STOPPED && self.action.is_none())
            || !self.installed
            || self.is_stale(now)
        {
            return None;
        }
        // Leave the stop hook its time (up to half of what is left).
        let left = deadline.saturating_duration_since(now);
        let hook = self.config().stop_hook_timeout.min(left / 2);
        let until = crate::deadline::from_now(budget).min(deadline.checked_sub(hook)?);
        (until > now).then_some(until)
    }

    /// The next `DrainTick`: a tick later, or when the budget runs out if
    /// that is sooner. (One timer at a time: each tick schedules the next.)
    fn schedule_drain_tick(&self, myself: &ActorRef<NodeMsg>, now: Instant) {
        let Some(drain) = self.cold.drain.as_deref() else {
            return;
        };
        let every = self.config().tick_interval.unwrap_or(DRAIN_TICK);
        let wait = every.min(drain.until.saturating_duration_since(now));
        // The timer task is detached: it sends one message and ends.
        drop(myself.send_after(wait, || NodeMsg::DrainTick));
    }

    /// A message while the node drives itself to `stopped`: `Some` when the
    /// drive is over.
    pub(super) fn while_draining(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        msg: NodeMsg,
    ) -> Option<Waiting> {
        let now = Instant::now();
        let tick = matches!(msg, NodeMsg::DrainTick);
        match msg {
            NodeMsg::Observed { seq, result } => self.observed(seq, result, myself),
            NodeMsg::ActionDone { id, report } => self.action_done(id, report, myself),
            NodeMsg::DrainTick => {}
            NodeMsg::ChildStopped { id, .. } => {
                self.children.finish_stopping(id);
                return None;
            }
            NodeMsg::Inspect { deadline, reply } => {
                self.inspect(deadline, reply);
                return None;
            }
            NodeMsg::Shutdown { deadline, reply } => {
                // Stopping on its own (finished, restarting) when its parent
                // stops it: it answers the parent, by the parent's deadline.
                // (Leaving the stop hook its time, as `drain_until` does.)
                let left = deadline.saturating_duration_since(now);
                let hook = self.config().stop_hook_timeout.min(left / 2);
                let until = deadline.checked_sub(hook).unwrap_or(now);
                if let Some(drain) = self.cold.drain.as_deref_mut() {
                    match drain.end {
                        DrainEnd::Reply(_) => {
                            let _ = reply.send(Vec::new());
                        }
                        DrainEnd::Finish | DrainEnd::Restart(_) => {
                            drain.end = DrainEnd::Reply(reply);
                            drain.deadline = drain.deadline.min(deadline);
                            drain.until = drain.until.min(until);
                            // Sooner than the next tick, maybe.
                            let wait = drain.until.saturating_duration_since(now);
                            drop(myself.send_after(wait, || NodeMsg::DrainTick));
                        }
                    }
                }
                return None;
            }
            _ => return None,
        }
        if self.drain_step(myself, now) {
            return Some(Waiting::Drained);
        }
        if matches!(self.cold.drain.as_deref(), Some(d) if now >= d.until) {
            tracing::warn!(
                node.path = %self.path,
                state = self.driver.state_name(),
                "the node did not reach `stopped` within its removal budget; stopping it anyway"
            );
            return Some(Waiting::Drained);
        }
        if tick {
            self.schedule_drain_tick(myself, now);
        }
        None
    }

    /// One step towards `stopped` on the freshest observation (and one more
    /// if a collect is ready at once); whether the node is there, with no
    /// action in flight.
    fn drain_step(&mut self, myself: &ActorRef<NodeMsg>, now: Instant) -> bool {
        if !self.drain_state_machine(myself, now) {
            return false;
        }
        if self.at_stopped() {
            return true;
        }
        let seq = self.collector.seq;
        self.start_collect(myself, &tracing::Span::none(), now);
        if !self.collector.in_flight && self.collector.seq == seq {
            // Observed at once: act on it now.
            let _ = self.drain_state_machine(myself, now);
        }
        self.at_stopped()
    }

    /// Runs the state machine once; `false` if it failed (the drive is
    /// over then).
    fn drain_state_machine(&mut self, myself: &ActorRef<NodeMsg>, now: Instant) -> bool {
        match self.run_state_machine(now, myself) {
            // Signals no longer matter: the node is stopping anyway.
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(node.path = %self.path, error = %e, "the state machine failed while stopping; stopping it anyway");
                if let Some(drain) = self.cold.drain.as_deref_mut() {
                    drain.until = now;
                }
                false
            }
        }
    }

    fn at_stopped(&self) -> bool {
        self.driver.state_name() == STOPPED && self.action.is_none()
    }

    /// The drive to `stopped` is over (there, or out of time).
    pub(super) async fn end_drain(
        &mut self,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let Some(drain) = self.cold.drain.take() else {
            return Ok(());
        };
        let Drain {
            deadline,
            end,
            records,
            ..
        } = *drain;
        self.end_stop(records, deadline, end, myself).await
    }

    /// Runs the stop hook (unless restarting) and ends as `end` says.
    async fn end_stop(
        &mut self,
        records: Vec<StopRecord>,
        deadline: Instant,
        end: DrainEnd,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        self.cold.collect_task = None;
        // The store hears of the node's end here: the outcome of the action
        // cancelled below (the node will not be there to hear it) and its
        // last observed document.
        self.store_stopping(Instant::now());
        let _ = self
            .shared
            .executor
            .cast(ExecMsg::CancelSubtree(self.path.clone()));
        match end {
            DrainEnd::Reply(reply) => {
                let records = self.run_stop_hook(records, deadline).await;
                let _ = reply.send(records);
                myself.stop(Some(EXIT_SHUTDOWN.to_owned()));
                Ok(())
            }
            DrainEnd::Finish => {
                let _ = self.run_stop_hook(records, deadline).await;
                myself.stop(Some(EXIT_NORMAL.to_owned()));
                Ok(())
            }
            DrainEnd::Restart(why) => Err(super::supervise::node_failed(&self.path, why)),
        }
    }
}
