//! [`MemoryStore`]: the store in memory, for tests.

use std::collections::BTreeMap;

use crate::path::NodePath;

use super::codec::{decode, encode};
use super::{Change, NodeRecord, Store, StoreError, StoredTree};

/// The encoded records, as a backend's tables hold them.
#[derive(Clone, Debug, Default)]
struct Tables {
    root: Option<Vec<u8>>,
    identity: BTreeMap<NodePath, Vec<u8>>,
    desired: BTreeMap<NodePath, Vec<u8>>,
    observed: BTreeMap<NodePath, Vec<u8>>,
    actions: BTreeMap<(NodePath, u64), Vec<u8>>,
}

impl Tables {
    fn apply(&mut self, change: &Change) -> Result<(), StoreError> {
        let known = |tables: &Self, path: &NodePath| {
            if tables.identity.contains_key(path) {
                Ok(())
            } else {
                Err(StoreError::UnknownNode { path: path.clone() })
            }
        };
        match change {
            Change::Root(root) => self.root = Some(encode(&NodePath::top(), root)?),
            Change::Identity(identity) => {
                let bytes = encode(&identity.path, identity)?;
                self.identity.insert(identity.path.clone(), bytes);
            }
            Change::Desired(path, doc) => {
                known(self, path)?;
                self.desired.insert(path.clone(), encode(path, doc)?);
            }
            Change::Observed(path, doc) => {
                known(self, path)?;
                self.observed.insert(path.clone(), encode(path, doc)?);
            }
            Change::Action(action) => {
                known(self, &action.node)?;
                let bytes = encode(&action.node, action)?;
                self.actions.insert((action.node.clone(), action.id), bytes);
            }
            Change::Remove(path) => {
                // The node and its whole subtree.
                let kept = |node: &NodePath| !node.starts_with(path);
                self.identity.retain(|node, _| kept(node));
                self.desired.retain(|node, _| kept(node));
                self.observed.retain(|node, _| kept(node));
                self.actions.retain(|(node, _), _| kept(node));
            }
        }
        Ok(())
    }
}

/// A [`Store`] in memory, for tests: it keeps the encoded records (so the
/// store's codec runs as with a durable backend) and can be told to fail.
///
/// Each batch is applied to a copy of everything, which is swapped in when
/// the whole batch applied: simple and atomic, not fast.
///
/// # Examples
///
/// ```
/// use fsm_core::NodePath;
/// use fsm_core::store::{Change, MemoryStore, NodeIdentity, Store};
///
/// let mut store = MemoryStore::new();
/// let path = NodePath::parse("plant");
/// store.write(&[Change::Identity(NodeIdentity::new(path.clone(), "plant"))])?;
/// let tree = store.load()?.expect("one node is stored");
/// assert_eq!(tree.nodes[&path].identity.worker_type, "plant");
/// # Ok::<(), fsm_core::store::StoreError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    tables: Tables,
    failing: Option<String>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every write fail with [`StoreError::Backend`] and `message`
    /// (as a full disk would), or, with `None`, succeed again.
    pub fn fail_writes(&mut self, message: Option<&str>) {
        self.failing = message.map(str::to_owned);
    }

    /// Sets the stored bytes of a node's observed document as they are,
    /// bypassing the codec: for tests of what a corrupt store gives.
    pub fn put_raw_observed(&mut self, path: &NodePath, bytes: &[u8]) {
        self.tables.observed.insert(path.clone(), bytes.to_vec());
    }
}

impl Store for MemoryStore {
    fn write(&mut self, batch: &[Change]) -> Result<(), StoreError> {
        if let Some(message) = &self.failing {
            return Err(StoreError::Backend {
                location: "memory".to_owned(),
                message: message.clone(),
            });
        }
        let mut staged = self.tables.clone();
        for change in batch {
            staged.apply(change)?;
        }
        self.tables = staged;
        Ok(())
    }

    fn read_all(&self) -> Result<Option<StoredTree>, StoreError> {
        let t = &self.tables;
        let mut tree = StoredTree {
            root: t
                .root
                .as_deref()
                .map(|bytes| decode(&NodePath::top(), bytes))
                .transpose()?,
            nodes: BTreeMap::new(),
        };
        for (path, bytes) in &t.identity {
            tree.nodes
                .insert(path.clone(), NodeRecord::new(decode(path, bytes)?));
        }
        // Records without an identity cannot be written; a node missing
        // from `nodes` here is skipped rather than invented.
        for (path, bytes) in &t.desired {
            if let Some(record) = tree.nodes.get_mut(path) {
                record.desired = Some(decode(path, bytes)?);
            }
        }
        for (path, bytes) in &t.observed {
            if let Some(record) = tree.nodes.get_mut(path) {
                record.observed = Some(decode(path, bytes)?);
            }
        }
        for ((path, id), bytes) in &t.actions {
            if let Some(record) = tree.nodes.get_mut(path) {
                record.actions.insert(*id, decode(path, bytes)?);
            }
        }
        Ok((!tree.is_empty()).then_some(tree))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[test]
    fn the_memory_store_passes_the_conformance_suite() {
        conformance::run(MemoryStore::new, |store, path, bytes| {
            store.put_raw_observed(path, bytes);
        });
    }

    #[test]
    fn a_failing_backend_stores_nothing_of_the_batch_and_recovers() {
        let mut store = MemoryStore::new();
        store.fail_writes(Some("disk full"));
        let change = conformance::identity("plant");
        let err = store.write(std::slice::from_ref(&change)).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert!(store.load().unwrap().is_none());
        store.fail_writes(None);
        store.write(&[change]).unwrap();
        assert_eq!(store.load().unwrap().unwrap().nodes.len(), 1);
    }

    #[test]
    fn a_tree_written_back_from_its_changes_is_the_same_tree() {
        use crate::store::{Change, StoredOutcome, StoredRoot};
        use crate::{ChildSpec, NodePath};
        let mut store = MemoryStore::new();
        let line = NodePath::parse("plant/line-1");
        store
            .write(&[
                Change::Root(StoredRoot {
                    spec: ChildSpec::new("plant", "plant"),
                    generation: 3,
                }),
                conformance::identity("plant"),
                conformance::identity("plant/line-1"),
                conformance::identity("plant/line-1/pump"),
                Change::Desired(NodePath::parse("plant"), conformance::desired("plant", 3)),
                Change::Observed(line.clone(), conformance::observed("running", 2)),
                Change::Action(conformance::action("plant/line-1", 4, None)),
                Change::Action(conformance::action(
                    "plant/line-1/pump",
                    5,
                    Some(StoredOutcome::Succeeded),
                )),
            ])
            .unwrap();
        let tree = store.read_all().unwrap().unwrap();

        let mut copy = MemoryStore::new();
        copy.write(&tree.clone().into_changes()).unwrap();
        // Read as written: the unfinished action is still unfinished.
        assert_eq!(copy.read_all().unwrap(), Some(tree));
    }
}
