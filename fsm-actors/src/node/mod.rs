//! The node actor: one ractor actor per worker node, supervising its
//! children.
//!
//! ```text
//!             tick                      ChildReport
//!   parent ─────────────▶  node  ─────────────────────▶ parent
//!          UpdateSpec        │ ▲
//!          ParentState       │ │ Observed (collector task)
//!                            │ │ ActionDone (executor)
//!              spawn_linked  ▼ │ ActorFailed / ActorTerminated (ractor links)
//!                        children ...
//! ```
//!
//! This file holds the actor's wiring: the [`Actor`] impl, the dispatch of
//! each message, and the node's state (its field layout is tuned: what
//! every tick reads comes first, what changes rarely is behind `cold`).
//! Each concern is in a file of its own, as `impl NodeState` blocks:
//!
//! | concern | file |
//! |---|---|
//! | the tick, and **the one statement of its order** | [`tick`] |
//! | the inputs: spec, variables, location; deriving the desired state | [`inputs`] |
//! | applying the desired children: plan, spawn, update, remove; mapped states | [`reconcile`] |
//! | the child table | [`children`] |
//! | collects, observations, staleness and hung-collector decisions | [`observation`] (the maths: [`fsm_core::freshness`]) |
//! | actions: to the executor, outcomes, retry backoff, the act-after gate | [`actions`] |
//! | status reports to the parent and the tree, generations, inspection | [`reports`] |
//! | a child ended: restart, backoff, escalation | [`supervise`] |
//! | stopping in order | [`stop`] |
//! | driving a node to `stopped` before it stops | [`drain`] |
//! | the messages | [`messages`] |

mod actions;
mod children;
mod drain;
mod inputs;
#[cfg(feature = "fault-injection")]
mod kill;
mod latest;
mod messages;
mod observation;
mod reconcile;
mod reports;
mod stop;
mod store;
mod supervise;
mod tick;
pub(crate) mod top;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fsm_core::{
    ActionReport, ChildSpec, DesiredState, NodePath, SpecHash, Supervision, WorkerRegistry,
    runtime::DecodedSpec, runtime::NodeDriver, runtime::SplitMix64, runtime::StableHasher,
    supervision::Circuit, supervision::RestartWindow,
};
use futures::future::Either;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::TreeConfig;
use crate::executor::{ActionId, ExecutorHandle};
use crate::snapshot::{SubtreeCounts, TreeStatus};
use crate::telemetry::metrics::{Labels, Metrics, NodeSeries, NodeWorkerMetrics};
use children::ChildTable;
pub(crate) use inputs::{Globals, ParentContext};
use inputs::{Incarnation, Inputs};
pub(crate) use messages::{ChildReport, NodeMsg};
use observation::AbortOnDrop;
#[cfg(feature = "cluster")]
pub(crate) use stop::EXIT_SHUTDOWN;
pub(crate) use stop::StopSink;
pub(crate) use store::unix_ms_now;
use tick::TickRest;

/// What every node of a tree shares: read-only configuration and handles,
/// and two counters.
pub(crate) struct Shared {
    pub(crate) registry: WorkerRegistry,
    pub(crate) config: TreeConfig,
    /// The tree's template engine and its compile cache.
    pub(crate) templates: fsm_templates::Templates,
    /// The executor running now (replaced if one dies).
    pub(crate) executor: ExecutorHandle,
    /// Where the top node publishes the tree's status.
    pub(crate) status: watch::Sender<TreeStatus>,
    pub(crate) next_action_id: AtomicU64,
    /// Node actors alive now (the top node excluded).
    pub(crate) live_nodes: AtomicU64,
    /// Restarts scheduled so far, in the whole tree (nodes removed since
    /// included).
    pub(crate) restarts: AtomicU64,
    /// The tree's metric instruments.
    pub(crate) metrics: Arc<Metrics>,
    /// Where killed nodes record themselves during the tree's shutdown.
    pub(crate) stops: stop::StopSink,
    /// The tree's store actor, when the tree has a store.
    pub(crate) store: Option<crate::persist::StoreLink>,
    /// What the tree restored from its store, when it did.
    pub(crate) restored: Option<crate::persist::Restored>,
    /// The fault-injection probability per node and tick, as `f64` bits.
    #[cfg(feature = "fault-injection")]
    pub(crate) chaos: Padded<AtomicU64>,
}

/// A value alone on its cache line: every node reads `chaos` on every tick,
/// while other shared counters are written.
#[cfg(feature = "fault-injection")]
#[repr(align(64))]
pub(crate) struct Padded<T>(pub(crate) T);

#[cfg(feature = "fault-injection")]
impl Shared {
    fn chaos_probability(&self) -> f64 {
        f64::from_bits(self.chaos.0.load(Ordering::Relaxed))
    }
}

/// How far a message other than a tick went in place.
enum Handled {
    /// All of it; nothing to report.
    Done,
    /// Then wait for this, if anything, and report.
    Then(Option<Waiting>),
}

/// What is left of a message that must wait.
enum Waiting {
    Tick(TickRest),
    Shutdown {
        deadline: Instant,
        reply: ractor::RpcReplyPort<Vec<crate::snapshot::StopRecord>>,
    },
    RestartDue,
    ChildStopped {
        id: ractor::ActorId,
        records: Vec<crate::snapshot::StopRecord>,
    },
    /// The node's drive to `stopped` is over: stop (see `drain`).
    Drained,
}

/// How a node is started.
pub(crate) struct NodeArgs {
    pub(crate) path: NodePath,
    pub(crate) spec: Arc<ChildSpec>,
    /// `spec.hash()`, computed once by whoever made the spec.
    pub(crate) spec_hash: SpecHash,
    /// The incarnation's number under its parent (seeds its random source).
    pub(crate) incarnation: u64,
    /// The generation of the node's spec (see `Cold::generation`).
    pub(crate) spec_generation: u64,
    /// The tree generation the parent has applied when it starts the node.
    pub(crate) tree_generation: u64,
    /// Set by whoever ticks the node when it sends a tick; the node clears
    /// it when it handles one (see `ChildEntry::tick_pending`).
    pub(crate) tick_pending: Option<Arc<std::sync::atomic::AtomicBool>>,
    pub(crate) restarts: u64,
    /// The backoff attempt its next failure will use (see
    /// `ChildEntry::attempt`), kept for its observed document.
    pub(crate) attempt: u32,
    pub(crate) parent: Option<ActorRef<NodeMsg>>,
    pub(crate) parent_state: Option<String>,
    /// The variables and location inherited from the parent.
    pub(crate) context: Arc<ParentContext>,
    /// The tree's globals, as the parent has them.
    pub(crate) globals: Arc<Globals>,
    pub(crate) shared: Arc<Shared>,
    /// A ready driver (the top node); otherwise the registry builds one.
    pub(crate) driver: Option<Box<dyn NodeDriver>>,
    /// The spec, decoded already by the parent's validation.
    pub(crate) decoded: Option<DecodedSpec>,
    /// A driver built already for the node's first child (the root, built
    /// by `Tree::spawn` so that a failing constructor refuses the tree).
    pub(crate) prebuilt_child: Option<Box<PrebuiltChild>>,
    /// `Some`: tick once as soon as started, inside this span (the
    /// parent's, when it starts the node from its tick). Every node but the
    /// top does: a new subtree starts without waiting for a tick to reach
    /// it, and its first report comes with its first observation.
    pub(crate) first_tick: Option<tracing::Span>,
}

pub(crate) struct NodeActor;

/// A child's driver, built before the child starts.
pub(crate) struct PrebuiltChild {
    pub(crate) path: NodePath,
    pub(crate) worker_type: String,
    pub(crate) driver: Box<dyn NodeDriver>,
}

impl PrebuiltChild {
    /// The driver, if it was built for this child: the root spec may have
    /// been replaced before the root started.
    pub(crate) fn driver_for(
        self,
        path: &NodePath,
        worker_type: &str,
    ) -> Option<Box<dyn NodeDriver>> {
        (self.path == *path && self.worker_type == worker_type).then_some(self.driver)
    }
}

/// The collector side of a node.
#[repr(C)] // what every tick reads first (see `NodeState`)
struct Collector {
    in_flight: bool,
    /// Collect again as soon as the running one ends (an action finished).
    again: bool,
    /// The last collect failed (its error is `Cold::collect_error`).
    failed: bool,
    /// The collect made as the node started (ready at once) is the newest
    /// observation and nothing has run on it yet: the first tick steps on
    /// it and does not collect again in the same instant.
    fresh_from_start: bool,
    /// Until when the collector can be neither stale nor failed: the last
    /// good observation (or the start) plus the smaller of the two
    /// thresholds; `None`: beyond what an `Instant` holds. Checked on every
    /// tick and report, so that a healthy node measures no durations.
    /// (The last good observation, or the start, is this less the quiet
    /// period: see `FreshnessLimits::observed_since`.)
    quiet_until: Option<Instant>,
    /// Collects started so far (ready at once or not): the number of the
    /// latest one.
    seq: u64,
    /// The number of the collect whose observation is installed.
    observed_seq: u64,
    /// The state machine waits for an observation from a collect numbered
    /// above this: one started after the node's last action ended.
    act_after: u64,
    /// `Some` for a worker type observed only every so often
    /// (`TreeConfig::observation_intervals`; boxed: most are not).
    interval: Option<Box<observation::Interval>>,
}

/// What the node last reported upward, to send only changes.
struct Reported {
    /// The tree generation the whole subtree had acted on.
    synced: u64,
    state: &'static str,
    desired_version: u64,
    healthy: bool,
    stale: bool,
    converged: bool,
    subtree: SubtreeCounts,
    settled: bool,
}

/// A node's state. What every tick or message touches is kept here, close
/// together; what changes rarely is behind `cold`, so that a tree of many
/// nodes touches as little memory per tick as it can.
#[repr(C)]
pub(crate) struct NodeState {
    // What every tick of a leaf reads comes first, in about the order it is
    // read (`repr(C)` keeps this order): in a large tree a tick's cost is
    // mostly the cache lines it touches.
    shutting_down: bool,
    /// Whether a spec has ever been installed (the node can observe).
    installed: bool,
    /// A `FlushReport` is on its way to this node.
    flush_scheduled: bool,
    /// The node's spec generation changed and it has not acted on it yet.
    generation_pending: bool,
    /// The worker has declared children from its state (`cold.from_state`
    /// is set): a bool here, so that other nodes' ticks do not read `cold`.
    has_state_children: bool,
    /// Something the node's observed document shows may have changed
    /// since it was last handed to the store (see `store`).
    store_dirty: bool,
    ticks: u64,
    /// The tree generation this node has applied: the one its last tick
    /// carried (at the top: the tree's own).
    tree_generation: u64,
    shared: Arc<Shared>,
    parent: Option<ActorRef<NodeMsg>>,
    /// See `NodeArgs::tick_pending`.
    tick_pending: Option<Arc<std::sync::atomic::AtomicBool>>,
    driver: Box<dyn NodeDriver>,
    children: ChildTable,
    /// What keeps the node from being configured, if anything (boxed: most
    /// nodes never have a problem, and every report reads this).
    problems: Option<Box<Problems>>,
    /// The hash of the derived children declaration, computed once per
    /// derivation (a parent's children specs hold its whole subtree's
    /// specs).
    desired_children: SpecHash,
    /// The declaration hash the child table matches.
    applied_children: Option<SpecHash>,
    /// The declaration hash that failed validation (not retried until
    /// changed).
    rejected_children: Option<SpecHash>,
    /// How many children the derivation declared. (The declaration itself,
    /// `cold.declared`, is consumed by the reconcile that follows: the child
    /// table keeps each spec, shared with the child.)
    declared_count: usize,
    collector: Collector,
    action: Option<(ActionId, &'static str)>,
    /// How the last action ended (read by every state machine step, so kept
    /// here, boxed: most nodes never run one).
    last_action: Option<Box<ActionReport>>,
    /// The mapped desired state from the parent, overriding the derived one.
    parent_state: Option<String>,
    /// The last good derived desired state's own target (its children and
    /// supervision are in `cold`).
    desired_state: String,
    /// See `state_is_desired`.
    state_match: std::cell::Cell<(usize, u64, bool)>,
    /// Bumped whenever the effective desired state may have changed.
    desired_version: u64,
    reported: Option<Reported>,
    /// The children count last recorded as a metric.
    recorded_children: Option<usize>,
    path: NodePath,

    // Rarely read on a tick: after what every tick reads.
    /// When this node last reported (or, at the top, published) a change.
    last_report_at: Instant,
    cold: Box<Cold>,
}

impl Drop for NodeState {
    /// However the node ends, its part of the summed metrics goes with it.
    fn drop(&mut self) {
        self.series().ended(
            self.driver.state_name(),
            self.recorded_children,
            self.cold.circuit.is_open(),
        );
    }
}

/// A node's configuration problems.
#[derive(Default)]
struct Problems {
    /// Variables, location, templates or decoding.
    input: Option<String>,
    /// `derive_desired` said the spec is invalid.
    derive: Option<String>,
    /// The children declaration was rejected.
    declaration: Option<String>,
    /// The desired state is not a state of the worker.
    state: Option<String>,
    /// The tree's store cannot be written (on the root only).
    store: Option<String>,
}

/// Which of a node's [`Problems`].
#[derive(Clone, Copy)]
enum Problem {
    Input,
    Derive,
    Declaration,
    State,
    Store,
}

impl Problems {
    fn slot(&mut self, which: Problem) -> &mut Option<String> {
        match which {
            Problem::Input => &mut self.input,
            Problem::Derive => &mut self.derive,
            Problem::Declaration => &mut self.declaration,
            Problem::State => &mut self.state,
            Problem::Store => &mut self.store,
        }
    }

    fn first(&self) -> Option<&String> {
        self.input
            .as_ref()
            .or(self.derive.as_ref())
            .or(self.declaration.as_ref())
            .or(self.state.as_ref())
            .or(self.store.as_ref())
    }
}

/// The parts of a node's state that change rarely.
struct Cold {
    spec: Arc<ChildSpec>,
    /// See `NodeArgs::prebuilt_child`; taken at the first child start.
    prebuilt_child: Option<Box<PrebuiltChild>>,
    /// The children the last good derivation declared, until the reconcile
    /// that follows consumes them.
    declared: Vec<ChildSpec>,
    /// The children the worker declared from its state, with the derived
    /// declaration kept to combine them with (see `reconcile::FromState`);
    /// `None` until a transition first declares some.
    from_state: Option<Box<reconcile::FromState>>,
    /// How the node supervises its children, if the derivation said.
    /// (Boxed: most nodes never say, and this part is written whole when
    /// a node starts.)
    supervision: Option<Box<Supervision>>,
    /// The hash of each of `desired.children`, computed once per
    /// derivation for the reconcile (and consumed with them).
    child_hashes: Vec<SpecHash>,
    restarts: u64,
    /// See [`NodeArgs::attempt`].
    attempt: u32,
    rng: SplitMix64,
    live: stop::LiveGuard,
    /// Spec, variables and location, and what became of them.
    inputs: Inputs,
    /// The tree's globals, as this node last received them.
    globals: Arc<Globals>,
    next_incarnation: u64,
    /// The generation of the node's declared spec: 1 when first declared,
    /// bumped by every change its parent (or, at the top, the tree's
    /// owner) declares.
    generation: u64,
    /// The generation the node last acted on: its inputs applied (or
    /// rejected with a problem shown) and its children reconciled.
    observed_generation: u64,
    restart_window: RestartWindow,
    action_error: Option<String>,
    /// The OpenTelemetry context of the last tick span (for links from
    /// restarts and actions), when spans are exported.
    /// (Boxed, and the box reused: only with spans exported.)
    tick_origin: Option<Box<opentelemetry::trace::SpanContext>>,
    /// The worker type, shared with the action spans.
    worker_type: Arc<str>,
    /// When the node entered its current state.
    state_since: Instant,
    /// The last of this node's stops of single children (removal,
    /// replacement, group restart). Each stop waits for the one before, so
    /// that subtrees stop one at a time, in the order they were asked to.
    stop_chain: Option<JoinHandle<()>>,
    /// See [`NodeArgs::first_tick`]; taken by `post_start`. The span is
    /// kept only when enabled (boxed: this part is written whole when a
    /// node starts).
    first_tick: Option<Option<Box<tracing::Span>>>,
    spec_hash: SpecHash,
    /// The hash of the inherited context (cached from `cold.inputs`).
    context_hash: SpecHash,
    /// The spec and inherited-context hashes last applied or tried.
    inputs_seen: Option<(SpecHash, SpecHash)>,
    circuit: Circuit,
    /// What the children's mapped states and context were last sent for.
    mapped_for: Option<(u64, u64, SpecHash)>,
    started: Instant,
    /// The spec as the parent decoded it (for `spec_hash`), until
    /// installed.
    decoded: Option<(SpecHash, DecodedSpec)>,
    /// The collector task running now, if any (aborted with the node).
    collect_task: Option<AbortOnDrop>,
    /// Failed collects, once there was one (boxed: most nodes never have
    /// one, and this part is written whole when a node starts).
    collect_trouble: Option<Box<CollectTrouble>>,
    /// At the top, once the tree gave up: the records of the ordered stop
    /// of its nodes, for the tree's shutdown.
    gave_up: Option<Box<[crate::snapshot::StopRecord]>>,
    /// While the node drives itself to `stopped` before it stops.
    drain: Option<Box<drain::Drain>>,
    /// Why the state machine last changed state.
    transition_reason: std::borrow::Cow<'static, str>,
    /// The last failed action, while its retry backs off (boxed: rare).
    action_retry: Option<Box<ActionRetry>>,
    /// The spec hash and generation of the desired document last handed
    /// to the store.
    stored_desired: Option<(SpecHash, u64)>,
    /// The observed document last handed to the store.
    stored_observed: Option<Box<fsm_core::store::ObservedDocument>>,
    /// The node's last observed document in the store it was restored
    /// from (first incarnation in this process only).
    restored: Option<Box<fsm_core::store::ObservedDocument>>,
    /// Its action found interrupted at restore, until the first traced
    /// tick records it.
    interrupted: Option<Box<fsm_core::store::ActionRecord>>,
}

/// A node's failed collects, in this incarnation.
struct CollectTrouble {
    /// How many failed or timed out.
    failures: u64,
    /// Why the last one failed, until a collect succeeds.
    error: Option<String>,
    /// When the last one failed.
    failed_at: Instant,
    /// When a failure was last logged (see `collect_failed`).
    logged_at: Instant,
}

impl Cold {
    /// Why the last collect failed, while no collect has succeeded since.
    fn collect_error(&self) -> Option<&String> {
        self.collect_trouble.as_ref()?.error.as_ref()
    }
}

/// A failed action held back until `due`.
struct ActionRetry {
    action: String,
    /// The backoff attempt: 0 after the first failure in a row.
    attempt: u32,
    due: Instant,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Actor for NodeActor {
    type Msg = NodeMsg;
    /// Not boxed: ractor keeps it in the actor's task, beside what every
    /// message touches anyway (boxed, a tick costs one more cache miss per
    /// node, which in a large tree is a seventh of the tick).
    type State = NodeState;
    type Arguments = NodeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeMsg>,
        args: NodeArgs,
    ) -> Result<NodeState, ActorProcessingErr> {
        let driver = match args.driver {
            Some(d) => d,
            None => {
                // Made only if the worker asks for its metrics handle.
                let metrics = || -> Arc<dyn fsm_core::WorkerMetrics> {
                    Arc::new(NodeWorkerMetrics::new(
                        Arc::clone(&args.shared.metrics),
                        Arc::from(args.spec.worker_type.as_str()),
                        &args.path,
                    ))
                };
                args.shared.registry.construct_with_metrics(
                    &args.path,
                    &args.spec.worker_type,
                    &metrics,
                )?
            }
        };
        let incarnation = Incarnation::now(myself.get_id());
        let counted = args.parent.is_some().then(|| Arc::clone(&args.shared));
        let live = stop::LiveGuard::new(counted, args.path.clone());
        let mut seed = StableHasher::new();
        seed.write_u64(args.shared.config.seed);
        seed.write_str(args.path.as_str());
        seed.write_u64(args.incarnation);
        let spec_hash = args.spec_hash;
        let worker_type = Arc::clone(driver.worker_type());
        let context_hash = args.context.hash;
        let started = Instant::now();
        let interval = observation::Interval::of(&args.shared.config, &args.spec.worker_type);
        let quiet_until = observation::limits(&args.shared.config, interval.as_deref())
            .quiet_until(started.into_std())
            .map(Instant::from_std);
        let restored = args
            .shared
            .restored
            .as_ref()
            .and_then(|r| r.take(&args.path))
            .unwrap_or(crate::persist::RestoredNode {
                observed: None,
                interrupted: None,
            });
        // An action its earlier process never finished shows as the node's
        // last action, `interrupted`.
        let last_action = restored.interrupted.as_ref().map(|a| {
            Box::new(ActionReport {
                action: a.action.clone(),
                outcome: fsm_core::ActionOutcome::Interrupted,
            })
        });
        let state = NodeState {
            path: args.path,
            parent: args.parent,
            tick_pending: args.tick_pending,
            shared: args.shared,
            driver,
            ticks: 0,
            tree_generation: args.tree_generation,
            generation_pending: true,
            has_state_children: false,
            store_dirty: false,
            parent_state: args.parent_state,
            desired_state: String::new(),
            desired_children: DesiredState::new("").children_hash(),
            declared_count: 0,
            desired_version: 0,
            installed: false,
            problems: None,
            children: ChildTable::default(),
            applied_children: None,
            rejected_children: None,
            collector: Collector {
                seq: 0,
                observed_seq: 0,
                act_after: 0,
                in_flight: false,
                again: false,
                failed: false,
                fresh_from_start: false,
                quiet_until,
                interval,
            },
            action: None,
            last_action,
            last_report_at: started,
            state_match: std::cell::Cell::new((0, u64::MAX, false)),
            reported: None,
            flush_scheduled: false,
            recorded_children: None,
            shutting_down: false,
            cold: Box::new(Cold {
                spec: args.spec,
                prebuilt_child: args.prebuilt_child,
                declared: Vec::new(),
                from_state: None,
                supervision: None,
                child_hashes: Vec::new(),
                restarts: args.restarts,
                attempt: args.attempt,
                rng: SplitMix64::new(seed.finish_u64()),
                live,
                inputs: Inputs::new(args.context, incarnation),
                globals: args.globals,
                next_incarnation: 0,
                generation: args.spec_generation,
                observed_generation: 0,
                restart_window: RestartWindow::new(),
                action_error: None,
                tick_origin: None,
                worker_type,
                state_since: started,
                stop_chain: None,
                first_tick: args
                    .first_tick
                    .map(|span| (!span.is_disabled()).then(|| Box::new(span))),
                spec_hash,
                context_hash,
                inputs_seen: None,
                circuit: Circuit::new(),
                mapped_for: None,
                started,
                decoded: args.decoded.map(|d| (spec_hash, d)),
                collect_task: None,
                collect_trouble: None,
                transition_reason: std::borrow::Cow::Borrowed(""),
                action_retry: None,
                gave_up: None,
                drain: None,
                stored_desired: None,
                stored_observed: None,
                restored: restored.observed.map(Box::new),
                interrupted: restored.interrupted.clone().map(Box::new),
            }),
        };
        // Counted from here: dropping the state takes it back out.
        state.series().started(state.driver.state_name());
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<NodeMsg>,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        state.apply_inputs()?;
        state.store_started();
        state.start_collect(&myself, &tracing::Span::none(), now);
        if let Some(parent) = state.cold.first_tick.take() {
            let parent = parent.map_or_else(tracing::Span::none, |span| *span);
            // The first tick, with the first observation if it was ready
            // (then it does not collect again: see `Collector`).
            state.collector.fresh_from_start = state.has_fresh_observation();
            let ticked = state.tick(&myself, parent, now).await;
            state.collector.fresh_from_start = false;
            ticked?;
            if !state.shutting_down {
                state.report(&myself, now);
            }
        }
        Ok(())
    }

    /// Not an `async fn`: the message is handled when ractor calls this
    /// (inside its handler poll, so a panic is caught as in a future), as
    /// far as it goes without waiting, and only what must wait becomes a
    /// (boxed) future. ractor writes and moves the handler future for every
    /// message; an `async fn` would hold the message in it.
    fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        state: &mut NodeState,
    ) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send {
        match state.handle_in_place(&myself, msg) {
            Ok(None) => Either::Left(std::future::ready(Ok(()))),
            Err(e) => Either::Left(std::future::ready(Err(e))),
            Ok(Some((waiting, now))) => Either::Right(state.handle_waiting(myself, waiting, now)),
        }
    }

    /// Like `handle`, not an `async fn`.
    fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeMsg>,
        event: SupervisionEvent,
        state: &mut NodeState,
    ) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send {
        // Never stop because a child ended (ractor's default): decide here.
        match stop::child_exit(event) {
            Some((id, reason)) if !state.shutting_down => Either::Right(Box::pin(async move {
                state.child_exited(id, reason, &myself).await?;
                state.report_change(&myself, Instant::now());
                Ok(())
            })),
            _ => Either::Left(std::future::ready(Ok(()))),
        }
    }
}

impl NodeState {
    /// Handles a message as far as it goes without waiting: all of it, or
    /// up to what must wait (returned, with the time the message was
    /// handled at).
    fn handle_in_place(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        msg: NodeMsg,
    ) -> Result<Option<(Waiting, Instant)>, ActorProcessingErr> {
        if self.shutting_down {
            let waiting = self.while_shutting_down(myself, msg);
            return Ok(waiting.map(|w| (w, Instant::now())));
        }
        // One clock read per message.
        let now = Instant::now();
        let waiting = match msg {
            NodeMsg::Tick(parent, generation) => {
                if let Some(pending) = &self.tick_pending {
                    pending.store(false, Ordering::Relaxed);
                }
                self.set_tree_generation(generation);
                self.tick_in_place(myself, parent, now)?.map(Waiting::Tick)
            }
            other => match self.handle_other(myself, other, now)? {
                Handled::Done => return Ok(None),
                Handled::Then(waiting) => waiting,
            },
        };
        if let Some(waiting) = waiting {
            return Ok(Some((waiting, now)));
        }
        self.report_change(myself, now);
        Ok(None)
    }

    /// Every message but a tick, as far as it goes without waiting. (Out of
    /// line: the tick is the message a settled tree handles, and its code
    /// stays short.)
    #[inline(never)]
    fn handle_other(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        msg: NodeMsg,
        now: Instant,
    ) -> Result<Handled, ActorProcessingErr> {
        let waiting = match msg {
            // (`handle_in_place` handles ticks and never passes one here.)
            NodeMsg::Tick(..) => return Ok(Handled::Done),
            NodeMsg::UpdateSpec {
                spec,
                hash,
                generation,
                decoded,
            } => {
                if generation < self.cold.generation {
                    // Overtaken by a later change (two owners updating the
                    // root at once): the later one stands.
                    return Ok(Handled::Done);
                }
                if generation != self.cold.generation {
                    self.cold.generation = generation;
                    self.generation_pending = true;
                }
                if let Some(decoded) = decoded {
                    self.cold.decoded = Some((hash, decoded));
                }
                self.update_spec(spec, hash)?;
                self.store_desired();
                None
            }
            NodeMsg::ParentContext(context) => {
                self.update_context(context)?;
                None
            }
            NodeMsg::Globals(globals) => {
                if self.is_top() && globals.generation > self.cold.generation {
                    // A tree generation of its own, as a root spec update.
                    self.cold.generation = globals.generation;
                    self.generation_pending = true;
                }
                self.update_globals(globals)?;
                None
            }
            NodeMsg::ParentState(mapped) => {
                self.set_parent_state(mapped);
                None
            }
            NodeMsg::ChildReport(report) => {
                self.child_report(*report);
                if self.hold_report(now) {
                    // More of this burst is on its way.
                    return Ok(Handled::Done);
                }
                if !self.flush_scheduled {
                    self.flush_scheduled = myself.cast(NodeMsg::FlushReport).is_ok();
                }
                if self.flush_scheduled {
                    return Ok(Handled::Done);
                }
                None
            }
            NodeMsg::FlushReport => {
                self.flush_scheduled = false;
                if self.hold_report(now) {
                    // A child started since: its first report flushes.
                    return Ok(Handled::Done);
                }
                None
            }
            NodeMsg::Observed { seq, result } => {
                self.observed(seq, result, myself);
                None
            }
            NodeMsg::ActionDone { id, report } => {
                self.action_done(id, report, myself);
                None
            }
            NodeMsg::Inspect { deadline, reply } => {
                self.inspect(deadline, reply);
                return Ok(Handled::Done);
            }
            NodeMsg::ReadObservation(request) => {
                self.read_observation(request, now);
                return Ok(Handled::Done);
            }
            #[cfg(feature = "fault-injection")]
            NodeMsg::Kill(path) => {
                self.kill(&path, myself);
                return Ok(Handled::Done);
            }
            NodeMsg::Shutdown { deadline, reply } => Some(Waiting::Shutdown { deadline, reply }),
            NodeMsg::RestartDue => Some(Waiting::RestartDue),
            NodeMsg::ChildStopped { id, records } => Some(Waiting::ChildStopped { id, records }),
            // Only while stopping (see `drain`).
            NodeMsg::DrainTick => None,
            NodeMsg::StoreProblem(problem) => {
                self.store_problem(problem);
                None
            }
        };
        Ok(Handled::Then(waiting))
    }

    /// The rest of a message that must wait, boxed.
    fn handle_waiting(
        &mut self,
        myself: ActorRef<NodeMsg>,
        waiting: Waiting,
        now: Instant,
    ) -> Pin<Box<impl Future<Output = Result<(), ActorProcessingErr>> + Send + '_>> {
        Box::pin(async move {
            match waiting {
                Waiting::Tick(rest) => self.tick_rest(&myself, rest, now).await?,
                Waiting::Shutdown { deadline, reply } => {
                    let end = drain::DrainEnd::Reply(reply);
                    return self.stop_gracefully(deadline, end, &myself).await;
                }
                Waiting::Drained => return self.end_drain(&myself).await,
                Waiting::RestartDue => self.start_due_children(&myself).await?,
                Waiting::ChildStopped { id, records } => {
                    self.child_stopped(id, &records, &myself).await?;
                }
            }
            self.report_change(&myself, now);
            Ok(())
        })
    }

    /// The node's metric labels: its worker type, and its path when
    /// per-node metrics are on (sharing their strings).
    fn metric_attr(&self) -> Labels {
        self.shared
            .metrics
            .labels(Arc::clone(&self.cold.worker_type), &self.path, [])
    }

    /// The node's part in the metrics that sum over nodes.
    fn series(&self) -> NodeSeries<'_> {
        NodeSeries {
            metrics: &self.shared.metrics,
            worker_type: &self.cold.worker_type,
            path: &self.path,
            counted: self.parent.is_some(),
        }
    }

    fn config(&self) -> &TreeConfig {
        &self.shared.config
    }

    fn supervision(&self) -> &Supervision {
        self.cold
            .supervision
            .as_deref()
            .unwrap_or(&self.shared.config.supervision)
    }

    /// Sets or clears one of the node's configuration problems.
    fn set_problem(&mut self, which: Problem, problem: Option<String>) {
        if problem.is_none() && self.problems.is_none() {
            return;
        }
        let problems = self.problems.get_or_insert_with(Box::default);
        *problems.slot(which) = problem;
        if problems.first().is_none() {
            self.problems = None;
        }
    }

    /// The effective desired state: the parent's mapping wins over the
    /// node's own derivation.
    fn desired_state(&self) -> &str {
        self.parent_state.as_deref().unwrap_or(&self.desired_state)
    }

    fn is_top(&self) -> bool {
        self.parent.is_none()
    }

    // ----- tick -------------------------------------------------------

    // ----- children -----------------------------------------------------

    // ----- observation and state machine ----------------------------------

    // ----- health and reporting -----------------------------------------

    /// The store actor's news: the store cannot be written (`Some`), or
    /// can again. The top passes it to the root, which shows it.
    fn store_problem(&mut self, problem: Option<String>) {
        if self.is_top() {
            if let Some(root) = self.children.entries().first().and_then(|c| c.actor()) {
                let _ = root.cast(NodeMsg::StoreProblem(problem.clone()));
            }
        } else if self.problems.as_ref().and_then(|p| p.store.as_ref()) != problem.as_ref() {
            self.set_problem(Problem::Store, problem);
            self.store_dirty = true;
        }
    }

    fn set_parent_state(&mut self, mapped: Option<String>) {
        if mapped != self.parent_state {
            self.parent_state = mapped;
            self.desired_version += 1;
            self.check_desired_state();
        }
    }

    // ----- inspect ---------------------------------------------------------
}
