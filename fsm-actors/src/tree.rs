//! [`Tree`]: spawn a tree from a root spec, watch it, change it, stop it;
//! [`TreeHandle`]: watch and change it from other tasks.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use fsm_core::store::{Change, StoredRoot};
use fsm_core::{ChildSpec, DeclarationProblem, NodePath, PATH_SEPARATOR, WorkerRegistry};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::TreeConfig;
use crate::error::TreeError;
use crate::executor::{ExecMsg, ExecutorArgs, ExecutorHandle, ExecutorSupervisor, SupervisorArgs};
use crate::node::top::{top_driver, top_spec};
use crate::node::{NodeActor, NodeArgs, NodeMsg, PrebuiltChild, Shared};
use crate::snapshot::{ExecutorStats, FatalError, NodeSnapshot, ShutdownReport, TreeStatus};
use crate::telemetry::metrics::{Metrics, NodeWorkerMetrics};

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
/// # use fsm_core::{BoxError, DeriveContext, DesiredState, TickContext, State, Transition, Worker};
/// # fsm_core::states! { #[derive(Clone, Debug)] enum Idle { Idle } }
/// # struct Noop;
/// # impl Worker for Noop {
/// #     type Spec = (); type Observed = (); type State = Idle;
/// #     fn initial_state(&self) -> Idle { Idle::Idle }
/// #     fn derive_desired(&self, _: &(), _: &DeriveContext<'_>) -> Result<DesiredState, BoxError> { Ok(DesiredState::new("idle")) }
/// # }
/// # impl State<Noop> for Idle {
/// #     fn next(&self, _: &TickContext<'_, Noop>) -> Transition<Idle> { Transition::stay() }
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
    handle: TreeHandle,
    /// The executor's supervisor: stopping it stops the executor.
    executor: ActorRef<()>,
    ticker: Option<JoinHandle<()>>,
    /// The store actor, when the tree has a store.
    store: Option<JoinHandle<()>>,
    stopped: bool,
}

/// A cloneable handle on a running [`Tree`]: watch it, inspect it, change
/// its root spec, from as many tasks as need to. Get one with
/// [`Tree::handle`]; the [`Tree`] itself derefs to its handle, so every
/// method here can be called on the tree too.
///
/// Only the owner, the [`Tree`], shuts the tree down. From the moment its
/// [`shutdown`](Tree::shutdown) begins (or the tree is dropped), every
/// handle's fallible calls ([`inspect`](Self::inspect),
/// [`update_root_spec`](Self::update_root_spec), [`tick`](Self::tick),
/// [`executor_stats`](Self::executor_stats)) fail at once with
/// [`TreeError::NotRunning`], and so do waits in progress and new ones
/// ([`wait_converged`](Self::wait_converged) and the other `wait_*`
/// methods). The infallible readers ([`status`](Self::status),
/// [`generation`](Self::generation), [`fatal`](Self::fatal),
/// [`restarts`](Self::restarts), [`live_nodes`](Self::live_nodes)) keep
/// answering with the last values the tree reported; see
/// [`is_running`](Self::is_running).
///
/// # Examples
///
/// ```
/// # use fsm_core::{BoxError, DeriveContext, DesiredState, TickContext, State, Transition, Worker};
/// # fsm_core::states! { #[derive(Clone, Debug)] enum Idle { Idle } }
/// # struct Noop;
/// # impl Worker for Noop {
/// #     type Spec = (); type Observed = (); type State = Idle;
/// #     fn initial_state(&self) -> Idle { Idle::Idle }
/// #     fn derive_desired(&self, _: &(), _: &DeriveContext<'_>) -> Result<DesiredState, BoxError> { Ok(DesiredState::new("idle")) }
/// # }
/// # impl State<Noop> for Idle {
/// #     fn next(&self, _: &TickContext<'_, Noop>) -> Transition<Idle> { Transition::stay() }
/// # }
/// use std::time::Duration;
/// use fsm_actors::{Tree, TreeConfig, TreeError};
/// use fsm_core::{ChildSpec, WorkerRegistry};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut registry = WorkerRegistry::new();
/// registry.register("noop", |_| Noop)?;
/// let tree = Tree::spawn(ChildSpec::new("root", "noop"), registry, TreeConfig::default()).await?;
///
/// let handle = tree.handle();
/// let watcher = tokio::spawn(async move {
///     handle.wait_converged(Duration::from_secs(10)).await?;
///     handle.inspect().await
/// });
/// assert_eq!(watcher.await??.state, "idle");
///
/// let handle = tree.handle();
/// tree.shutdown(Duration::from_secs(5)).await;
/// assert!(matches!(handle.inspect().await, Err(TreeError::NotRunning)));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TreeHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    top: ActorRef<NodeMsg>,
    status: watch::Receiver<TreeStatus>,
    shared: Arc<Shared>,
    /// The tree generation: 1 at spawn, bumped by every root spec update.
    generation: AtomicU64,
    /// Cancelled when the owner starts shutting the tree down or drops it.
    gone: CancellationToken,
    /// The store actor's counters, when the tree has a store.
    store_counters: Option<Arc<crate::persist::StoreCounters>>,
    /// What the tree restored from its store, if it did.
    restore_info: Option<crate::snapshot::RestoreInfo>,
}

impl std::fmt::Debug for TreeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeHandle")
            .field("running", &self.is_running())
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for Tree {
    type Target = TreeHandle;

    fn deref(&self) -> &TreeHandle {
        &self.handle
    }
}

impl Tree {
    /// Validates the root spec and the configuration, constructs the root
    /// worker, then spawns the executor, the root node and (if configured)
    /// the tick timer.
    ///
    /// What can be checked before anything runs is refused (the errors
    /// below). What shows only once the root runs spawns the tree with an
    /// **unhealthy root**: `healthy: false` in the snapshot, `last_error`
    /// naming the problem and the node path, no restart, and the root heals
    /// when [`update_root_spec`](TreeHandle::update_root_spec) fixes it:
    ///
    /// * a root spec with templates that do not render with the globals (an
    ///   undefined variable), or that render to a value that does not
    ///   decode (a spec with templates cannot be decoded before it renders);
    /// * a `derive_desired` that returns an
    ///   [`InvalidSpec`](fsm_core::InvalidSpec) error;
    /// * a desired state that names no state of the root worker;
    /// * invalid children declared by the root (duplicate, empty or
    ///   `/`-holding names, an unknown worker type, a spec that does not
    ///   decode, a state mapping to an unknown state): the declaration is
    ///   refused as a whole, and the root keeps its last good one (at spawn:
    ///   no children) until it is fixed.
    ///
    /// A `derive_desired` that returns any other error, or panics, is a
    /// failure: the root is restarted under its restart policy, and the tree
    /// gives up ([`TreeError::Fatal`] from every call) past the root's
    /// restart intensity.
    ///
    /// # Errors
    ///
    /// [`TreeError::Config`] for an unworkable configuration,
    /// [`TreeError::InvalidRootSpec`] when the root's name is empty or
    /// contains `/`, its worker type is unknown, or its user spec (without
    /// templates) does not decode; [`TreeError::RootConstructor`] when the
    /// root worker's constructor fails or panics. Nothing is spawned then.
    pub async fn spawn(
        root: ChildSpec,
        registry: WorkerRegistry,
        config: TreeConfig,
    ) -> Result<Self, TreeError> {
        config.validate()?;
        let restored = match &config.store {
            Some(store) => crate::persist::restore(&store.0)
                .await
                .map_err(TreeError::Store)?,
            None => None,
        };
        // A store that holds a tree wins over the root spec given: the tree
        // goes on as it last was (see `docs/persistence.md`).
        let root = match restored.as_ref().and_then(|r| r.root.as_ref()) {
            Some(stored) => {
                if stored.spec != root {
                    tracing::info!(root = %stored.spec.name, "the store holds a tree: its root spec is used, not the one given");
                }
                stored.spec.clone()
            }
            None => root,
        };
        validate_root(&root, &registry)?;
        let metrics = Arc::new(match &config.meter {
            Some(meter) => Metrics::new(meter, config.per_node_metrics),
            None => Metrics::from_global(config.per_node_metrics),
        });
        let counters = Arc::new(crate::executor::Counters::default());
        if let Some(restored) = &restored {
            // Each counted once: `restore` wrote them back as interrupted.
            counters.interrupted(restored.interrupted.len() as u64);
            let now_ms = crate::node::unix_ms_now();
            for (action, worker_type) in &restored.interrupted {
                let attrs = metrics.labels(
                    Arc::<str>::from(worker_type.as_str()),
                    &action.node,
                    [
                        opentelemetry::KeyValue::new("action", action.action.clone()),
                        opentelemetry::KeyValue::new(
                            "outcome",
                            fsm_core::ActionOutcome::Interrupted.label(),
                        ),
                    ],
                );
                // How long it may have run: at most until now.
                let ran = now_ms.saturating_sub(action.started_at_ms) as f64 / 1000.0;
                metrics.action_duration.record(ran, &attrs);
            }
            tracing::info!(
                nodes = restored.info.nodes,
                generation = restored.info.generation,
                saved_at_ms = restored.info.saved_at_ms,
                interrupted = restored.info.interrupted,
                "tree restored from its store"
            );
        }
        // Built here rather than when the root starts, so that a root that
        // cannot be built refuses the tree instead of failing it later.
        let root_path = NodePath::top().child(&root.name);
        let make_metrics = || -> Arc<dyn fsm_core::WorkerMetrics> {
            Arc::new(NodeWorkerMetrics::new(
                Arc::clone(&metrics),
                Arc::from(root.worker_type.as_str()),
                &root_path,
            ))
        };
        let root_driver = registry
            .construct_with_metrics(&root_path, &root.worker_type, &make_metrics)
            .map_err(TreeError::RootConstructor)?;
        let prebuilt_child = Some(Box::new(PrebuiltChild {
            path: root_path,
            worker_type: root.worker_type.clone(),
            driver: root_driver,
        }));
        let handle = ExecutorHandle::unset();
        let supervisor_args = SupervisorArgs {
            executor: ExecutorArgs {
                config: config.executor.clone(),
                metrics: Arc::clone(&metrics),
                counters,
            },
            handle: handle.clone(),
        };
        let (executor, _) = Actor::spawn(None, ExecutorSupervisor, supervisor_args)
            .await
            .map_err(|e| TreeError::Spawn(e.to_string()))?;
        let (store_link, store_starter, store_counters) = match &config.store {
            Some(store) => {
                let counters = Arc::new(crate::persist::StoreCounters::default());
                let (link, starter) = crate::persist::start(
                    Arc::clone(&store.0),
                    Arc::clone(&counters),
                    handle.clone(),
                );
                link.send(Change::Root(StoredRoot {
                    spec: root.clone(),
                    generation: 1,
                }));
                (Some(link), Some(starter), Some(counters))
            }
            None => (None, None, None),
        };
        let (status_tx, status) = watch::channel(TreeStatus::default());
        let shared = Arc::new(Shared {
            registry,
            config,
            executor: handle,
            status: status_tx,
            // After the stored ones: a record never overwrites an earlier
            // process's.
            next_action_id: AtomicU64::new(restored.as_ref().map_or(0, |r| r.next_action_id)),
            live_nodes: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            metrics,
            stops: crate::node::StopSink::default(),
            store: store_link,
            restored,
            templates: fsm_templates::Templates::new(),
            #[cfg(feature = "fault-injection")]
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
            attempt: 0,
            parent: None,
            parent_state: None,
            context: Arc::new(crate::node::ParentContext::default()),
            globals: Arc::new(crate::node::Globals::new(shared.config.globals.clone(), 0)),
            shared: Arc::clone(&shared),
            driver: Some(driver),
            decoded: None,
            prebuilt_child,
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
        let store = store_starter.map(|starter| starter.run(top.clone()));
        let restore_info = shared.restored.as_ref().map(|r| r.info.clone());
        tracing::info!(root = %root.name, worker_type = %root.worker_type, "tree spawned");
        Ok(Self {
            handle: TreeHandle {
                inner: Arc::new(HandleInner {
                    top,
                    status,
                    shared,
                    generation: AtomicU64::new(1),
                    gone: CancellationToken::new(),
                    store_counters,
                    restore_info,
                }),
            },
            executor,
            ticker,
            store,
            stopped: false,
        })
    }

    /// A handle on this tree that can be cloned and sent to other tasks.
    /// It stops working (its calls fail with [`TreeError::NotRunning`]) once
    /// this tree shuts down or is dropped.
    #[must_use]
    pub fn handle(&self) -> TreeHandle {
        self.handle.clone()
    }

    /// Stops the tree in order: children before parents, later-started
    /// siblings first, each subtree completely before the next; every node's
    /// stop hook runs after its children have stopped. Nodes that miss the
    /// deadline are killed and reported as forced.
    ///
    /// Every [`TreeHandle`] stops working as the shutdown begins: their
    /// calls, waits in progress included, fail with
    /// [`TreeError::NotRunning`].
    ///
    /// A tree that gave up has stopped every node in order already: its
    /// shutdown returns at once with the records of that stop (none for the
    /// root that failed: [`fatal`](TreeHandle::fatal) says why it did).
    pub async fn shutdown(mut self, timeout: Duration) -> ShutdownReport {
        self.stopped = true;
        self.handle.inner.gone.cancel();
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        if !self.stopped
            && let Some(store) = self.store.take()
        {
            // Killed, as the process would be: what is not written is lost.
            store.abort();
        }
        let top = &self.handle.inner.top;
        let shared = &self.handle.inner.shared;
        let deadline = crate::deadline::from_now(timeout);
        shared.stops.open();
        let answer = top
            .call(|reply| NodeMsg::Shutdown { deadline, reply }, Some(timeout))
            .await;
        let mut stopped = match answer {
            Ok(CallResult::Success(records)) => records,
            _ => {
                top.kill();
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
        let _ = top
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
        shared.stops.wait_drained(shared, grace).await;
        shared.stops.merge_into(&mut stopped);
        // The executor first: it ends every action it still holds with an
        // outcome, and (with a store) each outcome is stored.
        let _ = self
            .executor
            .stop_and_wait(None, Some(Duration::from_secs(1)))
            .await;
        if let Some(store) = &shared.store {
            // What the nodes handed over, their last documents included, is
            // written before the tree is gone (a failing store is tried once
            // more, not waited for).
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .max(KILL_GRACE);
            if tokio::time::timeout(wait, store.flush(true)).await.is_err() {
                tracing::warn!(
                    "the store did not write the tree's last changes before the deadline"
                );
            }
        }
        tracing::info!(nodes = stopped.len(), "tree shut down");
        ShutdownReport { stopped }
    }
}

impl TreeHandle {
    /// Whether the tree is running: `false` once its owner has begun
    /// shutting it down or has dropped it. (A tree that gave up is still
    /// running in this sense: see [`fatal`](Self::fatal).)
    #[must_use]
    pub fn is_running(&self) -> bool {
        !self.inner.gone.is_cancelled()
    }

    /// [`TreeError::NotRunning`] once the owner shut the tree down or
    /// dropped it.
    fn check_running(&self) -> Result<(), TreeError> {
        if self.is_running() {
            Ok(())
        } else {
            Err(TreeError::NotRunning)
        }
    }

    /// Runs `work` unless or until the tree stops running:
    /// [`TreeError::NotRunning`] then.
    async fn while_running<T>(
        &self,
        work: impl Future<Output = Result<T, TreeError>>,
    ) -> Result<T, TreeError> {
        tokio::select! {
            biased;
            () = self.inner.gone.cancelled() => Err(TreeError::NotRunning),
            result = work => result,
        }
    }

    /// Ticks the tree once, now (in addition to the timer, if any).
    ///
    /// # Errors
    ///
    /// [`TreeError::Fatal`] once the tree has given up (nothing would
    /// tick); [`TreeError::NotRunning`] once the tree is gone.
    pub fn tick(&self) -> Result<(), TreeError> {
        self.check_running()?;
        self.check_not_fatal()?;
        self.inner
            .top
            .cast(NodeMsg::Tick(tracing::Span::none(), 0))
            .map_err(|_| TreeError::NotRunning)
    }

    /// Ticks the tree once inside `parent` (the span of a tick on another
    /// node, so that one trace spans both): the root's tick span is its
    /// child.
    #[cfg(feature = "cluster")]
    pub(crate) fn tick_in(&self, parent: tracing::Span) -> Result<(), TreeError> {
        self.check_running()?;
        self.check_not_fatal()?;
        self.inner
            .top
            .cast(NodeMsg::Tick(parent, 0))
            .map_err(|_| TreeError::NotRunning)
    }

    /// The tree's current status (tick count, convergence counts); once the
    /// tree is gone, the last status it reported.
    #[must_use]
    pub fn status(&self) -> TreeStatus {
        self.inner.status.borrow().clone()
    }

    /// Waits until the root has processed at least `ticks` ticks.
    ///
    /// # Errors
    ///
    /// [`TreeError::Fatal`] if the tree has given up, or gives up first (a
    /// tree that gave up ticks no more); [`TreeError::NotRunning`] if the
    /// tree goes away first.
    pub async fn wait_ticks(&self, ticks: u64) -> Result<(), TreeError> {
        self.wait_status(None, |s| s.ticks >= ticks).await.map(drop)
    }

    /// [`TreeError::Fatal`] once the tree has given up.
    fn check_not_fatal(&self) -> Result<(), TreeError> {
        match &self.inner.status.borrow().fatal {
            Some(fatal) => Err(TreeError::Fatal(fatal.clone())),
            None => Ok(()),
        }
    }

    /// The tree generation in force: 1 at spawn, bumped by every
    /// [`update_root_spec`](Self::update_root_spec).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.inner
            .generation
            .load(std::sync::atomic::Ordering::SeqCst)
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
        if self.wait_status(Some(timeout), converged).await? {
            Ok(())
        } else {
            Err(TreeError::NotConverged {
                timeout,
                counts: self.inner.status.borrow().counts,
            })
        }
    }

    /// Waits until `done` holds for the status: `true`; `false` when
    /// `timeout` (if any) passes first.
    async fn wait_status(
        &self,
        timeout: Option<Duration>,
        mut done: impl FnMut(&TreeStatus) -> bool,
    ) -> Result<bool, TreeError> {
        self.check_running()?;
        let mut rx = self.inner.status.clone();
        self.while_running(async move {
            let wait = rx.wait_for(|s| s.fatal.is_some() || done(s));
            let waited = match timeout {
                Some(timeout) => tokio::time::timeout(timeout, wait).await,
                None => Ok(wait.await),
            };
            match waited {
                Ok(Ok(status)) => match &status.fatal {
                    Some(fatal) => Err(TreeError::Fatal(fatal.clone())),
                    None => Ok(true),
                },
                Ok(Err(_)) => Err(TreeError::NotRunning),
                Err(_) => Ok(false),
            }
        })
        .await
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
            .wait_status(Some(timeout), |s| s.observed_generation >= generation)
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
        self.check_running()?;
        let mut rx = self.inner.status.clone();
        self.while_running(async move {
            let status = rx
                .wait_for(|s| s.fatal.is_some())
                .await
                .map_err(|_| TreeError::NotRunning)?;
            status.fatal.clone().ok_or(TreeError::NotRunning)
        })
        .await
    }

    /// Why the tree gave up, if it did.
    #[must_use]
    pub fn fatal(&self) -> Option<FatalError> {
        self.inner.status.borrow().fatal.clone()
    }

    /// How many restarts the tree has scheduled since it was spawned: every
    /// failed child and every bystander its strategy restarted with it,
    /// including nodes that were removed since (the snapshot's `restarts`
    /// counts only the nodes still in the tree, per incarnation of their
    /// parent).
    #[must_use]
    pub fn restarts(&self) -> u64 {
        self.inner
            .shared
            .restarts
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many node actors are alive now. Once the tree has settled, this is
    /// exactly the number of running nodes: a larger number means leaked
    /// actors.
    #[must_use]
    pub fn live_nodes(&self) -> u64 {
        self.inner
            .shared
            .live_nodes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fault injection for chaos testing: from now on, every node panics at
    /// the start of a tick with probability `probability` (clamped to
    /// `0..=1`; `0` turns it off). Restarts, escalation and recovery then
    /// run exactly as for a crashing worker. See
    /// [`quiet_injected_faults`](crate::quiet_injected_faults) to keep the
    /// panics out of the output.
    ///
    /// Only with the `fault-injection` cargo feature.
    #[cfg(feature = "fault-injection")]
    pub fn inject_faults(&self, probability: f64) {
        let p = if probability.is_finite() {
            probability.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.inner
            .shared
            .chaos
            .0
            .store(p.to_bits(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Fault injection for chaos testing: kills the actor of the node at
    /// `path` (`plant/line-1`) and with it its subtree, as a crashing
    /// dependency would stop it from outside: no stop hook runs, and its
    /// parent's restart policy applies as after a panic. A path no running
    /// node has is ignored.
    ///
    /// Only with the `fault-injection` cargo feature.
    ///
    /// # Errors
    ///
    /// [`TreeError::Fatal`] once the tree has given up;
    /// [`TreeError::NotRunning`] once the tree is gone.
    #[cfg(feature = "fault-injection")]
    pub fn kill_node(&self, path: &str) -> Result<(), TreeError> {
        self.check_running()?;
        self.check_not_fatal()?;
        self.inner
            .top
            .cast(NodeMsg::Kill(NodePath::parse(path)))
            .map_err(|_| TreeError::NotRunning)
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
        self.check_running()?;
        self.check_not_fatal()?;
        let timeout = self.inner.shared.config.inspect_timeout;
        let deadline = crate::deadline::from_now(timeout);
        let answer = self
            .while_running(async {
                self.inner
                    .top
                    .call(|reply| NodeMsg::Inspect { deadline, reply }, Some(timeout))
                    .await
                    .map_err(|_| TreeError::NotRunning)
            })
            .await?;
        match answer {
            CallResult::Success(top) => {
                top.children.into_iter().next().ok_or(TreeError::NotRunning)
            }
            CallResult::Timeout => Err(TreeError::Timeout {
                what: "inspect",
                timeout,
            }),
            CallResult::SenderError => Err(TreeError::NotRunning),
        }
    }

    /// The latest observation of the node at `path` (`plant/line-1`), as
    /// its worker's `Observed` type `T`, with how fresh it is: for the
    /// application around the tree (a dashboard, an API) to read what a
    /// worker sees without a second connection to the world.
    ///
    /// The request travels down the tree as messages, from parent to child
    /// by name, and the node clones its observation to answer; nodes keep
    /// nothing for it between reads. A node that is declared but not
    /// running (starting, restarting) answers
    /// [`LatestObservation::NeverObserved`](crate::LatestObservation::NeverObserved).
    ///
    /// # Errors
    ///
    /// [`TreeError::NoSuchNode`] when no node has that path,
    /// [`TreeError::ObservationType`] when `T` is not the worker's
    /// `Observed` type (naming both), [`TreeError::Fatal`] once the tree has
    /// given up, [`TreeError::Timeout`] after the configured
    /// `inspect_timeout`, or [`TreeError::NotRunning`].
    pub async fn observation<T: Clone + Send + 'static>(
        &self,
        path: &str,
    ) -> Result<crate::LatestObservation<T>, TreeError> {
        use crate::latest::{ObservationReply, ObservationRequest};
        self.check_running()?;
        self.check_not_fatal()?;
        let target = fsm_core::NodePath::parse(path);
        if target.is_top() {
            return Err(TreeError::NoSuchNode {
                path: path.to_owned(),
            });
        }
        let timeout = self.inner.shared.config.inspect_timeout;
        let answer = self
            .while_running(async {
                self.inner
                    .top
                    .call(
                        |reply| {
                            NodeMsg::ReadObservation(Box::new(ObservationRequest {
                                path: target.clone(),
                                asked: std::any::TypeId::of::<T>(),
                                read: Box::new(|observed| {
                                    observed.downcast_ref::<T>().map(|t| {
                                        Box::new(t.clone()) as Box<dyn std::any::Any + Send>
                                    })
                                }),
                                reply,
                            }))
                        },
                        Some(timeout),
                    )
                    .await
                    .map_err(|_| TreeError::NotRunning)
            })
            .await?;
        match answer {
            CallResult::Success(ObservationReply::Found { value, freshness }) => {
                let value = value.and_then(|v| v.downcast::<T>().ok()).map(|v| *v);
                Ok(crate::LatestObservation::from_parts(value, freshness))
            }
            CallResult::Success(ObservationReply::NoSuchNode) => Err(TreeError::NoSuchNode {
                path: target.as_str().to_owned(),
            }),
            CallResult::Success(ObservationReply::WrongType { observed }) => {
                Err(TreeError::ObservationType {
                    path: target.as_str().to_owned(),
                    asked: std::any::type_name::<T>(),
                    observed,
                })
            }
            CallResult::Timeout => Err(TreeError::Timeout {
                what: "observation",
                timeout,
            }),
            CallResult::SenderError => Err(TreeError::NotRunning),
        }
    }

    /// Replaces the root spec and returns the new tree generation. The tree
    /// reconciles towards it on the next tick: children are added, updated,
    /// replaced and removed as the derived specs say. A changed root name or
    /// worker type replaces the root. (A new root whose constructor fails
    /// fails to start, and the root's restart policy applies.)
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
        self.check_running()?;
        self.check_not_fatal()?;
        validate_root(&root, &self.inner.shared.registry)?;
        let spec = top_spec(&root).map_err(|e| TreeError::Spawn(e.to_string()))?;
        let hash = spec.hash();
        // Bumped and sent together, so generations reach the top in order.
        let generation = self
            .inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if let Some(store) = &self.inner.shared.store {
            store.send(Change::Root(StoredRoot {
                spec: root,
                generation,
            }));
        }
        self.inner
            .top
            .cast(NodeMsg::UpdateSpec {
                spec: Arc::new(spec),
                hash,
                generation,
                decoded: None,
            })
            .map_err(|_| TreeError::NotRunning)?;
        Ok(generation)
    }

    /// Replaces the tree's global variables (`{{ global.* }}` in templates,
    /// `global.*` among a derivation's variables) and returns the new tree
    /// generation, as [`update_root_spec`](Self::update_root_spec) does:
    /// [`wait_generation`](Self::wait_generation) with it waits for every
    /// node to have acted on them.
    ///
    /// The globals travel down the tree as messages. Only nodes that depend
    /// on them apply them again — those whose spec has templates, or whose
    /// worker's `derive_desired` read its variables — and of those, a node
    /// derives again only if what its templates rendered changed or its
    /// derivation reads variables. A template that no longer renders (a
    /// global it reads was removed) is a configuration error of that node,
    /// naming the variable: the node keeps its last good spec, is unhealthy,
    /// and heals when globals that render arrive.
    ///
    /// # Errors
    ///
    /// [`TreeError::Fatal`] once the tree has given up, or
    /// [`TreeError::NotRunning`].
    pub fn update_globals(&self, globals: fsm_core::Map) -> Result<u64, TreeError> {
        self.check_running()?;
        self.check_not_fatal()?;
        // Bumped and sent together, so generations reach the top in order.
        let generation = self
            .inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let globals = Arc::new(crate::node::Globals::new(globals, generation));
        self.inner
            .top
            .cast(NodeMsg::Globals(globals))
            .map_err(|_| TreeError::NotRunning)?;
        Ok(generation)
    }

    /// The handle through which nodes reach the executor.
    #[cfg(test)]
    pub(crate) fn executor_handle(&self) -> &ExecutorHandle {
        &self.inner.shared.executor
    }

    /// What the tree restored when it was spawned on a store that held a
    /// tree (see `docs/persistence.md`); `None` when it had no store, or an
    /// empty one.
    #[must_use]
    pub fn restored(&self) -> Option<crate::snapshot::RestoreInfo> {
        self.inner.restore_info.clone()
    }

    /// What the tree's store actor has done and has waiting (see
    /// `docs/persistence.md`); `None` when the tree has no store.
    #[must_use]
    pub fn store_stats(&self) -> Option<crate::snapshot::StoreStats> {
        self.inner.store_counters.as_ref().map(|c| c.stats())
    }

    /// The executor's counters.
    ///
    /// # Errors
    ///
    /// [`TreeError::NotRunning`] if the tree or its executor is gone.
    pub async fn executor_stats(&self) -> Result<ExecutorStats, TreeError> {
        self.check_running()?;
        let executor = self
            .inner
            .shared
            .executor
            .get()
            .ok_or(TreeError::NotRunning)?;
        self.while_running(async {
            match executor.call(ExecMsg::Stats, None).await {
                Ok(CallResult::Success(stats)) => Ok(stats),
                _ => Err(TreeError::NotRunning),
            }
        })
        .await
    }
}

/// How long a shutdown waits past its deadline for killed node actors to be
/// gone.
const KILL_GRACE: Duration = Duration::from_millis(100);

impl Drop for Tree {
    /// A tree dropped without [`shutdown`](Tree::shutdown) is killed: no stop
    /// hooks run, and running actions are cancelled (their
    /// `ActionContext::cancelled` fires), so none keeps running detached.
    /// Its handles stop working, as after a shutdown.
    fn drop(&mut self) {
        self.handle.inner.gone.cancel();
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        if !self.stopped {
            self.handle.inner.top.kill();
            self.executor.kill();
        }
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
