//! Observed state that outlives a placement. A placed subtree runs on its
//! host with a store in memory ([`HostedStore`]); what it records of its
//! nodes (identities, observed documents, actions) goes to the parent's
//! node with each lease renewal ([`MirrorDelta`]) and is kept there, per
//! placed child, in the tree's [`Mirrors`] — which outlive the proxy. When
//! the subtree is placed again (its node was lost, or its placement
//! changed), the new host starts it on a store holding those records: the
//! subtree is restored as a tree is from its store (each node's last
//! observed document shown as `restored`, restart counts and backoff
//! carried over, actions cut off by the loss ending `interrupted`), from
//! the child's declared spec.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use fsm_core::ChildSpec;
use fsm_core::store::{Change, MemoryStore, Store, StoreError, StoredRoot, StoredTree};
use serde::{Deserialize, Serialize};

/// The most changes a host keeps for a subtree between two renewals; past
/// it, the next renewal sends the subtree's records whole instead.
const OUTBOX_LIMIT: usize = 10_000;

/// The records a placed subtree carries to its next placement. The root
/// spec and desired documents are not among them: the parent declares
/// those afresh.
fn carried(change: &Change) -> bool {
    matches!(
        change,
        Change::Identity(_) | Change::Observed(..) | Change::Action(_) | Change::Remove(_)
    )
}

fn carried_changes(tree: StoredTree) -> Vec<Change> {
    tree.into_changes().into_iter().filter(carried).collect()
}

/// What a host sends with a renewal: the subtree's changes since the last
/// renewal, or (`whole`) all its records, to replace what the parent's
/// node kept.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct MirrorDelta {
    pub(crate) whole: bool,
    pub(crate) changes: Vec<Change>,
}

struct Hosted {
    store: MemoryStore,
    outbox: Vec<Change>,
    overflowed: bool,
}

/// The store of a subtree placed on this host: in memory, keeping what it
/// writes for the subtree's next renewal.
#[derive(Clone)]
pub(crate) struct HostedStore(Arc<Mutex<Hosted>>);

impl HostedStore {
    /// A store holding `restore` (the records the subtree carried from its
    /// last placement) under the root spec `root`, or nothing.
    pub(crate) fn new(root: &ChildSpec, restore: Vec<Change>) -> Result<Self, StoreError> {
        let mut store = MemoryStore::new();
        if !restore.is_empty() {
            let mut batch = Vec::with_capacity(restore.len() + 1);
            batch.push(Change::Root(StoredRoot {
                spec: root.clone(),
                generation: 0,
            }));
            batch.extend(restore.into_iter().filter(carried));
            store.write(&batch)?;
        }
        Ok(Self(Arc::new(Mutex::new(Hosted {
            store,
            outbox: Vec::new(),
            overflowed: false,
        }))))
    }

    /// What changed since the last call, or everything if `whole` is asked
    /// for (or too much changed to keep).
    pub(crate) fn take(&self, whole: bool) -> Result<MirrorDelta, StoreError> {
        let mut hosted = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if whole || hosted.overflowed {
            hosted.outbox.clear();
            hosted.overflowed = false;
            let changes = hosted
                .store
                .read_all()?
                .map(carried_changes)
                .unwrap_or_default();
            return Ok(MirrorDelta {
                whole: true,
                changes,
            });
        }
        Ok(MirrorDelta {
            whole: false,
            changes: std::mem::take(&mut hosted.outbox),
        })
    }
}

impl Store for HostedStore {
    fn write(&mut self, batch: &[Change]) -> Result<(), StoreError> {
        let mut hosted = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        hosted.store.write(batch)?;
        if !hosted.overflowed {
            hosted
                .outbox
                .extend(batch.iter().filter(|c| carried(c)).cloned());
            if hosted.outbox.len() > OUTBOX_LIMIT {
                hosted.outbox = Vec::new();
                hosted.overflowed = true;
            }
        }
        Ok(())
    }

    fn read_all(&self) -> Result<Option<StoredTree>, StoreError> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .store
            .read_all()
    }
}

/// What a tree's proxies received of their subtrees' records, by placed
/// child. Shared by the tree's proxies through its [`ClusterLink`], so that
/// a proxy started after its node was lost finds what the last one kept.
///
/// [`ClusterLink`]: super::ClusterLink
#[derive(Clone, Default)]
pub(crate) struct Mirrors(Arc<Mutex<HashMap<String, MemoryStore>>>);

impl std::fmt::Debug for Mirrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.0.lock().map_or(0, |m| m.len());
        f.debug_struct("Mirrors").field("children", &held).finish()
    }
}

impl Mirrors {
    /// Applies what the host of `key` sent. On an error (a change that
    /// does not fit what is kept: a renewal's answer was lost) what is kept
    /// is dropped, and `Err` asks for the records whole at the next
    /// renewal.
    pub(crate) fn apply(&self, key: &str, delta: MirrorDelta) -> Result<(), StoreError> {
        if !delta.whole && delta.changes.is_empty() {
            return Ok(());
        }
        let mut mirrors = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let store = mirrors.entry(key.to_owned()).or_default();
        if delta.whole {
            *store = MemoryStore::new();
        }
        store.write(&delta.changes).inspect_err(|_| {
            mirrors.remove(key);
        })
    }

    /// The records to place the subtree of `key` with (empty when none
    /// were received).
    pub(crate) fn records(&self, key: &str) -> Vec<Change> {
        let mirrors = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        mirrors
            .get(key)
            .and_then(|store| store.read_all().ok().flatten())
            .map(carried_changes)
            .unwrap_or_default()
    }

    /// The child is gone for good (removed, or the tree stopped).
    pub(crate) fn forget(&self, key: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use fsm_core::NodePath;
    use fsm_core::store::conformance;

    use super::*;

    fn observed(path: &str, state: &str, restarts: u32) -> Change {
        Change::Observed(
            NodePath::parse(path),
            conformance::observed(state, restarts),
        )
    }

    #[test]
    fn a_subtrees_records_reach_the_mirror_and_place_it_again() {
        let root = ChildSpec::new("line", "line");
        let mut hosted = HostedStore::new(&root, Vec::new()).unwrap();
        let mirrors = Mirrors::default();
        hosted
            .write(&[
                Change::Root(StoredRoot {
                    spec: root.clone(),
                    generation: 1,
                }),
                conformance::identity("line"),
                conformance::identity("line/pump"),
                observed("line/pump", "running", 2),
            ])
            .unwrap();
        mirrors
            .apply("a:plant/line", hosted.take(false).unwrap())
            .unwrap();
        hosted
            .write(&[
                observed("line/pump", "stopped", 3),
                Change::Action(conformance::action("line/pump", 7, None)),
            ])
            .unwrap();
        mirrors
            .apply("a:plant/line", hosted.take(false).unwrap())
            .unwrap();
        // Nothing changed: nothing sent.
        assert!(hosted.take(false).unwrap().changes.is_empty());

        let records = mirrors.records("a:plant/line");
        assert!(records.iter().all(carried), "{records:?}");
        let placed = HostedStore::new(&root, records).unwrap();
        let tree = placed.read_all().unwrap().unwrap();
        assert_eq!(tree.root.unwrap().spec, root);
        let pump = &tree.nodes[&NodePath::parse("line/pump")];
        assert_eq!(pump.observed, Some(conformance::observed("stopped", 3)));
        assert_eq!(pump.actions.len(), 1);
        assert!(tree.nodes[&NodePath::parse("line")].observed.is_none());
    }

    #[test]
    fn a_lost_delta_drops_the_mirror_until_the_records_come_whole() {
        let root = ChildSpec::new("line", "line");
        let mut hosted = HostedStore::new(&root, Vec::new()).unwrap();
        let mirrors = Mirrors::default();
        hosted
            .write(&[
                conformance::identity("line"),
                observed("line", "running", 0),
            ])
            .unwrap();
        // This answer never arrives.
        drop(hosted.take(false).unwrap());
        hosted.write(&[observed("line", "stopped", 1)]).unwrap();
        // An observed document of a node the mirror never heard of.
        assert!(mirrors.apply("k", hosted.take(false).unwrap()).is_err());
        assert!(mirrors.records("k").is_empty());
        mirrors.apply("k", hosted.take(true).unwrap()).unwrap();
        assert_eq!(mirrors.records("k").len(), 2);
        mirrors.forget("k");
        assert!(mirrors.records("k").is_empty());
    }

    #[test]
    fn too_many_changes_between_renewals_are_sent_whole() {
        let root = ChildSpec::new("line", "line");
        let mut hosted = HostedStore::new(&root, Vec::new()).unwrap();
        hosted.write(&[conformance::identity("line")]).unwrap();
        for restarts in 0..=OUTBOX_LIMIT as u32 {
            hosted
                .write(&[observed("line", "running", restarts)])
                .unwrap();
        }
        let delta = hosted.take(false).unwrap();
        assert!(delta.whole);
        assert_eq!(delta.changes.len(), 2, "{:?}", delta.changes);
        assert!(!hosted.take(false).unwrap().whole);
    }
}
