//! [`Tree`]: spawn a tree from a root spec, watch it, change it, stop it.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use fsm_core::{ChildSpec, DeclarationProblem, NodePath, PATH_SEPARATOR, WorkerRegistry};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::TreeConfig;
use crate::error::TreeError;
use crate::executor::{ExecMsg, ExecutorArgs, ExecutorHandle, ExecutorSupervisor, SupervisorArgs};
use crate::node::top::{top_driver, top_spec};
use crate::node::{NodeActor, NodeArgs, NodeMsg, Shared};
use crate::snapshot::{ExecutorStats, FatalError, NodeSnapshot, ShutdownReport, TreeStatus};
use crate::telemetry::metrics::Metrics;

/// A running tree of supervised workers.
///
/// Spawned from one root [`ChildSpec`]; every node derives its children from
/// its own spec, so the root spec describes the whole desired tree. One timer
/// ticks the root; each node forwards the tick to its children after its own
/// work, so one root tick is one pass over the tree.
///
/// # Examples
///
/// ```
/// # use fsm_core::{BoxError, CollectContext, DeriveContext, DesiredState, Snapshot, State, Transition, Worker};
/// # #[derive(Clone, Debug)] struct Idle;
/// # struct Noop;
/// # impl Worker for Noop {
/// #     type Spec = (); type Observed = (); type State = Idle;
/// #     fn initial_state(&self) -> Idle { Idle }
/// #     async fn collect(&self, _: &CollectContext<'_, ()>) -> Result<(), BoxError> { Ok(()) }
/// #     fn derive_desired(&self, _: &(), _: &DeriveContext<'_>) -> Result<DesiredState, BoxError> { Ok(DesiredState::new("idle")) }
/// # }
/// # impl State<Noop> for Idle {
/// #     const NAMES: &'static [&'static str] = &["idle"];
/// #     fn name(&self) -> &'static str { "idle" }
/// #     fn next(&self, _: &Snapshot<'_, Noop>) -> Transition<Idle> { Transition::stay() }
/// # }
/// use std::time::Duration;
/// use fsm_actors::{Tree, TreeConfig};
/// use fsm_core::{ChildSpec, WorkerRegistry};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut registry = WorkerRegistry::new();
/// registry.register("noop", |_| Noop)?;
///
/// let tree = Tree::spawn(ChildSpec::new("root", "noop"), registry, TreeConfig::default()).await?;
/// tree.wait_converged(Duration::from_secs(10)).await?;
/// let snapshot = tree.inspect().await?;
/// assert_eq!(snapshot.state, "idle");
/// let report = tree.shutdown(Duration::from_secs(5)).await;
/// assert!(report.all_clean());
/// # Ok(())
/// # }
/// ```
pub struct Tree {
    top: ActorRef<NodeMsg>,
    /// The executor's supervisor: stopping it stops the executor.
    executor: ActorRef<()>,
    status: watch::Receiver<TreeStatus>,
    ticker: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    stopped: bool,
    /// The tree generation: 1 at spawn, bumped by every root spec update.
    /// Shared with the [`TreeProbe`]s, which judge readiness by it.
    generation: Arc<AtomicU64>,
}

/// What an observer (the HTTP endpoint) needs to ask a tree, without owning
/// it: cloning is cheap, and holding one keeps no node alive.
#[derive(Clone)]
pub(crate) struct TreeProbe {
    top: ActorRef<NodeMsg>,
    status: watch::Receiver<TreeStatus>,
    generation: Arc<AtomicU64>,
    inspect_timeout: Duration,
}

impl std::fmt::Debug for TreeProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeProbe").finish_non_exhaustive()
    }
}

impl TreeProbe {
    /// The tree's current status.
    pub(crate) fn status(&self) -> TreeStatus {
        self.status.borrow().clone()
    }

    /// The tree generation in force (see [`Tree::generation`]).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the tree is still there: neither shut down nor dropped.
    pub(crate) fn is_running(&self) -> bool {
        self.status.has_changed().is_ok() && ractor::ACTIVE_STATES.contains(&self.top.get_status())
    }

    /// A snapshot of the whole tree, as [`Tree::inspect`] takes it.
    pub(crate) async fn inspect(&self) -> Result<NodeSnapshot, TreeError> {
        let fatal = self.status.borrow().fatal.clone();
        inspect_top(&self.top, fatal, self.inspect_timeout).await
    }
}

impl Tree {
    /// Validates the root spec and the configuration, then spawns the
    /// executor, the root node and (if configured) the tick timer.
    ///
    /// # Errors
    ///
    /// [`TreeError::Config`] for an unworkable configuration,
    /// [`TreeError::InvalidRootSpec`] when the root's name is empty or
    /// contains `/`, its worker type is unknown, or its user spec does not
    /// decode; nothing is spawned then.
    pub async fn spawn(
        root: ChildSpec,
        registry: WorkerRegistry,
        config: TreeConfig,
    ) -> Result<Self, TreeError> {
        config.validate()?;
        validate_root(&root, &registry)?;
        let metrics = Arc::new(match &config.meter {
            Some(meter) => Metrics::new(meter, config.per_node_metrics),
            None => Metrics::from_global(config.per_node_metrics),
        });
        let handle = ExecutorHandle::unset();
        let supervisor_args = SupervisorArgs {
            executor: ExecutorArgs {
                config: config.executor.clone(),
                metrics: Arc::clone(&metrics),
                counters: Arc::default(),
            },
            handle: handle.clone(),
        };
        let (executor, _) = Actor::spawn(None, ExecutorSupervisor, supervisor_args)
            .await
            .map_err(|e| TreeError::Spawn(e.to_string()))?;
        let (status_tx, status) = watch::channel(TreeStatus::default());
        let shared = Arc::new(Shared {
            registry,
            config,
            executor: handle,
            status: status_tx,
            next_action_id: AtomicU64::new(0),
            live_nodes: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            metrics,
            stops: crate::node::StopSink::default(),
            templates: fsm_templates::Templates::new(),
            chaos: crate::node::Padded(AtomicU64::new(0f64.to_bits())),
        });
        let driver = top_driver(&root)?;
        let top_tick_pending = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let top_spec = top_spec(&root).map_err(|e| TreeError::Spawn(e.to_string()))?;
        let args = NodeArgs {
            path: NodePath::top(),
            spec_hash: top_spec.hash(),
            spec: Arc::new(top_spec),
            incarnation: 0,
            spec_generation: 1,
            tree_generation: 1,
            tick_pending: Some(Arc::clone(&top_tick_pending)),
            restarts: 0,
            parent: None,
            parent_state: None,
            context: Arc::new(crate::node::ParentContext::default()),
            shared: Arc::clone(&shared),
            driver: Some(driver),
            decoded: None,
            first_tick: None,
        };
        let (top, _) = match Actor::spawn(None, NodeActor, args).await {
            Ok(spawned) => spawned,
            Err(e) => {
                executor.stop(None);
                return Err(TreeError::Spawn(e.to_string()));
            }
        };
        let ticker = shared.config.tick_interval.map(|period| {
            let top = top.clone();
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                // Capped: the interval adds its period to the clock.
                let mut interval = tokio::time::interval(period.min(crate::deadline::FAR_FUTURE));
                interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    // The top has not handled the last tick yet: skip this one
                    // rather than queue it.
                    if top_tick_pending.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        let labels = shared.metrics.labels(
                            crate::node::top::TOP_WORKER_TYPE,
                            &NodePath::top(),
                            [],
                        );
                        shared.metrics.ticks_skipped.add(1, &labels);
                        continue;
                    }
                    if top.cast(NodeMsg::Tick(tracing::Span::none(), 0)).is_err() {
                        break;
                    }
                }
            })
        });
        tracing::info!(root = %root.name, worker_type = %root.worker_type, "tree spawned");
        Ok(Self {
            top,
            executor,
            status,
            ticker,
            shared,
            stopped: false,
            generation: Arc::new(AtomicU64::new(1)),
        })
    }

    /// Ticks the tree once, now (in addition to the timer, if any).
    ///
    /// # Errors
    ///
    /// [`TreeError::Fatal`] once the tree has given up (nothing would
    /// tick); [`TreeError::NotRunning`] once the tree is gone.
    pub fn tick(&self) -> Result<(), TreeError> {
        self.check_not_fatal()?;
        self.top
            .cast(NodeMsg::Tick(tracing::Span::none(), 0))
            .map_err(|_| TreeError::NotRunning)
    }

    /// The tree's current status (tick count, convergence counts).
    #[must_use]
    pub fn status(&self) -> TreeStatus {
        self.status.borrow().clone()
    }

    /// Waits until the root has processed at least `ticks` ticks.
    ///
    /// # Errors
    ///
    /// [`TreeError::Fatal`] if the tree has given up, or gives up first (a
    /// tree that gave up ticks no more); [`TreeError::NotRunning`] if the
    /// tree goes away first.
    pub async fn wait_ticks(&self, ticks: u64) -> Result<(), TreeError> {
        let mut rx = self.status.clone();
        let status = rx
            .wait_for(|s| s.ticks >= ticks || s.fatal.is_some())
            .await
            .map_err(|_| TreeError::NotRunning)?;
        match &status.fatal {
            Some(fatal) => Err(TreeError::Fatal(fatal.clone())),
            None => Ok(()),
        }
    }

    /// [`TreeError::Fatal`] once the tree has given up.
    fn check_not_fatal(&self) -> Result<(), TreeError> {
        match &self.status.borrow().fatal {
            Some(fatal) => Err(TreeError::Fatal(fatal.clone())),
            None => Ok(()),
        }
    }

    /// The tree generation in force: 1 at spawn, bumped by every
    /// [`update_root_spec`](Self::update_root_spec).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until every node has acted on the tree generation in force
    /// when it was called (every spec change of it applied, children
    /// reconciled, removed children stopped), and is healthy, in its desired
    /// state, with all of its declared children running.
    ///
    /// Called right after [`update_root_spec`](Self::update_root_spec), it
    /// never answers from the status before the update.
    ///
    /// # Errors
    ///
    /// [`TreeError::NotConverged`] with the counts when `timeout` passes
    /// first; [`TreeError::Fatal`] if the tree gives up;
    /// [`TreeError::NotRunning`] if the tree goes away.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<(), TreeError> {
        let target = self.generation();
        let converged = |s: &TreeStatus| s.converged && s.observed_generation >= target;
        if self.wait_status(timeout, converged).await? {
            Ok(())
        } else {
            Err(TreeError::NotConverged {
                timeout,
                counts: self.status.borrow().counts,
            })
        }
    }

    /// Waits until `done` holds for the status: `true`; `false` when
    /// `timeout` passes first.
    async fn wait_status(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&TreeStatus) -> bool,
    ) -> Result<bool, TreeError> {
        let mut rx = self.status.clone();
        let waited =
            tokio::time::timeout(timeout, rx.wait_for(|s| s.fatal.is_some() || done(s))).await;
        match waited {
            Ok(Ok(status)) => match &status.fatal {
                Some(fatal) => Err(TreeError::Fatal(fatal.clone())),
                None => Ok(true),
            },
            Ok(Err(_)) => Err(TreeError::NotRunning),
            Err(_) => Ok(false),
        }
    }

    /// Waits until every node has acted on tree generation `generation` (as
    /// returned by [`update_root_spec`](Self::update_root_spec)): its spec
    /// applied or rejected, its children reconciled, removed children
    /// stopped. Says nothing of convergence: see
    /// [`wait_converged`](Self::wait_converged).
    ///
    /// # Errors
    ///
    /// [`TreeError::Timeout`] when `timeout` passes first;
    /// [`TreeError::Fatal`] if the tree gives up;
    /// [`TreeError::NotRunning`] if the tree goes away.
    pub async fn wait_generation(
        &self,
        generation: u64,
        timeout: Duration,
    ) -> Result<(), TreeError> {
        if self
            .wait_status(timeout, |s| s.observed_generation >= generation)
            .await?
        {
            Ok(())
        } else {
            Err(TreeError::Timeout {
                what: "wait_generation",
                timeout,
            })
        }
    }

    /// Waits until the tree gives up (its root exceeded its restart
    /// intensity) and returns why.
    ///
    /// # Errors
    ///
    /// [`TreeError::NotRunning`] if the tree goes away first.
    pub async fn wait_fatal(&self) -> Result<FatalError, TreeError> {
        let mut rx = self.status.clone();
        let status = rx
            .wait_for(|s| s.fatal.is_some())
            .await
            .map_err(|_| TreeError::NotRunning)?;
        status.fatal.clone().ok_or(TreeError::NotRunning)
    }

    /// Why the tree gave up, if it did.
    #[must_use]
    pub fn fatal(&self) -> Option<FatalError> {
        self.status.borrow().fatal.clone()
    }

    /// How many restarts the tree has scheduled since it was spawned: every
    /// failed child and every bystander its strategy restarted with it,
    /// including nodes that were removed since (the snapshot's `restarts`
    /// counts only the nodes still in the tree, per incarnation of their
    /// parent).
    #[must_use]
    pub fn restarts(&self) -> u64 {
        self.shared
            .restarts
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many node actors are alive now. Once the tree has settled, this is
    /// exactly the number of running nodes: a larger number means leaked
    /// actors.
    #[must_use]
    pub fn live_nodes(&self) -> u64 {
        self.shared
            .live_nodes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fault injection for chaos testing: from now on, every node panics at
    /// the start of a tick with probability `probability` (clamped to
    /// `0..=1`; `0` turns it off). Restarts, escalation and recovery then
    /// run exactly as for a crashing worker. See
    /// [`quiet_injected_faults`](crate::quiet_injected_faults) to keep the
    /// panics out of the output.
    pub fn inject_faults(&self, probability: f64) {
        let p = if probability.is_finite() {
            probability.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.shared
            .chaos
            .0
            .store(p.to_bits(), std::sync::atomic::Ordering::Relaxed);
    }

    /// A serialisable snapshot of the whole tree, from the root down.
    ///
    /// # Errors
    ///
    /// [`TreeError::Fatal`] once the tree has given up;
    /// [`TreeError::NotRunning`] if the tree is gone or has no root right
    /// now (it is being replaced); [`TreeError::Timeout`] if the top node
    /// does not answer within the configured `inspect_timeout`.
    pub async fn inspect(&self) -> Result<NodeSnapshot, TreeError> {
        let fatal = self.status.borrow().fatal.clone();
        inspect_top(&self.top, fatal, self.shared.config.inspect_timeout).await
    }

    /// A handle through which an observer asks this tree for its status and
    /// snapshots, without owning it.
    pub(crate) fn probe(&self) -> TreeProbe {
        TreeProbe {
            top: self.top.clone(),
            status: self.status.clone(),
            generation: Arc::clone(&self.generation),
            inspect_timeout: self.shared.config.inspect_timeout,
        }
    }

    /// Replaces the root spec and returns the new tree generation. The tree
    /// reconciles towards it on the next tick: children are added, updated,
    /// replaced and removed as the derived specs say. A changed root name or
    /// worker type replaces the root.
    ///
    /// [`wait_converged`](Self::wait_converged) (or
    /// [`wait_generation`](Self::wait_generation) with the returned
    /// generation) waits for the tree to act on it.
    ///
    /// # Errors
    ///
    /// [`TreeError::InvalidRootSpec`] (nothing changes),
    /// [`TreeError::Fatal`] once the tree has given up (nothing would apply
    /// the spec: spawn a new tree), or [`TreeError::NotRunning`].
    pub fn update_root_spec(&self, root: ChildSpec) -> Result<u64, TreeError> {
        self.check_not_fatal()?;
        validate_root(&root, &self.shared.registry)?;
        let spec = top_spec(&root).map_err(|e| TreeError::Spawn(e.to_string()))?;
        let hash = spec.hash();
        // Bumped and sent together, so generations reach the top in order.
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        self.top
            .cast(NodeMsg::UpdateSpec(Arc::new(spec), hash, generation))
            .map_err(|_| TreeError::NotRunning)?;
        Ok(generation)
    }

    /// The handle through which nodes reach the executor.
    #[cfg(test)]
    pub(crate) fn executor_handle(&self) -> &ExecutorHandle {
        &self.shared.executor
    }

    /// The executor's counters.
    ///
    /// # Errors
    ///
    /// [`TreeError::NotRunning`] if the executor is gone.
    pub async fn executor_stats(&self) -> Result<ExecutorStats, TreeError> {
        let executor = self.shared.executor.get().ok_or(TreeError::NotRunning)?;
        match executor.call(ExecMsg::Stats, None).await {
            Ok(CallResult::Success(stats)) => Ok(stats),
            _ => Err(TreeError::NotRunning),
        }
    }

    /// Stops the tree in order: children before parents, later-started
    /// siblings first, each subtree completely before the next; every node's
    /// stop hook runs after its children have stopped. Nodes that miss the
    /// deadline are killed and reported as forced.
    ///
    /// A tree that gave up has stopped every node in order already: its
    /// shutdown returns at once with the records of that stop (none for the
    /// root that failed: [`fatal`](Self::fatal) says why it did).
    pub async fn shutdown(mut self, timeout: Duration) -> ShutdownReport {
        self.stopped = true;
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        let deadline = crate::deadline::from_now(timeout);
        self.shared.stops.open();
        let answer = self
            .top
            .call(|reply| NodeMsg::Shutdown { deadline, reply }, Some(timeout))
            .await;
        let mut stopped = match answer {
            Ok(CallResult::Success(records)) => records,
            _ => {
                self.top.kill();
                vec![crate::snapshot::StopRecord {
                    path: NodePath::top(),
                    outcome: crate::snapshot::StopOutcome::Forced(
                        "the tree did not stop before the deadline; killed".to_owned(),
                    ),
                }]
            }
        };
        // The top node is not part of the user's tree.
        stopped.retain(|r| {
            !r.path.is_top() || matches!(r.outcome, crate::snapshot::StopOutcome::Forced(_))
        });
        let _ = self
            .top
            .get_cell()
            .wait(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .await;
        // Killed nodes record themselves as their state is dropped: wait for
        // the last of them (killing takes a moment), then add their records.
        let grace = crate::deadline::from_now(
            deadline.saturating_duration_since(Instant::now()) + KILL_GRACE,
        );
        self.shared.stops.wait_drained(&self.shared, grace).await;
        self.shared.stops.merge_into(&mut stopped);
        let _ = self
            .executor
            .stop_and_wait(None, Some(Duration::from_secs(1)))
            .await;
        tracing::info!(nodes = stopped.len(), "tree shut down");
        ShutdownReport { stopped }
    }
}

/// How long a shutdown waits past its deadline for killed node actors to be
/// gone.
const KILL_GRACE: Duration = Duration::from_millis(100);

impl Drop for Tree {
    /// A tree dropped without [`shutdown`](Tree::shutdown) is killed: no stop
    /// hooks run, and running actions are cancelled (their
    /// `ActionContext::cancelled` fires), so none keeps running detached.
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        if !self.stopped {
            self.top.kill();
            self.executor.kill();
        }
    }
}

/// Asks the top node for a snapshot of the tree below it.
async fn inspect_top(
    top: &ActorRef<NodeMsg>,
    fatal: Option<FatalError>,
    timeout: Duration,
) -> Result<NodeSnapshot, TreeError> {
    if let Some(fatal) = fatal {
        return Err(TreeError::Fatal(fatal));
    }
    let deadline = crate::deadline::from_now(timeout);
    let answer = top
        .call(|reply| NodeMsg::Inspect { deadline, reply }, Some(timeout))
        .await
        .map_err(|_| TreeError::NotRunning)?;
    match answer {
        CallResult::Success(top) => top.children.into_iter().next().ok_or(TreeError::NotRunning),
        CallResult::Timeout => Err(TreeError::Timeout {
            what: "inspect",
            timeout,
        }),
        CallResult::SenderError => Err(TreeError::NotRunning),
    }
}

fn validate_root(root: &ChildSpec, registry: &WorkerRegistry) -> Result<(), TreeError> {
    if root.name.is_empty() {
        return Err(TreeError::InvalidRootSpec(DeclarationProblem::EmptyName {
            index: 0,
            worker_type: root.worker_type.clone(),
        }));
    }
    if root.name.contains(PATH_SEPARATOR) {
        return Err(TreeError::InvalidRootSpec(
            DeclarationProblem::InvalidName {
                name: root.name.clone(),
            },
        ));
    }
    registry.validate(&NodePath::top().child(&root.name), root)?;
    Ok(())
}
