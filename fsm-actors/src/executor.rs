//! The pooled action executor: one actor per tree that runs the actions
//! nodes hand it, never inside a tick.
//!
//! Guarantees:
//!
//! * enqueueing never blocks the node (it is a message);
//! * at most `concurrency` actions run at once, and at most one per node
//!   (a second action of a busy node waits behind the first);
//! * every enqueued action ends in exactly one outcome message to its node:
//!   succeeded, failed, timed out, cancelled or rejected (queue full);
//!   an action an earlier process of the tree started and never finished
//!   is counted `interrupted` once, when the tree is restored (see
//!   [`Counters::interrupted`]);
//! * cancelling a subtree (its node was removed, restarted or shut down)
//!   cancels its queued actions at once and its running ones at their next
//!   await point;
//! * no action outlives the executor: however it ends (stopped with the
//!   tree, a panic, killed), its running actions are cancelled and every
//!   action it held ends in an outcome. A supervisor ([`ExecutorSupervisor`])
//!   starts a new executor when one dies, and nodes reach whichever runs now
//!   through an [`ExecutorHandle`].
//!
//! The executor knows nothing of nodes: an action's outcome goes to the
//! [`OutcomeSink`] that came with it, as an [`ActionDone`] (a node turns it
//! into its own message), so the executor can be run and tested alone.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use fsm_core::{
    ActionContext, ActionOutcome, ActionReport, BoxedAction, NodePath, runtime::panic_message,
};
use futures::FutureExt;
use opentelemetry::KeyValue;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::ExecutorConfig;
use crate::snapshot::ExecutorStats;
use crate::telemetry;
use crate::telemetry::metrics::{Metrics, NodeWorkerMetrics};

/// Identifies one enqueued action within a tree.
pub(crate) type ActionId = u64;

/// How an action ended, for whoever asked for it.
#[derive(Debug)]
pub(crate) struct ActionDone {
    pub(crate) id: ActionId,
    pub(crate) report: ActionReport,
}

/// Where the executor sends the outcome of an action: in a tree, the node
/// that asked for it.
pub(crate) trait OutcomeSink: Send + 'static {
    /// Who the action is for: the executor runs at most one action of an
    /// owner at a time.
    fn owner(&self) -> ActorId;

    /// Hands over how an action ended. An owner that is gone does not hear
    /// it; the outcome is still counted.
    fn deliver(&self, done: ActionDone);
}

/// One action handed to the executor.
pub(crate) struct ActionRequest {
    pub(crate) id: ActionId,
    pub(crate) path: NodePath,
    /// Where its outcome goes (boxed once per action, never per tick).
    pub(crate) owner: Box<dyn OutcomeSink>,
    pub(crate) action: BoxedAction,
    /// The worker type of the node, for the action span.
    pub(crate) worker_type: Arc<str>,
    /// The tick span that asked for it, for the action span's link.
    pub(crate) origin: Option<opentelemetry::trace::SpanContext>,
}

/// The error of every action an executor held when it stopped unasked.
pub(crate) const EXECUTOR_STOPPED: &str =
    "the action executor stopped; the action's outcome is unknown";

/// An action on its way to the executor. Should the message be dropped
/// unread (the executor ended with it in its mailbox), its node still hears
/// an outcome, or it would wait for one for ever.
pub(crate) struct Pending(Option<ActionRequest>);

impl From<ActionRequest> for Pending {
    fn from(req: ActionRequest) -> Self {
        Self(Some(req))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(req) = self.0.take() {
            req.owner.deliver(ActionDone {
                id: req.id,
                report: ActionReport {
                    action: req.action.name().to_owned(),
                    outcome: ActionOutcome::Failed(EXECUTOR_STOPPED.to_owned()),
                },
            });
        }
    }
}

/// How the executor is started.
pub(crate) struct ExecutorArgs {
    pub(crate) config: ExecutorConfig,
    pub(crate) metrics: Arc<Metrics>,
    /// The counters, shared by every incarnation of the tree's executor.
    pub(crate) counters: Arc<Counters>,
}

impl Clone for ExecutorArgs {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            metrics: Arc::clone(&self.metrics),
            counters: Arc::clone(&self.counters),
        }
    }
}

/// The executor's counters ([`ExecutorStats`] less what is queued and
/// running now). They outlive an executor that dies, so that they still add
/// up after its replacement takes over.
#[derive(Default)]
pub(crate) struct Counters {
    enqueued: AtomicU64,
    started: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    cancelled: AtomicU64,
    rejected: AtomicU64,
    interrupted: AtomicU64,
}

impl Counters {
    /// Counts actions an earlier process of the tree started and never
    /// finished, found when the tree was restored from its store: their
    /// outcome is `interrupted`. (That process counted them started.)
    pub(crate) fn interrupted(&self, count: u64) {
        self.interrupted.fetch_add(count, Ordering::Relaxed);
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn stats(&self, queued: usize, running: usize) -> ExecutorStats {
        ExecutorStats {
            enqueued: self.enqueued.load(Ordering::Relaxed),
            started: self.started.load(Ordering::Relaxed),
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            interrupted: self.interrupted.load(Ordering::Relaxed),
            queued: queued as u64,
            running: running as u64,
        }
    }
}

/// The tree's way to its executor: whichever incarnation runs now. Read
/// when a node enqueues or cancels an action, never per tick; written only
/// when the supervisor replaces a dead executor.
#[derive(Clone)]
pub(crate) struct ExecutorHandle(Arc<RwLock<Option<ActorRef<ExecMsg>>>>);

impl ExecutorHandle {
    /// A handle to no executor yet (the supervisor sets it).
    pub(crate) fn unset() -> Self {
        Self(Arc::new(RwLock::new(None)))
    }

    /// The executor running now, if any.
    pub(crate) fn get(&self) -> Option<ActorRef<ExecMsg>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, executor: ActorRef<ExecMsg>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(executor);
    }

    /// Sends `msg` to the executor running now; `Err` if none runs (the
    /// message is dropped: an action in it ends failed).
    pub(crate) fn cast(&self, msg: ExecMsg) -> Result<(), ExecutorGone> {
        match &*self.0.read().unwrap_or_else(PoisonError::into_inner) {
            Some(executor) => executor.cast(msg).map_err(|_| ExecutorGone),
            None => Err(ExecutorGone),
        }
    }
}

/// No executor runs (the tree is gone).
#[derive(Debug)]
pub(crate) struct ExecutorGone;

// See `NodeMsg`: never sent to another process.
#[cfg(feature = "cluster")]
impl ractor::Message for ExecMsg {}

pub(crate) enum ExecMsg {
    Enqueue(Pending),
    /// Cancel every action of the node at this path and below.
    CancelSubtree(NodePath),
    Finished {
        id: ActionId,
        outcome: ActionOutcome,
    },
    Stats(RpcReplyPort<ExecutorStats>),
    /// Panics in the handler, as a bug would.
    #[cfg(test)]
    Panic,
}

pub(crate) struct Executor;

struct Running {
    path: NodePath,
    worker_type: Arc<str>,
    owner: Box<dyn OutcomeSink>,
    name: &'static str,
    cancel: CancellationToken,
    started: tokio::time::Instant,
}

pub(crate) struct ExecutorState {
    config: ExecutorConfig,
    metrics: Arc<Metrics>,
    queue: VecDeque<ActionRequest>,
    running: HashMap<ActionId, Running>,
    /// Nodes with an action running, by actor (cheaper to hash than a path).
    busy: HashSet<ActorId>,
    stats: Arc<Counters>,
}

impl Actor for Executor {
    type Msg = ExecMsg;
    type State = ExecutorState;
    type Arguments = ExecutorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ExecMsg>,
        args: ExecutorArgs,
    ) -> Result<ExecutorState, ActorProcessingErr> {
        Ok(ExecutorState {
            config: args.config,
            metrics: args.metrics,
            queue: VecDeque::new(),
            running: HashMap::new(),
            busy: HashSet::new(),
            stats: args.counters,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ExecMsg>,
        msg: ExecMsg,
        state: &mut ExecutorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ExecMsg::Enqueue(mut pending) => {
                if let Some(req) = pending.0.take() {
                    state.enqueue(req, &myself);
                }
            }
            ExecMsg::CancelSubtree(prefix) => state.cancel_subtree(&prefix),
            ExecMsg::Finished { id, outcome } => state.finished(id, outcome, &myself),
            ExecMsg::Stats(reply) => {
                let _ = reply.send(state.stats.stats(state.queue.len(), state.running.len()));
            }
            #[cfg(test)]
            ExecMsg::Panic => panic!("the executor was told to panic"),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ExecMsg>,
        state: &mut ExecutorState,
    ) -> Result<(), ActorProcessingErr> {
        // The tree is gone: nothing queued will run, nothing running may
        // outlive it.
        state.cancel_subtree(&NodePath::top());
        Ok(())
    }
}

impl ExecutorState {
    fn enqueue(&mut self, req: ActionRequest, myself: &ActorRef<ExecMsg>) {
        bump(&self.stats.enqueued);
        if self.queue.len() >= self.config.queue_capacity {
            let reason = format!(
                "the executor queue is full ({} waiting); the node will ask again",
                self.queue.len()
            );
            tracing::warn!(node.path = %req.path, action = req.action.name(), "action rejected: queue full");
            self.deliver(
                &*req.owner,
                req.id,
                req.action.name(),
                ActionOutcome::Rejected(reason),
            );
            self.record_load();
            return;
        }
        tracing::debug!(node.path = %req.path, action = req.action.name(), id = req.id, "action queued");
        let attrs = self.metrics.labels(
            Arc::clone(&req.worker_type),
            &req.path,
            [KeyValue::new("action", req.action.name())],
        );
        self.metrics.action_queued.add(1, &attrs);
        self.queue.push_back(req);
        self.dispatch(myself);
        self.record_load();
    }

    /// Starts queued actions while there is room, skipping nodes that
    /// already have one running.
    fn dispatch(&mut self, myself: &ActorRef<ExecMsg>) {
        let mut i = 0;
        while self.running.len() < self.config.concurrency && i < self.queue.len() {
            if self.busy.contains(&self.queue[i].owner.owner()) {
                i += 1;
                continue;
            }
            let Some(req) = self.queue.remove(i) else {
                break;
            };
            self.start(req, myself);
        }
    }

    fn start(&mut self, req: ActionRequest, myself: &ActorRef<ExecMsg>) {
        let ActionRequest {
            id,
            path,
            owner,
            action,
            worker_type,
            origin,
        } = req;
        let cancel = CancellationToken::new();
        let name = action.name();
        let timeout = action.timeout().unwrap_or(self.config.default_timeout);
        let metrics =
            NodeWorkerMetrics::new(Arc::clone(&self.metrics), Arc::clone(&worker_type), &path);
        let ctx = ActionContext::new(path.clone(), cancel.clone()).with_metrics(Arc::new(metrics));
        let future = action.run(ctx);
        let token = cancel.clone();
        let executor = myself.clone();
        tracing::debug!(node.path = %path, action = name, id, "action started");
        // Its own trace, linked to the tick that asked for it: the action
        // outlives that tick.
        let span = tracing::info_span!(
            target: "fsm_actors",
            parent: None,
            "fsm.action",
            node.path = %path,
            worker.type = %worker_type,
            action = name,
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_message = tracing::field::Empty,
        );
        telemetry::link(&span, origin.as_ref());
        tokio::spawn(
            async move {
                let outcome = run_to_outcome(future, timeout, token).await;
                let current = tracing::Span::current();
                current.record("outcome", outcome.label());
                if let ActionOutcome::Failed(e) = &outcome {
                    current.record("otel.status_code", "ERROR");
                    current.record("otel.status_message", e.as_str());
                }
                // If the executor is gone the tree is shutting down; the
                // outcome has nobody left to go to.
                let _ = executor.cast(ExecMsg::Finished { id, outcome });
            }
            .instrument(span),
        );
        bump(&self.stats.started);
        self.busy.insert(owner.owner());
        self.running.insert(
            id,
            Running {
                path,
                owner,
                name,
                cancel,
                started: tokio::time::Instant::now(),
                worker_type,
            },
        );
    }

    /// Records how busy the executor is: after every change of its queue
    /// or of what runs.
    fn record_load(&self) {
        #[allow(clippy::cast_precision_loss)] // A ratio of two small counts.
        let ratio = self.running.len() as f64 / self.config.concurrency.max(1) as f64;
        self.metrics.pool_utilization.record(ratio, &[]);
        self.metrics
            .queue_depth
            .record(self.queue.len() as u64, &[]);
        self.metrics
            .running_actions
            .record(self.running.len() as u64, &[]);
    }

    fn finished(&mut self, id: ActionId, outcome: ActionOutcome, myself: &ActorRef<ExecMsg>) {
        let Some(run) = self.running.remove(&id) else {
            return;
        };
        self.busy.remove(&run.owner.owner());
        tracing::debug!(node.path = %run.path, action = run.name, id, outcome = outcome.label(), "action finished");
        let attrs = self.metrics.labels(
            Arc::clone(&run.worker_type),
            &run.path,
            [
                KeyValue::new("action", run.name),
                KeyValue::new("outcome", outcome.label()),
            ],
        );
        self.metrics
            .action_duration
            .record(run.started.elapsed().as_secs_f64(), &attrs);
        if outcome == ActionOutcome::TimedOut {
            // The same labels but the outcome.
            self.metrics
                .action_timeouts
                .add(1, &attrs[..attrs.len() - 1]);
        }
        self.deliver(&*run.owner, id, run.name, outcome);
        self.dispatch(myself);
        self.record_load();
    }

    fn cancel_subtree(&mut self, prefix: &NodePath) {
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for req in std::mem::take(&mut self.queue) {
            if req.path.starts_with(prefix) {
                self.deliver(
                    &*req.owner,
                    req.id,
                    req.action.name(),
                    ActionOutcome::Cancelled,
                );
            } else {
                kept.push_back(req);
            }
        }
        self.queue = kept;
        self.record_load();
        for run in self.running.values() {
            if run.path.starts_with(prefix) {
                // The task reports `Cancelled` through `Finished`.
                run.cancel.cancel();
            }
        }
    }

    fn deliver(
        &mut self,
        owner: &dyn OutcomeSink,
        id: ActionId,
        action: &'static str,
        outcome: ActionOutcome,
    ) {
        bump(match &outcome {
            ActionOutcome::Succeeded => &self.stats.succeeded,
            ActionOutcome::Failed(_) => &self.stats.failed,
            ActionOutcome::TimedOut => &self.stats.timed_out,
            ActionOutcome::Cancelled => &self.stats.cancelled,
            ActionOutcome::Rejected(_) => &self.stats.rejected,
            ActionOutcome::Interrupted => &self.stats.interrupted,
        });
        // A node that is gone cannot receive its outcome; it is still counted.
        owner.deliver(ActionDone {
            id,
            report: ActionReport {
                action: action.to_owned(),
                outcome,
            },
        });
    }
}

impl Drop for ExecutorState {
    /// Runs however the executor ends, even killed: nothing it held is left
    /// running detached or without an outcome. An action cancelled already
    /// (its subtree went away, or the tree stopped) ends `Cancelled`; any
    /// other ends `Failed`, as nobody knows how far it got.
    fn drop(&mut self) {
        let queued = std::mem::take(&mut self.queue);
        let running = std::mem::take(&mut self.running);
        if !queued.is_empty() || running.values().any(|r| !r.cancel.is_cancelled()) {
            tracing::warn!(
                queued = queued.len(),
                running = running.len(),
                "the action executor stopped with actions in flight; they end failed"
            );
        }
        for req in queued {
            let failed = ActionOutcome::Failed(EXECUTOR_STOPPED.to_owned());
            self.deliver(&*req.owner, req.id, req.action.name(), failed);
        }
        for (id, run) in running {
            let outcome = if run.cancel.is_cancelled() {
                ActionOutcome::Cancelled
            } else {
                run.cancel.cancel();
                ActionOutcome::Failed(EXECUTOR_STOPPED.to_owned())
            };
            self.deliver(&*run.owner, id, run.name, outcome);
        }
    }
}

/// Supervises the tree's executor: when it dies (a bug in it panicked, or
/// it was killed), starts a new one and points the tree's
/// [`ExecutorHandle`] at it. Stopping the supervisor stops the executor.
pub(crate) struct ExecutorSupervisor;

/// How the supervisor is started.
pub(crate) struct SupervisorArgs {
    pub(crate) executor: ExecutorArgs,
    pub(crate) handle: ExecutorHandle,
}

pub(crate) struct SupervisorState {
    args: ExecutorArgs,
    handle: ExecutorHandle,
    current: ActorRef<ExecMsg>,
}

impl ExecutorSupervisor {
    async fn start(
        myself: &ActorRef<()>,
        args: &ExecutorArgs,
        handle: &ExecutorHandle,
    ) -> Result<ActorRef<ExecMsg>, ActorProcessingErr> {
        let (executor, _) =
            Actor::spawn_linked(None, Executor, args.clone(), myself.get_cell()).await?;
        handle.set(executor.clone());
        Ok(executor)
    }
}

impl Actor for ExecutorSupervisor {
    type Msg = ();
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let current = Self::start(&myself, &args.executor, &args.handle).await?;
        Ok(SupervisorState {
            args: args.executor,
            handle: args.handle,
            current,
        })
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (who, why) = match &event {
            SupervisionEvent::ActorFailed(who, e) => (who, e.to_string()),
            SupervisionEvent::ActorTerminated(who, _, reason) => {
                (who, reason.clone().unwrap_or_else(|| "stopped".to_owned()))
            }
            _ => return Ok(()),
        };
        if who.get_id() != state.current.get_id() {
            return Ok(());
        }
        // Its actions have their outcomes already (see `ExecutorState`'s
        // `Drop`); the next ones go to a new executor.
        tracing::error!(reason = %why, "the action executor died; starting a new one");
        state.current = Self::start(&myself, &state.args, &state.handle).await?;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<()>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // In order, so that its `post_stop` cancels what it holds; whatever
        // is left is killed with this actor.
        let _ = state
            .current
            .stop_and_wait(None, Some(Duration::from_secs(1)))
            .await;
        Ok(())
    }
}

async fn run_to_outcome(
    future: fsm_core::BoxFuture<'static, Result<(), fsm_core::BoxError>>,
    timeout: Duration,
    cancel: CancellationToken,
) -> ActionOutcome {
    let guarded = AssertUnwindSafe(future).catch_unwind();
    tokio::select! {
        biased;
        () = cancel.cancelled() => ActionOutcome::Cancelled,
        result = tokio::time::timeout(timeout, guarded) => match result {
            Err(_) => ActionOutcome::TimedOut,
            Ok(Err(panic)) => ActionOutcome::Failed(format!("panicked: {}", panic_message(panic.as_ref()))),
            Ok(Ok(Err(e))) => ActionOutcome::Failed(e.to_string()),
            Ok(Ok(Ok(()))) => ActionOutcome::Succeeded,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU32};

    use fsm_core::{
        Action, BoxError, ChildSpec, CollectContext, DeriveContext, DesiredState, State,
        TickContext, Transition, Worker, WorkerRegistry,
    };

    use tokio::sync::mpsc::UnboundedReceiver;

    use super::*;
    use crate::config::ExecutorConfig;
    use crate::{Tree, TreeConfig};

    /// What the test worker's actions do, and what they saw.
    #[derive(Default)]
    struct World {
        /// Actions begun so far; the first hangs until cancelled.
        calls: AtomicU32,
        /// The first action was dropped after its cancellation fired.
        saw_cancel: AtomicBool,
        /// The outcomes the state machine saw, without repeats.
        outcomes: Mutex<Vec<ActionOutcome>>,
        /// The actions' own timeout.
        timeout: Option<Duration>,
        /// Whether the first action hangs (else every action succeeds).
        first_hangs: bool,
    }

    struct Acting(Arc<World>);

    #[derive(Clone, Debug)]
    struct Idle;

    struct Act(Arc<World>);

    /// Records whether the action's cancellation had fired by the time the
    /// action was dropped (the executor drops a cancelled action's future).
    struct SawCancel<'a>(&'a ActionContext, &'a World);

    impl Drop for SawCancel<'_> {
        fn drop(&mut self) {
            if self.0.is_cancelled() {
                self.1.saw_cancel.store(true, Ordering::SeqCst);
            }
        }
    }

    impl Action for Act {
        fn timeout(&self) -> Option<Duration> {
            self.0.timeout
        }

        async fn execute(&self, ctx: &ActionContext) -> Result<(), BoxError> {
            let first = self.0.calls.fetch_add(1, Ordering::SeqCst) == 0;
            if first && self.0.first_hangs {
                let _record = SawCancel(ctx, &self.0);
                ctx.cancelled().await;
                self.0.saw_cancel.store(true, Ordering::SeqCst);
            }
            Ok(())
        }
    }

    impl Worker for Acting {
        type Spec = ();
        type Observed = ();
        type State = Idle;

        fn initial_state(&self) -> Idle {
            Idle
        }

        async fn collect(&self, _: &CollectContext<'_, ()>) -> Result<(), BoxError> {
            Ok(())
        }

        fn derive_desired(&self, (): &(), _: &DeriveContext<'_>) -> Result<DesiredState, BoxError> {
            Ok(DesiredState::new("idle"))
        }
    }

    impl fsm_core::StateNames for Idle {
        const NAMES: &'static [&'static str] = &["idle"];

        fn name(&self) -> &'static str {
            "idle"
        }
    }

    impl State<Acting> for Idle {
        /// Acts until an action succeeds.
        fn next(&self, s: &TickContext<'_, Acting>) -> Transition<Idle> {
            let world = &s.worker().0;
            let last = s.last_action().map(|r| &r.outcome);
            if let Some(outcome) = last {
                let mut seen = world.outcomes.lock().unwrap();
                if seen.last() != Some(outcome) {
                    seen.push(outcome.clone());
                }
            }
            if s.action_in_flight() || last == Some(&ActionOutcome::Succeeded) {
                Transition::stay()
            } else {
                Transition::stay().with_action(Act(Arc::clone(world)))
            }
        }
    }

    async fn spawn(world: &Arc<World>, config: TreeConfig) -> Tree {
        let mut registry = WorkerRegistry::new();
        let w = Arc::clone(world);
        registry
            .register("acting", move |_| Acting(Arc::clone(&w)))
            .unwrap();
        Tree::spawn(ChildSpec::new("root", "acting"), registry, config)
            .await
            .unwrap()
    }

    fn config() -> TreeConfig {
        TreeConfig {
            tick_interval: Some(Duration::from_millis(100)),
            ..TreeConfig::default()
        }
    }

    /// Waits (on the paused clock) until `done` holds.
    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("waited in vain for {what}");
    }

    fn hanging_first() -> Arc<World> {
        Arc::new(World {
            first_hangs: true,
            ..World::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_a_tree_without_shutdown_cancels_its_running_actions() {
        let world = hanging_first();
        let tree = spawn(&world, config()).await;
        until("the action to start", || {
            world.calls.load(Ordering::SeqCst) == 1
        })
        .await;
        drop(tree);
        until("the running action to see its cancellation", || {
            world.saw_cancel.load(Ordering::SeqCst)
        })
        .await;
    }

    async fn an_executor_that_dies_fails_its_actions_and_is_replaced(
        kill: impl FnOnce(&ActorRef<ExecMsg>),
    ) {
        let world = hanging_first();
        let tree = spawn(&world, config()).await;
        until("the action to start", || {
            world.calls.load(Ordering::SeqCst) == 1
        })
        .await;
        let first = tree.executor_handle().get().unwrap();
        kill(&first);
        until("an action to succeed", || {
            world.outcomes.lock().unwrap().last() == Some(&ActionOutcome::Succeeded)
        })
        .await;
        assert!(world.saw_cancel.load(Ordering::SeqCst));
        assert_eq!(
            *world.outcomes.lock().unwrap(),
            [
                ActionOutcome::Failed(EXECUTOR_STOPPED.to_owned()),
                ActionOutcome::Succeeded
            ]
        );
        let second = tree.executor_handle().get().unwrap();
        assert_ne!(first.get_id(), second.get_id());
        let stats = tree.executor_stats().await.unwrap();
        assert_eq!(
            (stats.enqueued, stats.started, stats.failed, stats.succeeded),
            (2, 2, 1, 1),
            "{stats:?}"
        );
        assert_eq!(stats.enqueued, stats.outcomes(), "{stats:?}");
        assert_eq!((stats.queued, stats.running), (0, 0), "{stats:?}");
        let report = tree.shutdown(Duration::from_secs(5)).await;
        assert!(report.all_clean(), "{report:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_executor_that_panics_fails_its_actions_and_a_new_one_runs_the_next() {
        an_executor_that_dies_fails_its_actions_and_is_replaced(|executor| {
            executor.cast(ExecMsg::Panic).unwrap();
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_executor_that_is_killed_fails_its_actions_and_a_new_one_runs_the_next() {
        an_executor_that_dies_fails_its_actions_and_is_replaced(|executor| executor.kill()).await;
    }

    /// Passes on the outcomes the executor delivers, as a node would
    /// receive them: the executor alone, without a node or a tree.
    struct Sink(tokio::sync::mpsc::UnboundedSender<ActionDone>);

    impl OutcomeSink for Sink {
        fn owner(&self) -> ActorId {
            ActorId::Local(1)
        }

        fn deliver(&self, done: ActionDone) {
            let _ = self.0.send(done);
        }
    }

    /// A request for `world`'s action, whose outcome goes to a channel.
    fn request(id: ActionId, world: &Arc<World>) -> (ActionRequest, UnboundedReceiver<ActionDone>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let request = ActionRequest {
            id,
            path: NodePath::top().child("a"),
            owner: Box::new(Sink(tx)),
            action: fsm_core::BoxedAction::new(Act(Arc::clone(world))),
            worker_type: Arc::from("w"),
            origin: None,
        };
        (request, rx)
    }

    /// An executor on its own, with the default configuration.
    async fn executor_alone() -> ActorRef<ExecMsg> {
        let meter = opentelemetry::global::meter("test");
        let args = ExecutorArgs {
            config: ExecutorConfig::default(),
            metrics: Arc::new(Metrics::new(&meter, false)),
            counters: Arc::default(),
        };
        let (executor, _) = Actor::spawn(None, Executor, args).await.unwrap();
        executor
    }

    #[tokio::test(start_paused = true)]
    async fn an_action_whose_message_the_executor_never_read_still_ends_failed() {
        let (req, mut rx) = request(7, &Arc::default());
        let msg = ExecMsg::Enqueue(Pending::from(req));
        // As when the executor dies with the message in its mailbox.
        drop(msg);
        let done = rx.recv().await.unwrap();
        assert_eq!(done.id, 7);
        assert_eq!(
            done.report.outcome,
            ActionOutcome::Failed(EXECUTOR_STOPPED.to_owned())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_executor_alone_delivers_an_actions_outcome_to_its_sink() {
        let executor = executor_alone().await;
        let world = Arc::new(World::default());
        let (req, mut rx) = request(3, &world);
        executor.cast(ExecMsg::Enqueue(req.into())).unwrap();
        let done = rx.recv().await.unwrap();
        assert_eq!(done.id, 3);
        assert_eq!(done.report.outcome, ActionOutcome::Succeeded);
        let name = fsm_core::BoxedAction::new(Act(Arc::default())).name();
        assert_eq!(done.report.action, name);
        assert_eq!(world.calls.load(Ordering::SeqCst), 1);
        let stats = executor.call(ExecMsg::Stats, None).await.unwrap().unwrap();
        assert_eq!((stats.enqueued, stats.succeeded), (1, 1), "{stats:?}");
        executor.stop(None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_executor_killed_alone_with_an_action_running_delivers_failed_and_cancels_it() {
        let executor = executor_alone().await;
        let world = hanging_first();
        let (req, mut rx) = request(5, &world);
        executor.cast(ExecMsg::Enqueue(req.into())).unwrap();
        until("the action to start", || {
            world.calls.load(Ordering::SeqCst) == 1
        })
        .await;
        executor.kill();
        let done = rx.recv().await.unwrap();
        assert_eq!(done.id, 5);
        assert_eq!(
            done.report.outcome,
            ActionOutcome::Failed(EXECUTOR_STOPPED.to_owned())
        );
        until("the running action to see its cancellation", || {
            world.saw_cancel.load(Ordering::SeqCst)
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_action_without_a_timeout_to_speak_of_runs_and_succeeds() {
        let world = Arc::new(World {
            timeout: Some(Duration::MAX),
            ..World::default()
        });
        let tree = spawn(&world, config()).await;
        until("an action to succeed", || {
            world.outcomes.lock().unwrap().last() == Some(&ActionOutcome::Succeeded)
        })
        .await;
        tree.shutdown(Duration::from_secs(5)).await;
    }
}
