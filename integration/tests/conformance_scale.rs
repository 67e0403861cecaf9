//! Scale conformance: a hundred thousand children under one node start in
//! declared order, all converge, and stop in reverse start order, on tokio's
//! paused clock.

// The helpers below run outside `#[test]` functions, where clippy.toml's
// allow-unwrap-in-tests does not reach; a panic is how they fail a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fsm_actors::Tree;
use fsm_core::{ChildSpec, Value};
use integration::{Event, ProbeSpec, ProbeWorld, probe_registry, test_config};

const CHILDREN: usize = 100_000;
/// Virtual time: generous, it costs nothing real.
const WAIT: Duration = Duration::from_secs(600);

#[tokio::test(start_paused = true)]
async fn conformance_a_hundred_thousand_children_start_in_order_and_stop_in_reverse() {
    let real = std::time::Instant::now();
    let world = ProbeWorld::default();
    let names: Vec<String> = (0..CHILDREN).map(|i| format!("c{i:06}")).collect();
    // The smallest probe spec (an empty map: every field defaulted) keeps
    // the root spec, which holds all the children, cheap to convert.
    let child = |name: &str| {
        ChildSpec::new(name, "probe").with_spec(Value::map(Vec::<(String, Value)>::new()))
    };
    let root = ProbeSpec::default()
        .with_children(names.iter().map(|n| child(n)).collect())
        .named("root");
    let mut config = test_config();
    // Every child enqueues its start action on its first tick: let them all
    // wait in the queue rather than be rejected and retried.
    config.executor.queue_capacity = CHILDREN + 1;

    let tree = Tree::spawn(root, probe_registry(&world), config)
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let nodes = u64::try_from(CHILDREN + 1).unwrap();
    let status = tree.status();
    assert_eq!(status.counts.nodes, nodes, "{status:?}");
    assert_eq!(status.counts.converged, nodes, "{status:?}");
    assert_eq!(status.counts.unhealthy, 0, "{status:?}");
    assert_eq!(tree.live_nodes(), nodes);
    let started_in = real.elapsed();

    // Started in declared order, each exactly once.
    let expected: Vec<String> = std::iter::once("root".to_owned())
        .chain(names.iter().map(|n| format!("root/{n}")))
        .collect();
    let events = world.journal.events();
    let built: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Constructed(p) => Some(p.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        built == expected,
        "the start order differs from the declared order"
    );

    let real_stop = std::time::Instant::now();
    let report = tree.shutdown(WAIT).await;
    let stopped_in = real_stop.elapsed();
    assert!(report.all_clean(), "{} forced", report.forced().count());
    // Stopped in reverse start order: the children last to first, then the
    // root; the stop hooks ran in that order too.
    let order: Vec<&str> = report.stopped.iter().map(|r| r.path.as_str()).collect();
    let reversed: Vec<&str> = expected.iter().rev().map(String::as_str).collect();
    assert!(
        order == reversed,
        "the stop order is not the reverse start order"
    );
    assert!(
        world.journal.stopped() == reversed,
        "the stop hooks ran out of order"
    );

    eprintln!(
        "{CHILDREN} children: started and converged in {started_in:?}, stopped in {stopped_in:?} (real time)"
    );
}
