//! The scale harness's own pieces behave as its measurements assume: one
//! tick spawns a whole scale tree (each node stepping once), every node
//! steps once per tick, a change reaches exactly the selected leaves, and
//! the bare ractor tree starts, forwards ticks to every actor and stops
//! completely.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fsm_actors::{Tree, TreeConfig};
use integration::scale::bare::BareTree;
use integration::scale::{ScaleWorld, Shape, root_spec, scale_registry};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tick_spawns_a_scale_tree_and_a_change_reaches_exactly_the_selected_leaves() {
    let shape = Shape::new(300, 3).unwrap();
    let n = shape.workers();
    let world = Arc::new(ScaleWorld::new(shape.clone(), 10, false).unwrap());
    let mut config = TreeConfig::default();
    config.tick_interval = None;
    let tree = Tree::spawn(root_spec(0), scale_registry(&world).unwrap(), config)
        .await
        .unwrap();
    tree.tick().unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let status = tree.status();
    assert_eq!(status.counts.nodes, n, "{status:?}");
    assert_eq!(world.constructed.load(Ordering::Relaxed), n);
    // Each node stepped once: a new node ticks as it starts, and the tick
    // that started it is not forwarded to it again.
    assert_eq!(world.ticks.get(), n);

    // Every node steps once per tick.
    let before = world.ticks.get();
    tree.tick().unwrap();
    tokio::time::timeout(WAIT, world.ticks.wait_for(before + n))
        .await
        .unwrap();

    // The change: the selected leaves and their ancestors derive again; the
    // leaves go through `applying` and count themselves back.
    let derived = world.derived.load(Ordering::Relaxed);
    tree.update_root_spec(root_spec(1)).unwrap();
    let expected = shape.selected_leaves(10);
    for _ in 0..20 {
        let target = world.ticks.get() + n;
        tree.tick().unwrap();
        tokio::time::timeout(WAIT, world.ticks.wait_for(target))
            .await
            .unwrap();
        if world.applied.load(Ordering::Relaxed) == expected && tree.status().converged {
            break;
        }
    }
    assert_eq!(world.applied.load(Ordering::Relaxed), expected);
    let rederived = world.derived.load(Ordering::Relaxed) - derived;
    // The root, the level-1 parents of selected leaves, and the leaves.
    let parents = (0..shape.level_sizes()[1])
        .filter(|&p| {
            let leaves = shape.leaves_under(1, p);
            leaves.start.div_ceil(10) * 10 < leaves.end
        })
        .count() as u64;
    assert_eq!(rederived, 1 + parents + expected);

    let report = tree.shutdown(WAIT).await;
    assert_eq!(report.stopped.len() as u64, n);
    assert!(report.all_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bare_tree_starts_forwards_ticks_to_every_actor_and_stops() {
    let shape = Shape::new(300, 3).unwrap();
    let n = shape.workers();
    let bare = BareTree::spawn(&shape).await.unwrap();
    let world = Arc::clone(bare.world());
    tokio::time::timeout(WAIT, world.started.wait_for(n))
        .await
        .unwrap();
    for round in 1..=3 {
        bare.tick().unwrap();
        tokio::time::timeout(WAIT, world.ticks.wait_for(n * round))
            .await
            .unwrap();
    }
    assert_eq!(world.ticks.get(), 3 * n);
    bare.stop(WAIT).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while world.alive.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
}
