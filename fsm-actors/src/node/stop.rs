//! Stopping in order: a subtree stops its children in reverse start order,
//! one subtree completely before the next, then runs its own stop hook.
//! Used for shutdown, removal, replacement, group restarts, escalation and
//! finishing.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fsm_core::{NodePath, supervision::ExitReason};
use ractor::rpc::CallResult;
use ractor::{ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::time::Instant;

use super::{NodeMsg, NodeState, Shared};
use crate::executor::ExecMsg;
use crate::snapshot::{StopOutcome, StopRecord};
use tracing::Instrument;

/// The stop reason of a node that finished its work (`NeedsRemoval`).
pub(crate) const EXIT_NORMAL: &str = "normal";
/// The stop reason of a node stopped by its supervisor.
pub(crate) const EXIT_SHUTDOWN: &str = "shutdown";

/// How much earlier than its parent a child must finish stopping, so that
/// the parent can still report by its own deadline: a small share of what
/// is left (so that however deep the tree, the deepest node still has most
/// of the budget), and never more than `STOP_MARGIN_MAX`.
fn stop_margin(deadline: Instant) -> Duration {
    let left = deadline.saturating_duration_since(Instant::now());
    (left / STOP_MARGIN_SHARE).min(STOP_MARGIN_MAX)
}

/// See `stop_margin`: a 32nd of what is left leaves a node 50 levels down
/// a fifth of the budget.
const STOP_MARGIN_SHARE: u32 = 32;
const STOP_MARGIN_MAX: Duration = Duration::from_millis(5);

/// Where every node records how it stopped during a tree's shutdown, so
/// that the report has one record per node even where a subtree was killed:
///
/// * a node that stops records itself here as well as in its reply (a reply
///   is lost when its parent is killed while waiting for it);
/// * a killed node runs no code but its state's `Drop`, so that is where it
///   says it was killed (see `LiveGuard`).
///
/// The tree's shutdown waits for every node actor to be gone, then adds the
/// records missing from those the ordered stop returned.
#[derive(Default)]
pub(crate) struct StopSink {
    /// `Some` while the tree shuts down.
    records: Mutex<Option<Vec<StopRecord>>>,
    /// Notified when the last node actor is gone.
    drained: tokio::sync::Notify,
}

impl StopSink {
    /// The tree's shutdown has begun: collect from now on.
    pub(crate) fn open(&self) {
        if let Ok(mut records) = self.records.lock() {
            records.get_or_insert_with(Vec::new);
        }
    }

    /// Records how a node stopped, if the tree is shutting down.
    fn record(&self, record: impl FnOnce() -> StopRecord) {
        if let Ok(mut records) = self.records.lock()
            && let Some(records) = records.as_mut()
        {
            records.push(record());
        }
    }

    /// Waits until no node actor is alive, up to `until`.
    pub(crate) async fn wait_drained(&self, shared: &Shared, until: Instant) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if shared.live_nodes.load(Ordering::Acquire) == 0 {
                return;
            }
            if tokio::time::timeout_at(until, drained).await.is_err() {
                return;
            }
        }
    }

    /// Adds the records that are missing from `records` (each just before
    /// the record of its nearest ancestor, or at the end), leaving out any
    /// node that has a record already.
    pub(crate) fn merge_into(&self, records: &mut Vec<StopRecord>) {
        let missing = match self.records.lock() {
            Ok(mut missing) => missing.take().unwrap_or_default(),
            Err(_) => return,
        };
        let present: foldhash::HashSet<NodePath> = records.iter().map(|r| r.path.clone()).collect();
        // In the order they were made; each goes before its nearest
        // recorded ancestor (so a subtree's records come children first).
        for record in missing {
            if present.contains(&record.path) {
                continue;
            }
            let at = records
                .iter()
                .position(|r| record.path.starts_with(&r.path))
                .unwrap_or(records.len());
            records.insert(at, record);
        }
    }
}

/// Counts a live node actor for as long as its state exists: the state is
/// dropped however the actor ends, even when it is killed. A node killed
/// during a tree's shutdown before it made its own stop record says so here
/// (see [`StopSink`]).
pub(super) struct LiveGuard {
    /// `None` for the top node, which is not counted.
    shared: Option<Arc<Shared>>,
    path: NodePath,
    /// The node made its own stop record.
    pub(super) recorded: bool,
}

impl LiveGuard {
    pub(super) fn new(shared: Option<Arc<Shared>>, path: NodePath) -> Self {
        if let Some(shared) = &shared {
            shared.live_nodes.fetch_add(1, Ordering::Relaxed);
        }
        Self {
            shared,
            path,
            recorded: false,
        }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            if !self.recorded {
                shared.stops.record(|| StopRecord {
                    path: self.path.clone(),
                    outcome: StopOutcome::Forced(
                        "killed (with its subtree) before it could stop; its stop hook did not run"
                            .to_owned(),
                    ),
                });
            }
            if shared.live_nodes.fetch_sub(1, Ordering::AcqRel) == 1 {
                shared.stops.drained.notify_waiters();
            }
        }
    }
}

/// The child and how it ended, for the supervision events that say a child
/// ended; `None` for the others.
pub(super) fn child_exit(event: SupervisionEvent) -> Option<(ActorId, ExitReason)> {
    match event {
        SupervisionEvent::ActorFailed(cell, err) => {
            Some((cell.get_id(), ExitReason::Abnormal(err.to_string())))
        }
        SupervisionEvent::ActorTerminated(cell, _, reason) => {
            Some((cell.get_id(), exit_reason(reason.as_deref())))
        }
        _ => None,
    }
}

/// Reads a ractor stop reason as an exit reason.
pub(crate) fn exit_reason(reason: Option<&str>) -> ExitReason {
    match reason {
        Some(EXIT_NORMAL) => ExitReason::Normal,
        Some(EXIT_SHUTDOWN) => ExitReason::Shutdown,
        Some(other) => ExitReason::Abnormal(format!("exited: {other}")),
        None => ExitReason::Abnormal("exited without a reason".to_owned()),
    }
}

impl NodeState {
    /// A message to a node that is stopping (or, at the top, that gave up):
    /// only stop bookkeeping matters, and a tree that gave up answers its
    /// shutdown with the records of the ordered stop it already did.
    pub(super) fn while_shutting_down(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        msg: NodeMsg,
    ) -> Option<super::Waiting> {
        if self.cold.drain.is_some() {
            return self.while_draining(myself, msg);
        }
        match msg {
            NodeMsg::ChildStopped { id, .. } => {
                self.children.finish_stopping(id);
            }
            NodeMsg::Shutdown { reply, .. } => {
                if let Some(records) = self.cold.gave_up.take() {
                    let _ = reply.send(records);
                    myself.stop(Some(EXIT_SHUTDOWN.to_owned()));
                }
            }
            _ => {}
        }
        None
    }

    /// Stops a child and its subtree in order, off this node's loop; the
    /// node hears back through `ChildStopped`. The child's slot is already
    /// gone or waiting.
    pub(super) fn stop_child(
        &mut self,
        path: &NodePath,
        name: &str,
        worker_type: &str,
        actor: ActorRef<NodeMsg>,
        myself: &ActorRef<NodeMsg>,
    ) {
        let id = actor.get_id();
        self.children.mark_stopping(name, actor.clone());
        let stop_timeout = self.config().stop_timeout;
        let executor = self.shared.executor.clone();
        let me = myself.clone();
        let path = path.clone();
        tracing::debug!(node.path = %path, "stopping child");
        // One subtree at a time, in the order asked (callers ask in reverse
        // start order): this stop begins once the previous one has ended.
        let previous = self.cold.stop_chain.take();
        let span = stop_span(&path, worker_type);
        self.cold.stop_chain = Some(tokio::spawn(
            async move {
                if let Some(previous) = previous {
                    let _ = previous.await;
                }
                let deadline = crate::deadline::from_now(stop_timeout);
                let records = stop_subtree(&actor, &path, deadline).await;
                let _ = executor.cast(ExecMsg::CancelSubtree(path));
                let _ = me.cast(NodeMsg::ChildStopped { id, records });
            }
            .instrument(span),
        ));
    }

    /// Stops every child in order and waits, up to `deadline`: first those
    /// already stopping, then the others in reverse start order, each
    /// subtree completely before the next.
    pub(super) async fn stop_all_children(&mut self, deadline: Instant) -> Vec<StopRecord> {
        let mut records = Vec::new();
        // Children must answer a little before this node's own deadline, so
        // that this node can still answer by it.
        let child_deadline = deadline
            .checked_sub(stop_margin(deadline))
            .unwrap_or(deadline);
        // Stops already under way (started before, so they finish first).
        if let Some(chain) = self.cold.stop_chain.take() {
            let _ = tokio::time::timeout_at(child_deadline, chain).await;
        }
        while let Some(child) = self.children.pop_last() {
            if let Some(actor) = child.actor() {
                self.children.mark_stopping(child.name(), actor.clone());
                let stopped = stop_subtree(actor, &child.path, child_deadline)
                    .instrument(stop_span(&child.path, &child.spec.worker_type))
                    .await;
                records.extend(stopped);
            }
        }
        for actor in self.children.stopping_actors() {
            let wait = child_deadline.saturating_duration_since(Instant::now());
            let _ = actor.get_cell().wait(Some(wait)).await;
        }
        records
    }

    /// Runs this node's own stop hook (bounded by `stop_hook_timeout` and
    /// `deadline`), once its children have stopped (their `records`), and
    /// adds its own record. The node then exits.
    pub(super) async fn run_stop_hook(
        &mut self,
        mut records: Vec<StopRecord>,
        deadline: Instant,
    ) -> Vec<StopRecord> {
        let desired = self.parent_state.as_deref().unwrap_or(&self.desired_state);
        let hook = self.driver.stop_hook(&self.path, desired);
        let budget = self.config().stop_hook_timeout;
        let hook_deadline = deadline.min(crate::deadline::from_now(budget));
        let outcome = match tokio::time::timeout_at(hook_deadline, hook).await {
            Ok(()) => StopOutcome::Clean,
            Err(_) => StopOutcome::Forced(format!(
                "the stop hook did not finish in time (budget {budget:?}, or the shutdown deadline)"
            )),
        };
        tracing::debug!(node.path = %self.path, ?outcome, "node stopped");
        let own = StopRecord {
            path: self.path.clone(),
            outcome,
        };
        if !self.is_top() {
            self.shared.stops.record(|| own.clone());
        }
        self.cold.live.recorded = true;
        records.push(own);
        records
    }

    /// The worker raised `NeedsRemoval`: stop the subtree in order, drive
    /// the node to `stopped`, run the stop hook, and exit normally; the
    /// parent's restart policy decides what follows.
    pub(super) async fn finish(
        &mut self,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        tracing::info!(node.path = %self.path, "the worker finished; removing the node");
        let deadline = crate::deadline::from_now(self.config().stop_timeout);
        self.stop_gracefully(deadline, super::drain::DrainEnd::Finish, myself)
            .await
    }
}

/// Asks a child to stop its subtree in order and waits for it to exit, up to
/// `deadline`; past it, kills the child (and with it, its subtree).
/// The span of stopping the child at `path`, under the current span (the
/// tick's, when a tick removes it).
fn stop_span(path: &NodePath, worker_type: &str) -> tracing::Span {
    tracing::info_span!(
        target: "fsm_actors",
        "fsm.child.stop",
        node.path = %path,
        worker.type = worker_type,
    )
}

pub(crate) async fn stop_subtree(
    actor: &ActorRef<NodeMsg>,
    path: &NodePath,
    deadline: Instant,
) -> Vec<StopRecord> {
    let wait = deadline.saturating_duration_since(Instant::now());
    let answer = actor
        .call(|reply| NodeMsg::Shutdown { deadline, reply }, Some(wait))
        .await;
    let forced = |why: &str| {
        vec![StopRecord {
            path: path.clone(),
            outcome: StopOutcome::Forced(why.to_owned()),
        }]
    };
    match answer {
        Ok(CallResult::Success(mut records)) => {
            let wait = deadline.saturating_duration_since(Instant::now());
            if actor
                .get_cell()
                .wait(Some(wait.max(Duration::from_millis(1))))
                .await
                .is_err()
            {
                actor.kill();
                // Its subtree stopped in order: only its own record changes.
                let why = "stopped its subtree but did not exit before the deadline; killed";
                match records.iter_mut().rfind(|r| r.path == *path) {
                    Some(own) => own.outcome = StopOutcome::Forced(why.to_owned()),
                    None => records.extend(forced(why)),
                }
            }
            records
        }
        Ok(CallResult::Timeout) => {
            actor.kill();
            forced("did not stop before the deadline; killed with its subtree")
        }
        Ok(CallResult::SenderError) | Err(_) => {
            // Already gone (it failed or finished meanwhile).
            forced("had already ended when asked to stop")
        }
    }
}
