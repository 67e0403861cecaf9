//! What `Tree::spawn` refuses, and what it spawns with an unhealthy root:
//! the cases its docs list, one test each.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fsm_actors::{NodeSnapshot, Tree, TreeConfig, TreeError};
use fsm_core::{ChildSpec, Value};
use integration::{ProbeSpec, ProbeWorld, probe_registry, probe_spec};

fn to_value(spec: &ProbeSpec) -> Value {
    Value::from_serialize(spec).expect("a probe spec serialises")
}

fn config() -> TreeConfig {
    let mut c = TreeConfig::default();
    c.tick_interval = Some(Duration::from_millis(100));
    c
}

/// Spawns `root` (the tree must spawn), lets it run a while, and returns
/// the root's snapshot (its root unhealthy, and not restarted for it) and
/// the probes' world.
async fn unhealthy_root(root: ChildSpec) -> (NodeSnapshot, ProbeWorld) {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(root, probe_registry(&world), config())
        .await
        .expect("spawned");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let snap = tree.inspect().await.unwrap();
    assert!(!snap.healthy, "{snap:?}");
    assert_eq!(snap.restarts, 0, "a configuration problem is not a failure");
    tree.shutdown(Duration::from_secs(5)).await;
    (snap, world)
}

/// The root's last error, as [`unhealthy_root`] leaves it.
async fn unhealthy_root_error(root: ChildSpec) -> String {
    unhealthy_root(root).await.0.last_error.unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn a_root_name_with_a_slash_is_refused_and_nothing_runs() {
    let world = ProbeWorld::default();
    let root = probe_spec("a/b", vec![]);
    let err = Tree::spawn(root, probe_registry(&world), config())
        .await
        .unwrap_err();
    assert!(matches!(err, TreeError::InvalidRootSpec(_)), "{err}");
    assert_eq!(world.journal.constructions("a/b"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_root_template_with_an_undefined_variable_spawns_an_unhealthy_root_naming_it() {
    let spec = ProbeSpec {
        label: "{{ MISSING }}".into(),
        ..ProbeSpec::default()
    };
    let root = ChildSpec::new("root", "probe").with_spec(to_value(&spec));
    let error = unhealthy_root_error(root).await;
    assert!(error.contains("MISSING"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_root_declaring_a_child_of_an_unknown_type_spawns_unhealthy_without_its_children() {
    let root = probe_spec(
        "root",
        vec![
            probe_spec("good", vec![]),
            ChildSpec::new("pump", "no-such-type"),
        ],
    );
    let (snap, world) = unhealthy_root(root).await;
    // The declaration is refused as a whole: its last good one (none) stays.
    assert!(snap.children.is_empty(), "{snap:?}");
    assert_eq!(world.journal.constructions("root/good"), 0);
    let error = snap.last_error.unwrap_or_default();
    assert!(error.contains("root/pump"), "{error}");
    assert!(error.contains("no-such-type"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_root_whose_desired_state_is_not_one_of_its_states_spawns_unhealthy() {
    let spec = ProbeSpec::default().with_target("flying");
    let root = ChildSpec::new("root", "probe").with_spec(to_value(&spec));
    let error = unhealthy_root_error(root).await;
    assert!(error.contains("flying"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_root_with_duplicate_child_names_spawns_unhealthy() {
    let root = probe_spec(
        "root",
        vec![probe_spec("a", vec![]), probe_spec("a", vec![])],
    );
    let error = unhealthy_root_error(root).await;
    assert!(
        error.contains("duplicate") || error.contains("twice"),
        "{error}"
    );
}
