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
//! A node derives its desired state when its inputs arrive (at start, with
//! `UpdateSpec` or `ParentContext`), if they changed by hash. One tick of a
//! node, in order:
//!
//! 1. give up if the collector has failed for too long (a failure);
//! 2. (derived already, when the inputs arrived);
//! 3. update the circuit from the children: open while any is failed,
//!    restarting or stale;
//! 4. reconcile the children against the declaration: validate, then stop
//!    removed ones (reverse start order, each subtree in order), start new
//!    ones, send `UpdateSpec` to changed ones, replace those whose worker
//!    type changed; start children whose restart is due;
//! 5. send each child its mapped desired state, if it changed;
//! 6. forward the tick to the children;
//! 7. unless the circuit is open, run the state machine on the freshest
//!    observation (paused while stale); hand any action to the executor, at
//!    most one in flight;
//! 8. start the next collect if none is running;
//! 9. report status and subtree counts upward, if they changed.
//!
//! Failures and restarts are in [`supervise`]; ordered stopping in [`stop`].

mod children;
mod drain;
mod inputs;
mod messages;
mod stop;
mod supervise;
pub(crate) mod top;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fsm_core::{
    ActionOutcome, ActionReport, BoxedAction, ChildSpec, DesiredState, NodePath, PlanStep, Signal,
    SpecHash, Supervision, WorkerRegistry, runtime::CollectStart, runtime::DecodedSpec,
    runtime::NodeDriver, runtime::SplitMix64, runtime::StableHasher, runtime::StepInput,
    runtime::decode_children_hashed, runtime::panic_message, runtime::plan_children_hashed,
    supervision::Circuit, supervision::CircuitChange, supervision::RestartWindow,
};
use futures::FutureExt;
use futures::future::Either;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use tracing::Instrument;

use crate::config::TreeConfig;
use crate::executor::{ActionId, ActionRequest, ExecMsg, ExecutorHandle};
use crate::snapshot::{NodeSnapshot, RestartingInfo, SubtreeCounts, TreeStatus};
use crate::telemetry;
use crate::telemetry::metrics::{Labels, Metrics, NodeSeries, NodeWorkerMetrics};
use children::{ChildEntry, ChildRun, ChildTable};
pub(crate) use inputs::ParentContext;
use inputs::{Incarnation, Inputs};
pub(crate) use messages::{ChildReport, NodeMsg};
pub(crate) use stop::StopSink;

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

/// What the first half of a tick found.
enum Prepared {
    /// Nothing to wait for.
    Ready,
    /// The declared children changed: reconcile.
    Reconcile,
    /// The collector has failed for too long: fail the node.
    CollectorFailed(String),
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

/// What is left of a tick that must wait, with the tick's span.
enum TickRest {
    /// From after the first half (see `Prepared`).
    Prepared(tracing::Span, Prepared),
    /// Only the state machine's signal to act on.
    Signal(tracing::Span, Signal),
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
    pub(crate) parent: Option<ActorRef<NodeMsg>>,
    pub(crate) parent_state: Option<String>,
    /// The variables and location inherited from the parent.
    pub(crate) context: Arc<ParentContext>,
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

/// How much earlier than its own inspection deadline a node at depth 1
/// asks its children to answer by (see `NodeState::inspect`).
const INSPECT_MARGIN: Duration = Duration::from_millis(2);

/// How long after a good observation (or the start) a node can be neither
/// stale nor failed.
fn quiet_for(config: &TreeConfig) -> Duration {
    config.stale_after.min(config.collector_restart_after)
}

/// A task that is aborted when its handle is dropped (with the node).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
    /// Until when the collector can be neither stale nor failed: the last
    /// good observation (or the start) plus the smaller of the two
    /// thresholds; `None`: beyond what an `Instant` holds. Checked on every
    /// tick and report, so that a healthy node measures no durations.
    /// (The last good observation, or the start, is this less the quiet
    /// period: see `observed_since`.)
    quiet_until: Option<Instant>,
    /// Collects started so far (ready at once or not): the number of the
    /// latest one.
    seq: u64,
    /// The number of the collect whose observation is installed.
    observed_seq: u64,
    /// The state machine waits for an observation from a collect numbered
    /// above this: one started after the node's last action ended.
    act_after: u64,
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
}

/// Which of a node's [`Problems`].
#[derive(Clone, Copy)]
enum Problem {
    Input,
    Derive,
    Declaration,
    State,
}

impl Problems {
    fn slot(&mut self, which: Problem) -> &mut Option<String> {
        match which {
            Problem::Input => &mut self.input,
            Problem::Derive => &mut self.derive,
            Problem::Declaration => &mut self.declaration,
            Problem::State => &mut self.state,
        }
    }

    fn first(&self) -> Option<&String> {
        self.input
            .as_ref()
            .or(self.derive.as_ref())
            .or(self.declaration.as_ref())
            .or(self.state.as_ref())
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
    /// How the node supervises its children, if the derivation said.
    /// (Boxed: most nodes never say, and this part is written whole when
    /// a node starts.)
    supervision: Option<Box<Supervision>>,
    /// The hash of each of `desired.children`, computed once per
    /// derivation for the reconcile (and consumed with them).
    child_hashes: Vec<SpecHash>,
    restarts: u64,
    rng: SplitMix64,
    live: stop::LiveGuard,
    /// Spec, variables and location, and what became of them.
    inputs: Inputs,
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
    /// Why the last collect failed, if it did.
    collect_error: Option<String>,
    /// At the top, once the tree gave up: the records of the ordered stop
    /// of its nodes, for the tree's shutdown.
    gave_up: Option<Vec<crate::snapshot::StopRecord>>,
    /// While the node drives itself to `stopped` before it stops.
    drain: Option<Box<drain::Drain>>,
    /// Collects that failed or timed out, in this incarnation.
    collect_failures: u64,
    /// When the last collect failed.
    collect_failed_at: Option<Instant>,
    /// When a failed collect was last logged (see `collect_failed`).
    collect_logged_at: Option<Instant>,
    /// Why the state machine last changed state.
    transition_reason: std::borrow::Cow<'static, str>,
    /// The last failed action, while its retry backs off.
    action_retry: Option<ActionRetry>,
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
        let worker_type = Arc::from(args.spec.worker_type.as_str());
        let context_hash = args.context.hash;
        let started = Instant::now();
        let quiet_until = started.checked_add(quiet_for(&args.shared.config));
        let state = NodeState {
            path: args.path,
            parent: args.parent,
            tick_pending: args.tick_pending,
            shared: args.shared,
            driver,
            ticks: 0,
            tree_generation: args.tree_generation,
            generation_pending: true,
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
                quiet_until,
            },
            action: None,
            last_action: None,
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
                supervision: None,
                child_hashes: Vec::new(),
                restarts: args.restarts,
                rng: SplitMix64::new(seed.finish_u64()),
                live,
                inputs: Inputs::new(args.context, incarnation),
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
                collect_error: None,
                collect_failures: 0,
                collect_failed_at: None,
                collect_logged_at: None,
                transition_reason: std::borrow::Cow::Borrowed(""),
                action_retry: None,
                gave_up: None,
                drain: None,
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
        state.start_collect(&myself, &tracing::Span::none(), now);
        if let Some(parent) = state.cold.first_tick.take() {
            let parent = parent.map_or_else(tracing::Span::none, |span| *span);
            // The first tick, with the first observation if it was ready.
            state.tick(&myself, parent, now).await?;
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
            NodeMsg::UpdateSpec(spec, hash, generation) => {
                if generation < self.cold.generation {
                    // Overtaken by a later change (two owners updating the
                    // root at once): the later one stands.
                    return Ok(None);
                }
                if generation != self.cold.generation {
                    self.cold.generation = generation;
                    self.generation_pending = true;
                }
                self.update_spec(spec, hash)?;
                None
            }
            NodeMsg::ParentContext(context) => {
                self.update_context(context)?;
                None
            }
            NodeMsg::ParentState(mapped) => {
                self.set_parent_state(mapped);
                None
            }
            NodeMsg::ChildReport(report) => {
                self.child_report(report);
                if self.hold_report(now) {
                    // More of this burst is on its way.
                    return Ok(None);
                }
                if !self.flush_scheduled {
                    self.flush_scheduled = myself.cast(NodeMsg::FlushReport).is_ok();
                }
                if self.flush_scheduled {
                    return Ok(None);
                }
                None
            }
            NodeMsg::FlushReport => {
                self.flush_scheduled = false;
                if self.hold_report(now) {
                    // A child started since: its first report flushes.
                    return Ok(None);
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
                return Ok(None);
            }
            NodeMsg::Shutdown { deadline, reply } => Some(Waiting::Shutdown { deadline, reply }),
            NodeMsg::RestartDue => Some(Waiting::RestartDue),
            NodeMsg::ChildStopped { id, records } => Some(Waiting::ChildStopped { id, records }),
            // Only while stopping (see `drain`).
            NodeMsg::DrainTick => None,
        };
        if let Some(waiting) = waiting {
            return Ok(Some((waiting, now)));
        }
        self.report_change(myself, now);
        Ok(None)
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

    /// Whether to hold back the report child reports call for: while a
    /// child's subtree has not reported in full since it started (see
    /// `Table::all_settled`), for at most `starting_report_interval` since
    /// the last report.
    fn hold_report(&self, now: Instant) -> bool {
        !self.children.all_settled()
            && now.saturating_duration_since(self.last_report_at)
                < self.config().starting_report_interval
    }

    /// Changes travel up at once (only changes: `report` sends nothing when
    /// nothing changed), so the tree's status lags by messages, not by
    /// ticks.
    fn report_change(&mut self, myself: &ActorRef<NodeMsg>, now: Instant) {
        if !self.shutting_down {
            self.report(myself, now);
        }
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

    /// Takes the tree generation a tick carries (the top node's is its own
    /// spec generation: the tree's).
    fn set_tree_generation(&mut self, from_tick: u64) {
        let generation = if self.is_top() {
            self.cold.generation
        } else {
            from_tick
        };
        if generation != self.tree_generation {
            self.tree_generation = generation;
            if !self.children.is_unallocated() {
                self.children.set_floor(generation);
            }
        }
    }

    /// Records that the node acted on its spec generation, once its
    /// declaration is applied (or rejected, with the problem shown).
    fn observe_generation(&mut self) {
        if self.generation_pending
            && (self.applied_children == Some(self.desired_children)
                || self.rejected_children == Some(self.desired_children))
        {
            self.generation_pending = false;
            self.cold.observed_generation = self.cold.generation;
        }
    }

    /// The tree generation this node's whole subtree has acted on: its own
    /// once it has acted on everything it was given and every child's
    /// subtree has too; otherwise what it last reported.
    fn synced_generation(&self) -> u64 {
        if !self.generation_pending && self.children_in_sync() && self.children.none_lagging() {
            self.tree_generation
        } else {
            self.reported.as_ref().map_or(0, |r| r.synced)
        }
    }

    // ----- tick -------------------------------------------------------

    /// One tick, inside its span: a child of the parent's tick span (the
    /// root's is the root of the tick's trace; the top node has none).
    ///
    /// The common path (nothing to reconcile, start, fail or finish) does
    /// not wait and runs in place; the rest is boxed, so that the handler
    /// future ractor moves for every message stays small.
    async fn tick(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        parent: tracing::Span,
        now: Instant,
    ) -> Result<(), ActorProcessingErr> {
        let rest = match self.tick_in_place(myself, parent, now)? {
            None => return Ok(()),
            Some(rest) => Box::pin(self.tick_rest(myself, rest, now)),
        };
        rest.await
    }

    /// A tick as far as it goes without waiting: all of it, or up to what
    /// must wait.
    fn tick_in_place(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        parent: tracing::Span,
        now: Instant,
    ) -> Result<Option<TickRest>, ActorProcessingErr> {
        let span = if self.is_top() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                target: "fsm_actors",
                parent: &parent,
                "fsm.tick",
                node.path = %self.path,
                worker.type = %self.cold.spec.worker_type,
                state.before = self.driver.state_name(),
                state.after = tracing::field::Empty,
            )
        };
        if !span.is_disabled() {
            match (telemetry::span_context(&span), &mut self.cold.tick_origin) {
                (Some(origin), Some(slot)) => **slot = origin,
                (origin, slot) => *slot = origin.map(Box::new),
            }
        }
        let prepared = span.in_scope(|| self.tick_prepare(now))?;
        let due = self.children.next_due().is_some_and(|due| due <= now);
        if !matches!(prepared, Prepared::Ready) || due {
            return Ok(Some(TickRest::Prepared(span, prepared)));
        }
        match span.in_scope(|| self.tick_run(myself, &span, now))? {
            None => {
                span.record("state.after", self.driver.state_name());
                Ok(None)
            }
            Some(signal) => Ok(Some(TickRest::Signal(span, signal))),
        }
    }

    /// The rest of a tick that must wait: a reconcile, children to start,
    /// a failure, a finish.
    async fn tick_rest(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        rest: TickRest,
        now: Instant,
    ) -> Result<(), ActorProcessingErr> {
        let (span, signal) = match rest {
            TickRest::Prepared(span, prepared) => {
                match prepared {
                    Prepared::CollectorFailed(why) => {
                        return Err(self.fail(why).instrument(span).await);
                    }
                    Prepared::Reconcile => {
                        self.reconcile(myself).instrument(span.clone()).await?;
                    }
                    Prepared::Ready => {}
                }
                if self.children.next_due().is_some_and(|due| due <= now) {
                    self.start_due_children(myself)
                        .instrument(span.clone())
                        .await?;
                }
                let signal = span.in_scope(|| self.tick_run(myself, &span, now))?;
                (span, signal)
            }
            TickRest::Signal(span, signal) => (span, Some(signal)),
        };
        match signal {
            Some(Signal::NeedsRestart) => {
                let why = "the worker asked for a restart".to_owned();
                return self.restart_gracefully(why, myself).instrument(span).await;
            }
            Some(Signal::NeedsRemoval) => {
                return self.finish(myself).instrument(span).await;
            }
            None => {}
        }
        span.record("state.after", self.driver.state_name());
        Ok(())
    }

    /// The first half of a tick: count it, check the collector, derive if
    /// the inputs changed, update the circuit; say whether the children
    /// need a reconcile.
    fn tick_prepare(&mut self, now: Instant) -> Result<Prepared, ActorProcessingErr> {
        self.ticks += 1;
        #[cfg(feature = "fault-injection")]
        self.inject_fault();
        if let Some(age) = self.collector_failed_for(now) {
            return Ok(Prepared::CollectorFailed(format!(
                "the collector has produced no good observation for {age:?} (restart threshold {:?}); last: {}",
                self.config().collector_restart_after,
                self.cold.collect_error.as_deref().unwrap_or("none"),
            )));
        }
        // (Inputs are applied when they arrive: at start, `UpdateSpec`,
        // `ParentContext`.)
        if !self.children.is_unallocated() {
            // A node that never had a child has no circuit to update.
            self.update_circuit(now);
        }
        let declared = Some(self.desired_children);
        if self.applied_children == declared {
            // Back on the applied declaration (a rejected change was
            // reverted): whatever was rejected in between no longer applies.
            self.set_problem(Problem::Declaration, None);
            self.rejected_children = None;
            Ok(Prepared::Ready)
        } else if self.rejected_children == declared {
            Ok(Prepared::Ready)
        } else if self.declared_count == 0 && self.children.is_empty() {
            // A leaf: nothing declared, nothing running or stopping, so
            // there is nothing to plan and no reason to wait.
            self.applied_children = declared;
            self.set_problem(Problem::Declaration, None);
            self.rejected_children = None;
            Ok(Prepared::Ready)
        } else {
            Ok(Prepared::Reconcile)
        }
    }

    /// The second half of a tick: map states, forward the tick, run the
    /// state machine, collect.
    fn tick_run(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        span: &tracing::Span,
        now: Instant,
    ) -> Result<Option<Signal>, ActorProcessingErr> {
        self.observe_generation();
        self.map_states();
        let tick = self.ticks;
        let generation = self.tree_generation;
        for child in self.children.entries() {
            // A child started in this tick has ticked on its own.
            if child.started_in_tick == tick {
                continue;
            }
            if let Some(actor) = child.actor() {
                if child.tick_pending.swap(true, Ordering::Relaxed) {
                    // Still busy with the last one: one pending tick at most.
                    let labels =
                        self.shared
                            .metrics
                            .labels(child.spec.worker_type.clone(), &child.path, []);
                    self.shared.metrics.ticks_skipped.add(1, &labels);
                    continue;
                }
                if actor.cast(NodeMsg::Tick(span.clone(), generation)).is_err() {
                    child.tick_pending.store(false, Ordering::Relaxed);
                }
            }
        }
        if !self.circuit_open()
            && let Some(signal) = self.run_state_machine(now, myself)?
        {
            return Ok(Some(signal));
        }
        self.start_collect(myself, span, now);
        Ok(None)
    }

    /// Fault injection for chaos testing: panics with the configured
    /// probability. Never at the top node.
    #[cfg(feature = "fault-injection")]
    fn inject_fault(&mut self) {
        if self.is_top() {
            return;
        }
        let p = self.shared.chaos_probability();
        if p > 0.0 && self.cold.rng.next_f64() < p {
            // A real panic, so that the same path as a crashing worker runs.
            panic!(
                "node `{}` failed on purpose {}",
                self.path,
                crate::faults::INJECTED_FAULT_MARKER
            );
        }
    }

    /// See `Collector::quiet_until`.
    fn quiet_from(&mut self, since: Instant) {
        self.collector.quiet_until = since.checked_add(quiet_for(self.config()));
    }

    /// When the last good observation was made, or the node started if
    /// none was yet: what staleness and collector failure are measured
    /// from. (Read only once the quiet period is over, so `quiet_until` is
    /// set.)
    fn observed_since(&self) -> Instant {
        self.collector
            .quiet_until
            .and_then(|until| until.checked_sub(quiet_for(self.config())))
            .unwrap_or(self.cold.started)
    }

    fn collector_quiet(&self, now: Instant) -> bool {
        self.collector.quiet_until.is_none_or(|until| now <= until)
    }

    fn collector_failed_for(&self, now: Instant) -> Option<Duration> {
        // Nothing to observe before a spec is installed.
        if !self.installed || self.collector_quiet(now) {
            return None;
        }
        let age = now.saturating_duration_since(self.observed_since());
        (age > self.config().collector_restart_after).then_some(age)
    }

    /// Whether the circuit is open (never, for a node that never had a
    /// child; its circuit is not even read then).
    fn circuit_open(&self) -> bool {
        !self.children.is_unallocated() && self.cold.circuit.is_open()
    }

    fn update_circuit(&mut self, now: Instant) {
        let any_faulty = self.children.any_faulty();
        match self.cold.circuit.update(any_faulty, now.into_std()) {
            Some(CircuitChange::Opened) => {
                tracing::warn!(
                    node.path = %self.path,
                    restarting = self.children.restarting_count(),
                    "circuit opened: a child failed, is restarting or is stale; pausing this node's state machine"
                );
                self.series().circuit(true);
            }
            Some(CircuitChange::Closed { open_for }) => {
                tracing::info!(
                    node.path = %self.path,
                    open_ms = u64::try_from(open_for.as_millis()).unwrap_or(u64::MAX),
                    "circuit closed: all children healthy again"
                );
                self.series().circuit(false);
            }
            None => {}
        }
        let every = self.config().recovery_heartbeat;
        if self.cold.circuit.heartbeat_due(now.into_std(), every) {
            let open_for = self.cold.circuit.open_since().map_or(Duration::ZERO, |t| {
                now.into_std().saturating_duration_since(t)
            });
            tracing::info!(
                node.path = %self.path,
                restarting = self.children.restarting_count(),
                open_ms = u64::try_from(open_for.as_millis()).unwrap_or(u64::MAX),
                restarts_in_window = self.cold.restart_window.len(),
                "subtree still recovering"
            );
        }
    }

    // ----- children -----------------------------------------------------

    async fn reconcile(&mut self, myself: &ActorRef<NodeMsg>) -> Result<(), ActorProcessingErr> {
        let declared_hash = self.desired_children;
        if self.applied_children == Some(declared_hash) {
            // Back on the applied declaration (a rejected change was
            // reverted): whatever was rejected in between no longer applies.
            self.set_problem(Problem::Declaration, None);
            self.rejected_children = None;
            return Ok(());
        }
        if self.rejected_children == Some(declared_hash) {
            return Ok(());
        }
        let declared = std::mem::take(&mut self.cold.declared);
        let mut hashes = std::mem::take(&mut self.cold.child_hashes);
        if hashes.len() != declared.len() {
            // Kept beside the declaration by `derive`; recomputed rather
            // than trusted should the two ever disagree.
            hashes = declared.iter().map(ChildSpec::hash).collect();
        }
        let result = decode_children_hashed(
            &self.path,
            &declared,
            &hashes,
            &self.children.planned(),
            &self.shared.registry,
        );
        let mut decoded = match result {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::warn!(node.path = %self.path, error = %e, "invalid children declaration; running children left as they are");
                self.set_problem(Problem::Declaration, Some(e.to_string()));
                self.rejected_children = Some(declared_hash);
                return Ok(());
            }
        };
        self.set_problem(Problem::Declaration, None);
        self.rejected_children = None;
        self.children.retain_completed(&declared, &hashes);
        // Children that ended for good stay ended while their declaration
        // is unchanged. (Rare: only then is the declaration copied.)
        let filtered: Option<(Vec<ChildSpec>, Vec<SpecHash>)> =
            (self.children.completed_count() > 0).then(|| {
                declared
                    .iter()
                    .zip(&hashes)
                    .filter(|(c, h)| !self.children.is_completed(&c.name, **h))
                    .map(|(c, h)| (c.clone(), *h))
                    .unzip()
            });
        if filtered.is_some() {
            // Indices no longer match; the children decode their own specs.
            decoded.clear();
        }
        let (wanted, wanted_hashes) = filtered.unwrap_or((declared, hashes));
        let plan = plan_children_hashed(&self.children.planned(), &wanted, &wanted_hashes);
        // Each declaration is used by one step at most: moved, not copied.
        let mut wanted: Vec<Option<ChildSpec>> = wanted.into_iter().map(Some).collect();
        let started = std::time::Instant::now();
        let span = if plan.is_empty() || self.is_top() {
            tracing::Span::none()
        } else {
            let counts = plan.counts();
            tracing::debug!(
                node.path = %self.path,
                spawned = counts.spawned, updated = counts.updated,
                replaced = counts.replaced, stopped = counts.stopped,
                "reconciling children"
            );
            tracing::info_span!(
                target: "fsm_actors",
                "fsm.reconcile",
                node.path = %self.path,
                worker.type = %self.cold.spec.worker_type,
                spawned = counts.spawned,
                updated = counts.updated,
                replaced = counts.replaced,
                stopped = counts.stopped,
            )
        };
        let did_work = !plan.is_empty();
        let spawns = plan.counts().spawned;
        if spawns > 0 {
            self.children.reserve(spawns);
        }
        // A table allocated just now learns the generation too.
        self.children.set_floor(self.tree_generation);
        let now = Instant::now();
        for step in plan.steps {
            match step {
                PlanStep::Stop { name } => {
                    if let Some(i) = self.children.index_of(&name) {
                        let entry = self.children.remove_at(i);
                        if let Some(actor) = entry.actor() {
                            let worker_type = entry.spec.worker_type.clone();
                            self.stop_child(
                                &entry.path,
                                &name,
                                &worker_type,
                                actor.clone(),
                                myself,
                            );
                        }
                    }
                }
                PlanStep::Update { index } => {
                    let Some(spec) = wanted.get_mut(index).and_then(Option::take) else {
                        continue;
                    };
                    let hash = wanted_hashes[index];
                    if let Some(i) = self.children.index_of(&spec.name) {
                        self.children.update(i, |child| {
                            tracing::debug!(node.path = %child.path, "sending changed spec");
                            child.spec = Arc::new(spec);
                            child.hash = hash;
                            child.generation += 1;
                            if let Some(actor) = child.actor() {
                                let _ = actor.cast(NodeMsg::UpdateSpec(
                                    Arc::clone(&child.spec),
                                    hash,
                                    child.generation,
                                ));
                            }
                        });
                    }
                }
                PlanStep::Replace { index } => {
                    let Some(spec) = wanted.get_mut(index).and_then(Option::take) else {
                        continue;
                    };
                    let spec = Arc::new(spec);
                    tracing::info!(
                        node.path = %self.path.child(&spec.name),
                        worker_type = %spec.worker_type,
                        "worker type changed; replacing the child"
                    );
                    if let Some(i) = self.children.index_of(&spec.name) {
                        let old_type = self.children.entries()[i].spec.worker_type.clone();
                        let old = self.children.set_waiting(i, now, None);
                        let decoded = decoded.get_mut(index).and_then(Option::take);
                        self.children.update(i, |child| {
                            child.spec = Arc::clone(&spec);
                            child.hash = wanted_hashes[index];
                            child.generation += 1;
                            child.attempt = 0;
                            child.decoded = decoded;
                        });
                        if let Some(actor) = old {
                            let path = self.path.child(&spec.name);
                            self.stop_child(&path, &spec.name, &old_type, actor, myself);
                        }
                    }
                }
                PlanStep::Spawn { index } => {
                    let Some(spec) = wanted.get_mut(index).and_then(Option::take) else {
                        continue;
                    };
                    let spec = Arc::new(spec);
                    let path = self.path.child(&spec.name);
                    let hash = wanted_hashes[index];
                    let mut entry = ChildEntry::new(path, spec, hash, now);
                    entry.decoded = decoded.get_mut(index).and_then(Option::take);
                    self.children.push(entry);
                }
            }
        }
        self.applied_children = Some(declared_hash);
        let result = self.start_due_children(myself).instrument(span).await;
        if did_work {
            let attrs = &self.metric_attr();
            self.shared
                .metrics
                .reconcile_duration
                .record(started.elapsed().as_secs_f64(), attrs);
        }
        result
    }

    fn child_report(&mut self, report: ChildReport) {
        self.children.record_report(report);
    }

    /// Sends each child its mapped desired state and the variables and
    /// location it inherits, when they changed.
    fn map_states(&mut self) {
        if self.children.entries().is_empty() {
            return;
        }
        // Nothing to send unless the desired state, the children or the
        // context changed since the last time.
        let key = (
            self.desired_version,
            self.children.version(),
            self.children_context().hash,
        );
        if self.cold.mapped_for == Some(key) {
            return;
        }
        self.cold.mapped_for = Some(key);
        let desired = self.parent_state.as_deref().unwrap_or(&self.desired_state);
        let context = Arc::clone(self.children_context());
        self.children.for_each_mapped(|child| {
            let mapped = child.spec.mapped_state(desired);
            if mapped != child.sent_parent_state.as_deref() {
                let mapped = mapped.map(str::to_owned);
                if let Some(actor) = child.actor() {
                    let _ = actor.cast(NodeMsg::ParentState(mapped.clone()));
                }
                child.sent_parent_state = mapped;
            }
            if child.sent_context != context.hash {
                if let Some(actor) = child.actor() {
                    let _ = actor.cast(NodeMsg::ParentContext(Arc::clone(&context)));
                }
                child.sent_context = context.hash;
            }
        });
    }

    // ----- observation and state machine ----------------------------------

    fn is_stale(&self, now: Instant) -> bool {
        if !self.installed || self.collector_quiet(now) {
            return false;
        }
        now.saturating_duration_since(self.observed_since()) > self.config().stale_after
    }

    /// Starts a collect in its own task, with a span under `parent` (the
    /// tick's, or none between ticks).
    fn start_collect(&mut self, myself: &ActorRef<NodeMsg>, parent: &tracing::Span, now: Instant) {
        if self.collector.in_flight || !self.installed {
            return;
        }
        let span = if self.is_top() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                target: "fsm_actors",
                parent: parent,
                "fsm.collect",
                node.path = %self.path,
                worker.type = %self.cold.spec.worker_type,
                error = tracing::field::Empty,
            )
        };
        self.collector.seq += 1;
        // Polled once, here: a collect that is ready at once costs no task
        // and no message.
        let desired = self.parent_state.as_deref().unwrap_or(&self.desired_state);
        let version = self.desired_version;
        let started = span.in_scope(|| self.driver.start_collect(&self.path, desired, version));
        let future = match started {
            CollectStart::Done(result) => {
                if let Err(e) = &result {
                    span.record("error", e.as_str());
                }
                self.collected(result, now);
                return;
            }
            CollectStart::Pending(future) => future,
        };
        self.collector.in_flight = true;
        self.collector.again = false;
        let seq = self.collector.seq;
        let timeout = self.config().observation_timeout;
        let me = myself.clone();
        self.cold.collect_task = Some(AbortOnDrop(tokio::spawn(
            async move {
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
                if let Err(e) = &result {
                    tracing::Span::current().record("error", e.as_str());
                }
                let _ = me.cast(NodeMsg::Observed { seq, result });
            }
            .instrument(span),
        )));
    }

    /// Records how a collect ended (its observation is installed already).
    fn collected(&mut self, result: Result<(), String>, now: Instant) {
        match result {
            Ok(()) => {
                self.collector.observed_seq = self.collector.seq;
                self.quiet_from(now);
                if self.collector.failed {
                    self.collector.failed = false;
                    self.cold.collect_error = None;
                }
            }
            Err(e) => self.collect_failed(e, now),
        }
    }

    /// Counts a failed collect, keeps its error with its time, and logs it
    /// (the first of a streak at once, then at most once per
    /// `recovery_heartbeat`).
    fn collect_failed(&mut self, error: String, now: Instant) {
        self.collector.failed = true;
        let cold = &mut *self.cold;
        cold.collect_failures += 1;
        cold.collect_failed_at = Some(now);
        let every = self.shared.config.recovery_heartbeat;
        let log = cold
            .collect_logged_at
            .is_none_or(|at| now.saturating_duration_since(at) >= every);
        if log {
            cold.collect_logged_at = Some(now);
            tracing::warn!(
                node.path = %self.path,
                error = %error,
                failures = cold.collect_failures,
                "collect failed"
            );
        } else {
            tracing::trace!(node.path = %self.path, error = %error, "collect failed");
        }
        cold.collect_error = Some(error);
    }

    fn observed(
        &mut self,
        seq: u64,
        result: Result<fsm_core::runtime::Observation, String>,
        myself: &ActorRef<NodeMsg>,
    ) {
        if seq != self.collector.seq {
            return;
        }
        self.collector.in_flight = false;
        // The task has finished; dropping its handle aborts nothing.
        self.cold.collect_task = None;
        match result {
            Ok(observation) => {
                if self.driver.set_observation(observation) {
                    self.collected(Ok(()), Instant::now());
                }
            }
            Err(e) => self.collected(Err(e), Instant::now()),
        }
        if self.collector.again {
            self.start_collect(myself, &tracing::Span::none(), Instant::now());
        }
    }

    /// Runs one step; returns the signal it raised, if any.
    fn run_state_machine(
        &mut self,
        now: Instant,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<Option<Signal>, ActorProcessingErr> {
        if self.is_stale(now) {
            return Ok(None);
        }
        if self.collector.observed_seq <= self.collector.act_after {
            // The last action's effect is not observed yet: acting on an
            // older observation would ask for the same action again.
            return Ok(None);
        }
        let desired = self.parent_state.as_deref().unwrap_or(&self.desired_state);
        let input = StepInput::new(&self.path, desired)
            .with_children(self.children.statuses())
            .with_action_in_flight(self.action.is_some())
            .with_last_action(self.last_action.as_deref());
        let outcome = match self.driver.step(&input) {
            Ok(Some(outcome)) => outcome,
            Ok(None) => return Ok(None),
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
            self.cold.transition_reason = outcome.reason.clone();
            let in_state = now.saturating_duration_since(self.cold.state_since);
            self.series().transition(outcome.from, to, in_state);
            self.cold.state_since = now;
        }
        if let Some(signal) = outcome.signal {
            tracing::info!(node.path = %self.path, ?signal, reason = %outcome.reason, "signal raised");
        }
        if let Some(action) = outcome.action {
            if self.action.is_some() {
                tracing::trace!(node.path = %self.path, action = action.name(), "action dropped: one is already in flight");
            } else if let Some(retry) = self.retry_wait(action.name(), now) {
                tracing::trace!(node.path = %self.path, action = action.name(), retry_in_ms = ms(retry), "action dropped: it failed, and its retry is not due yet");
            } else {
                self.enqueue(action, myself);
            }
        }
        Ok(outcome.signal)
    }

    fn enqueue(&mut self, action: BoxedAction, myself: &ActorRef<NodeMsg>) {
        let id = self.shared.next_action_id.fetch_add(1, Ordering::Relaxed);
        let name = action.name();
        let request = ActionRequest {
            id,
            path: self.path.clone(),
            owner: myself.clone(),
            action,
            worker_type: Arc::clone(&self.cold.worker_type),
            origin: self.cold.tick_origin.as_deref().cloned(),
        };
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

    fn action_done(&mut self, id: ActionId, report: ActionReport, myself: &ActorRef<NodeMsg>) {
        if self.action.map(|(i, _)| i) != Some(id) {
            return;
        }
        self.action = None;
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
            ActionOutcome::Cancelled | ActionOutcome::Rejected(_) => None,
        };
        if let Some(failure) = failure {
            self.action_failed(&report.action, failure);
        }
        self.last_action = Some(Box::new(report));
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
        cold.action_retry = Some(ActionRetry {
            action: action.to_owned(),
            attempt,
            due: crate::deadline::after(now, delay),
        });
        cold.action_error = Some(failure);
    }

    // ----- health and reporting -----------------------------------------

    fn own_error(&self, now: Instant) -> Option<String> {
        if let Some(e) = self.problems.as_deref().and_then(Problems::first) {
            return Some(e.clone());
        }
        if self.is_stale(now) {
            let age = now.saturating_duration_since(self.observed_since());
            return Some(match &self.cold.collect_error {
                Some(e) => format!("stale: no good observation for {age:?}; last: {e}"),
                None => format!("stale: no good observation for {age:?}"),
            });
        }
        None
    }

    /// No configuration error (spec, variables, templates, declaration).
    fn configured(&self) -> bool {
        self.problems.is_none()
    }

    fn is_healthy(&self, now: Instant) -> bool {
        self.configured() && !self.is_stale(now)
    }

    /// The child table matches the declaration and every child runs.
    fn children_in_sync(&self) -> bool {
        self.applied_children == Some(self.desired_children)
            && self.children.all_running()
            && self.children.len() + self.children.completed_count() == self.declared_count
            && self.children.stopping_count() == 0
    }

    fn self_converged_given(&self, healthy: bool) -> bool {
        healthy
            && !self.circuit_open()
            && self.driver.has_observation()
            && self.state_is_desired()
            && self.children_in_sync()
    }

    /// Whether the current state is the desired one; remembered for the
    /// state (by its `&'static str`'s address) and the desired version, so
    /// that a report after every message compares no text.
    fn state_is_desired(&self) -> bool {
        let state = self.driver.state_name();
        let key = (state.as_ptr() as usize, self.desired_version);
        let (address, version, matches) = self.state_match.get();
        if (address, version) == key {
            return matches;
        }
        let matches = state == self.desired_state();
        self.state_match.set((key.0, key.1, matches));
        matches
    }

    fn self_converged(&self, now: Instant) -> bool {
        self.self_converged_given(self.is_healthy(now))
    }

    fn set_parent_state(&mut self, mapped: Option<String>) {
        if mapped != self.parent_state {
            self.parent_state = mapped;
            self.desired_version += 1;
            self.check_desired_state();
        }
    }

    /// Tells the parent what changed, if anything did. Runs after every
    /// message, so it is cheap when nothing changed: every value is computed
    /// once, and the desired state is compared by version, not by text.
    fn report(&mut self, myself: &ActorRef<NodeMsg>, now: Instant) {
        let count = self.children.len();
        if self.recorded_children != Some(count) {
            self.series().children(self.recorded_children, count);
            self.recorded_children = Some(count);
        }
        let stale = self.is_stale(now);
        let healthy = self.configured() && !stale;
        let self_converged = self.self_converged_given(healthy);
        let converged = self_converged && self.children.all_converged();
        let mut subtree = SubtreeCounts {
            nodes: 1,
            converged: u64::from(self_converged),
            unhealthy: u64::from(!healthy),
            restarting: 0,
        };
        subtree.add(self.children.subtree_counts());
        let state = self.driver.state_name();
        let settled = self.children.all_settled();
        let synced = self.synced_generation();
        let unchanged = self.reported.as_ref().is_some_and(|r| {
            r.synced == synced
                && std::ptr::eq(r.state, state)
                && r.desired_version == self.desired_version
                && r.healthy == healthy
                && r.stale == stale
                && r.converged == converged
                && r.subtree == subtree
                && r.settled == settled
        });
        if unchanged && !self.is_top() {
            return;
        }
        let desired_changed = self
            .reported
            .as_ref()
            .is_none_or(|r| r.desired_version != self.desired_version);
        self.last_report_at = now;
        self.reported = Some(Reported {
            synced,
            state,
            desired_version: self.desired_version,
            healthy,
            stale,
            converged,
            subtree,
            settled,
        });
        match &self.parent {
            Some(parent) => {
                let _ = parent.cast(NodeMsg::ChildReport(ChildReport {
                    from: myself.get_id(),
                    state,
                    desired: desired_changed.then(|| self.desired_state().to_owned()),
                    healthy,
                    stale,
                    converged,
                    subtree,
                    settled,
                    synced,
                }));
            }
            None => self.publish_status(synced),
        }
    }

    /// The top node is not a node of the user's tree: it publishes the
    /// root's subtree.
    fn publish_status(&self, synced: u64) {
        let counts = self.children.subtree_counts();
        let converged = self.children_in_sync()
            && !self.children.entries().is_empty()
            && self.children.all_converged();
        let ticks = self.ticks;
        let generation = self.cold.generation;
        self.shared.status.send_if_modified(|s| {
            let changed = s.ticks != ticks
                || s.counts != counts
                || s.converged != converged
                || s.generation != generation
                || s.observed_generation != synced;
            s.ticks = ticks;
            s.counts = counts;
            s.converged = converged;
            s.generation = generation;
            s.observed_generation = synced;
            changed
        });
    }

    // ----- inspect ---------------------------------------------------------

    fn snapshot_self(&self, now: Instant) -> NodeSnapshot {
        let own_error = self.own_error(now);
        NodeSnapshot {
            path: self.path.clone(),
            name: self.cold.spec.name.clone(),
            worker_type: self.cold.spec.worker_type.clone(),
            state: self.driver.state_name().to_owned(),
            desired_state: self.desired_state().to_owned(),
            healthy: self.is_healthy(now),
            last_error: own_error.or_else(|| self.cold.action_error.clone()),
            converged: self.self_converged(now) && self.children.all_converged(),
            stale: self.is_stale(now),
            state_reason: self.cold.transition_reason.to_string(),
            ticks: self.ticks,
            collect_failures: self.cold.collect_failures,
            last_collect_error: self.cold.collect_error.as_ref().map(|error| {
                crate::snapshot::CollectError {
                    error: error.clone(),
                    ago_ms: self
                        .cold
                        .collect_failed_at
                        .map_or(0, |at| ms(now.saturating_duration_since(at))),
                }
            }),
            action_in_flight: self.action.map(|(_, name)| name.to_owned()),
            last_action: self.last_action.as_deref().cloned(),
            restarts: self.cold.restarts,
            generation: self.cold.generation,
            observed_generation: self.cold.observed_generation,
            restarting: None,
            circuit_open: self.cold.circuit.is_open(),
            in_state_for_ms: u64::try_from(
                now.saturating_duration_since(self.cold.state_since)
                    .as_millis(),
            )
            .unwrap_or(u64::MAX),
            location_path: self.cold.inputs.location_path.to_string(),
            children: Vec::new(),
        }
    }

    fn inspect(&self, deadline: Instant, reply: ractor::RpcReplyPort<NodeSnapshot>) {
        let now = Instant::now();
        let mut own = self.snapshot_self(now);
        enum Source {
            Ask(ActorRef<NodeMsg>),
            Ready(Box<NodeSnapshot>),
        }
        let children: Vec<(NodePath, String, u64, Source)> = self
            .children
            .entries()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let source = match &c.run {
                    ChildRun::Running { actor, .. } => Source::Ask(actor.clone()),
                    ChildRun::Waiting { due, failure } => {
                        let state = if failure.is_some() {
                            "restarting"
                        } else {
                            "starting"
                        };
                        let mut s = NodeSnapshot::placeholder(
                            c.path.clone(),
                            &c.spec.worker_type,
                            state,
                            failure.clone(),
                        );
                        s.desired_state = self.children.desired_of(i).to_owned();
                        s.restarts = c.restarts;
                        s.generation = c.generation;
                        s.restarting = failure.as_ref().map(|f| RestartingInfo {
                            attempt: c.attempt.saturating_sub(1),
                            next_try_in_ms: u64::try_from(
                                due.saturating_duration_since(now).as_millis(),
                            )
                            .unwrap_or(u64::MAX),
                            last_failure: f.clone(),
                        });
                        Source::Ready(Box::new(s))
                    }
                };
                (
                    c.path.clone(),
                    c.spec.worker_type.clone(),
                    c.restarts,
                    source,
                )
            })
            .collect();
        // Children answer a little before the deadline so that this node
        // can still answer by it. The margin shrinks with the square of the
        // depth, so that all of them together (a sum of 1/d^2) stay under
        // three times the first, however deep the tree: a fixed margin per
        // level used up the whole budget some hundreds of levels down.
        let depth = u32::try_from(self.path.depth().max(1)).unwrap_or(u32::MAX);
        let margin = deadline
            .saturating_duration_since(now)
            .min(INSPECT_MARGIN * 4)
            / 4
            / depth.saturating_mul(depth);
        let child_deadline = deadline.checked_sub(margin).unwrap_or(deadline);
        tokio::spawn(async move {
            let calls =
                children
                    .into_iter()
                    .map(|(path, worker_type, restarts, source)| async move {
                        let actor = match source {
                            Source::Ready(snapshot) => return *snapshot,
                            Source::Ask(actor) => actor,
                        };
                        let wait = child_deadline.saturating_duration_since(Instant::now());
                        let missing = |why: &str| {
                            let mut s = NodeSnapshot::placeholder(
                                path.clone(),
                                &worker_type,
                                "unavailable",
                                Some(why.to_owned()),
                            );
                            s.restarts = restarts;
                            s
                        };
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
                            Ok(CallResult::Timeout) => {
                                missing("did not answer the inspection in time")
                            }
                            _ => missing("not running"),
                        }
                    });
            own.children = futures::future::join_all(calls).await;
            let _ = reply.send(own);
        });
    }
}
