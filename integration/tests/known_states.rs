//! The framework knows every worker's states: a desired state that is none
//! of them is a configuration problem on the node, named in its snapshot,
//! not a node that silently never converges.

use std::time::Duration;

use fsm_actors::Tree;
use integration::{ProbeSpec, ProbeWorld, probe_registry, render, test_config, wait_for_snapshot};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(start_paused = true)]
async fn a_node_whose_desired_state_is_not_one_of_its_states_is_unhealthy_and_says_why() {
    let world = ProbeWorld::default();
    let root = ProbeSpec::default()
        .with_children(vec![
            ProbeSpec::default().with_target("runing").named("pump"),
        ])
        .named("root");
    let tree = Tree::spawn(root, probe_registry(&world), test_config())
        .await
        .unwrap();
    let snap = wait_for_snapshot(&tree, "the pump to say what is wrong", WAIT, |s| {
        s.find("root/pump").is_some_and(|p| p.last_error.is_some())
    })
    .await
    .unwrap();
    let pump = snap.find("root/pump").unwrap();
    assert!(!pump.healthy, "{}", render(&snap));
    assert!(!snap.converged, "{}", render(&snap));
    let error = pump.last_error.as_deref().unwrap();
    assert!(
        error.contains("root/pump")
            && error.contains("desired state \"runing\" is not a state of worker type \"probe\"")
            && error.contains("(its states: stopped, starting, running)"),
        "{error}"
    );

    // Fixed: the problem goes away and the tree converges.
    let fixed = ProbeSpec::default()
        .with_children(vec![
            ProbeSpec::default().with_target("running").named("pump"),
        ])
        .named("root");
    tree.update_root_spec(fixed).unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    assert!(
        snap.find("root/pump").unwrap().last_error.is_none(),
        "{}",
        render(&snap)
    );
    assert!(tree.shutdown(WAIT).await.all_clean());
}

#[tokio::test(start_paused = true)]
async fn a_state_mapping_to_an_unknown_state_is_a_problem_of_the_declaring_parent() {
    let world = ProbeWorld::default();
    let root = ProbeSpec::default()
        .with_children(vec![
            ProbeSpec::default()
                .named("pump")
                .map_state("running", "runing"),
        ])
        .named("root");
    let tree = Tree::spawn(root, probe_registry(&world), test_config())
        .await
        .unwrap();
    let snap = wait_for_snapshot(&tree, "the root to reject the mapping", WAIT, |s| {
        s.last_error.is_some()
    })
    .await
    .unwrap();
    assert!(!snap.healthy, "{}", render(&snap));
    let error = snap.last_error.as_deref().unwrap();
    assert!(
        error.contains("\"runing\" is not a state of worker type \"probe\"")
            && error.contains("parent state \"running\""),
        "{error}"
    );
    assert!(snap.find("root/pump").is_none(), "{}", render(&snap));
    let _ = tree.shutdown(WAIT).await;
}
