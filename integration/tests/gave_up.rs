//! A tree that gave up (its root exceeded the top's restart intensity)
//! says so to every call at once, and its shutdown reports what happened:
//! its nodes had stopped in order already.

// The helpers below run outside `#[test]` functions: a panic is how they
// fail a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fsm_actors::{Tree, TreeError};
use integration::{Fault, ProbeSpec, ProbeWorld, probe_registry, test_config};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);

/// A tree whose root tolerates one restart in a minute, and whose leaf
/// crashes on every tick: it gives up within a few ticks.
async fn a_tree_that_gave_up() -> (ProbeWorld, Tree) {
    let world = ProbeWorld::default();
    let (config, root) = integration::giving_up(test_config());
    let tree = Tree::spawn(root, probe_registry(&world), config)
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    world.arm("root/leaf", Fault::Crash, u32::MAX);
    tokio::time::timeout(WAIT, tree.wait_fatal())
        .await
        .expect("the tree to give up")
        .unwrap();
    (world, tree)
}

fn is_fatal<T: std::fmt::Debug>(result: Result<T, TreeError>) -> bool {
    matches!(result, Err(TreeError::Fatal(_)))
}

#[tokio::test(start_paused = true)]
async fn every_call_on_a_tree_that_gave_up_says_so_at_once() {
    let (_world, tree) = a_tree_that_gave_up().await;
    let t0 = Instant::now();
    assert!(is_fatal(tree.tick()));
    assert!(is_fatal(
        tree.update_root_spec(ProbeSpec::default().named("root"))
    ));
    let ticks = tree.status().ticks;
    assert!(is_fatal(
        tokio::time::timeout(WAIT, tree.wait_ticks(ticks + 1))
            .await
            .expect("wait_ticks to answer, not hang")
    ));
    assert!(is_fatal(tree.wait_converged(WAIT).await));
    assert!(is_fatal(tree.inspect().await));
    assert!(is_fatal(tree.update_globals(fsm_core::Map::new())));
    assert!(is_fatal(tree.observation::<bool>("root").await));
    assert_eq!(t0.elapsed(), Duration::ZERO, "every answer came at once");
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_of_a_tree_that_gave_up_is_prompt_and_forces_nothing() {
    let (world, tree) = a_tree_that_gave_up().await;
    assert_eq!(tree.live_nodes(), 0);
    let stopped_before = world.journal.stopped();
    let t0 = Instant::now();
    let report = tree.shutdown(Duration::from_secs(5)).await;
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(report.forced().count(), 0, "{report:?}");
    // Nothing ran a stop hook twice.
    assert_eq!(world.journal.stopped(), stopped_before);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_without_a_deadline_does_not_panic() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(
        ProbeSpec::default().named("root"),
        probe_registry(&world),
        test_config(),
    )
    .await
    .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let report = tree.shutdown(Duration::MAX).await;
    assert!(report.all_clean(), "{report:?}");
    assert_eq!(world.journal.stopped(), vec!["root".to_owned()]);
}
