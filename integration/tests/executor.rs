//! The pooled executor: each of the five outcomes reaches the node
//! (`last_action`) and the counters, every enqueued action is accounted for,
//! and a node never has more than one action in flight.

use std::time::Duration;

use fsm_actors::{ExecutorStats, NodeSnapshot, Tree, TreeConfig};
use fsm_core::{ActionOutcome, ChildSpec};
use integration::{
    ActionMode, ProbeSpec, ProbeWorld, probe_registry, render, test_config, wait_for_snapshot,
    wait_for_stats,
};

const WAIT: Duration = Duration::from_secs(10);

/// Every enqueued action is waiting, running, or has its one outcome.
fn assert_accounted(stats: &ExecutorStats) {
    assert_eq!(
        stats.enqueued,
        stats.outcomes() + stats.queued + stats.running,
        "{stats:?}"
    );
    assert!(stats.started <= stats.enqueued, "{stats:?}");
}

fn root_of(children: Vec<ChildSpec>) -> ChildSpec {
    ProbeSpec::default().with_children(children).named("root")
}

fn outcome_of<'a>(snap: &'a NodeSnapshot, path: &str) -> Option<&'a ActionOutcome> {
    snap.find(path)?.last_action.as_ref().map(|r| &r.outcome)
}

#[tokio::test(start_paused = true)]
async fn a_successful_action_is_reported_as_succeeded() {
    let world = ProbeWorld::default();
    let root = root_of(vec![
        ProbeSpec::default().named("a"),
        ProbeSpec::default().named("b"),
    ]);
    let tree = Tree::spawn(root, probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    for n in snap.iter() {
        let report = n.last_action.as_ref().expect("every node started itself");
        assert_eq!(report.action, "start", "{}", render(&snap));
        assert_eq!(
            report.outcome,
            ActionOutcome::Succeeded,
            "{}",
            render(&snap)
        );
        assert_eq!(n.action_in_flight, None);
        assert_eq!(n.last_error, None);
    }
    let stats = tree.executor_stats().await.unwrap();
    assert_accounted(&stats);
    assert!(stats.succeeded >= 3, "{stats:?}");
    assert_eq!(stats.started, stats.enqueued, "{stats:?}");
    assert_eq!(stats.succeeded, stats.outcomes(), "{stats:?}");
    assert_eq!((stats.queued, stats.running), (0, 0), "{stats:?}");
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_action_is_reported_as_failed_with_its_error() {
    let world = ProbeWorld::default();
    let root = root_of(vec![
        ProbeSpec::default()
            .with_action(ActionMode::Fail)
            .named("bad"),
        ProbeSpec::default().named("good"),
    ]);
    let tree = Tree::spawn(root, probe_registry(&world), test_config())
        .await
        .unwrap();
    let snap = wait_for_snapshot(&tree, "bad's action to fail and good to run", WAIT, |s| {
        matches!(outcome_of(s, "root/bad"), Some(ActionOutcome::Failed(_)))
            && s.find("root/good").is_some_and(|n| n.converged)
    })
    .await
    .unwrap();
    let bad = snap.find("root/bad").unwrap();
    let report = bad.last_action.as_ref().unwrap();
    assert_eq!(report.action, "start");
    let ActionOutcome::Failed(why) = &report.outcome else {
        unreachable!("matched above")
    };
    assert!(why.contains("configured to fail"), "{why}");
    let error = bad.last_error.as_deref().unwrap_or_default();
    assert!(error.contains("action `start` failed"), "{}", render(&snap));
    assert!(error.contains("configured to fail"), "{}", render(&snap));
    assert_ne!(bad.state, "running", "{}", render(&snap));
    assert!(!world.is_up("root/bad"));
    assert_eq!(world.journal.actions_ended("root/bad", "start"), 0);
    let stats = tree.executor_stats().await.unwrap();
    assert_accounted(&stats);
    assert!(stats.failed >= 1, "{stats:?}");
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn an_action_past_its_own_timeout_is_reported_as_timed_out() {
    let world = ProbeWorld::default();
    // 200 ms, far below the executor's default of 30 s.
    let root = root_of(vec![
        ProbeSpec::default()
            .with_action(ActionMode::Hang)
            .with_action_timeout_ms(200)
            .named("slow"),
    ]);
    let tree = Tree::spawn(root, probe_registry(&world), test_config())
        .await
        .unwrap();
    let snap = wait_for_snapshot(
        &tree,
        "slow's action to time out",
        Duration::from_secs(2),
        |s| outcome_of(s, "root/slow") == Some(&ActionOutcome::TimedOut),
    )
    .await
    .unwrap();
    let slow = snap.find("root/slow").unwrap();
    assert_eq!(slow.last_action.as_ref().unwrap().action, "start");
    let error = slow.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("action `start` timed out"),
        "{}",
        render(&snap)
    );
    assert!(world.journal.actions_began("root/slow", "start") >= 1);
    assert_eq!(world.journal.actions_ended("root/slow", "start"), 0);
    let stats = tree.executor_stats().await.unwrap();
    assert_accounted(&stats);
    assert!(stats.timed_out >= 1, "{stats:?}");
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn removing_a_node_cancels_its_running_action() {
    let world = ProbeWorld::default();
    let ok = ProbeSpec::default().named("ok");
    // No timeout of its own: only cancellation can end it within the test.
    let hung = ProbeSpec::default()
        .with_action(ActionMode::Hang)
        .named("hung");
    let tree = Tree::spawn(
        root_of(vec![ok.clone(), hung]),
        probe_registry(&world),
        test_config(),
    )
    .await
    .unwrap();
    wait_for_snapshot(&tree, "hung's action to run, ok to converge", WAIT, |s| {
        s.find("root/hung")
            .is_some_and(|n| n.action_in_flight.as_deref() == Some("start"))
            && s.find("root/ok").is_some_and(|n| n.converged)
    })
    .await
    .unwrap();
    let before = tree.executor_stats().await.unwrap();
    assert_eq!(before.running, 1, "{before:?}");
    assert_eq!(before.cancelled, 0, "{before:?}");

    tree.update_root_spec(root_of(vec![ok])).unwrap();

    let stats = wait_for_stats(&tree, "the action to be cancelled", WAIT, |s| {
        s.cancelled >= 1
    })
    .await
    .unwrap();
    assert_accounted(&stats);
    assert_eq!(stats.running, 0, "{stats:?}");
    assert_eq!(stats.timed_out, 0, "{stats:?}");
    assert_eq!(world.journal.actions_began("root/hung", "start"), 1);
    assert_eq!(world.journal.actions_ended("root/hung", "start"), 0);
    assert_eq!(world.journal.stopped(), ["root/hung"]);
    let snap = tree.inspect().await.unwrap();
    assert!(snap.find("root/hung").is_none(), "{}", render(&snap));
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_rejects_actions() {
    let world = ProbeWorld::default();
    let mut config: TreeConfig = test_config();
    config.executor.concurrency = 1;
    config.executor.queue_capacity = 1;
    let hang = ProbeSpec::default().with_action(ActionMode::Hang);
    let root = root_of(
        ["s1", "s2", "s3", "s4"]
            .iter()
            .map(|name| hang.named(name))
            .collect(),
    );
    let tree = Tree::spawn(root, probe_registry(&world), config)
        .await
        .unwrap();
    let snap = wait_for_snapshot(&tree, "some node to see a rejection", WAIT, |s| {
        s.iter().any(|n| {
            matches!(
                n.last_action.as_ref().map(|r| &r.outcome),
                Some(ActionOutcome::Rejected(_))
            )
        })
    })
    .await
    .unwrap();
    let rejected = snap
        .iter()
        .find_map(|n| match n.last_action.as_ref().map(|r| &r.outcome) {
            Some(ActionOutcome::Rejected(why)) => Some(why.clone()),
            _ => None,
        })
        .unwrap();
    assert!(rejected.contains("queue is full"), "{rejected}");
    // Let the nodes keep asking for a while; the bounds hold throughout.
    for _ in 0..10 {
        let stats = tree.executor_stats().await.unwrap();
        assert_accounted(&stats);
        assert!(stats.running <= 1, "{stats:?}");
        assert!(stats.queued <= 1, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = tree.executor_stats().await.unwrap();
    assert!(stats.rejected > 0, "{stats:?}");
    // With one slot, only one of the hanging actions ever began.
    let began: usize = ["s1", "s2", "s3", "s4"]
        .iter()
        .map(|name| {
            world
                .journal
                .actions_began(&format!("root/{name}"), "start")
        })
        .sum();
    assert_eq!(began, 1, "{stats:?}");
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_node_never_has_more_than_one_action_in_flight() {
    let world = ProbeWorld::default();
    let root = root_of(vec![
        ProbeSpec::default()
            .with_action(ActionMode::Hang)
            .named("h"),
        ProbeSpec::default().named("ok"),
    ]);
    let tree = Tree::spawn(root, probe_registry(&world), test_config())
        .await
        .unwrap();
    wait_for_snapshot(&tree, "h's action to run", WAIT, |s| {
        s.find("root/h")
            .is_some_and(|n| n.action_in_flight.is_some())
    })
    .await
    .unwrap();
    // Fifty more ticks, each of which runs h's state machine, which asks for
    // a start every time.
    let ticks = tree.status().ticks;
    tree.wait_ticks(ticks + 50).await.unwrap();

    assert_eq!(world.journal.actions_began("root/h", "start"), 1);
    let snap = tree.inspect().await.unwrap();
    let h = snap.find("root/h").unwrap();
    assert_eq!(
        h.action_in_flight.as_deref(),
        Some("start"),
        "{}",
        render(&snap)
    );
    assert_eq!(h.last_action, None, "{}", render(&snap));
    let stats = tree.executor_stats().await.unwrap();
    assert_accounted(&stats);
    // Nothing else of h waits behind the running one.
    assert_eq!((stats.running, stats.queued), (1, 0), "{stats:?}");
    assert_eq!(stats.enqueued, stats.outcomes() + 1, "{stats:?}");
    tree.shutdown(Duration::from_secs(5)).await;
}
