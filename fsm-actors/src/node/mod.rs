//! The node actor: one ractor actor per worker node, supervising its
//! children.
//!
//! ```text
//!             tick                      ChildReport
//!   parent ─────────────▶  node  ─────────────────────▶ parent
//!          UpdateSpec        │ ▲
//!          ParentState       │ │ Observed (collector task)
//!                            │ │ ActionDone (executor)
//!              spawn_linked  ▼ │
//!                        children ...
//! ```
//!
//! One tick of a node, in order:
//!
//! 1. derive the desired state if the spec changed (cached by spec hash);
//! 2. reconcile the children against it: validate, then stop removed ones
//!    (reverse start order, each subtree in order), spawn new ones, send
//!    `UpdateSpec` to changed ones, replace those whose worker type changed;
//! 3. send each child its mapped desired state, if it changed;
//! 4. forward the tick to the children;
//! 5. run the state machine on the freshest observation (paused while
//!    stale); hand any action to the executor, at most one in flight;
//! 6. start the next collect if none is running;
//! 7. report status and subtree counts upward, if they changed.

mod children;
mod messages;
pub(crate) mod top;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fsm_core::{
    ActionOutcome, ActionReport, BoxedAction, ChildSpec, ChildStatus, DesiredState, NodeDriver,
    NodePath, PlanStep, SpecHash, StepInput, WorkerRegistry, panic_message, plan_children,
    validate_children,
};
use futures::FutureExt;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::TreeConfig;
use crate::executor::{ActionId, ActionRequest, ExecMsg};
use crate::snapshot::{NodeSnapshot, StopOutcome, StopRecord, SubtreeCounts, TreeStatus};
use children::{ChildEntry, ChildTable};
pub(crate) use messages::{ChildReport, NodeMsg};

/// What every node of a tree shares: read-only configuration and handles.
pub(crate) struct Shared {
    pub(crate) registry: WorkerRegistry,
    pub(crate) config: TreeConfig,
    pub(crate) executor: ActorRef<ExecMsg>,
    /// Where the top node publishes the tree's status.
    pub(crate) status: watch::Sender<TreeStatus>,
    pub(crate) next_action_id: AtomicU64,
}

/// How a node is started.
pub(crate) struct NodeArgs {
    pub(crate) path: NodePath,
    pub(crate) spec: ChildSpec,
    pub(crate) generation: u64,
    pub(crate) parent: Option<ActorRef<NodeMsg>>,
    pub(crate) parent_state: Option<String>,
    pub(crate) shared: Arc<Shared>,
    /// A ready driver (the top node); otherwise the registry builds one.
    pub(crate) driver: Option<Box<dyn NodeDriver>>,
}

pub(crate) struct NodeActor;

/// How much earlier than its parent a child must finish stopping, so that
/// the parent can still report by its own deadline.
const STOP_MARGIN: Duration = Duration::from_millis(5);

/// The collector side of a node.
struct Collector {
    seq: u64,
    task: Option<JoinHandle<()>>,
    in_flight: bool,
    /// Collect again as soon as the running one ends (an action finished).
    again: bool,
    last_ok: Option<Instant>,
    last_error: Option<String>,
}

/// What the node last reported upward, to send only changes.
#[derive(PartialEq)]
struct Reported {
    state: &'static str,
    desired: String,
    healthy: bool,
    converged: bool,
    subtree: SubtreeCounts,
}

pub(crate) struct NodeState {
    path: NodePath,
    spec: ChildSpec,
    spec_hash: SpecHash,
    generation: u64,
    parent: Option<ActorRef<NodeMsg>>,
    shared: Arc<Shared>,
    driver: Box<dyn NodeDriver>,
    started: Instant,

    /// The mapped desired state from the parent, overriding the derived one.
    parent_state: Option<String>,
    /// The last good derived desired state.
    desired: DesiredState,
    /// The spec hash `desired` (or `derive_error`) was derived from.
    derived_for: Option<SpecHash>,
    derive_error: Option<String>,
    spec_error: Option<String>,

    children: ChildTable,
    next_generation: u64,
    /// The children hash that is fully applied.
    applied_children: Option<SpecHash>,
    /// The children hash that failed validation (not retried until changed).
    rejected_children: Option<SpecHash>,
    declaration_error: Option<String>,
    /// Children that could not be started: name → why.
    start_errors: Vec<(String, String)>,

    collector: Collector,
    action: Option<(ActionId, &'static str)>,
    last_action: Option<ActionReport>,
    action_error: Option<String>,

    ticks: u64,
    reported: Option<Reported>,
    shutting_down: bool,
}

impl Actor for NodeActor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = NodeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<NodeMsg>,
        args: NodeArgs,
    ) -> Result<NodeState, ActorProcessingErr> {
        let driver = match args.driver {
            Some(d) => d,
            None => args.shared.registry.create(&args.path, &args.spec)?,
        };
        let spec_hash = args.spec.hash();
        Ok(NodeState {
            path: args.path,
            spec: args.spec,
            spec_hash,
            generation: args.generation,
            parent: args.parent,
            shared: args.shared,
            driver,
            started: Instant::now(),
            parent_state: args.parent_state,
            desired: DesiredState::new(""),
            derived_for: None,
            derive_error: None,
            spec_error: None,
            children: ChildTable::default(),
            next_generation: 0,
            applied_children: None,
            rejected_children: None,
            declaration_error: None,
            start_errors: Vec::new(),
            collector: Collector {
                seq: 0,
                task: None,
                in_flight: false,
                again: false,
                last_ok: None,
                last_error: None,
            },
            action: None,
            last_action: None,
            action_error: None,
            ticks: 0,
            reported: None,
            shutting_down: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<NodeMsg>,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        state.refresh_desired()?;
        state.start_collect(&myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        if state.shutting_down {
            // Only stop bookkeeping matters now.
            if let NodeMsg::ChildStopped { id, .. } = msg {
                state.children.finish_stopping(id);
            }
            return Ok(());
        }
        match msg {
            NodeMsg::Tick => state.tick(&myself).await?,
            NodeMsg::UpdateSpec(spec) => state.update_spec(*spec)?,
            NodeMsg::ParentState(mapped) => state.parent_state = mapped,
            NodeMsg::ChildReport(report) => state.child_report(report),
            NodeMsg::Observed { seq, result } => state.observed(seq, result, &myself),
            NodeMsg::ActionDone { id, report } => state.action_done(id, report, &myself),
            NodeMsg::Inspect { deadline, reply } => state.inspect(deadline, reply),
            NodeMsg::Shutdown { deadline, reply } => {
                let records = state.shutdown(deadline).await;
                let _ = reply.send(records);
                myself.stop(Some("shutdown".to_owned()));
            }
            NodeMsg::ChildStopped { id, records } => {
                state.child_stopped(id, &records, &myself).await
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeMsg>,
        event: SupervisionEvent,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        // Never stop because a child ended (ractor's default): decide here.
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                state.child_exited(cell.get_id(), Some(err.to_string()), &myself);
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                state.child_exited(cell.get_id(), reason, &myself);
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<NodeMsg>,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(task) = state.collector.task.take() {
            task.abort();
        }
        Ok(())
    }
}

impl NodeState {
    fn config(&self) -> &TreeConfig {
        &self.shared.config
    }

    /// The effective desired state: the parent's mapping wins over the
    /// node's own derivation.
    fn desired_state(&self) -> &str {
        self.parent_state.as_deref().unwrap_or(&self.desired.state)
    }

    fn is_top(&self) -> bool {
        self.parent.is_none()
    }

    // ----- tick -------------------------------------------------------

    async fn tick(&mut self, myself: &ActorRef<NodeMsg>) -> Result<(), ActorProcessingErr> {
        self.ticks += 1;
        let now = Instant::now();
        self.refresh_desired()?;
        self.reconcile(myself).await;
        self.map_states();
        for child in self.children.iter() {
            let _ = child.actor.cast(NodeMsg::Tick);
        }
        self.run_state_machine(now, myself)?;
        self.start_collect(myself);
        self.report(now);
        Ok(())
    }

    /// Derives the desired state again if the spec changed since the last
    /// derivation. A derivation error keeps the last good desired state.
    fn refresh_desired(&mut self) -> Result<(), ActorProcessingErr> {
        if self.derived_for == Some(self.spec_hash) {
            return Ok(());
        }
        self.derived_for = Some(self.spec_hash);
        match self.driver.derive(&self.path) {
            Ok(desired) => {
                self.desired = desired;
                self.derive_error = None;
                Ok(())
            }
            Err(e) if e.is_panic() => Err(Box::new(e)),
            Err(e) => {
                tracing::warn!(node.path = %self.path, error = %e, "derive_desired failed; keeping the last good desired state");
                self.derive_error = Some(e.to_string());
                Ok(())
            }
        }
    }

    fn update_spec(&mut self, spec: ChildSpec) -> Result<(), ActorProcessingErr> {
        let hash = spec.hash();
        if hash == self.spec_hash {
            // Back on the running spec: a refused change in between no
            // longer applies.
            self.spec_error = None;
            return Ok(());
        }
        match self.driver.set_spec(&spec.user_spec) {
            Ok(()) => {
                tracing::info!(node.path = %self.path, "spec updated");
                self.spec = spec;
                self.spec_hash = hash;
                self.spec_error = None;
                self.refresh_desired()
            }
            Err(e) => {
                let msg = format!(
                    "the new spec does not decode into worker type `{}`: {e}; the node keeps its previous spec",
                    self.spec.worker_type
                );
                tracing::warn!(node.path = %self.path, error = %msg, "spec update refused");
                self.spec_error = Some(msg);
                Ok(())
            }
        }
    }

    // ----- children -----------------------------------------------------

    async fn reconcile(&mut self, myself: &ActorRef<NodeMsg>) {
        let declared_hash = self.desired.children_hash();
        if self.applied_children == Some(declared_hash) {
            // Back on the applied declaration (a rejected change was
            // reverted): whatever was rejected in between no longer applies.
            self.declaration_error = None;
            self.rejected_children = None;
            return;
        }
        if self.rejected_children == Some(declared_hash) {
            return;
        }
        let declared = std::mem::take(&mut self.desired.children);
        let result = validate_children(
            &self.path,
            &declared,
            &self.children.running(),
            &self.shared.registry,
        );
        if let Err(e) = result {
            tracing::warn!(node.path = %self.path, error = %e, "invalid children declaration; running children left as they are");
            self.declaration_error = Some(e.to_string());
            self.rejected_children = Some(declared_hash);
            self.desired.children = declared;
            return;
        }
        self.declaration_error = None;
        self.rejected_children = None;
        let plan = plan_children(&self.children.running(), &declared);
        let mut complete = true;
        if !plan.is_empty() {
            let counts = plan.counts();
            tracing::debug!(
                node.path = %self.path,
                spawned = counts.spawned, updated = counts.updated,
                replaced = counts.replaced, stopped = counts.stopped,
                "reconciling children"
            );
        }
        for step in plan.steps {
            match step {
                PlanStep::Stop { name } => self.stop_child(&name, myself),
                PlanStep::Update { index } => {
                    let spec = &declared[index];
                    if let Some(child) = self.children.get_mut(&spec.name) {
                        tracing::info!(node.path = %child.path, "sending changed spec");
                        child.spec = spec.clone();
                        child.hash = spec.hash();
                        let _ = child
                            .actor
                            .cast(NodeMsg::UpdateSpec(Box::new(spec.clone())));
                    }
                }
                PlanStep::Replace { index } => {
                    tracing::info!(
                        node.path = %self.path.child(&declared[index].name),
                        worker_type = %declared[index].worker_type,
                        "worker type changed; replacing the child"
                    );
                    self.stop_child(&declared[index].name, myself);
                    // Spawned once the old child has stopped.
                    complete = false;
                }
                PlanStep::Spawn { index } => {
                    complete &= self.spawn_child(&declared[index], myself).await;
                }
            }
        }
        self.desired.children = declared;
        self.applied_children = complete.then_some(declared_hash);
    }

    /// Starts one child; `false` if it could not start now.
    async fn spawn_child(&mut self, spec: &ChildSpec, myself: &ActorRef<NodeMsg>) -> bool {
        if self.children.is_name_stopping(&spec.name) {
            // Its predecessor is still stopping; spawn when it is gone.
            return false;
        }
        let path = self.path.child(&spec.name);
        let generation = self.next_generation;
        self.next_generation += 1;
        let mapped = spec.mapped_state(self.desired_state()).map(str::to_owned);
        let args = NodeArgs {
            path: path.clone(),
            spec: spec.clone(),
            generation,
            parent: Some(myself.clone()),
            parent_state: mapped.clone(),
            shared: Arc::clone(&self.shared),
            driver: None,
        };
        match Actor::spawn_linked(None, NodeActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                tracing::info!(node.path = %path, worker_type = %spec.worker_type, "child started");
                self.start_errors.retain(|(n, _)| n != &spec.name);
                self.children.insert(ChildEntry {
                    status: ChildStatus {
                        name: spec.name.clone(),
                        state: String::new(),
                        desired: String::new(),
                        healthy: true,
                        converged: false,
                    },
                    path,
                    hash: spec.hash(),
                    spec: spec.clone(),
                    actor,
                    generation,
                    subtree: SubtreeCounts {
                        nodes: 1,
                        converged: 0,
                        unhealthy: 0,
                    },
                    sent_parent_state: mapped,
                });
                true
            }
            Err(e) => {
                // A failed pre_start sends no supervision event: the failure
                // is handled here.
                let why = format!("child `{path}` failed to start: {e}");
                tracing::warn!(node.path = %path, error = %e, "child failed to start; retrying on a later tick");
                self.start_errors.retain(|(n, _)| n != &spec.name);
                self.start_errors.push((spec.name.clone(), why));
                false
            }
        }
    }

    /// Stops a child and its subtree in order, off this node's loop; the
    /// node hears back through `ChildStopped`.
    fn stop_child(&mut self, name: &str, myself: &ActorRef<NodeMsg>) {
        let Some(entry) = self.children.remove(name) else {
            return;
        };
        let id = entry.actor.get_id();
        self.children
            .mark_stopping(name.to_owned(), entry.actor.clone());
        let deadline = Instant::now() + self.config().stop_timeout;
        let executor = self.shared.executor.clone();
        let me = myself.clone();
        tracing::info!(node.path = %entry.path, "stopping child");
        tokio::spawn(async move {
            let records = stop_subtree(&entry.actor, &entry.path, deadline).await;
            let _ = executor.cast(ExecMsg::CancelSubtree(entry.path.clone()));
            let _ = me.cast(NodeMsg::ChildStopped { id, records });
        });
    }

    async fn child_stopped(
        &mut self,
        id: ractor::ActorId,
        records: &[StopRecord],
        myself: &ActorRef<NodeMsg>,
    ) {
        if let Some(name) = self.children.finish_stopping(id) {
            for r in records {
                if let StopOutcome::Forced(why) = &r.outcome {
                    tracing::warn!(node.path = %r.path, reason = %why, "child was stopped by force");
                }
            }
            tracing::debug!(node.path = %self.path.child(&name), "child stopped");
            // A replacement may have been waiting for the name.
            self.applied_children = None;
            self.reconcile(myself).await;
        }
    }

    fn child_exited(
        &mut self,
        id: ractor::ActorId,
        failure: Option<String>,
        _myself: &ActorRef<NodeMsg>,
    ) {
        if self.children.is_stopping(id) {
            return;
        }
        let Some(entry) = self.children.remove_by_id(id) else {
            return;
        };
        tracing::warn!(
            node.path = %entry.path,
            failure = failure.as_deref().unwrap_or("exited"),
            "child ended unexpectedly; it will be started again"
        );
        // Its subtree is gone with it: so are its actions.
        let _ = self
            .shared
            .executor
            .cast(ExecMsg::CancelSubtree(entry.path.clone()));
        self.applied_children = None;
    }

    fn child_report(&mut self, report: ChildReport) {
        let ChildReport {
            name,
            generation,
            status,
            subtree,
        } = report;
        if self
            .children
            .record_report(&name, generation, status, subtree)
            && self.is_top()
        {
            // The top node publishes at once: it is the tree's status.
            self.report(Instant::now());
        }
    }

    fn map_states(&mut self) {
        let desired = self.parent_state.as_deref().unwrap_or(&self.desired.state);
        for child in self.children.iter_mut() {
            let mapped = child.spec.mapped_state(desired);
            if mapped != child.sent_parent_state.as_deref() {
                let mapped = mapped.map(str::to_owned);
                let _ = child.actor.cast(NodeMsg::ParentState(mapped.clone()));
                child.sent_parent_state = mapped;
            }
        }
    }

    // ----- observation and state machine ----------------------------------

    fn is_stale(&self, now: Instant) -> bool {
        let since = self.collector.last_ok.unwrap_or(self.started);
        now.saturating_duration_since(since) > self.config().stale_after
    }

    fn start_collect(&mut self, myself: &ActorRef<NodeMsg>) {
        if self.collector.in_flight {
            return;
        }
        self.collector.seq += 1;
        self.collector.in_flight = true;
        self.collector.again = false;
        let seq = self.collector.seq;
        let future = self.driver.collect(&self.path);
        let timeout = self.config().observation_timeout;
        let me = myself.clone();
        self.collector.task = Some(tokio::spawn(async move {
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
            let _ = me.cast(NodeMsg::Observed { seq, result });
        }));
    }

    fn observed(
        &mut self,
        seq: u64,
        result: Result<fsm_core::Observation, String>,
        myself: &ActorRef<NodeMsg>,
    ) {
        if seq != self.collector.seq {
            return;
        }
        self.collector.in_flight = false;
        self.collector.task = None;
        match result {
            Ok(observation) => {
                if self.driver.set_observation(observation) {
                    self.collector.last_ok = Some(Instant::now());
                    self.collector.last_error = None;
                }
            }
            Err(e) => {
                tracing::debug!(node.path = %self.path, error = %e, "observation failed");
                self.collector.last_error = Some(e);
            }
        }
        if self.collector.again {
            self.start_collect(myself);
        }
    }

    fn run_state_machine(
        &mut self,
        now: Instant,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if self.is_stale(now) {
            return Ok(());
        }
        let desired = self.parent_state.as_deref().unwrap_or(&self.desired.state);
        let input = StepInput::new(&self.path, desired)
            .with_children(self.children.statuses())
            .with_action(self.action.is_some(), self.last_action.as_ref());
        let outcome = match self.driver.step(&input) {
            Ok(Some(outcome)) => outcome,
            Ok(None) => return Ok(()),
            Err(e) => return Err(Box::new(e)),
        };
        if let Some(to) = outcome.to {
            tracing::info!(
                node.path = %self.path,
                from = outcome.from,
                to,
                reason = %outcome.reason,
                "state transition"
            );
        }
        if let Some(signal) = outcome.signal {
            tracing::info!(node.path = %self.path, ?signal, reason = %outcome.reason, "signal raised");
        }
        if let Some(action) = outcome.action {
            if self.action.is_none() {
                self.enqueue(action, myself);
            } else {
                tracing::trace!(node.path = %self.path, action = action.name(), "action dropped: one is already in flight");
            }
        }
        Ok(())
    }

    fn enqueue(&mut self, action: BoxedAction, myself: &ActorRef<NodeMsg>) {
        let id = self.shared.next_action_id.fetch_add(1, Ordering::Relaxed);
        let name = action.name();
        let request = ActionRequest {
            id,
            path: self.path.clone(),
            owner: myself.clone(),
            action,
        };
        match self.shared.executor.cast(ExecMsg::Enqueue(request)) {
            Ok(()) => self.action = Some((id, name)),
            Err(_) => {
                self.last_action = Some(ActionReport {
                    action: name.to_owned(),
                    outcome: ActionOutcome::Rejected("the executor is not running".to_owned()),
                });
            }
        }
    }

    fn action_done(&mut self, id: ActionId, report: ActionReport, myself: &ActorRef<NodeMsg>) {
        if self.action.map(|(i, _)| i) != Some(id) {
            return;
        }
        self.action = None;
        match &report.outcome {
            ActionOutcome::Succeeded => self.action_error = None,
            ActionOutcome::Failed(e) => {
                self.action_error = Some(format!("action `{}` failed: {e}", report.action));
            }
            ActionOutcome::TimedOut => {
                self.action_error = Some(format!("action `{}` timed out", report.action));
            }
            ActionOutcome::Cancelled | ActionOutcome::Rejected(_) => {}
        }
        self.last_action = Some(report);
        // The world just changed: look again at once.
        if self.collector.in_flight {
            self.collector.again = true;
        } else {
            self.start_collect(myself);
        }
    }

    // ----- health and reporting -----------------------------------------

    fn own_error(&self, now: Instant) -> Option<String> {
        if let Some(e) = self
            .spec_error
            .as_ref()
            .or(self.derive_error.as_ref())
            .or(self.declaration_error.as_ref())
        {
            return Some(e.clone());
        }
        if let Some((_, why)) = self.start_errors.first() {
            return Some(why.clone());
        }
        if self.is_stale(now) {
            let since = self.collector.last_ok.unwrap_or(self.started);
            let age = now.saturating_duration_since(since);
            return Some(match &self.collector.last_error {
                Some(e) => format!("stale: no good observation for {age:?}; last: {e}"),
                None => format!("stale: no good observation for {age:?}"),
            });
        }
        None
    }

    fn is_healthy(&self, now: Instant) -> bool {
        self.spec_error.is_none()
            && self.derive_error.is_none()
            && self.declaration_error.is_none()
            && self.start_errors.is_empty()
            && !self.is_stale(now)
    }

    fn children_in_sync(&self) -> bool {
        self.applied_children == Some(self.desired.children_hash())
            && self.children.len() == self.desired.children.len()
            && self.children.stopping_count() == 0
    }

    fn self_converged(&self, now: Instant) -> bool {
        self.is_healthy(now)
            && self.driver.has_observation()
            && self.driver.state_name() == self.desired_state()
            && self.children_in_sync()
    }

    fn report(&mut self, now: Instant) {
        let healthy = self.is_healthy(now);
        let self_converged = self.self_converged(now);
        let converged = self_converged && self.children.all_converged();
        let mut subtree = SubtreeCounts {
            nodes: 1,
            converged: u64::from(self_converged),
            unhealthy: u64::from(!healthy),
        };
        subtree.add(self.children.subtree_counts());
        let state = self.driver.state_name();
        let unchanged = self.reported.as_ref().is_some_and(|r| {
            r.state == state
                && r.desired == self.desired_state()
                && r.healthy == healthy
                && r.converged == converged
                && r.subtree == subtree
        });
        if unchanged && !self.is_top() {
            return;
        }
        let desired = self.desired_state().to_owned();
        self.reported = Some(Reported {
            state,
            desired: desired.clone(),
            healthy,
            converged,
            subtree,
        });
        match &self.parent {
            Some(parent) => {
                let _ = parent.cast(NodeMsg::ChildReport(ChildReport {
                    name: self.spec.name.clone(),
                    generation: self.generation,
                    status: ChildStatus {
                        name: self.spec.name.clone(),
                        state: state.to_owned(),
                        desired,
                        healthy,
                        converged,
                    },
                    subtree,
                }));
            }
            None => {
                // The top node is not a node of the user's tree: publish the
                // root's subtree.
                let counts = self.children.subtree_counts();
                let converged = self.children_in_sync()
                    && self.children.len() > 0
                    && self.children.all_converged();
                let ticks = self.ticks;
                self.shared.status.send_if_modified(|s| {
                    let next = TreeStatus {
                        ticks,
                        counts,
                        converged,
                    };
                    if *s == next {
                        false
                    } else {
                        *s = next;
                        true
                    }
                });
            }
        }
    }

    // ----- inspect and shutdown ------------------------------------------

    fn snapshot_self(&self, now: Instant) -> NodeSnapshot {
        let own_error = self.own_error(now);
        NodeSnapshot {
            path: self.path.clone(),
            name: self.spec.name.clone(),
            worker_type: self.spec.worker_type.clone(),
            state: self.driver.state_name().to_owned(),
            desired_state: self.desired_state().to_owned(),
            healthy: self.is_healthy(now),
            last_error: own_error.or_else(|| self.action_error.clone()),
            converged: self.self_converged(now) && self.children.all_converged(),
            stale: self.is_stale(now),
            action_in_flight: self.action.map(|(_, name)| name.to_owned()),
            last_action: self.last_action.clone(),
            children: Vec::new(),
        }
    }

    fn inspect(&self, deadline: Instant, reply: ractor::RpcReplyPort<NodeSnapshot>) {
        let mut own = self.snapshot_self(Instant::now());
        let children: Vec<(NodePath, String, ActorRef<NodeMsg>)> = self
            .children
            .iter()
            .map(|c| (c.path.clone(), c.spec.worker_type.clone(), c.actor.clone()))
            .collect();
        // Children answer a little before the deadline so that this node
        // can still answer by it.
        let child_deadline = deadline
            .checked_sub(Duration::from_millis(2))
            .unwrap_or(deadline);
        tokio::spawn(async move {
            let calls = children
                .into_iter()
                .map(|(path, worker_type, actor)| async move {
                    let wait = child_deadline.saturating_duration_since(Instant::now());
                    match actor
                        .call(
                            |reply| NodeMsg::Inspect {
                                deadline: child_deadline,
                                reply,
                            },
                            Some(wait),
                        )
                        .await
                    {
                        Ok(CallResult::Success(snapshot)) => snapshot,
                        Ok(CallResult::Timeout) => NodeSnapshot::unavailable(
                            path,
                            &worker_type,
                            "did not answer the inspection in time",
                        ),
                        _ => NodeSnapshot::unavailable(path, &worker_type, "not running"),
                    }
                });
            own.children = futures::future::join_all(calls).await;
            let _ = reply.send(own);
        });
    }

    /// Stops the subtree in order: children in reverse start order, each
    /// subtree completely before the next, then this node's own stop hook.
    async fn shutdown(&mut self, deadline: Instant) -> Vec<StopRecord> {
        self.shutting_down = true;
        if let Some(task) = self.collector.task.take() {
            task.abort();
        }
        let mut records = Vec::new();
        // Children must answer a little before this node's own deadline, so
        // that this node can still answer by it.
        let child_deadline = deadline.checked_sub(STOP_MARGIN).unwrap_or(deadline);
        while let Some(child) = self.children.pop_last() {
            self.children
                .mark_stopping(child.spec.name.clone(), child.actor.clone());
            records.extend(stop_subtree(&child.actor, &child.path, child_deadline).await);
        }
        // Children removed earlier may still be stopping; they finish first.
        for actor in self.children.stopping_actors() {
            let wait = child_deadline.saturating_duration_since(Instant::now());
            let _ = actor.get_cell().wait(Some(wait)).await;
        }
        let _ = self
            .shared
            .executor
            .cast(ExecMsg::CancelSubtree(self.path.clone()));
        let hook = self.driver.stop_hook(&self.path);
        let budget = self.config().stop_hook_timeout;
        let hook_deadline = deadline.min(Instant::now() + budget);
        let outcome = match tokio::time::timeout_at(hook_deadline, hook).await {
            Ok(()) => StopOutcome::Clean,
            Err(_) => StopOutcome::Forced(format!(
                "the stop hook did not finish in time (budget {budget:?}, or the shutdown deadline)"
            )),
        };
        tracing::debug!(node.path = %self.path, ?outcome, "node stopped");
        records.push(StopRecord {
            path: self.path.clone(),
            outcome,
        });
        records
    }
}

/// Asks a child to stop its subtree in order and waits for it to exit, up to
/// `deadline`; past it, kills the child (and with it, its subtree).
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
        Ok(CallResult::Success(records)) => {
            let wait = deadline.saturating_duration_since(Instant::now());
            if actor
                .get_cell()
                .wait(Some(wait.max(Duration::from_millis(1))))
                .await
                .is_err()
            {
                actor.kill();
                return forced("stopped its subtree but did not exit before the deadline; killed");
            }
            records
        }
        Ok(CallResult::Timeout) => {
            actor.kill();
            forced("did not stop before the deadline; killed with its subtree")
        }
        Ok(CallResult::SenderError) | Err(_) => {
            // Already gone: nothing left to stop.
            forced("was not running when asked to stop")
        }
    }
}
