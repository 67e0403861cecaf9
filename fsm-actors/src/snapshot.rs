//! What a running tree shows of itself: [`NodeSnapshot`] (from
//! [`Tree::inspect`](crate::Tree::inspect)), [`TreeStatus`] (cheap, always
//! current), [`ShutdownReport`] and [`ExecutorStats`].

use fsm_core::{ActionReport, NodePath};
use serde::{Deserialize, Serialize};

/// One node of an inspected tree, with its children. Serialises to the
/// snapshot JSON of the demo and of `docs/architecture.md`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeSnapshot {
    /// Names joined by `/` from the root.
    pub path: NodePath,
    /// The node's name.
    pub name: String,
    /// Its worker type.
    pub worker_type: String,
    /// Its current state.
    pub state: String,
    /// Its effective desired state.
    pub desired_state: String,
    /// Whether it is healthy: its spec and children are valid, its desired
    /// state derives, and its observations are fresh.
    pub healthy: bool,
    /// The error that makes it unhealthy, or else the last action failure
    /// since the last success.
    pub last_error: Option<String>,
    /// Whether the node and its whole subtree have converged.
    pub converged: bool,
    /// Whether its last good observation is too old.
    pub stale: bool,
    /// Why its state machine last changed state (the transition's
    /// `because`); empty before the first change.
    #[serde(default)]
    pub state_reason: String,
    /// Ticks this incarnation has handled.
    #[serde(default)]
    pub ticks: u64,
    /// How many of its collects failed or timed out (in this incarnation).
    #[serde(default)]
    pub collect_failures: u64,
    /// The last collect failure, while collects keep failing.
    #[serde(default)]
    pub last_collect_error: Option<CollectError>,
    /// The action in flight, if any.
    pub action_in_flight: Option<String>,
    /// The last finished action.
    pub last_action: Option<ActionReport>,
    /// How many times it was restarted.
    pub restarts: u64,
    /// The generation of its declared spec: 1 when first declared, bumped
    /// by every change of it (as Kubernetes' `metadata.generation`).
    #[serde(default)]
    pub generation: u64,
    /// The generation it has acted on: its spec applied (or rejected, with
    /// the problem in `last_error`) and its children reconciled. Behind
    /// `generation` while a change is on its way.
    #[serde(default)]
    pub observed_generation: u64,
    /// Set while it waits to restart.
    pub restarting: Option<RestartingInfo>,
    /// Whether its circuit is open (a child failed, is restarting or is
    /// stale): its state machine pauses until the children recover.
    pub circuit_open: bool,
    /// How long it has been in its current state, in milliseconds (0 for a
    /// node without an actor to answer).
    #[serde(default)]
    pub in_state_for_ms: u64,
    /// Its ISA-95 location as a dotted path (`acme.plant-a.packaging`),
    /// empty when no level is set.
    pub location_path: String,
    /// What the node was last seen to be by an earlier process of the
    /// tree, when the tree was restored from its store (see
    /// `docs/persistence.md`): kept for this node's life, beside what it
    /// observes afresh.
    #[serde(default)]
    pub restored: Option<fsm_core::store::ObservedDocument>,
    /// Its children, in start order.
    pub children: Vec<NodeSnapshot>,
}

/// A failed collect, as a snapshot shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectError {
    /// What went wrong (failed, timed out, panicked).
    pub error: String,
    /// How long before the snapshot it happened.
    pub ago_ms: u64,
}

/// A node waiting to restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartingInfo {
    /// The backoff attempt (0 for the first restart after a stable run).
    pub attempt: u32,
    /// When the next try is due, from the time of the snapshot.
    pub next_try_in_ms: u64,
    /// Why it ended.
    pub last_failure: String,
}

impl NodeSnapshot {
    /// A placeholder for a child without an actor to answer: one that did
    /// not answer in time (`state` "unavailable"), or one waiting to start
    /// ("starting") or restart ("restarting").
    pub(crate) fn placeholder(
        path: NodePath,
        worker_type: &str,
        state: &str,
        why: Option<String>,
    ) -> Self {
        Self {
            name: path.name().to_owned(),
            path,
            worker_type: worker_type.to_owned(),
            state: state.to_owned(),
            desired_state: String::new(),
            healthy: why.is_none(),
            last_error: why,
            converged: false,
            stale: false,
            state_reason: String::new(),
            ticks: 0,
            collect_failures: 0,
            last_collect_error: None,
            action_in_flight: None,
            last_action: None,
            restarts: 0,
            generation: 0,
            observed_generation: 0,
            restarting: None,
            circuit_open: false,
            in_state_for_ms: 0,
            location_path: String::new(),
            restored: None,
            children: Vec::new(),
        }
    }

    /// This node and all below it, depth first, parents before children.
    pub fn iter(&self) -> impl Iterator<Item = &NodeSnapshot> {
        let mut stack = vec![self];
        std::iter::from_fn(move || {
            let node = stack.pop()?;
            stack.extend(node.children.iter().rev());
            Some(node)
        })
    }

    /// Finds the node at `path` in this subtree.
    #[must_use]
    pub fn find(&self, path: &str) -> Option<&NodeSnapshot> {
        self.iter().find(|n| n.path.as_str() == path)
    }

    /// The number of nodes in this subtree.
    #[must_use]
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Always `false`: a snapshot holds at least its own node.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The depth of this subtree (1 for a leaf).
    #[must_use]
    pub fn height(&self) -> usize {
        // Without recursion: a tree may be deeper than a stack allows.
        let mut stack = vec![(self, 1)];
        let mut height = 0;
        while let Some((node, depth)) = stack.pop() {
            height = height.max(depth);
            stack.extend(node.children.iter().map(|c| (c, depth + 1)));
        }
        height
    }

    /// This snapshot as compact JSON, the same text `serde_json::to_string`
    /// writes, but for a tree of any depth: the derived implementation
    /// recurses once per level.
    ///
    /// # Errors
    ///
    /// None in practice (a snapshot holds nothing JSON cannot).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        crate::snapshot_json::to_json(self)
    }

    /// This snapshot as indented JSON (as `serde_json::to_string_pretty`
    /// writes it), for a tree of any depth.
    ///
    /// # Errors
    ///
    /// None in practice (a snapshot holds nothing JSON cannot).
    pub fn to_json_pretty(&self) -> Result<String, serde_json::Error> {
        crate::snapshot_json::to_json_pretty(self)
    }

    /// Parses a snapshot's JSON, of any depth. `serde_json::from_str`
    /// refuses a snapshot deeper than about 60 levels (its recursion limit);
    /// use this instead.
    ///
    /// # Errors
    ///
    /// The JSON is malformed or is not a snapshot.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        crate::snapshot_json::from_json(text)
    }
}

/// Counts over a subtree, kept current by the reports children send upward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtreeCounts {
    /// Nodes running in the subtree (itself included).
    pub nodes: u64,
    /// Of them, converged: healthy, in their desired state, with all
    /// declared children running.
    pub converged: u64,
    /// Of them, unhealthy.
    pub unhealthy: u64,
    /// Of them, waiting to restart.
    pub restarting: u64,
}

impl SubtreeCounts {
    pub(crate) fn add(&mut self, other: SubtreeCounts) {
        self.nodes += other.nodes;
        self.converged += other.converged;
        self.unhealthy += other.unhealthy;
        self.restarting += other.restarting;
    }

    /// Whether every node of the subtree has converged.
    #[must_use]
    pub fn all_converged(&self) -> bool {
        self.nodes > 0 && self.converged == self.nodes
    }
}

/// The tree's current status: cheap to read at any time, without asking the
/// nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TreeStatus {
    /// Root ticks processed so far.
    pub ticks: u64,
    /// Counts over the whole tree, as of the root's last report.
    pub counts: SubtreeCounts,
    /// Whether the root node and its subtree have converged.
    pub converged: bool,
    /// The tree generation in force: 1 at spawn, bumped by every
    /// [`Tree::update_root_spec`](crate::TreeHandle::update_root_spec).
    pub generation: u64,
    /// The tree generation every node has acted on (its spec applied, its
    /// children reconciled, removed children stopped). `converged` speaks
    /// of that generation once this equals `generation`.
    pub observed_generation: u64,
    /// The root node's state, as of its last report (empty before it).
    #[serde(default)]
    pub root_state: String,
    /// The root node's desired state, as of its last report.
    #[serde(default)]
    pub root_desired: String,
    /// Whether the root node itself is healthy (configured, not stale).
    #[serde(default)]
    pub root_healthy: bool,
    /// Whether the root node's last good observation is too old.
    #[serde(default)]
    pub root_stale: bool,
    /// Set when the tree gave up: the root failed more often than its
    /// restart intensity allows. The tree no longer runs.
    pub fatal: Option<FatalError>,
}

/// The tree gave up: its root exceeded the restart intensity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "the tree stopped: `{path}` failed {restarts} times within {period_ms} ms, more than its restart intensity allows; last failure: {last_failure}. What to do: {advice} (see {runbook})"
)]
pub struct FatalError {
    /// The node that failed too often (the root).
    pub path: NodePath,
    /// Its restarts within the window.
    pub restarts: u32,
    /// The window, in milliseconds.
    pub period_ms: u64,
    /// The last failure.
    pub last_failure: String,
    /// What to do about it.
    pub advice: String,
    /// The runbook section.
    pub runbook: String,
}

/// How one node stopped during an ordered shutdown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "snake_case")]
pub enum StopOutcome {
    /// Its children stopped and its stop hook finished before the deadline.
    Clean,
    /// It (or its stop hook) missed the deadline and was killed.
    Forced(String),
}

/// One node's entry in a [`ShutdownReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRecord {
    /// The node.
    pub path: NodePath,
    /// How it stopped.
    pub outcome: StopOutcome,
}

/// The result of [`Tree::shutdown`](crate::Tree::shutdown): every node, in
/// the order it stopped (children before parents, later-started siblings
/// first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownReport {
    /// The nodes, in stop order.
    pub stopped: Vec<StopRecord>,
}

impl ShutdownReport {
    /// Whether every node stopped cleanly.
    #[must_use]
    pub fn all_clean(&self) -> bool {
        self.stopped.iter().all(|r| r.outcome == StopOutcome::Clean)
    }

    /// The nodes that had to be killed.
    pub fn forced(&self) -> impl Iterator<Item = &StopRecord> {
        self.stopped
            .iter()
            .filter(|r| matches!(r.outcome, StopOutcome::Forced(_)))
    }
}

/// Counters of the action executor. Every enqueued action ends in exactly one
/// outcome, so once the executor is idle,
/// `enqueued == succeeded + failed + timed_out + cancelled + rejected`; and
/// `interrupted` counts the actions an earlier process of the tree started
/// and never finished (see `docs/persistence.md`), so that over a tree's
/// processes `started == outcomes()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExecutorStats {
    /// Actions handed to the executor.
    pub enqueued: u64,
    /// Actions that started running.
    pub started: u64,
    /// Outcomes: succeeded.
    pub succeeded: u64,
    /// Outcomes: failed.
    pub failed: u64,
    /// Outcomes: timed out.
    pub timed_out: u64,
    /// Outcomes: cancelled.
    pub cancelled: u64,
    /// Outcomes: rejected (queue full).
    pub rejected: u64,
    /// Outcomes: interrupted — actions an earlier process of this tree
    /// started and never finished, found when the tree was restored from
    /// its store. Counted once, at restore, and not in `enqueued` or
    /// `started` (the earlier process counted those): summed over a
    /// tree's processes, started actions equal outcomes.
    #[serde(default)]
    pub interrupted: u64,
    /// Waiting now.
    pub queued: u64,
    /// Running now.
    pub running: u64,
}

impl ExecutorStats {
    /// Outcomes delivered so far.
    #[must_use]
    pub fn outcomes(&self) -> u64 {
        self.succeeded
            + self.failed
            + self.timed_out
            + self.cancelled
            + self.rejected
            + self.interrupted
    }
}

/// What a tree spawned on a store that held a tree restored, from
/// [`TreeHandle::restored`](crate::TreeHandle::restored).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RestoreInfo {
    /// Nodes found in the store.
    pub nodes: u64,
    /// The generation of the stored root spec (the earlier process's).
    pub generation: u64,
    /// The latest time found in the store (unix milliseconds): the last
    /// observation or action start written, roughly when the earlier
    /// process last wrote.
    pub saved_at_ms: Option<u64>,
    /// Actions found started and never finished, now `interrupted`.
    pub interrupted: u64,
}

/// What a tree's store actor has done (see `docs/persistence.md`), from
/// [`TreeHandle::store_stats`](crate::TreeHandle::store_stats).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoreStats {
    /// Batches committed.
    pub batches: u64,
    /// Changes committed (in those batches).
    pub changes: u64,
    /// Writes that failed (each kept its changes, to write them again).
    pub failed_writes: u64,
    /// Changes waiting to be written now: one per node document or action
    /// record at most, however often it changed.
    pub backlog: u64,
    /// Changes replaced by a later change of the same record before they
    /// were written (coalesced: only the latest is written).
    pub overwritten: u64,
    /// Action records dropped unwritten because a node had more than the
    /// backlog keeps per node while the store could not be written.
    pub dropped: u64,
    /// The last write error, while writes fail.
    pub last_error: Option<String>,
}
