//! A node's table of running children, kept in start order (which is the
//! order siblings are stopped in, reversed), with lookups by name and by
//! actor id, and the set of children being stopped on purpose (whose exit
//! must not be mistaken for a failure).

use std::collections::HashMap;

use fsm_core::{ChildSpec, ChildStatus, NodePath, RunningChild, SpecHash};
use ractor::{ActorId, ActorRef};

use super::messages::NodeMsg;
use crate::snapshot::SubtreeCounts;

/// One running child.
pub(crate) struct ChildEntry {
    pub(crate) path: NodePath,
    pub(crate) spec: ChildSpec,
    pub(crate) hash: SpecHash,
    pub(crate) actor: ActorRef<NodeMsg>,
    pub(crate) generation: u64,
    pub(crate) status: ChildStatus,
    pub(crate) subtree: SubtreeCounts,
    /// The mapped desired state last sent to the child.
    pub(crate) sent_parent_state: Option<String>,
}

impl ChildEntry {
    pub(crate) fn name(&self) -> &str {
        &self.spec.name
    }
}

#[derive(Default)]
pub(crate) struct ChildTable {
    entries: Vec<ChildEntry>,
    by_name: HashMap<String, usize>,
    by_id: HashMap<ActorId, usize>,
    /// Children stopping on purpose: actor id → (name, actor).
    stopping: HashMap<ActorId, (String, ActorRef<NodeMsg>)>,
    /// Statuses in start order, rebuilt only after a report changed them.
    statuses: Vec<ChildStatus>,
    statuses_dirty: bool,
}

impl ChildTable {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &ChildEntry> {
        self.entries.iter()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut ChildEntry> {
        self.entries.iter_mut()
    }

    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut ChildEntry> {
        let i = *self.by_name.get(name)?;
        self.entries.get_mut(i)
    }

    pub(crate) fn insert(&mut self, entry: ChildEntry) {
        let i = self.entries.len();
        self.by_name.insert(entry.name().to_owned(), i);
        self.by_id.insert(entry.actor.get_id(), i);
        self.entries.push(entry);
        self.statuses_dirty = true;
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<ChildEntry> {
        let i = *self.by_name.get(name)?;
        Some(self.remove_at(i))
    }

    pub(crate) fn remove_by_id(&mut self, id: ActorId) -> Option<ChildEntry> {
        let i = *self.by_id.get(&id)?;
        Some(self.remove_at(i))
    }

    /// Removes the most recently started child.
    pub(crate) fn pop_last(&mut self) -> Option<ChildEntry> {
        let last = self.entries.len().checked_sub(1)?;
        Some(self.remove_at(last))
    }

    fn remove_at(&mut self, i: usize) -> ChildEntry {
        let entry = self.entries.remove(i);
        self.by_name.clear();
        self.by_id.clear();
        for (j, e) in self.entries.iter().enumerate() {
            self.by_name.insert(e.name().to_owned(), j);
            self.by_id.insert(e.actor.get_id(), j);
        }
        self.statuses_dirty = true;
        entry
    }

    pub(crate) fn running(&self) -> Vec<RunningChild<'_>> {
        self.entries
            .iter()
            .map(|e| RunningChild {
                name: e.name(),
                worker_type: &e.spec.worker_type,
                hash: e.hash,
            })
            .collect()
    }

    /// Records a child's report; `false` if it is from a child that is no
    /// longer running under that name and generation.
    pub(crate) fn record_report(
        &mut self,
        name: &str,
        generation: u64,
        status: ChildStatus,
        subtree: SubtreeCounts,
    ) -> bool {
        let Some(entry) = self.get_mut(name) else {
            return false;
        };
        if entry.generation != generation {
            return false;
        }
        entry.status = status;
        entry.subtree = subtree;
        self.statuses_dirty = true;
        true
    }

    pub(crate) fn statuses(&mut self) -> &[ChildStatus] {
        if self.statuses_dirty {
            self.statuses.clear();
            self.statuses
                .extend(self.entries.iter().map(|e| e.status.clone()));
            self.statuses_dirty = false;
        }
        &self.statuses
    }

    pub(crate) fn mark_stopping(&mut self, name: String, actor: ActorRef<NodeMsg>) {
        self.stopping.insert(actor.get_id(), (name, actor));
    }

    pub(crate) fn finish_stopping(&mut self, id: ActorId) -> Option<String> {
        self.stopping.remove(&id).map(|(name, _)| name)
    }

    /// The children still stopping.
    pub(crate) fn stopping_actors(&self) -> Vec<ActorRef<NodeMsg>> {
        self.stopping.values().map(|(_, a)| a.clone()).collect()
    }

    pub(crate) fn is_stopping(&self, id: ActorId) -> bool {
        self.stopping.contains_key(&id)
    }

    pub(crate) fn is_name_stopping(&self, name: &str) -> bool {
        self.stopping.values().any(|(n, _)| n == name)
    }

    pub(crate) fn stopping_count(&self) -> usize {
        self.stopping.len()
    }

    pub(crate) fn subtree_counts(&self) -> SubtreeCounts {
        let mut c = SubtreeCounts::default();
        for e in &self.entries {
            c.add(e.subtree);
        }
        c
    }

    pub(crate) fn all_converged(&self) -> bool {
        self.entries.iter().all(|e| e.status.converged)
    }
}
