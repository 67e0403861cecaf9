//! Generations, as in Kubernetes: every change of a node's declared spec
//! bumps its `generation`, the node reports `observed_generation` once it
//! has acted on it, and waiting on the tree never answers from a status
//! older than the change it waits for.

// The helpers below run outside `#[test]` functions, where clippy.toml's
// allow-unwrap-in-tests does not reach; a panic is how they fail a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fsm_actors::{NodeSnapshot, Tree};
use fsm_core::ChildSpec;
use integration::{ProbeSpec, ProbeWorld, probe_registry, render, test_config};

const WAIT: Duration = Duration::from_secs(30);

fn node<'a>(snap: &'a NodeSnapshot, path: &str) -> &'a NodeSnapshot {
    snap.find(path)
        .unwrap_or_else(|| panic!("no node `{path}` in\n{}", render(snap)))
}

/// `root ─ a`, `root ─ b`; `a`'s actions take a while to take effect.
fn initial() -> ChildSpec {
    let slow = ProbeSpec::default().with_action_delay_ms(300);
    ProbeSpec::default()
        .with_children(vec![slow.named("a"), ProbeSpec::default().named("b")])
        .named("root")
}

/// `b` removed, `a` told to stop (its stop action takes 300 ms).
fn changed() -> ChildSpec {
    let slow_stopped = ProbeSpec::default()
        .with_action_delay_ms(300)
        .with_target("stopped");
    ProbeSpec::default()
        .with_children(vec![slow_stopped.named("a")])
        .named("root")
}

#[tokio::test(start_paused = true)]
async fn wait_converged_after_an_update_waits_for_the_update_to_be_carried_out() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(initial(), probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    assert_eq!(tree.generation(), 1);

    let generation = tree.update_root_spec(changed()).unwrap();
    assert_eq!(generation, 2);
    assert_eq!(tree.generation(), 2);
    tree.wait_converged(WAIT).await.unwrap();

    // Nothing waited for in between: the status that ended the wait is the
    // new spec's.
    let snap = tree.inspect().await.unwrap();
    assert!(snap.find("root/b").is_none(), "{}", render(&snap));
    assert!(world.journal.stopped().contains(&"root/b".to_owned()));
    let a = node(&snap, "root/a");
    assert_eq!(a.desired_state, "stopped", "{}", render(&snap));
    assert_eq!(a.state, "stopped", "{}", render(&snap));
    assert!(!world.is_up("root/a"));
    let status = tree.status();
    assert_eq!(status.generation, 2);
    assert_eq!(status.observed_generation, 2);
    let _ = tree.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn a_changed_node_bumps_its_generation_and_reports_it_observed() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(initial(), probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    for n in snap.iter() {
        assert_eq!(n.generation, 1, "{}", render(&snap));
        assert_eq!(n.observed_generation, 1, "{}", render(&snap));
    }

    let generation = tree.update_root_spec(changed()).unwrap();
    tree.wait_generation(generation, WAIT).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    // The root's spec (its children) changed, and so did `a`'s.
    for path in ["root", "root/a"] {
        let n = node(&snap, path);
        assert_eq!(n.generation, 2, "{path}: {}", render(&snap));
        assert_eq!(n.observed_generation, 2, "{path}: {}", render(&snap));
    }
    // An update that changes nothing of a node leaves its generation.
    let generation = tree.update_root_spec(changed()).unwrap();
    assert_eq!(generation, 3);
    tree.wait_generation(generation, WAIT).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    assert_eq!(node(&snap, "root/a").generation, 2);

    // The snapshot JSON carries both.
    let json = serde_json::to_value(node(&snap, "root/a")).unwrap();
    assert_eq!(json["generation"], 2);
    assert_eq!(json["observed_generation"], 2);
    let _ = tree.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn wait_generation_answers_only_once_removed_children_have_stopped() {
    let world = ProbeWorld::default();
    // `b`'s stop hook hangs: its removal takes the whole stop timeout.
    let mut config = test_config();
    config.stop_timeout = Duration::from_secs(2);
    let root = ProbeSpec::default()
        .with_children(vec![
            ProbeSpec::default().named("a"),
            ProbeSpec::default().with_hanging_stop().named("b"),
        ])
        .named("root");
    let tree = Tree::spawn(root, probe_registry(&world), config)
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();

    let started = tokio::time::Instant::now();
    let without_b = ProbeSpec::default()
        .with_children(vec![ProbeSpec::default().named("a")])
        .named("root");
    let generation = tree.update_root_spec(without_b).unwrap();
    tree.wait_generation(generation, WAIT).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "answered after {:?}, before `b` was stopped",
        started.elapsed()
    );
    assert_eq!(tree.live_nodes(), 2);
    let _ = tree.shutdown(WAIT).await;
}
