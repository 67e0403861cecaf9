//! A bad declaration is a typed error naming the path, and changes nothing:
//! a bad root spec is refused by the handle; a bad nested declaration makes
//! its parent unhealthy while the parent's running children keep running,
//! until the declaration is fixed.
//!
//! The tree of the nested tests:
//!
//! ```text
//! root ─ a ─ m ─ m1
//!      │       └ m2
//!      └ b ─ b1
//! ```

// The helpers below run outside `#[test]` functions, where clippy.toml's
// allow-unwrap-in-tests does not reach; a panic is how they fail a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fsm_actors::{Tree, TreeError};
use fsm_core::{ChildSpec, Value};
use integration::{ProbeSpec, ProbeWorld, probe_registry, render, test_config, wait_for_snapshot};

const WAIT: Duration = Duration::from_secs(10);

fn leaf(name: &str) -> ChildSpec {
    ProbeSpec::default().named(name)
}

fn branch(name: &str, children: Vec<ChildSpec>) -> ChildSpec {
    ProbeSpec::default().with_children(children).named(name)
}

/// A `probe` child whose spec has a string where `action_delay_ms` wants a
/// number.
fn undecodable(name: &str) -> ChildSpec {
    ChildSpec::new(name, "probe").with_spec(Value::map([("action_delay_ms", Value::from("soon"))]))
}

/// `root ─ a ─ m ─ {m_children}`, `root ─ b ─ b1`.
fn shape(m_children: Vec<ChildSpec>) -> ChildSpec {
    branch(
        "root",
        vec![
            branch("a", vec![branch("m", m_children)]),
            branch("b", vec![leaf("b1")]),
        ],
    )
}

fn good() -> ChildSpec {
    shape(vec![leaf("m1"), leaf("m2")])
}

const GOOD_PATHS: [&str; 7] = [
    "root",
    "root/a",
    "root/a/m",
    "root/a/m/m1",
    "root/a/m/m2",
    "root/b",
    "root/b/b1",
];

async fn spawn_refused(root: ChildSpec) -> TreeError {
    let world = ProbeWorld::default();
    match Tree::spawn(root, probe_registry(&world), test_config()).await {
        Ok(_) => panic!("a bad root spec was accepted"),
        Err(e) => {
            assert!(
                world.journal.events().is_empty(),
                "nothing may start: {:?}",
                world.journal.events()
            );
            e
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_unknown_root_worker_type_is_refused_at_spawn_naming_the_root() {
    let e = spawn_refused(ProbeSpec::default().named_as("plant", "nope")).await;
    assert!(matches!(e, TreeError::InvalidRootSpec(_)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("node `plant`"), "{msg}");
    assert!(msg.contains("unknown worker type `nope`"), "{msg}");
}

#[tokio::test(start_paused = true)]
async fn an_undecodable_root_spec_is_refused_at_spawn_naming_the_root() {
    let e = spawn_refused(undecodable("plant")).await;
    assert!(matches!(e, TreeError::InvalidRootSpec(_)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("node `plant`"), "{msg}");
    assert!(msg.contains("invalid type"), "{msg}");
}

#[tokio::test(start_paused = true)]
async fn a_bad_root_spec_update_is_refused_and_the_tree_keeps_running() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(good(), probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();

    let unknown = tree.update_root_spec(ProbeSpec::default().named_as("root", "nope"));
    let Err(e @ TreeError::InvalidRootSpec(_)) = unknown else {
        panic!("expected InvalidRootSpec, got {unknown:?}")
    };
    assert!(e.to_string().contains("node `root`"), "{e}");
    assert!(e.to_string().contains("unknown worker type `nope`"), "{e}");

    let bad_spec = tree.update_root_spec(undecodable("root"));
    let Err(e @ TreeError::InvalidRootSpec(_)) = bad_spec else {
        panic!("expected InvalidRootSpec, got {bad_spec:?}")
    };
    assert!(e.to_string().contains("node `root`"), "{e}");
    assert!(e.to_string().contains("invalid type"), "{e}");

    // Nothing changed, now or later.
    let ticks = tree.status().ticks;
    tree.wait_ticks(ticks + 10).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    assert!(snap.converged, "{}", render(&snap));
    let paths: Vec<&str> = snap.iter().map(|n| n.path.as_str()).collect();
    assert_eq!(paths, GOOD_PATHS);
    for path in GOOD_PATHS {
        assert_eq!(world.journal.constructions(path), 1, "{path}");
        assert_eq!(world.journal.derived_labels(path).len(), 1, "{path}");
    }
    assert!(world.journal.stopped().is_empty());
    tree.shutdown(Duration::from_secs(5)).await;
}

/// Declares `bad_m_children` under `root/a/m` in a converged tree and checks
/// that `m` reports an error containing each of `expected`, that `m1` and
/// `m2` keep running untouched and that the rest of the tree stays healthy.
/// Then declares `fixed_m_children` and checks that `m` heals. Returns the
/// tree and its world for further checks.
async fn bad_then_fixed(
    bad_m_children: Vec<ChildSpec>,
    expected: &[&str],
    fixed_m_children: Vec<ChildSpec>,
) -> (Tree, ProbeWorld) {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(good(), probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();

    tree.update_root_spec(shape(bad_m_children)).unwrap();
    wait_for_snapshot(&tree, "m to report the bad declaration", WAIT, |s| {
        s.find("root/a/m").is_some_and(|m| !m.healthy)
    })
    .await
    .unwrap();
    // Give a bad declaration time to do damage, if it would.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let snap = tree.inspect().await.unwrap();

    let m = snap.find("root/a/m").unwrap();
    assert!(!m.healthy, "{}", render(&snap));
    let error = m.last_error.as_deref().unwrap_or_default();
    for part in expected {
        assert!(error.contains(part), "`{part}` missing from {error:?}");
    }
    // The running children were left as they are.
    let names: Vec<&str> = m.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["m1", "m2"], "{}", render(&snap));
    for path in GOOD_PATHS {
        assert_eq!(world.journal.constructions(path), 1, "{path}");
    }
    assert!(world.journal.stopped().is_empty());
    // Everything but m is healthy, and m's children still run.
    for n in snap.iter().filter(|n| n.path.as_str() != "root/a/m") {
        assert!(n.healthy, "{}", render(&snap));
        assert_eq!(n.last_error, None, "{}", render(&snap));
        assert_eq!(n.state, "running", "{}", render(&snap));
    }
    assert_eq!(tree.status().counts.unhealthy, 1);

    tree.update_root_spec(shape(fixed_m_children)).unwrap();
    let snap = wait_for_snapshot(&tree, "m to heal and the tree to converge", WAIT, |s| {
        s.converged
            && s.find("root/a/m")
                .is_some_and(|m| m.healthy && m.last_error.is_none())
    })
    .await
    .unwrap();
    for n in snap.iter() {
        assert!(n.healthy, "{}", render(&snap));
        assert_eq!(n.state, "running", "{}", render(&snap));
    }
    for path in GOOD_PATHS {
        assert_eq!(world.journal.constructions(path), 1, "{path}");
    }
    (tree, world)
}

#[tokio::test(start_paused = true)]
async fn duplicate_child_names_at_depth_two_make_the_parent_unhealthy_until_reverted() {
    let (tree, _world) = bad_then_fixed(
        vec![
            leaf("m1"),
            leaf("m2"),
            ProbeSpec::default().with_label("again").named("m1"),
        ],
        &["node `root/a/m`", "`m1`", "declared twice"],
        vec![leaf("m1"), leaf("m2")],
    )
    .await;
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn an_unknown_worker_type_at_depth_two_makes_the_parent_unhealthy_until_reverted() {
    let (tree, _world) = bad_then_fixed(
        vec![
            leaf("m1"),
            leaf("m2"),
            ProbeSpec::default().named_as("x", "nope"),
        ],
        &[
            "node `root/a/m`",
            "node `root/a/m/x`",
            "unknown worker type `nope`",
        ],
        vec![leaf("m1"), leaf("m2")],
    )
    .await;
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn an_undecodable_user_spec_at_depth_two_makes_the_parent_unhealthy_until_reverted() {
    let (tree, _world) = bad_then_fixed(
        vec![leaf("m1"), leaf("m2"), undecodable("x")],
        &["node `root/a/m`", "node `root/a/m/x`", "invalid type"],
        vec![leaf("m1"), leaf("m2")],
    )
    .await;
    tree.shutdown(Duration::from_secs(5)).await;
}

/// A `probe` child whose second declared child has a number for a name.
fn misnamed_grandchild(name: &str) -> ChildSpec {
    let child = |name: Value| Value::map([("name", name), ("worker_type", "probe".into())]);
    ChildSpec::new(name, "probe").with_spec(Value::map([(
        "children",
        Value::List(vec![child("ok".into()), child(5.into())]),
    )]))
}

#[tokio::test(start_paused = true)]
async fn an_undecodable_field_deep_in_a_user_spec_is_named_by_its_path() {
    let (tree, _world) = bad_then_fixed(
        vec![leaf("m1"), leaf("m2"), misnamed_grandchild("x")],
        &[
            "node `root/a/m`",
            "node `root/a/m/x`",
            "children[1].name: invalid type: integer `5`, expected a string",
        ],
        vec![leaf("m1"), leaf("m2")],
    )
    .await;
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_corrected_declaration_heals_the_parent_and_starts_the_new_child() {
    let (tree, world) = bad_then_fixed(
        vec![
            leaf("m1"),
            leaf("m2"),
            ProbeSpec::default().named_as("x", "nope"),
        ],
        &["node `root/a/m/x`", "unknown worker type `nope`"],
        vec![leaf("m1"), leaf("m2"), leaf("x")],
    )
    .await;
    let snap = tree.inspect().await.unwrap();
    let x = snap.find("root/a/m/x").unwrap();
    assert_eq!(x.state, "running", "{}", render(&snap));
    assert_eq!(world.journal.constructions("root/a/m/x"), 1);
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn an_undecodable_spec_change_of_a_running_child_leaves_it_running() {
    // m1 runs; its new spec does not decode: m refuses the declaration and
    // m1 keeps its old spec.
    let (tree, world) = bad_then_fixed(
        vec![undecodable("m1"), leaf("m2")],
        &["node `root/a/m/m1`", "invalid type"],
        vec![leaf("m1"), leaf("m2")],
    )
    .await;
    assert_eq!(world.journal.derived_labels("root/a/m/m1"), [""]);
    tree.shutdown(Duration::from_secs(5)).await;
}
