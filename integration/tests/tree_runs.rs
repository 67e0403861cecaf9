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

#[tokio::test(start_paused = true)]
async fn a_stop_hook_that_overruns_its_budget_is_forced_while_its_siblings_stop_cleanly() {
    use fsm_actors::StopOutcome;
    use integration::ProbeSpec;

    let world = ProbeWorld::default();
    let root = ProbeSpec::default()
        .with_children(vec![
            probe_spec("first", vec![]),
            ProbeSpec::default().with_hanging_stop().named("stuck"),
            probe_spec("last", vec![]),
        ])
        .named("root");
    let mut config = config();
    config.stop_hook_timeout = Duration::from_secs(1);
    let tree = Tree::spawn(root, probe_registry(&world), config)
        .await
        .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    let report = tree.shutdown(Duration::from_secs(10)).await;
    let outcomes: Vec<(&str, bool)> = report
        .stopped
        .iter()
        .map(|r| (r.path.as_str(), r.outcome == StopOutcome::Clean))
        .collect();
    // The stuck stop hook costs only its own budget: its siblings and the
    // root still stop cleanly, in order.
    assert_eq!(
        outcomes,
        [
            ("root/last", true),
            ("root/stuck", false),
            ("root/first", true),
            ("root", true)
        ],
        "{report:?}"
    );
    assert!(
        matches!(&report.stopped[1].outcome, StopOutcome::Forced(why) if why.contains("stop hook"))
    );
    assert!(!world.journal.stopped().contains(&"root/stuck".to_owned()));
}
