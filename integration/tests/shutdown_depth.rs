//! Shutdown budgets survive depth, and the shutdown report has one record
//! per node, killed nodes included.

// The helpers below run outside `#[test]` functions: a panic is how they
// fail a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fsm_actors::{StopOutcome, Tree};
use fsm_core::ChildSpec;
use integration::{Fault, ProbeSpec, ProbeWorld, probe_registry, test_config};

const WAIT: Duration = Duration::from_secs(30);

/// A chain of probes `depth` levels deep: `n0 ─ n1 ─ … ─ n{depth-1}`.
fn chain(depth: usize) -> ChildSpec {
    (0..depth)
        .rev()
        .fold(None, |below: Option<ChildSpec>, level| {
            let children = below.into_iter().collect();
            Some(
                ProbeSpec::default()
                    .with_children(children)
                    .named(&format!("n{level}")),
            )
        })
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_chain_fifty_levels_deep_stops_cleanly_within_two_hundred_milliseconds() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(chain(50), probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let report = tree.shutdown(Duration::from_millis(200)).await;
    assert_eq!(report.stopped.len(), 50, "{report:#?}");
    assert!(report.all_clean(), "{report:#?}");
    let stopped = world.journal.stopped();
    assert_eq!(stopped.len(), 50, "every stop hook ran: {stopped:?}");
    // Deepest first.
    assert!(stopped[0].ends_with("/n49"), "{stopped:?}");
    assert_eq!(stopped[49], "n0");
}

#[tokio::test(start_paused = true)]
async fn a_killed_subtree_of_three_nodes_yields_three_forced_records() {
    let world = ProbeWorld::default();
    let mut config = test_config();
    config.stop_timeout = Duration::from_secs(60);
    config.stop_hook_timeout = Duration::from_secs(60);
    // root ─ x ─ y ─ z, where z's stop hook hangs.
    let z = ProbeSpec::default().with_hanging_stop().named("z");
    let y = ProbeSpec::default().with_children(vec![z]).named("y");
    let x = ProbeSpec::default().with_children(vec![y]).named("x");
    let root = ProbeSpec::default().with_children(vec![x]).named("root");
    let tree = Tree::spawn(root, probe_registry(&world), config)
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    // x asks for a restart: it stops its subtree first, and stays busy
    // waiting for z's hook when the tree is shut down, so it is killed.
    world.arm("root/x", Fault::RequestRestart, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = tree.shutdown(Duration::from_secs(1)).await;

    let paths: Vec<&str> = report.stopped.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        ["root/x/y/z", "root/x/y", "root/x", "root"],
        "one record per node, children first: {report:#?}"
    );
    let forced: Vec<&str> = report.forced().map(|r| r.path.as_str()).collect();
    assert_eq!(forced, ["root/x/y/z", "root/x/y", "root/x"], "{report:#?}");
    assert_eq!(report.stopped[3].outcome, StopOutcome::Clean);
}
