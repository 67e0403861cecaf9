//! A collect that hangs or fails makes its node stale and unhealthy once
//! `stale_after` (2 s in `test_config`) passes without a good observation;
//! it never holds up ticks, and its siblings converge regardless.

// The helpers below run outside `#[test]` functions, where clippy.toml's
// allow-unwrap-in-tests does not reach; a panic is how they fail a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fsm_actors::Tree;
use integration::{
    CollectMode, ProbeSpec, ProbeWorld, probe_registry, render, test_config, wait_for_snapshot,
};

const WAIT: Duration = Duration::from_secs(10);

/// Spawns `root ─ {s1, stuck, s2}` with `stuck` collecting as `mode`, checks
/// it turns stale only after `stale_after` while the rest converges, and
/// returns `stuck`'s error.
async fn stuck_sibling(mode: CollectMode) -> String {
    let world = ProbeWorld::default();
    let root = ProbeSpec::default()
        .with_children(vec![
            ProbeSpec::default().named("s1"),
            ProbeSpec::default().with_collect(mode).named("stuck"),
            ProbeSpec::default().named("s2"),
        ])
        .named("root");
    let tree = Tree::spawn(root, probe_registry(&world), test_config())
        .await
        .unwrap();

    // Before `stale_after`, a node without an observation is not stale yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let snap = tree.inspect().await.unwrap();
    let stuck = snap.find("root/stuck").unwrap();
    assert!(!stuck.stale, "{}", render(&snap));
    assert!(stuck.healthy, "{}", render(&snap));

    let snap = wait_for_snapshot(&tree, "stuck to be stale, s1 and s2 converged", WAIT, |s| {
        s.find("root/stuck").is_some_and(|n| n.stale)
            && ["root/s1", "root/s2"]
                .iter()
                .all(|p| s.find(p).is_some_and(|n| n.converged))
    })
    .await
    .unwrap();
    let stuck = snap.find("root/stuck").unwrap();
    assert!(!stuck.healthy, "{}", render(&snap));
    assert!(!stuck.converged, "{}", render(&snap));
    let error = stuck.last_error.clone().unwrap_or_default();
    assert!(error.starts_with("stale"), "{error}");
    for path in ["root", "root/s1", "root/s2"] {
        let n = snap.find(path).unwrap();
        assert!(n.healthy, "{}", render(&snap));
        assert!(!n.stale, "{}", render(&snap));
    }
    for path in ["root/s1", "root/s2"] {
        let n = snap.find(path).unwrap();
        assert_eq!(n.state, "running", "{}", render(&snap));
        assert!(world.is_up(path));
    }

    // Ticks keep their pace (100 ms): about 20 in 2 s, not one per
    // observation timeout (500 ms).
    let before = tree.status().ticks;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = tree.status().ticks;
    assert!(after >= before + 15, "{before} -> {after} ticks in 2 s");
    let status = tree.status();
    assert_eq!(status.counts.nodes, 4, "{status:?}");
    assert_eq!(status.counts.unhealthy, 1, "{status:?}");
    assert!(!status.converged, "{status:?}");
    let snap = tree.inspect().await.unwrap();
    assert!(snap.find("root/stuck").unwrap().stale, "{}", render(&snap));

    tree.shutdown(Duration::from_secs(5)).await;
    error
}

#[tokio::test(start_paused = true)]
async fn a_hanging_collect_makes_the_node_stale_without_blocking_ticks() {
    let error = stuck_sibling(CollectMode::Hang).await;
    assert!(error.contains("collect timed out"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_collect_makes_the_node_stale_without_blocking_ticks() {
    let error = stuck_sibling(CollectMode::Fail).await;
    assert!(error.contains("configured to fail"), "{error}");
}
