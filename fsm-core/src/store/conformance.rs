//! The checks every [`Store`] backend must pass, as plain functions that
//! panic on the first failure: call [`run`] from a test of the backend.
//!
//! They cover writing and loading every kind of record, overwriting (the
//! latest wins), removing, atomic batches (a batch that fails leaves nothing
//! of itself), the interrupted-action rule, and typed errors for malformed
//! bytes.

use crate::path::NodePath;
use crate::spec::ChildSpec;
use crate::value::Value;

use super::codec::{self, STORE_FORMAT};
use super::{
    ActionRecord, Change, DesiredDocument, LastAction, NodeIdentity, ObservedDocument, Store,
    StoreError, StoredOutcome, StoredRoot, StoredTree,
};

/// Runs every check, each on a fresh store from `open`.
/// `put_raw_observed` must store the given bytes as the observed document
/// of the given (stored) node, bypassing the codec, as disk corruption
/// would.
///
/// # Panics
///
/// On the first check that fails, with what was expected.
pub fn run<S: Store>(
    mut open: impl FnMut() -> S,
    put_raw_observed: impl Fn(&mut S, &NodePath, &[u8]),
) {
    an_empty_store_loads_as_nothing(&mut open());
    every_record_written_loads_back(&mut open());
    the_latest_write_wins(&mut open());
    a_removed_node_loses_all_its_records(&mut open());
    a_failed_batch_leaves_nothing_of_itself(&mut open());
    started_actions_without_an_outcome_load_as_interrupted(&mut open());
    malformed_bytes_give_a_typed_error_naming_the_node(&mut open(), &put_raw_observed);
}

/// The change that adds the node at `path` (worker type `t`).
#[must_use]
pub fn identity(path: &str) -> Change {
    Change::Identity(NodeIdentity::new(NodePath::parse(path), "t"))
}

/// A desired document for the node named `name`, at `generation`.
#[must_use]
pub fn desired(name: &str, generation: u64) -> DesiredDocument {
    DesiredDocument {
        spec: ChildSpec::new(name, "t")
            .with_spec(Value::map([("generation", Value::from(generation as i64))])),
        generation,
    }
}

/// An observed document in `state`, with `restarts`.
#[must_use]
pub fn observed(state: &str, restarts: u32) -> ObservedDocument {
    ObservedDocument {
        state: state.to_owned(),
        observed_at_ms: Some(1_764_000_000_000 + u64::from(restarts)),
        restarts,
        backoff_attempt: restarts.min(5),
        last_error: (restarts > 0).then(|| "connection refused".to_owned()),
        last_action: Some(LastAction {
            action: "connect".to_owned(),
            outcome: Some(StoredOutcome::Succeeded),
        }),
    }
}

/// An action record of the node at `path`.
#[must_use]
pub fn action(path: &str, id: u64, outcome: Option<StoredOutcome>) -> ActionRecord {
    let started = ActionRecord::started(
        NodePath::parse(path),
        format!("action-{id}"),
        id,
        1_764_000_000_000 + id,
    );
    match outcome {
        Some(outcome) => started.finished(outcome),
        None => started,
    }
}

fn load(store: &impl Store) -> Option<StoredTree> {
    store.load().unwrap_or_else(|e| panic!("load failed: {e}"))
}

fn write(store: &mut impl Store, batch: &[Change]) {
    store
        .write(batch)
        .unwrap_or_else(|e| panic!("write failed: {e}"));
}

fn loaded(store: &impl Store) -> StoredTree {
    load(store).unwrap_or_else(|| panic!("the store holds nothing, though it was written"))
}

/// A new store holds nothing.
pub fn an_empty_store_loads_as_nothing(store: &mut impl Store) {
    assert_eq!(load(store), None);
    write(store, &[]);
    assert_eq!(load(store), None, "an empty batch stores nothing");
}

/// Every kind of record comes back as written.
pub fn every_record_written_loads_back(store: &mut impl Store) {
    let root = StoredRoot {
        spec: ChildSpec::new("plant", "plant").with_spec(Value::from("v1")),
        generation: 4,
    };
    let plant = NodePath::parse("plant");
    let line = NodePath::parse("plant/line-1");
    write(
        store,
        &[
            Change::Root(root.clone()),
            identity("plant"),
            identity("plant/line-1"),
            Change::Desired(plant.clone(), desired("plant", 1)),
            Change::Observed(line.clone(), observed("running", 2)),
            Change::Action(action("plant/line-1", 9, Some(StoredOutcome::TimedOut))),
        ],
    );
    let tree = loaded(store);
    assert_eq!(tree.root, Some(root));
    assert_eq!(tree.nodes.len(), 2);
    let p = &tree.nodes[&plant];
    assert_eq!(p.identity, NodeIdentity::new(plant.clone(), "t"));
    assert_eq!(p.desired, Some(desired("plant", 1)));
    assert_eq!(p.observed, None);
    assert!(p.actions.is_empty());
    let l = &tree.nodes[&line];
    assert_eq!(l.identity.name, "line-1");
    assert_eq!(l.desired, None);
    assert_eq!(l.observed, Some(observed("running", 2)));
    assert_eq!(
        l.actions.values().collect::<Vec<_>>(),
        [&action("plant/line-1", 9, Some(StoredOutcome::TimedOut))]
    );
}

/// A record written again replaces the one before, in one batch or across
/// batches.
pub fn the_latest_write_wins(store: &mut impl Store) {
    let path = NodePath::parse("plant");
    write(
        store,
        &[
            identity("plant"),
            Change::Desired(path.clone(), desired("plant", 1)),
            Change::Desired(path.clone(), desired("plant", 2)),
            Change::Action(action("plant", 1, None)),
        ],
    );
    write(
        store,
        &[
            Change::Observed(path.clone(), observed("starting", 0)),
            Change::Observed(path.clone(), observed("running", 1)),
            Change::Action(action("plant", 1, Some(StoredOutcome::Succeeded))),
            Change::Root(StoredRoot {
                spec: ChildSpec::new("plant", "t"),
                generation: 1,
            }),
        ],
    );
    write(
        store,
        &[Change::Root(StoredRoot {
            spec: ChildSpec::new("plant", "t2"),
            generation: 2,
        })],
    );
    let tree = loaded(store);
    let record = &tree.nodes[&path];
    assert_eq!(record.desired, Some(desired("plant", 2)));
    assert_eq!(record.observed, Some(observed("running", 1)));
    assert_eq!(record.actions.len(), 1);
    assert_eq!(record.actions[&1].outcome, Some(StoredOutcome::Succeeded));
    assert_eq!(
        tree.root.map(|r| (r.spec.worker_type, r.generation)),
        Some(("t2".to_owned(), 2))
    );
}

/// Removing a node removes its identity, documents and actions, and those
/// of every node below it, and nothing of any other node (not even one
/// whose name starts with the removed one's); removing an unknown node does
/// nothing.
pub fn a_removed_node_loses_all_its_records(store: &mut impl Store) {
    let a = NodePath::parse("plant/a");
    let b = NodePath::parse("plant/b");
    let below = [
        NodePath::parse("plant/a/x"),
        NodePath::parse("plant/a/x/deep"),
    ];
    // Neighbours a prefix match would catch (in path order).
    let neighbours = [
        NodePath::parse("plant/a%"),
        NodePath::parse("plant/a_"),
        NodePath::parse("plant/ab"),
    ];
    let mut batch = Vec::new();
    for path in below.iter().chain(&neighbours) {
        batch.extend([
            Change::Identity(NodeIdentity::new(path.clone(), "t")),
            Change::Observed(path.clone(), observed("running", 0)),
            Change::Action(action(path.as_str(), 1, None)),
        ]);
    }
    write(store, &batch);
    write(store, &[Change::Remove(a.clone())]);
    let tree = loaded(store);
    assert_eq!(
        tree.nodes.keys().collect::<Vec<_>>(),
        neighbours.iter().collect::<Vec<_>>(),
        "removing `plant/a` must remove its subtree and only that"
    );
    for path in &neighbours {
        assert_eq!(tree.nodes[path].actions.len(), 1);
        assert!(tree.nodes[path].observed.is_some());
    }
    write(store, &neighbours.map(Change::Remove));
    let mut batch = Vec::new();
    for path in [&a, &b] {
        batch.extend([
            Change::Identity(NodeIdentity::new(path.clone(), "t")),
            Change::Desired(path.clone(), desired(path.name(), 1)),
            Change::Observed(path.clone(), observed("running", 0)),
            Change::Action(action(path.as_str(), 1, None)),
        ]);
    }
    write(store, &batch);
    write(
        store,
        &[
            Change::Remove(a.clone()),
            Change::Remove(NodePath::parse("nowhere")),
        ],
    );
    let tree = loaded(store);
    assert_eq!(tree.nodes.keys().collect::<Vec<_>>(), [&b]);
    let record = &tree.nodes[&b];
    assert!(record.desired.is_some() && record.observed.is_some());
    assert_eq!(record.actions.len(), 1);
    // Added again, the node starts with nothing but its identity.
    write(
        store,
        &[Change::Identity(NodeIdentity::new(a.clone(), "t"))],
    );
    let tree = loaded(store);
    let again = &tree.nodes[&a];
    assert!(again.desired.is_none() && again.observed.is_none() && again.actions.is_empty());
    write(store, &[Change::Remove(a), Change::Remove(b)]);
    assert_eq!(
        load(store),
        None,
        "a store with every node removed holds nothing"
    );
}

/// A batch that fails part-way stores none of its changes, including
/// those before the failing one, and the store stays usable.
pub fn a_failed_batch_leaves_nothing_of_itself(store: &mut impl Store) {
    let plant = NodePath::parse("plant");
    write(
        store,
        &[
            identity("plant"),
            Change::Observed(plant.clone(), observed("running", 0)),
        ],
    );
    let before = loaded(store);
    let ghost = NodePath::parse("plant/ghost");
    let err = store
        .write(&[
            identity("plant/new"),
            Change::Observed(plant.clone(), observed("stopping", 5)),
            Change::Remove(plant.clone()),
            Change::Root(StoredRoot {
                spec: ChildSpec::new("plant", "t"),
                generation: 9,
            }),
            Change::Desired(ghost.clone(), desired("ghost", 1)),
        ])
        .err()
        .unwrap_or_else(|| panic!("a record of a node without identity was accepted"));
    assert!(
        matches!(&err, StoreError::UnknownNode { path } if *path == ghost),
        "{err:?}"
    );
    assert!(err.to_string().contains("plant/ghost"), "{err}");
    assert_eq!(
        loaded(store),
        before,
        "the failed batch left something of itself"
    );
    // The store still takes batches.
    write(store, &[identity("plant/new")]);
    assert_eq!(loaded(store).nodes.len(), 2);
}

/// A started action without an outcome loads as interrupted; one with an
/// outcome keeps it. The rule is applied on load, and `read_all` shows
/// the records as they are.
pub fn started_actions_without_an_outcome_load_as_interrupted(store: &mut impl Store) {
    let path = NodePath::parse("plant");
    let mut running = observed("running", 0);
    running.last_action = Some(LastAction {
        action: "action-2".to_owned(),
        outcome: None,
    });
    write(
        store,
        &[
            identity("plant"),
            Change::Action(action("plant", 1, None)),
            Change::Action(action(
                "plant",
                1,
                Some(StoredOutcome::Failed("boom".to_owned())),
            )),
            Change::Action(action("plant", 2, None)),
            Change::Observed(path.clone(), running),
        ],
    );
    let tree = loaded(store);
    let record = &tree.nodes[&path];
    assert_eq!(
        record.actions[&1].outcome,
        Some(StoredOutcome::Failed("boom".to_owned()))
    );
    assert_eq!(record.actions[&2].outcome, Some(StoredOutcome::Interrupted));
    assert_eq!(
        record
            .observed
            .as_ref()
            .and_then(|o| o.last_action.as_ref())
            .and_then(|l| l.outcome.clone()),
        Some(StoredOutcome::Interrupted)
    );
    let raw = store
        .read_all()
        .unwrap_or_else(|e| panic!("read failed: {e}"))
        .unwrap_or_else(|| panic!("the store holds nothing"));
    assert_eq!(raw.nodes[&path].actions[&2].outcome, None);
    // Each started action has exactly one outcome: every started action
    // loads with one, and the finished one is not counted twice.
    let outcomes: Vec<_> = record
        .actions
        .values()
        .map(|a| a.outcome.as_ref().map(StoredOutcome::label))
        .collect();
    assert_eq!(outcomes, [Some("failed"), Some("interrupted")]);
}

/// Bytes that are not a record (garbage, truncated, a future format) give
/// [`StoreError::Corrupt`] naming the node, never a panic.
pub fn malformed_bytes_give_a_typed_error_naming_the_node<S: Store>(
    store: &mut S,
    put_raw_observed: &impl Fn(&mut S, &NodePath, &[u8]),
) {
    let path = NodePath::parse("plant/line-1");
    write(store, &[identity("plant/line-1")]);
    let good = codec::encode(&path, &observed("running", 1)).unwrap_or_else(|e| panic!("{e}"));
    let mut future = good.clone();
    future[0] = STORE_FORMAT.wrapping_add(1);
    let cases = [
        Vec::new(),
        good[..good.len() / 2].to_vec(),
        good[..good.len() - 1].to_vec(),
        b"\x01garbage that is no record".to_vec(),
        future,
    ];
    for bytes in cases {
        put_raw_observed(store, &path, &bytes);
        let err = store
            .load()
            .err()
            .unwrap_or_else(|| panic!("{bytes:?} loaded as a record"));
        assert!(
            matches!(&err, StoreError::Corrupt { path: p, what: "observed document", .. } if *p == path),
            "{err:?}"
        );
        assert!(err.to_string().contains("plant/line-1"), "{err}");
    }
    put_raw_observed(store, &path, &good);
    assert_eq!(
        loaded(store).nodes[&path].observed,
        Some(observed("running", 1))
    );
}
