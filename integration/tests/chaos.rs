//! Chaos: a tree of more than a thousand workers survives random crashes of
//! any node and, once the faults stop, heals completely: every node healthy
//! and converged, no leaked actors, and every action accounted for.

// Test helpers outside `#[test]` functions unwrap too: a panic fails the test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fsm_actors::Tree;
use fsm_core::{Backoff, ChildSpec, RestartIntensity, Supervision};
use integration::{ProbeSpec, ProbeWorld, probe_registry, render, test_config, wait_for_stats};

/// A tree of `1 + fan + fan² + fan³` probes whose actions take a while, so
/// that crashes hit actions in flight.
fn tree_spec(fan: usize) -> ChildSpec {
    let slow = ProbeSpec::default().with_action_delay_ms(150);
    let leaves = |prefix: &str| -> Vec<ChildSpec> {
        (0..fan)
            .map(|i| slow.clone().named(&format!("{prefix}{i}")))
            .collect()
    };
    let mids = |prefix: &str| -> Vec<ChildSpec> {
        (0..fan)
            .map(|i| {
                slow.clone()
                    .with_children(leaves("leaf-"))
                    .named(&format!("{prefix}{i}"))
            })
            .collect()
    };
    let tops: Vec<ChildSpec> = (0..fan)
        .map(|i| {
            slow.clone()
                .with_children(mids("mid-"))
                .named(&format!("area-{i}"))
        })
        .collect();
    slow.with_children(tops).named("plant")
}

#[tokio::test(start_paused = true)]
async fn a_thousand_workers_heal_completely_after_random_crashes() {
    const FAN: usize = 10;
    const NODES: u64 = 1 + 10 + 100 + 1000;
    fsm_actors::quiet_injected_faults();
    let world = ProbeWorld::default();
    let mut config = test_config();
    config.supervision = Supervision::default()
        .with_intensity(RestartIntensity::new(1000, Duration::from_secs(10)))
        .with_backoff(Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(500),
            jitter: 0.2,
            reset_after: Duration::from_secs(5),
        });
    let tree = Tree::spawn(tree_spec(FAN), probe_registry(&world), config)
        .await
        .unwrap();
    tree.wait_converged(Duration::from_secs(60)).await.unwrap();
    assert_eq!(tree.status().counts.nodes, NODES);

    // Thirty ticks of chaos: every node panics with probability 2 % per tick.
    let start = tree.status().ticks;
    tree.inject_faults(0.02);
    tree.wait_ticks(start + 30).await.unwrap();
    tree.inject_faults(0.0);
    tree.wait_converged(Duration::from_secs(120)).await.unwrap();
    let snapshot = tree.inspect().await.unwrap();
    let restarts: u64 = snapshot.iter().map(|n| n.restarts).sum();
    assert!(restarts > 0, "no node was restarted");
    assert_eq!(snapshot.len() as u64, NODES, "{}", render(&snapshot));
    for node in snapshot.iter() {
        assert!(node.healthy && node.converged, "{}", render(&snapshot));
        assert_eq!(node.state, node.desired_state);
        assert!(node.restarting.is_none() && !node.circuit_open);
    }
    // No leaks: exactly the actors the tree needs are alive.
    assert_eq!(tree.live_nodes(), NODES);
    // Every enqueued action ended in exactly one outcome.
    let stats = wait_for_stats(&tree, "an idle executor", Duration::from_secs(30), |s| {
        s.queued == 0 && s.running == 0
    })
    .await
    .unwrap();
    assert_eq!(stats.enqueued, stats.outcomes(), "{stats:?}");
    assert!(stats.enqueued >= NODES, "{stats:?}");

    let report = tree.shutdown(Duration::from_secs(30)).await;
    assert_eq!(report.stopped.len() as u64, NODES);
    assert!(
        report.all_clean(),
        "{:?}",
        report.forced().collect::<Vec<_>>()
    );
}
