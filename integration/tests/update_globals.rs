//! `TreeHandle::update_globals`: the tree's global variables change at
//! runtime; only the nodes whose rendered inputs change derive again, a
//! global that makes a template fail makes those nodes unhealthy naming the
//! variable, and globals that render again heal them.
//!
//! ```text
//! root ─ uses    label "{{ global.broker }}"
//!      ├ user    label "{{ SITE }}" (its own variable)
//!      ├ plain   label "plain", no templates
//!      └ reader  derive_desired reads `global.broker`
//! ```

// The helpers below run outside `#[test]` functions, where clippy.toml's
// allow-unwrap-in-tests does not reach; a panic is how they fail a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fsm_actors::{Tree, TreeConfig};
use fsm_core::{Map, Value};
use integration::{ProbeSpec, ProbeWorld, probe_registry, render, test_config};

const WAIT: Duration = Duration::from_secs(10);

fn broker(url: &str) -> Map {
    Map::from([("broker".to_owned(), Value::from(url))])
}

fn config() -> TreeConfig {
    let mut config = test_config();
    config.globals = broker("a");
    config
}

fn root() -> fsm_core::ChildSpec {
    let mut reader = ProbeSpec::default().with_label("reader");
    reader.read_variables = vec!["global.broker".to_owned()];
    ProbeSpec::default()
        .with_label("root")
        .with_children(vec![
            ProbeSpec::default()
                .with_label("{{ global.broker }}")
                .named("uses"),
            ProbeSpec::default()
                .with_label("{{ SITE }}")
                .named("user")
                .with_variable("SITE", "north"),
            ProbeSpec::default().with_label("plain").named("plain"),
            reader.named("reader"),
        ])
        .named("root")
}

#[tokio::test(start_paused = true)]
async fn new_globals_re_derive_only_the_nodes_whose_rendered_inputs_change() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(root(), probe_registry(&world), config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let j = &world.journal;
    assert_eq!(j.derived_labels("root/uses"), ["a"]);
    let before = tree.inspect().await.unwrap().to_json().unwrap();

    let generation = tree.update_globals(broker("b")).unwrap();
    assert_eq!(generation, 2);
    assert_eq!(tree.generation(), 2);
    tree.wait_generation(generation, WAIT).await.unwrap();
    assert_eq!(j.derived_labels("root/uses"), ["a", "b"]);
    assert_eq!(
        j.variables_read("root/reader"),
        ["global.broker=\"a\"", "global.broker=\"b\""]
    );
    // Nothing they render or derive from changed: derived once, at start.
    assert_eq!(j.derived_labels("root"), ["root"]);
    assert_eq!(j.derived_labels("root/user"), ["north"]);
    assert_eq!(j.derived_labels("root/plain"), ["plain"]);
    for path in [
        "root",
        "root/uses",
        "root/user",
        "root/plain",
        "root/reader",
    ] {
        assert_eq!(j.constructions(path), 1, "{path} was not restarted");
    }
    tree.wait_converged(WAIT).await.unwrap();
    // The snapshot shows nothing of the globals.
    let after = tree.inspect().await.unwrap();
    let shape = |json: &str| json.matches("\"path\"").count();
    assert_eq!(shape(&before), shape(&after.to_json().unwrap()));

    // The same globals again: a new generation, and nothing derives.
    let again = tree.update_globals(broker("b")).unwrap();
    tree.wait_generation(again, WAIT).await.unwrap();
    assert_eq!(j.derived_labels("root/uses"), ["a", "b"]);
    assert_eq!(j.variables_read("root/reader").len(), 2);
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_global_that_breaks_a_template_makes_its_nodes_unhealthy_until_it_is_fixed() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(root(), probe_registry(&world), config())
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();

    let generation = tree.update_globals(Map::new()).unwrap();
    tree.wait_generation(generation, WAIT).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    let uses = snap.find("root/uses").unwrap();
    assert!(!uses.healthy, "{}", render(&snap));
    let error = uses.last_error.clone().unwrap_or_default();
    assert!(error.contains("global.broker"), "{error}");
    assert!(error.contains("root/uses"), "{error}");
    for path in ["root/user", "root/plain", "root/reader"] {
        assert!(snap.find(path).unwrap().healthy, "{}", render(&snap));
    }
    assert!(
        world.is_up("root/uses"),
        "it keeps its last good spec and runs"
    );
    assert_eq!(world.journal.derived_labels("root/uses"), ["a"]);

    let generation = tree.update_globals(broker("c")).unwrap();
    tree.wait_generation(generation, WAIT).await.unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    let uses = snap.find("root/uses").unwrap();
    assert!(uses.healthy, "{}", render(&snap));
    assert_eq!(uses.last_error, None);
    assert_eq!(world.journal.derived_labels("root/uses"), ["a", "c"]);
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_child_started_after_new_globals_renders_them() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(
        ProbeSpec::default().named("root"),
        probe_registry(&world),
        config(),
    )
    .await
    .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    tree.update_globals(broker("late")).unwrap();
    let root = ProbeSpec::default()
        .with_children(vec![
            ProbeSpec::default()
                .with_label("{{ global.broker }}")
                .named("new"),
        ])
        .named("root");
    let generation = tree.update_root_spec(root).unwrap();
    tree.wait_generation(generation, WAIT).await.unwrap();
    assert_eq!(world.journal.derived_labels("root/new"), ["late"]);
    tree.shutdown(Duration::from_secs(5)).await;
}
