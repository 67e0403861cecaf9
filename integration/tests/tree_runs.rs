//! The walking skeleton: a tree converges, changes, and shuts down in order.

use std::time::Duration;

use fsm_actors::{Tree, TreeConfig};
use fsm_core::ChildSpec;
use integration::{ProbeWorld, probe_registry, probe_spec};

fn config() -> TreeConfig {
    let mut c = TreeConfig::default();
    c.tick_interval = Some(Duration::from_millis(100));
    c.observation_timeout = Duration::from_millis(500);
    c.stale_after = Duration::from_secs(2);
    c
}

fn three_levels() -> ChildSpec {
    probe_spec(
        "root",
        vec![
            probe_spec(
                "a",
                vec![probe_spec("a1", vec![]), probe_spec("a2", vec![])],
            ),
            probe_spec("b", vec![probe_spec("b1", vec![])]),
        ],
    )
}

#[tokio::test(start_paused = true)]
async fn a_three_level_tree_converges() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(three_levels(), probe_registry(&world), config())
        .await
        .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    assert_eq!(snap.len(), 6);
    assert_eq!(snap.height(), 3);
    for node in snap.iter() {
        assert!(node.healthy, "{node:?}");
        assert_eq!(node.state, "running", "{}", node.path);
        assert_eq!(node.state, node.desired_state);
    }
    assert!(world.is_up("root/a/a2"));
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_children_before_parents_in_reverse_start_order() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(three_levels(), probe_registry(&world), config())
        .await
        .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    let report = tree.shutdown(Duration::from_secs(5)).await;
    assert!(report.all_clean(), "{report:?}");
    let order: Vec<&str> = report.stopped.iter().map(|r| r.path.as_str()).collect();
    let expected = [
        "root/b/b1",
        "root/b",
        "root/a/a2",
        "root/a/a1",
        "root/a",
        "root",
    ];
    assert_eq!(order, expected);
    // The stop hooks ran in that same order.
    assert_eq!(world.journal.stopped(), expected);
}
