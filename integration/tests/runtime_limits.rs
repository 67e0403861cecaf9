//! What a user can configure or build stays within what the runtime
//! handles: durations as long as `Duration` holds, and trees thousands of
//! levels deep.

// Helpers outside the tests unwrap too: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use fsm_actors::{NodeSnapshot, Tree};
use fsm_core::{Backoff, ChildSpec, Strategy, Supervision};
use integration::scale::{ScaleWorld, Shape, root_spec, scale_registry};
use integration::{Fault, ProbeSpec, ProbeWorld, probe_registry, render, test_config};

const WAIT: Duration = Duration::from_secs(60);

fn root_of(children: Vec<ChildSpec>) -> ChildSpec {
    ProbeSpec::default().with_children(children).named("root")
}

#[tokio::test(start_paused = true)]
async fn a_tree_with_an_unbounded_inspect_timeout_inspects_fine() {
    let world = ProbeWorld::default();
    let mut config = test_config();
    config.inspect_timeout = Duration::MAX;
    let tree = Tree::spawn(
        root_of(vec![ProbeSpec::default().named("a")]),
        probe_registry(&world),
        config,
    )
    .await
    .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    assert_eq!(snap.len(), 2, "{}", render(&snap));
    assert!(snap.iter().all(|n| n.state != "unavailable"));
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_backoff_longer_than_the_clock_holds_waits_instead_of_panicking() {
    let world = ProbeWorld::default();
    let mut config = test_config();
    config.tick_interval = Some(Duration::MAX);
    config.supervision = Supervision::new(Strategy::OneForOne).with_backoff(Backoff {
        base: Duration::MAX,
        max: Duration::MAX,
        jitter: 0.2,
        reset_after: Duration::from_secs(60),
    });
    let tree = Tree::spawn(
        root_of(vec![ProbeSpec::default().named("a")]),
        probe_registry(&world),
        config,
    )
    .await
    .unwrap();
    for _ in 0..50 {
        tree.tick().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tree.wait_converged(WAIT).await.unwrap();
    world.arm("root/a", Fault::Crash, 1);
    let mut waiting = None;
    for _ in 0..100 {
        let _ = tree.tick();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let snap = tree.inspect().await.unwrap();
        if let Some(info) = snap.find("root/a").and_then(|a| a.restarting.clone()) {
            waiting = Some(info);
            break;
        }
    }
    let info = waiting.expect("root/a to wait for its restart");
    assert!(info.next_try_in_ms > 1_000_000_000, "{info:?}");
    assert_eq!(tree.fatal(), None);
    tree.shutdown(Duration::from_secs(5)).await;
}

/// Inspecting a chain of `depth` nodes.
async fn inspect_chain(depth: u32) -> NodeSnapshot {
    let world =
        Arc::new(ScaleWorld::new(Shape::new(u64::from(depth), depth).unwrap(), 1, false).unwrap());
    let tree = Tree::spawn(root_spec(0), scale_registry(&world).unwrap(), test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    tree.shutdown(Duration::from_secs(60)).await;
    snap
}

#[tokio::test(start_paused = true)]
async fn inspecting_a_chain_3000_deep_returns_every_node() {
    let snap = inspect_chain(3_000).await;
    assert_eq!(snap.len(), 3_000);
    assert_eq!(snap.height(), 3_000);
    let unavailable: Vec<_> = snap
        .iter()
        .filter(|n| n.state == "unavailable")
        .map(|n| n.path.depth())
        .collect();
    assert!(
        unavailable.is_empty(),
        "unavailable at depths {unavailable:?}"
    );
    assert!(NodeSnapshot::from_json(&snap.to_json().unwrap()).unwrap() == snap);
}
