//! What a node does with what it observes and with how its actions end:
//! failures are visible at once, a failed action is retried with backoff,
//! and the state machine acts only on what it has seen after its last
//! action.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fsm_actors::{NodeSnapshot, Tree};
use fsm_core::{ActionOutcome, Backoff};
use integration::{
    ActionMode, CollectMode, ProbeSpec, ProbeWorld, probe_registry, render, test_config,
    wait_for_snapshot,
};

const WAIT: Duration = Duration::from_secs(10);

fn root(snap: &NodeSnapshot) -> &NodeSnapshot {
    snap.find("root")
        .unwrap_or_else(|| panic!("no root in\n{}", render(snap)))
}

#[tokio::test(start_paused = true)]
async fn an_action_is_not_asked_again_before_its_effect_is_observed() {
    let world = ProbeWorld::default();
    // The collect answers with what the world was 300 ms earlier; the
    // start action takes 50 ms. A collect started before the action ended
    // still says "down" when it arrives after it.
    let spec = ProbeSpec::default()
        .with_collect_delay_ms(300)
        .with_action_delay_ms(50)
        .named("root");
    let tree = Tree::spawn(spec, probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    assert_eq!(
        world.journal.actions_began("root", "start"),
        1,
        "the start action ran again on an observation taken before it ended"
    );
    let _ = tree.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_collect_is_visible_at_once_with_its_error_and_count() {
    let world = ProbeWorld::default();
    let spec = ProbeSpec::default()
        .with_collect(CollectMode::Fail)
        .named("root");
    let tree = Tree::spawn(spec, probe_registry(&world), test_config())
        .await
        .unwrap();
    // Well before the node goes stale (2 s).
    tree.wait_ticks(3).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    let node = root(&snap);
    assert!(!node.stale, "{}", render(&snap));
    assert!(node.collect_failures >= 1, "{}", render(&snap));
    let error = node.last_collect_error.as_ref().expect("a collect error");
    assert!(
        error.error.contains("probe collect configured to fail"),
        "{error:?}"
    );
    assert!(error.ago_ms < 1_000, "{error:?}");
    let _ = tree.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_shows_why_the_state_last_changed() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(
        ProbeSpec::default().named("root"),
        probe_registry(&world),
        test_config(),
    )
    .await
    .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    assert_eq!(root(&snap).state, "running");
    assert_eq!(root(&snap).state_reason, "process is up");
    let _ = tree.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_action_asked_for_again_is_retried_with_backoff() {
    let world = ProbeWorld::default();
    let failing = ProbeSpec::default().with_action(ActionMode::Fail);
    let tree = Tree::spawn(failing.named("root"), probe_registry(&world), test_config())
        .await
        .unwrap();
    // Ten seconds of ticks every 100 ms: asked for on about every tick, but
    // held back 0.5 s, 1 s, 2 s, 4 s, ... after each failure.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let attempts = world.journal.actions_began("root", "start");
    assert!(
        (3..=6).contains(&attempts),
        "{attempts} attempts in 10 s of 100 ms ticks"
    );
    let snap = tree.inspect().await.unwrap();
    let node = root(&snap);
    let last = node.last_action.as_ref().expect("a last action");
    assert!(
        matches!(&last.outcome, ActionOutcome::Failed(e) if e.contains("configured to fail")),
        "{last:?}"
    );
    assert!(
        node.last_error
            .as_deref()
            .is_some_and(|e| e.contains("configured to fail")),
        "{}",
        render(&snap)
    );

    // Once it can succeed, it does (after the wait in force), and converges.
    tree.update_root_spec(ProbeSpec::default().named("root"))
        .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    let snap = wait_for_snapshot(&tree, "no error left", WAIT, |s| {
        root(s).last_error.is_none()
    })
    .await
    .unwrap();
    assert_eq!(root(&snap).state, "running");
    let _ = tree.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn a_changed_spec_runs_the_held_back_action_at_once() {
    let world = ProbeWorld::default();
    let mut config = test_config();
    config.action_backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
        jitter: 0.0,
        reset_after: Duration::ZERO,
    };
    let failing = ProbeSpec::default().with_action(ActionMode::Fail);
    let tree = Tree::spawn(failing.named("root"), probe_registry(&world), config)
        .await
        .unwrap();
    // Failures after 0, 1, 3, 7, 15 and 31 s: the next try is held back
    // until 63 s.
    tokio::time::sleep(Duration::from_secs(40)).await;
    let failed = world.journal.actions_began("root", "start");
    assert_eq!(failed, 6, "attempts in 40 s");

    // The spec is fixed: the action runs on the next ticks, not at 63 s.
    tree.update_root_spec(ProbeSpec::default().named("root"))
        .unwrap();
    tree.wait_converged(Duration::from_secs(2)).await.unwrap();
    assert_eq!(world.journal.actions_began("root", "start"), failed + 1);
    assert_eq!(root(&tree.inspect().await.unwrap()).state, "running");
    let _ = tree.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn a_node_that_has_not_handled_its_last_tick_is_not_sent_another() {
    let world = ProbeWorld::default();
    let mut config = test_config();
    config.tick_interval = None;
    let tree = Tree::spawn(
        ProbeSpec::default().named("root"),
        probe_registry(&world),
        config,
    )
    .await
    .unwrap();
    for _ in 0..20 {
        tree.tick().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tree.wait_converged(WAIT).await.unwrap();
    let before = root(&tree.inspect().await.unwrap()).ticks;
    // A burst of ticks, all queued at the top before any is handled: the
    // root never has more than one of them waiting.
    let burst = 1_000;
    for _ in 0..burst {
        tree.tick().unwrap();
    }
    let top_ticks = tree.status().ticks;
    tree.wait_ticks(top_ticks + burst).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    let handled = root(&snap).ticks - before;
    assert!(handled >= 1, "{}", render(&snap));
    assert!(
        handled < burst / 2,
        "the root handled {handled} of {burst} ticks sent in one burst"
    );
    let _ = tree.shutdown(WAIT).await;
}
