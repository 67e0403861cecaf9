//! The store of a tree: per node, its identity, its desired document and its
//! observed document, plus the actions it started and how they ended, so
//! that a tree can be restored after its process ends (even by `kill -9`).
//!
//! * [`Store`]: the interface a backend implements. Writes come in batches
//!   ([`Store::write`]), one batch being one transaction: all of it is
//!   committed or none of it. [`Store::load`] reads everything back as a
//!   [`StoredTree`].
//! * [`MemoryStore`]: a backend in memory, for tests. The durable backend
//!   (SQLite) is in the runtime crate, `fsm-actors`.
//! * [`codec`]: how every record is turned into bytes (the workspace's
//!   binary [`codec`](crate::codec), behind a store format byte).
//! * [`conformance`]: the checks every backend must pass.
//!
//! Times are unix milliseconds (wall-clock), never `Instant`s: they must
//! mean the same thing in the next process.
//!
//! # The interrupted-action rule
//!
//! An action is recorded as started (an [`ActionRecord`] without an
//! outcome) before it runs, and recorded again with its outcome when it
//! ends. An action still without an outcome when the store is loaded was
//! cut off by the end of its process: [`Store::load`] gives it the outcome
//! [`StoredOutcome::Interrupted`], so that every started action has exactly
//! one outcome.

pub mod codec;
pub mod conformance;
mod memory;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::CodecError;
use crate::path::NodePath;
use crate::spec::ChildSpec;
use crate::worker::ActionOutcome;

pub use memory::MemoryStore;

/// Who a node is: where it sits, its name and the worker type that runs it.
/// Every other record of a node needs this one first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// The node's path; the key of all its records.
    pub path: NodePath,
    /// The node's name (the last segment of its path).
    pub name: String,
    /// The worker type, as registered in the
    /// [`WorkerRegistry`](crate::WorkerRegistry).
    pub worker_type: String,
}

impl NodeIdentity {
    /// The identity of the node at `path`, run by `worker_type`; its name is
    /// the path's last segment.
    #[must_use]
    pub fn new(path: NodePath, worker_type: impl Into<String>) -> Self {
        Self {
            name: path.name().to_owned(),
            path,
            worker_type: worker_type.into(),
        }
    }
}

/// What a node was asked to be: its spec as declared by its parent (or, for
/// the root, by the application), and the generation of that declaration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DesiredDocument {
    /// The spec as declared (before templates are rendered).
    pub spec: ChildSpec,
    /// Counts the node's spec changes; a higher generation is newer.
    pub generation: u64,
}

/// What a node was last seen to be.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedDocument {
    /// The state it was in.
    pub state: String,
    /// When its worker's last observation was taken (unix milliseconds),
    /// if ever.
    pub observed_at_ms: Option<u64>,
    /// How often it has been restarted.
    pub restarts: u32,
    /// The restart backoff attempt its next failure will use (0 after a
    /// stable run or a spec change): a restored node goes on backing off
    /// from there, not from the first attempt.
    pub backoff_attempt: u32,
    /// Its last error, as shown to users.
    pub last_error: Option<String>,
    /// Its last action and how it ended, if it ran one.
    pub last_action: Option<LastAction>,
}

/// A node's last action, as shown in its observed document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastAction {
    /// The action's name.
    pub action: String,
    /// How it ended; `None` while it runs.
    pub outcome: Option<StoredOutcome>,
}

/// How an action ended, as stored: the outcomes of [`ActionOutcome`],
/// [`StoredOutcome::Interrupted`] among them, for an action whose process
/// ended while it ran.
///
/// (A plain enum of its own, rather than [`ActionOutcome`], so that the
/// stored format does not change when that type's serde shape does.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StoredOutcome {
    /// The action returned `Ok`.
    Succeeded,
    /// The action returned an error or panicked.
    Failed(String),
    /// The action ran past its timeout.
    TimedOut,
    /// The action was cancelled before it finished.
    Cancelled,
    /// The executor's queue was full; the action never ran.
    Rejected(String),
    /// The action was started and its process ended before it finished.
    Interrupted,
}

impl StoredOutcome {
    /// A short label: `succeeded`, `failed`, `timed_out`, `cancelled`,
    /// `rejected` or `interrupted` (the labels of
    /// [`ActionOutcome::label`]).
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed(_) => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Rejected(_) => "rejected",
            Self::Interrupted => "interrupted",
        }
    }
}

impl From<ActionOutcome> for StoredOutcome {
    fn from(outcome: ActionOutcome) -> Self {
        match outcome {
            ActionOutcome::Succeeded => Self::Succeeded,
            ActionOutcome::Failed(e) => Self::Failed(e),
            ActionOutcome::TimedOut => Self::TimedOut,
            ActionOutcome::Cancelled => Self::Cancelled,
            ActionOutcome::Rejected(e) => Self::Rejected(e),
            ActionOutcome::Interrupted => Self::Interrupted,
        }
    }
}

impl From<StoredOutcome> for ActionOutcome {
    fn from(outcome: StoredOutcome) -> Self {
        match outcome {
            StoredOutcome::Succeeded => Self::Succeeded,
            StoredOutcome::Failed(e) => Self::Failed(e),
            StoredOutcome::TimedOut => Self::TimedOut,
            StoredOutcome::Cancelled => Self::Cancelled,
            StoredOutcome::Rejected(e) => Self::Rejected(e),
            StoredOutcome::Interrupted => Self::Interrupted,
        }
    }
}

/// One action of a node: written when it starts (without an outcome) and
/// again when it ends (with one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The node that runs it.
    pub node: NodePath,
    /// The action's name.
    pub action: String,
    /// Its id, unique among the node's actions; with the node, the key.
    pub id: u64,
    /// When it started (unix milliseconds).
    pub started_at_ms: u64,
    /// How it ended; `None` while it runs.
    pub outcome: Option<StoredOutcome>,
}

impl ActionRecord {
    /// The record of an action as it starts: written before the action
    /// runs, without an outcome.
    #[must_use]
    pub fn started(node: NodePath, action: impl Into<String>, id: u64, started_at_ms: u64) -> Self {
        Self {
            node,
            action: action.into(),
            id,
            started_at_ms,
            outcome: None,
        }
    }

    /// The same record with the action's outcome: written when it ends.
    #[must_use]
    pub fn finished(mut self, outcome: impl Into<StoredOutcome>) -> Self {
        self.outcome = Some(outcome.into());
        self
    }
}

/// The tree's root spec as last committed, which describes the whole desired
/// tree, and the tree's generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredRoot {
    /// The root's spec.
    pub spec: ChildSpec,
    /// Counts the tree's spec changes; a higher generation is newer.
    pub generation: u64,
}

/// Everything stored of one node. A node is in the store once its identity
/// is; the documents may follow later.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct NodeRecord {
    /// Who the node is.
    pub identity: NodeIdentity,
    /// What it was asked to be, if written.
    pub desired: Option<DesiredDocument>,
    /// What it was last seen to be, if written.
    pub observed: Option<ObservedDocument>,
    /// Its actions, by id.
    pub actions: BTreeMap<u64, ActionRecord>,
}

impl NodeRecord {
    /// A record with only an identity.
    #[must_use]
    pub fn new(identity: NodeIdentity) -> Self {
        Self {
            identity,
            desired: None,
            observed: None,
            actions: BTreeMap::new(),
        }
    }
}

/// What a store holds: the last committed root spec and every node.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct StoredTree {
    /// The last committed root spec, if one was written.
    pub root: Option<StoredRoot>,
    /// Every node, by path.
    pub nodes: BTreeMap<NodePath, NodeRecord>,
}

impl StoredTree {
    /// Gives every action without an outcome the outcome
    /// [`StoredOutcome::Interrupted`] (see the [module docs](self)); returns
    /// how many it changed.
    pub fn interrupt_unfinished(&mut self) -> usize {
        let mut count = 0;
        for record in self.nodes.values_mut() {
            for action in record.actions.values_mut() {
                if action.outcome.is_none() {
                    action.outcome = Some(StoredOutcome::Interrupted);
                    count += 1;
                }
            }
            if let Some(last) = record
                .observed
                .as_mut()
                .and_then(|o| o.last_action.as_mut())
                .filter(|last| last.outcome.is_none())
            {
                last.outcome = Some(StoredOutcome::Interrupted);
            }
        }
        count
    }

    /// Whether the store held nothing at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.root.is_none() && self.nodes.is_empty()
    }

    /// The changes that write this tree into an empty store: the root spec,
    /// then each node's identity (parents before children), documents and
    /// actions.
    ///
    /// # Examples
    ///
    /// ```
    /// use fsm_core::store::{Change, MemoryStore, NodeIdentity, Store};
    /// use fsm_core::NodePath;
    ///
    /// let mut store = MemoryStore::new();
    /// let path = NodePath::top().child("plant");
    /// store.write(&[Change::Identity(NodeIdentity::new(path, "plant"))])?;
    /// let tree = store.load()?.expect("a tree");
    ///
    /// let mut copy = MemoryStore::new();
    /// copy.write(&tree.clone().into_changes())?;
    /// assert_eq!(copy.load()?, Some(tree));
    /// # Ok::<(), fsm_core::store::StoreError>(())
    /// ```
    #[must_use]
    pub fn into_changes(self) -> Vec<Change> {
        let mut changes = Vec::with_capacity(1 + self.nodes.len() * 2);
        changes.extend(self.root.map(Change::Root));
        for (path, record) in self.nodes {
            changes.push(Change::Identity(record.identity));
            if let Some(desired) = record.desired {
                changes.push(Change::Desired(path.clone(), desired));
            }
            if let Some(observed) = record.observed {
                changes.push(Change::Observed(path, observed));
            }
            changes.extend(record.actions.into_values().map(Change::Action));
        }
        changes
    }
}

/// One change in a batch handed to [`Store::write`]. Upserts replace what
/// was stored under the same key (the latest wins). Serialisable, so that
/// a store can be mirrored elsewhere (a placed subtree's host sends its
/// changes to the parent's node).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Change {
    /// Sets the root spec and the tree's generation.
    Root(StoredRoot),
    /// Sets a node's identity (adds the node).
    Identity(NodeIdentity),
    /// Sets a node's desired document; the node's identity must be stored
    /// already or earlier in the same batch.
    Desired(NodePath, DesiredDocument),
    /// Sets a node's observed document; the identity must be stored, as for
    /// [`Change::Desired`].
    Observed(NodePath, ObservedDocument),
    /// Sets an action record (keyed by node and id); the node's identity
    /// must be stored, as for [`Change::Desired`].
    Action(ActionRecord),
    /// Removes a node and all its records (its identity, documents and
    /// actions), and so every node below it (its whole subtree: a removed
    /// node's children are removed with it). Removing a node that is not
    /// stored does nothing.
    Remove(NodePath),
}

impl Change {
    /// The node the change is about (the top path for [`Change::Root`]).
    #[must_use]
    pub fn path(&self) -> NodePath {
        match self {
            Self::Root(_) => NodePath::top(),
            Self::Identity(identity) => identity.path.clone(),
            Self::Desired(path, _) | Self::Observed(path, _) | Self::Remove(path) => path.clone(),
            Self::Action(action) => action.node.clone(),
        }
    }
}

/// Storing or loading failed. Each names the node (or the file) and what to
/// do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A document or action of a node was written before the node's
    /// identity. The whole batch was refused.
    #[error(
        "node `{path}`: a record was written before the node's identity; write the identity first, in the same or an earlier batch (nothing of this batch was stored)"
    )]
    UnknownNode {
        /// The node without an identity.
        path: NodePath,
    },
    /// A stored record of a node cannot be read.
    #[error(
        "node `{path}`: the stored {what} is unreadable: {source}; the store is corrupt: restore it from a backup, or remove it to start afresh"
    )]
    Corrupt {
        /// The node whose record it is (the top path for the root spec).
        path: NodePath,
        /// Which record (`identity`, `desired document`, ...).
        what: &'static str,
        /// What is wrong with its bytes.
        #[source]
        source: CodecError,
    },
    /// A record could not be encoded.
    #[error("node `{path}`: the {what} could not be encoded: {source}; fix the value")]
    Encode {
        /// The node whose record it is.
        path: NodePath,
        /// Which record.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: CodecError,
    },
    /// The store was written by a newer schema than this build knows.
    #[error(
        "store `{location}` has schema version {found}, this build reads up to version {supported}; run a newer build on it (nothing was changed)"
    )]
    NewerSchema {
        /// The store (a file name, or `memory`).
        location: String,
        /// The schema version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The store is not one (a file of another kind, or tables missing).
    #[error(
        "`{location}` is not a store: {message}; point to a store file, or to a new file to create one (nothing was changed)"
    )]
    NotAStore {
        /// The file.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// The backend failed (I/O, a locked or full disk, ...).
    #[error(
        "store `{location}`: {message}; check that the file is reachable, writable and not locked by another process, and that the disk has room"
    )]
    Backend {
        /// The store (a file name, or `memory`).
        location: String,
        /// The backend's message.
        message: String,
    },
}

/// A store of trees: a backend keeps every node's records and the root
/// spec. Synchronous, since it is driven from one place (the runtime runs
/// it off the tick).
pub trait Store {
    /// Commits a batch: all of its changes, in order, or (on an error)
    /// none of them.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownNode`] when a change needs a node's identity
    /// that is neither stored nor earlier in the batch; [`StoreError::Encode`]
    /// and [`StoreError::Backend`] as they come.
    fn write(&mut self, batch: &[Change]) -> Result<(), StoreError>;

    /// Reads everything stored as it is, without the interrupted-action
    /// rule; `None` when the store holds nothing. Callers use
    /// [`Store::load`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] for a record that cannot be decoded (naming
    /// its node), [`StoreError::Backend`] as it comes.
    fn read_all(&self) -> Result<Option<StoredTree>, StoreError>;

    /// Reads everything stored, every started action without an outcome
    /// given [`StoredOutcome::Interrupted`]; `None` when the store holds
    /// nothing.
    ///
    /// # Errors
    ///
    /// As for [`Store::read_all`].
    fn load(&self) -> Result<Option<StoredTree>, StoreError> {
        Ok(self.read_all()?.map(|mut tree| {
            tree.interrupt_unfinished();
            tree
        }))
    }
}

/// A store shared with others (say, a test that reads what a running tree
/// wrote): each call locks it. A poisoned lock is taken over, since a
/// batch is applied all or nothing.
impl<S: Store + ?Sized> Store for std::sync::Arc<std::sync::Mutex<S>> {
    fn write(&mut self, batch: &[Change]) -> Result<(), StoreError> {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .write(batch)
    }

    fn read_all(&self) -> Result<Option<StoredTree>, StoreError> {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .read_all()
    }
}

impl<S: Store + ?Sized> Store for Box<S> {
    fn write(&mut self, batch: &[Change]) -> Result<(), StoreError> {
        (**self).write(batch)
    }

    fn read_all(&self) -> Result<Option<StoredTree>, StoreError> {
        (**self).read_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_action_keeps_the_runtime_outcome_and_its_label() {
        let outcomes = [
            ActionOutcome::Succeeded,
            ActionOutcome::Failed("boom".to_owned()),
            ActionOutcome::TimedOut,
            ActionOutcome::Cancelled,
            ActionOutcome::Rejected("queue full".to_owned()),
            ActionOutcome::Interrupted,
        ];
        for outcome in outcomes {
            let label = outcome.label();
            let record =
                ActionRecord::started(NodePath::parse("plant"), "connect", 1, 5).finished(outcome);
            let stored = record.outcome.unwrap();
            assert_eq!(stored.label(), label);
            assert_eq!(ActionOutcome::from(stored).label(), label);
        }
        assert_eq!(StoredOutcome::Interrupted.label(), "interrupted");
    }

    #[test]
    fn interrupting_counts_only_actions_without_an_outcome() {
        let path = NodePath::parse("plant");
        let mut record = NodeRecord::new(NodeIdentity::new(path.clone(), "t"));
        record
            .actions
            .insert(1, ActionRecord::started(path.clone(), "a", 1, 0));
        record.actions.insert(
            2,
            ActionRecord::started(path.clone(), "b", 2, 0).finished(ActionOutcome::Succeeded),
        );
        let mut tree = StoredTree::default();
        tree.nodes.insert(path.clone(), record);
        assert_eq!(tree.interrupt_unfinished(), 1);
        assert_eq!(
            tree.interrupt_unfinished(),
            0,
            "an interrupted action is not interrupted again"
        );
        assert_eq!(
            tree.nodes[&path].actions[&2].outcome,
            Some(StoredOutcome::Succeeded)
        );
    }
}
