//! Changing the root spec reconciles the tree at depth: children deep down
//! are added, updated in place, replaced and removed, and nothing else is
//! touched.
//!
//! The tree of every test:
//!
//! ```text
//! root ─ a ─ b ─ c1
//!      │       └ c2
//!      └ z ─ z1
//! ```

// The helpers below run outside `#[test]` functions, where clippy.toml's
// allow-unwrap-in-tests does not reach; a panic is how they fail a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fsm_actors::{NodeSnapshot, Tree};
use fsm_core::ChildSpec;
use integration::{
    Event, ProbeSpec, ProbeWorld, probe_registry, render, test_config, wait_for_snapshot,
};

const WAIT: Duration = Duration::from_secs(10);

fn leaf(name: &str) -> ChildSpec {
    ProbeSpec::default().named(name)
}

fn branch(name: &str, children: Vec<ChildSpec>) -> ChildSpec {
    ProbeSpec::default().with_children(children).named(name)
}

/// `root ─ a ─ {a_children}`, `root ─ z ─ z1`.
fn shape(a_children: Vec<ChildSpec>) -> ChildSpec {
    branch(
        "root",
        vec![branch("a", a_children), branch("z", vec![leaf("z1")])],
    )
}

fn initial() -> ChildSpec {
    shape(vec![branch("b", vec![leaf("c1"), leaf("c2")])])
}

const INITIAL_PATHS: [&str; 7] = [
    "root",
    "root/a",
    "root/a/b",
    "root/a/b/c1",
    "root/a/b/c2",
    "root/z",
    "root/z/z1",
];

async fn converged_tree(world: &ProbeWorld) -> Tree {
    let tree = Tree::spawn(initial(), probe_registry(world), test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    tree
}

fn paths(snap: &NodeSnapshot) -> Vec<&str> {
    snap.iter().map(|n| n.path.as_str()).collect()
}

fn assert_all_running(snap: &NodeSnapshot) {
    for n in snap.iter() {
        assert!(n.healthy, "{}", render(snap));
        assert_eq!(n.state, "running", "{}", render(snap));
        assert_eq!(n.desired_state, "running", "{}", render(snap));
    }
}

#[tokio::test(start_paused = true)]
async fn a_child_added_at_depth_three_is_spawned_and_converges() {
    let world = ProbeWorld::default();
    let tree = converged_tree(&world).await;

    tree.update_root_spec(shape(vec![branch(
        "b",
        vec![leaf("c1"), leaf("c2"), leaf("c3")],
    )]))
    .unwrap();

    let snap = wait_for_snapshot(&tree, "c3 to run and the tree to converge", WAIT, |s| {
        s.converged && s.find("root/a/b/c3").is_some_and(|n| n.state == "running")
    })
    .await
    .unwrap();
    assert_eq!(snap.len(), 8, "{}", render(&snap));
    assert_all_running(&snap);
    let b = snap.find("root/a/b").unwrap();
    let names: Vec<&str> = b.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["c1", "c2", "c3"]);
    assert!(world.is_up("root/a/b/c3"));
    assert_eq!(world.journal.constructions("root/a/b/c3"), 1);
    // Nothing that was there before was restarted or stopped.
    for path in INITIAL_PATHS {
        assert_eq!(world.journal.constructions(path), 1, "{path}");
    }
    assert!(world.journal.stopped().is_empty());
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_changed_spec_at_depth_three_updates_the_child_in_place() {
    let world = ProbeWorld::default();
    let tree = converged_tree(&world).await;
    assert_eq!(world.journal.derived_labels("root/a/b/c1"), [""]);

    let relabelled = ProbeSpec::default().with_label("v2").named("c1");
    tree.update_root_spec(shape(vec![branch("b", vec![relabelled, leaf("c2")])]))
        .unwrap();

    // The running worker derived again from the new spec...
    let snap = wait_for_snapshot(&tree, "c1 to derive from its new spec", WAIT, |_| {
        world.journal.derived_labels("root/a/b/c1").len() == 2
    })
    .await
    .unwrap();
    assert_eq!(world.journal.derived_labels("root/a/b/c1"), ["", "v2"]);
    // ...and was neither constructed again nor stopped.
    for path in INITIAL_PATHS {
        assert_eq!(world.journal.constructions(path), 1, "{path}");
    }
    assert!(world.journal.stopped().is_empty());
    let c1 = snap.find("root/a/b/c1").unwrap();
    assert_eq!(c1.state, "running", "{}", render(&snap));
    assert!(c1.healthy, "{}", render(&snap));
    assert!(world.is_up("root/a/b/c1"));
    // A sibling whose spec did not change was not touched at all.
    assert_eq!(world.journal.derived_labels("root/a/b/c2"), [""]);
    assert_eq!(world.journal.derived_labels("root/z/z1"), [""]);

    tree.wait_converged(WAIT).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    assert_eq!(paths(&snap), INITIAL_PATHS);
    assert_all_running(&snap);
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_changed_worker_type_at_depth_three_replaces_the_child() {
    let world = ProbeWorld::default();
    let tree = converged_tree(&world).await;

    let retyped = ProbeSpec::default().named_as("c1", "other-probe");
    tree.update_root_spec(shape(vec![branch("b", vec![retyped, leaf("c2")])]))
        .unwrap();

    let snap = wait_for_snapshot(&tree, "c1 to run as other-probe", WAIT, |s| {
        s.converged
            && s.find("root/a/b/c1")
                .is_some_and(|n| n.worker_type == "other-probe" && n.state == "running")
    })
    .await
    .unwrap();
    assert_all_running(&snap);
    assert_eq!(snap.len(), 7, "{}", render(&snap));
    // The old worker stopped (its hook ran) before the new one was built.
    assert_eq!(world.journal.stopped(), ["root/a/b/c1"]);
    assert_eq!(world.journal.constructions("root/a/b/c1"), 2);
    let events = world.journal.events();
    let stopped_at = events
        .iter()
        .position(|e| *e == Event::Stopped("root/a/b/c1".to_owned()))
        .unwrap();
    let rebuilt_at = events
        .iter()
        .rposition(|e| *e == Event::Constructed("root/a/b/c1".to_owned()))
        .unwrap();
    assert!(stopped_at < rebuilt_at, "{events:?}");
    // The new worker started its process again.
    assert!(world.is_up("root/a/b/c1"));
    for path in INITIAL_PATHS.iter().filter(|p| **p != "root/a/b/c1") {
        assert_eq!(world.journal.constructions(path), 1, "{path}");
    }
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_removed_subtree_at_depth_two_stops_children_before_parent_and_vanishes() {
    let world = ProbeWorld::default();
    let tree = converged_tree(&world).await;
    for path in ["root/a/b", "root/a/b/c1", "root/a/b/c2"] {
        assert!(world.is_up(path), "{path}");
    }

    tree.update_root_spec(shape(vec![])).unwrap();

    wait_for_snapshot(&tree, "b's subtree to stop", WAIT, |s| {
        s.find("root/a/b").is_none() && world.journal.stopped().len() == 3
    })
    .await
    .unwrap();
    // Children first, in reverse start order, then their parent.
    assert_eq!(
        world.journal.stopped(),
        ["root/a/b/c2", "root/a/b/c1", "root/a/b"]
    );
    for path in ["root/a/b", "root/a/b/c1", "root/a/b/c2"] {
        assert!(!world.is_up(path), "{path} is still up");
    }

    let snap = wait_for_snapshot(&tree, "the rest to converge", WAIT, |s| s.converged)
        .await
        .unwrap();
    assert_eq!(paths(&snap), ["root", "root/a", "root/z", "root/z/z1"]);
    assert_all_running(&snap);
    for path in ["root", "root/a", "root/z", "root/z/z1"] {
        assert_eq!(world.journal.constructions(path), 1, "{path}");
        assert!(world.is_up(path), "{path}");
    }
    assert_eq!(tree.status().counts.nodes, 4);
    tree.shutdown(Duration::from_secs(5)).await;
}

/// How many times a [`Counted`] spec was decoded.
static COUNTED_DECODES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A spec that counts its decodes.
struct CountedSpec;

impl<'de> serde::Deserialize<'de> for CountedSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Fields {
            level: u64,
        }
        COUNTED_DECODES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Fields::deserialize(d).map(|_| CountedSpec)
    }
}

struct Counted;

fsm_core::states! {
    #[derive(Clone, Debug, PartialEq)]
    enum CountedState { Running }
}

impl fsm_core::Worker for Counted {
    type Spec = CountedSpec;
    type Observed = ();
    type State = CountedState;

    fn initial_state(&self) -> CountedState {
        CountedState::Running
    }

    fn derive_desired(
        &self,
        _: &CountedSpec,
        _: &fsm_core::DeriveContext<'_>,
    ) -> Result<fsm_core::DesiredState, fsm_core::BoxError> {
        Ok(fsm_core::DesiredState::new("running"))
    }
}

impl fsm_core::State<Counted> for CountedState {
    fn next(&self, _: &fsm_core::TickContext<'_, Counted>) -> fsm_core::Transition<CountedState> {
        fsm_core::Transition::stay()
    }
}

#[tokio::test(start_paused = true)]
async fn a_changed_child_spec_is_decoded_once_on_its_way_down() {
    let counted = |level: u64| {
        let spec = ProbeSpec::default().with_children(vec![
            ChildSpec::new("counted", "counted").with_spec(fsm_core::Value::map([(
                "level",
                fsm_core::Value::Int(level as i64),
            )])),
        ]);
        spec.named("root")
    };
    let world = ProbeWorld::default();
    let mut registry = probe_registry(&world);
    registry.register("counted", |_| Counted).unwrap();
    let tree = Tree::spawn(counted(1), registry, test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    // Spawned: decoded by the parent, which checks the declaration, and
    // handed to the child.
    assert_eq!(COUNTED_DECODES.load(std::sync::atomic::Ordering::SeqCst), 1);

    let generation = tree.update_root_spec(counted(2)).unwrap();
    tree.wait_generation(generation, WAIT).await.unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    // Changed: the same, not decoded again by the child.
    assert_eq!(COUNTED_DECODES.load(std::sync::atomic::Ordering::SeqCst), 2);
    let _ = tree.shutdown(WAIT).await;
}
