//! The messages a node actor handles. Parent → child: `Tick`, `UpdateSpec`,
//! `ParentState`, `Inspect`, `Shutdown`. Child → parent: `ChildReport`.
//! Collector → node: `Observed`. Executor → node: `ActionDone`. Stop task →
//! node: `ChildStopped`.

use std::sync::Arc;

use fsm_core::{
    ActionReport, ChildSpec, SpecHash,
    runtime::{DecodedSpec, Observation},
};
use ractor::{ActorId, RpcReplyPort};
use tokio::time::Instant;

use crate::executor::ActionId;
use crate::snapshot::{NodeSnapshot, StopRecord, SubtreeCounts};

/// A message to a node actor.
pub(crate) enum NodeMsg {
    /// Do one tick of work, then forward the tick to the children. Carries
    /// the parent's tick span (disabled at the top), so that one root tick
    /// is one trace, and the tree generation the parent has applied (every
    /// spec change of that generation has reached this node before this
    /// tick: messages from one sender arrive in order).
    Tick(tracing::Span, u64),
    /// The node's spec changed (same worker type): decode it and derive
    /// again; the node keeps running.
    UpdateSpec {
        spec: Arc<ChildSpec>,
        hash: SpecHash,
        /// The node's new generation.
        generation: u64,
        /// The spec as the parent decoded it to check the declaration
        /// (`None` when only the node can: its spec has templates), so that
        /// a change is decoded once, not once per level it passes.
        decoded: Option<DecodedSpec>,
    },
    /// The parent's state mapping for this node changed: `Some` overrides
    /// the node's own derived state, `None` hands control back to it.
    ParentState(Option<String>),
    /// The variables and location the node inherits changed.
    ParentContext(Arc<super::ParentContext>),
    /// The tree's globals changed (from the handle to the top, then from
    /// each parent to its children).
    Globals(Arc<super::Globals>),
    /// A child's status and subtree counts changed. (Boxed, as is the
    /// action's report: every message is boxed by ractor at the size of the
    /// largest variant, and a tick, sent to every node on every tick,
    /// should not carry twice its own size.)
    ChildReport(Box<ChildReport>),
    /// A collect finished (or failed, or timed out).
    Observed {
        seq: u64,
        result: Result<Observation, String>,
    },
    /// An action of this node ended.
    ActionDone {
        id: ActionId,
        report: Box<ActionReport>,
    },
    /// Snapshot this subtree; children answer before `deadline`.
    Inspect {
        deadline: Instant,
        reply: RpcReplyPort<NodeSnapshot>,
    },
    /// Answer with the latest observation of the node the request names,
    /// or pass the request on to the child on its path.
    ReadObservation(Box<crate::latest::ObservationRequest>),
    /// Stop this subtree in order (children first, in reverse start order),
    /// run the stop hook, reply with the stop records, and exit.
    Shutdown {
        deadline: Instant,
        reply: RpcReplyPort<Vec<StopRecord>>,
    },
    /// A child's restart (or delayed first start) may be due.
    RestartDue,
    /// Send the report that the child reports handled since the last one
    /// may call for (sent to itself, so that it queues behind the reports
    /// already waiting: a burst of them makes one report up, not one each).
    /// While a child's subtree has not yet reported in full (it is
    /// starting), no flush is scheduled: the burst is not over, and the
    /// report that ends it schedules one.
    FlushReport,
    /// While the node drives itself to `stopped` before it stops (see
    /// `drain`): time for another step, or the budget is up.
    DrainTick,
    /// From the store actor, to the top, which passes it to the root: the
    /// tree's store cannot be written (`Some`, why), or can again.
    StoreProblem(Option<String>),
    /// Fault injection: the node at this path ends at once, as if killed
    /// from outside (its actor stopped by its ref), or the message is
    /// passed on to the child on its path.
    #[cfg(feature = "fault-injection")]
    Kill(fsm_core::NodePath),
    /// A child this node was stopping on purpose has stopped.
    ChildStopped {
        id: ActorId,
        records: Vec<StopRecord>,
    },
}

// ractor boxes every message at the size of the type: a tick, sent to every
// node on every tick, should not be boxed at the size of a rarer variant.
// (Measured against the tick's own payload plus a tag, so that a change of
// `tracing::Span`'s size does not trip it.)
const _: () = assert!(
    std::mem::size_of::<NodeMsg>() <= std::mem::size_of::<(tracing::Span, u64)>() + 8,
    "a variant larger than a tick makes every tick larger: box its payload"
);

// ractor's `cluster` feature drops its blanket `Message` impl; a node's
// messages never leave their process.
#[cfg(feature = "cluster")]
impl ractor::Message for NodeMsg {}

/// What a child tells its parent whenever it changes. Sent often while a
/// tree starts or recovers, so it allocates nothing unless the desired
/// state changed: the parent knows the child's name from its actor id, and
/// state names are static.
pub(crate) struct ChildReport {
    /// The reporting actor: a report from an incarnation that no longer
    /// holds its slot is ignored.
    pub(crate) from: ActorId,
    pub(crate) state: &'static str,
    /// The desired state, when it changed since the child's last report
    /// (static when it is one of the child's states).
    pub(crate) desired: Option<std::borrow::Cow<'static, str>>,
    pub(crate) healthy: bool,
    pub(crate) stale: bool,
    pub(crate) converged: bool,
    pub(crate) subtree: SubtreeCounts,
    /// The child and every node of its subtree have reported since they
    /// started.
    pub(crate) settled: bool,
    /// The tree generation the child's whole subtree has acted on.
    pub(crate) synced: u64,
}
