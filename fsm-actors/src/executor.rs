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
//! * cancelling a subtree (its node was removed, restarted or shut down)
//!   cancels its queued actions at once and its running ones at their next
//!   await point.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use std::sync::Arc;

use fsm_core::{ActionContext, ActionOutcome, ActionReport, BoxedAction, NodePath, panic_message};
use futures::FutureExt;
use opentelemetry::KeyValue;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::ExecutorConfig;
use crate::node::NodeMsg;
use crate::snapshot::ExecutorStats;
use crate::telemetry;
use crate::telemetry::metrics::{Metrics, NodeWorkerMetrics};

/// Identifies one enqueued action within a tree.
pub(crate) type ActionId = u64;

/// One action handed to the executor.
pub(crate) struct ActionRequest {
    pub(crate) id: ActionId,
    pub(crate) path: NodePath,
    pub(crate) owner: ActorRef<NodeMsg>,
    pub(crate) action: BoxedAction,
    /// The worker type of the node, for the action span.
    pub(crate) worker_type: Arc<str>,
    /// The tick span that asked for it, for the action span's link.
    pub(crate) origin: Option<opentelemetry::trace::SpanContext>,
}

/// How the executor is started.
pub(crate) struct ExecutorArgs {
    pub(crate) config: ExecutorConfig,
    pub(crate) metrics: Arc<Metrics>,
}

pub(crate) enum ExecMsg {
    Enqueue(ActionRequest),
    /// Cancel every action of the node at this path and below.
    CancelSubtree(NodePath),
    Finished {
        id: ActionId,
        outcome: ActionOutcome,
    },
    Stats(RpcReplyPort<ExecutorStats>),
}

pub(crate) struct Executor;

struct Running {
    path: NodePath,
    worker_type: Arc<str>,
    owner: ActorRef<NodeMsg>,
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
    busy: HashSet<ractor::ActorId>,
    stats: ExecutorStats,
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
            stats: ExecutorStats::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ExecMsg>,
        msg: ExecMsg,
        state: &mut ExecutorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ExecMsg::Enqueue(req) => state.enqueue(req, &myself),
            ExecMsg::CancelSubtree(prefix) => state.cancel_subtree(&prefix),
            ExecMsg::Finished { id, outcome } => state.finished(id, outcome, &myself),
            ExecMsg::Stats(reply) => {
                let mut stats = state.stats;
                stats.queued = state.queue.len() as u64;
                stats.running = state.running.len() as u64;
                let _ = reply.send(stats);
            }
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
        self.stats.enqueued += 1;
        if self.queue.len() >= self.config.queue_capacity {
            let reason = format!(
                "the executor queue is full ({} waiting); the node will ask again",
                self.queue.len()
            );
            tracing::warn!(node.path = %req.path, action = req.action.name(), "action rejected: queue full");
            self.deliver(
                &req.owner,
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
            if self.busy.contains(&self.queue[i].owner.get_id()) {
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
        self.stats.started += 1;
        self.busy.insert(owner.get_id());
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
        self.busy.remove(&run.owner.get_id());
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
        self.deliver(&run.owner, id, run.name, outcome);
        self.dispatch(myself);
        self.record_load();
    }

    fn cancel_subtree(&mut self, prefix: &NodePath) {
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for req in std::mem::take(&mut self.queue) {
            if req.path.starts_with(prefix) {
                self.deliver(
                    &req.owner,
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
        owner: &ActorRef<NodeMsg>,
        id: ActionId,
        action: &'static str,
        outcome: ActionOutcome,
    ) {
        match &outcome {
            ActionOutcome::Succeeded => self.stats.succeeded += 1,
            ActionOutcome::Failed(_) => self.stats.failed += 1,
            ActionOutcome::TimedOut => self.stats.timed_out += 1,
            ActionOutcome::Cancelled => self.stats.cancelled += 1,
            ActionOutcome::Rejected(_) => self.stats.rejected += 1,
        }
        // A node that is gone cannot receive its outcome; it is still counted.
        let _ = owner.cast(NodeMsg::ActionDone {
            id,
            report: ActionReport {
                action: action.to_owned(),
                outcome,
            },
        });
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
