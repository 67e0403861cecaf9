//! A tree is watched and changed through cloneable handles, from any task,
//! and only its owner shuts it down; a worker whose constructor fails fails
//! its start.

// Test helpers outside `#[test]` functions unwrap too: a panic fails the test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fsm_actors::{Tree, TreeError};
use fsm_core::SpecError;
use integration::{
    Fault, ProbeSpec, ProbeWorld, probe_registry, probe_spec, small_tree, test_config,
};
use tokio::sync::oneshot;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(30);
const STOP: Duration = Duration::from_secs(5);

#[tokio::test(start_paused = true)]
async fn a_handle_in_another_task_inspects_and_updates_while_the_owner_shuts_down() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(small_tree(), probe_registry(&world), test_config())
        .await
        .unwrap();
    let handle = tree.handle();
    let (changed_tx, changed) = oneshot::channel();
    let watcher = tokio::spawn(async move {
        handle.wait_converged(WAIT).await.unwrap();
        let before = handle.inspect().await.unwrap();
        let generation = handle
            .update_root_spec(probe_spec(
                "root",
                vec![probe_spec("a", vec![]), probe_spec("c", vec![])],
            ))
            .unwrap();
        handle.wait_converged(WAIT).await.unwrap();
        let after = handle.inspect().await.unwrap();
        changed_tx.send(()).unwrap();
        // Would wait for ever: the owner's shutdown ends it.
        let waiting = handle.wait_ticks(u64::MAX).await;
        (before, generation, after, waiting, handle)
    });
    changed.await.unwrap();
    let report = tree.shutdown(STOP).await;
    assert!(report.all_clean(), "{report:?}");
    // The shutdown ends the handle's wait; the clock would run out first
    // if it did not.
    let (before, generation, after, waiting, handle) =
        tokio::time::timeout(WAIT, watcher).await.unwrap().unwrap();
    assert!(before.find("root/b").is_some());
    assert_eq!(generation, 2);
    assert!(after.find("root/c").is_some() && after.find("root/b").is_none());
    assert!(matches!(waiting, Err(TreeError::NotRunning)), "{waiting:?}");
    assert!(!handle.is_running());
    assert!(world.journal.stopped().contains(&"root/c".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn after_shutdown_every_handle_call_fails_at_once_with_not_running() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(small_tree(), probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let handle = tree.handle();
    let ticks = handle.status().ticks;
    tree.shutdown(STOP).await;

    let clone = handle.clone();
    let t0 = Instant::now();
    let calls = async {
        assert!(matches!(clone.inspect().await, Err(TreeError::NotRunning)));
        assert!(matches!(
            handle.update_root_spec(small_tree()),
            Err(TreeError::NotRunning)
        ));
        assert!(matches!(handle.tick(), Err(TreeError::NotRunning)));
        assert!(matches!(
            handle.wait_converged(Duration::from_secs(60)).await,
            Err(TreeError::NotRunning)
        ));
        assert!(matches!(
            handle.wait_generation(1, Duration::from_secs(60)).await,
            Err(TreeError::NotRunning)
        ));
        assert!(matches!(
            handle.wait_ticks(u64::MAX).await,
            Err(TreeError::NotRunning)
        ));
        assert!(matches!(
            handle.wait_fatal().await,
            Err(TreeError::NotRunning)
        ));
        assert!(matches!(
            handle.executor_stats().await,
            Err(TreeError::NotRunning)
        ));
    };
    tokio::time::timeout(Duration::from_secs(600), calls)
        .await
        .unwrap();
    // Not one of them waited for anything.
    assert_eq!(t0.elapsed(), Duration::ZERO);
    // What the tree last reported stays readable.
    assert!(handle.status().ticks >= ticks);
    assert_eq!(handle.generation(), 1);
    assert!(!handle.is_running());
}

#[tokio::test(start_paused = true)]
async fn dropping_the_tree_ends_a_handles_wait_with_not_running() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(small_tree(), probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let handle = tree.handle();
    let waiter = tokio::spawn(async move { handle.wait_fatal().await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished());
    drop(tree);
    let waited = tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(waited, Err(TreeError::NotRunning)), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_constructor_error_fails_the_start_and_the_parent_restarts_the_child() {
    let world = ProbeWorld::default();
    world.arm("root/a", Fault::ConstructorError, 2);
    let tree = Tree::spawn(small_tree(), probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    // Two failed constructions, then one that worked.
    assert_eq!(world.journal.constructions("root/a"), 3);
    let snap = tree.inspect().await.unwrap();
    assert_eq!(snap.find("root/a").unwrap().restarts, 2);
    assert_eq!(snap.find("root/a/a1").unwrap().state, "running");
    assert!(tree.restarts() >= 2);
    tree.shutdown(STOP).await;
}

#[tokio::test(start_paused = true)]
async fn spawn_refuses_a_root_whose_constructor_fails_and_names_it() {
    let world = ProbeWorld::default();
    world.arm("root", Fault::ConstructorError, 1);
    let refused = Tree::spawn(small_tree(), probe_registry(&world), test_config()).await;
    let Err(TreeError::RootConstructor(SpecError::ConstructorFailed {
        path,
        worker_type,
        message,
    })) = &refused
    else {
        panic!("spawned anyway: {:?}", refused.map(drop));
    };
    assert_eq!(path.as_str(), "root");
    assert_eq!(worker_type, "probe");
    assert!(
        message.contains("configured to fail its construction"),
        "{message}"
    );
    let shown = refused.err().unwrap().to_string();
    assert!(
        shown.contains("root worker") && shown.contains("`probe`"),
        "{shown}"
    );

    // A constructor that panics is refused the same way.
    world.arm("root", Fault::FailStart, 1);
    let refused = Tree::spawn(small_tree(), probe_registry(&world), test_config()).await;
    assert!(
        matches!(
            refused,
            Err(TreeError::RootConstructor(
                SpecError::ConstructorPanicked { .. }
            ))
        ),
        "{:?}",
        refused.map(drop)
    );
    // Nothing below the root was ever built.
    assert_eq!(world.journal.constructions("root/a"), 0);
}

#[tokio::test(start_paused = true)]
async fn the_root_built_by_spawn_is_the_one_that_runs() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(small_tree(), probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    assert_eq!(world.journal.constructions("root"), 1);
    // A replaced root is built when it starts.
    let generation = tree
        .update_root_spec(ProbeSpec::default().named_as("root", "other-probe"))
        .unwrap();
    tree.wait_generation(generation, WAIT).await.unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    assert_eq!(world.journal.constructions("root"), 2);
    assert_eq!(tree.inspect().await.unwrap().worker_type, "other-probe");
    tree.shutdown(STOP).await;
}

#[tokio::test(start_paused = true)]
async fn a_handle_stops_working_as_the_owners_shutdown_begins() {
    let world = ProbeWorld::default();
    let root = probe_spec(
        "root",
        vec![ProbeSpec::default().with_hanging_stop().named("a")],
    );
    let tree = Tree::spawn(root, probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let handle = tree.handle();
    // `a`'s stop hook hangs, so the shutdown takes until its deadline.
    let shutdown = tokio::spawn(tree.shutdown(Duration::from_secs(20)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!shutdown.is_finished());
    assert!(!handle.is_running());
    assert!(matches!(
        handle.update_root_spec(small_tree()),
        Err(TreeError::NotRunning)
    ));
    assert!(matches!(handle.inspect().await, Err(TreeError::NotRunning)));
    let report = shutdown.await.unwrap();
    assert!(!report.all_clean(), "{report:?}");
}
