//! A parent's desired state reaches its children through their state
//! mappings, level after level; a child without a mapping entry for the
//! parent's state follows its own derivation.
//!
//! Every probe derives `running` unless its spec says otherwise, so a child
//! that ends up `stopped` here got there only through a mapping.

use std::time::Duration;

use fsm_actors::{NodeSnapshot, Tree};
use fsm_core::ChildSpec;
use integration::{
    Event, ProbeSpec, ProbeWorld, probe_registry, render, test_config, wait_for_snapshot,
};

const WAIT: Duration = Duration::from_secs(10);

/// A probe child that follows its parent for `stopped` and `running`.
fn follower(name: &str, children: Vec<ChildSpec>) -> ChildSpec {
    ProbeSpec::default()
        .with_children(children)
        .named(name)
        .map_state("stopped", "stopped")
        .map_state("running", "running")
}

/// `root(target) ─ a ─ a1 ─ a1x`, `root ─ b ─ b1`, all followers.
fn followers(target: &str) -> ChildSpec {
    ProbeSpec::default()
        .with_target(target)
        .with_children(vec![
            follower("a", vec![follower("a1", vec![follower("a1x", vec![])])]),
            follower("b", vec![follower("b1", vec![])]),
        ])
        .named("root")
}

fn assert_every_node(snap: &NodeSnapshot, state: &str) {
    assert_eq!(snap.len(), 6, "{}", render(snap));
    for n in snap.iter() {
        assert_eq!(n.desired_state, state, "{}", render(snap));
        assert_eq!(n.state, state, "{}", render(snap));
        assert!(n.healthy, "{}", render(snap));
    }
}

fn everything_in(state: &'static str) -> impl Fn(&NodeSnapshot) -> bool {
    move |s| s.converged && s.len() == 6 && s.iter().all(|n| n.state == state)
}

#[tokio::test(start_paused = true)]
async fn a_parent_state_mapping_reaches_three_levels_down() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(followers("stopped"), probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    assert_every_node(&snap, "stopped");
    assert!(snap.find("root/a/a1/a1x").is_some());
    // Children are born with the mapped state: none of them ever tried to
    // start on its own.
    let began: Vec<Event> = world
        .journal
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::ActionBegan(..)))
        .collect();
    assert!(began.is_empty(), "{began:?}");

    // The root alone changes; the mapping carries it down.
    tree.update_root_spec(followers("running")).unwrap();
    let snap = wait_for_snapshot(&tree, "every node to run", WAIT, everything_in("running"))
        .await
        .unwrap();
    assert_every_node(&snap, "running");
    assert!(world.is_up("root/a/a1/a1x"));

    // And back down again.
    tree.update_root_spec(followers("stopped")).unwrap();
    let snap = wait_for_snapshot(&tree, "every node to stop", WAIT, everything_in("stopped"))
        .await
        .unwrap();
    assert_every_node(&snap, "stopped");
    for n in snap.iter() {
        assert!(!world.is_up(n.path.as_str()), "{} is still up", n.path);
        // Updated in place, never restarted.
        assert_eq!(world.journal.constructions(n.path.as_str()), 1);
    }
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_child_without_a_mapping_entry_keeps_its_own_derived_state() {
    let world = ProbeWorld::default();
    // root wants `stopped`; `bound` follows it, `free` and `bound/loose`
    // have no mapping and derive `running` themselves.
    let root = ProbeSpec::default()
        .with_target("stopped")
        .with_children(vec![
            follower("bound", vec![ProbeSpec::default().named("loose")]),
            ProbeSpec::default().named("free"),
        ])
        .named("root");
    let tree = Tree::spawn(root, probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    let expected = [
        ("root", "stopped"),
        ("root/bound", "stopped"),
        ("root/bound/loose", "running"),
        ("root/free", "running"),
    ];
    assert_eq!(snap.len(), expected.len(), "{}", render(&snap));
    for (path, state) in expected {
        let n = snap.find(path).unwrap();
        assert_eq!(n.desired_state, state, "{}", render(&snap));
        assert_eq!(n.state, state, "{}", render(&snap));
        assert_eq!(world.is_up(path), state == "running", "{path}");
    }
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_mapping_entry_overrides_the_child_and_without_one_control_returns_to_it() {
    let world = ProbeWorld::default();
    // `inverse` derives `running` itself but is mapped to `stopped` while its
    // parent runs; it has no entry for a stopped parent.
    let root = |target: &str| {
        ProbeSpec::default()
            .with_target(target)
            .with_children(vec![
                ProbeSpec::default()
                    .named("inverse")
                    .map_state("running", "stopped"),
            ])
            .named("root")
    };
    let tree = Tree::spawn(root("running"), probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    assert_eq!(snap.state, "running", "{}", render(&snap));
    let inverse = snap.find("root/inverse").unwrap();
    assert_eq!(inverse.desired_state, "stopped", "{}", render(&snap));
    assert_eq!(inverse.state, "stopped", "{}", render(&snap));

    // No entry for `stopped`: the child is back on its own `running`, which
    // is neither the parent's state nor the last mapped one.
    tree.update_root_spec(root("stopped")).unwrap();
    let snap = wait_for_snapshot(&tree, "root stopped and inverse running", WAIT, |s| {
        s.converged
            && s.state == "stopped"
            && s.find("root/inverse").is_some_and(|n| n.state == "running")
    })
    .await
    .unwrap();
    let inverse = snap.find("root/inverse").unwrap();
    assert_eq!(inverse.desired_state, "running", "{}", render(&snap));
    assert!(world.is_up("root/inverse"));
    assert!(!world.is_up("root"));
    tree.shutdown(Duration::from_secs(5)).await;
}
