//! Configuration flows down the tree: variables are inherited and
//! overridden, templates render where they are read, locations merge, and a
//! change re-derives exactly the nodes it reaches.

// Test helpers outside `#[test]` functions unwrap too: a panic fails the test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fsm_actors::{NodeSnapshot, Tree, TreeConfig};
use fsm_core::{
    BoxError, ChildSpec, CollectContext, DeriveContext, DesiredState, Map, State, Template,
    TickContext, Transition, Value, Worker,
};
use integration::{ProbeSpec, ProbeWorld, probe_registry, test_config, wait_for_snapshot};
use serde::Deserialize;

fn labelled(label: &str, children: Vec<ChildSpec>) -> ProbeSpec {
    ProbeSpec::default()
        .with_label(label)
        .with_children(children)
}

fn config_with_globals() -> TreeConfig {
    let mut config = test_config();
    config.globals = Map::from([("broker".to_owned(), Value::from("tcp://broker:1883"))]);
    config
}

fn node<'a>(snap: &'a NodeSnapshot, path: &str) -> &'a NodeSnapshot {
    snap.find(path)
        .unwrap_or_else(|| panic!("no node {path} in {}", integration::render(snap)))
}

/// root (acme.plant-a) → a (area pack, LINE=1) → a1 (line l1, UNIT=7) → a1x (cell c).
fn three_levels() -> ChildSpec {
    let mut a1x = labelled(
        "{{ global.broker }}|{{ internal.parent_path }}|{{ UNIT }}",
        vec![],
    );
    a1x.read_variables = [
        "UNIT",
        "SITE_IP",
        "global.broker",
        "internal.path",
        "internal.location_path",
        "NOPE",
    ]
    .map(str::to_owned)
    .to_vec();
    let a1x = a1x.named("a1x").with_location("work_cell", "c");
    let a1 = labelled("{{ SITE_IP }}.{{ LINE }}.{{ UNIT }}", vec![a1x])
        .named("a1")
        .with_variable("UNIT", 7)
        .with_location("line", "l1");
    let a = labelled("line {{ LINE }}", vec![a1])
        .named("a")
        .with_variable("LINE", 1)
        .with_location("area", "pack");
    labelled("{{ SITE_IP }}", vec![a])
        .named("root")
        .with_variable("SITE_IP", "10.0")
        .with_location("enterprise", "acme")
        .with_location("site", "plant-a")
}

#[tokio::test(start_paused = true)]
async fn variables_and_locations_propagate_three_levels_down() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(
        three_levels(),
        probe_registry(&world),
        config_with_globals(),
    )
    .await
    .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    let j = &world.journal;
    assert_eq!(j.derived_labels("root"), ["10.0"]);
    assert_eq!(j.derived_labels("root/a"), ["line 1"]);
    assert_eq!(j.derived_labels("root/a/a1"), ["10.0.1.7"]);
    // Globals, internal metadata and a variable two levels up.
    assert_eq!(
        j.derived_labels("root/a/a1/a1x"),
        ["tcp://broker:1883|root/a/a1|7"]
    );
    // The derivation sees the same variables as the templates.
    assert_eq!(
        j.variables_read("root/a/a1/a1x"),
        [
            "UNIT=7",
            r#"SITE_IP="10.0""#,
            r#"global.broker="tcp://broker:1883""#,
            r#"internal.path="root/a/a1/a1x""#,
            r#"internal.location_path="acme.plant-a.pack.l1.c""#,
            "NOPE undefined",
        ]
    );
    assert!(j.variables_read("root/a/a1").is_empty());
    let snap = tree.inspect().await.unwrap();
    assert_eq!(node(&snap, "root").location_path, "acme.plant-a");
    assert_eq!(node(&snap, "root/a").location_path, "acme.plant-a.pack");
    assert_eq!(
        node(&snap, "root/a/a1").location_path,
        "acme.plant-a.pack.l1"
    );
    assert_eq!(
        node(&snap, "root/a/a1/a1x").location_path,
        "acme.plant-a.pack.l1.c"
    );
    tree.shutdown(Duration::from_secs(5)).await;
}

/// root (X=1) → a (overrides X=5) → a1 "{{ X }}"
///            → b → b1 "{{ X }}"
///            → c "static" (no template)
fn overriding_tree(root_x: i64, b_extra: Option<i64>) -> ChildSpec {
    let a = labelled("a", vec![labelled("{{ X }}", vec![]).named("a1")])
        .named("a")
        .with_variable("X", 5);
    let mut b = labelled("b", vec![labelled("{{ X }}", vec![]).named("b1")]).named("b");
    if let Some(extra) = b_extra {
        b = b.with_variable("EXTRA", extra);
    }
    let c = labelled("static", vec![]).named("c");
    labelled("root", vec![a, b, c])
        .named("root")
        .with_variable("X", root_x)
}

#[tokio::test(start_paused = true)]
async fn a_variable_change_re_derives_exactly_the_nodes_it_reaches() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(
        overriding_tree(1, None),
        probe_registry(&world),
        test_config(),
    )
    .await
    .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    let j = &world.journal;
    assert_eq!(j.derived_labels("root/a/a1"), ["5"]);
    assert_eq!(j.derived_labels("root/b/b1"), ["1"]);

    // Change X at the top.
    tree.update_root_spec(overriding_tree(2, None)).unwrap();
    wait_for_snapshot(&tree, "b1 re-derived", Duration::from_secs(10), |_| {
        j.derived_labels("root/b/b1").len() == 2
    })
    .await
    .unwrap();
    tree.wait_ticks(tree.status().ticks + 10).await.unwrap();
    assert_eq!(
        j.derived_labels("root"),
        ["root", "root"],
        "the root's spec changed"
    );
    assert_eq!(j.derived_labels("root/b"), ["b", "b"], "b inherits X");
    assert_eq!(j.derived_labels("root/b/b1"), ["1", "2"]);
    // a overrides X, so neither it nor its subtree sees a change; c uses no
    // template, but X is among the variables it inherits (and could read in
    // derive_desired), so it derives again.
    assert_eq!(j.derived_labels("root/a"), ["a"]);
    assert_eq!(j.derived_labels("root/a/a1"), ["5"]);
    assert_eq!(j.derived_labels("root/c"), ["static", "static"]);

    // A change in b's own variables reaches b's subtree only.
    tree.update_root_spec(overriding_tree(2, Some(9))).unwrap();
    wait_for_snapshot(&tree, "b re-derived", Duration::from_secs(10), |_| {
        j.derived_labels("root/b").len() == 3
    })
    .await
    .unwrap();
    tree.wait_ticks(tree.status().ticks + 10).await.unwrap();
    assert_eq!(j.derived_labels("root/b/b1"), ["1", "2", "2"]);
    assert_eq!(j.derived_labels("root/a"), ["a"]);
    assert_eq!(j.derived_labels("root/a/a1"), ["5"]);
    assert_eq!(
        j.derived_labels("root/c").len(),
        2,
        "c is not in b's subtree"
    );
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    tree.shutdown(Duration::from_secs(5)).await;
}

fn with_label(label: &str) -> ChildSpec {
    labelled(
        "root",
        vec![
            labelled(label, vec![labelled("child", vec![]).named("a1")])
                .named("a")
                .with_variable("GOOD", "yes"),
            labelled("sibling", vec![]).named("b"),
        ],
    )
    .named("root")
}

#[tokio::test(start_paused = true)]
async fn a_template_that_fails_keeps_the_last_good_state_and_heals_when_fixed() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(
        with_label("{{ GOOD }}"),
        probe_registry(&world),
        test_config(),
    )
    .await
    .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();

    tree.update_root_spec(with_label("{{ GOOD }}-{{ TYPO }}"))
        .unwrap();
    let snap = wait_for_snapshot(&tree, "a unhealthy", Duration::from_secs(10), |s| {
        s.find("root/a").is_some_and(|a| !a.healthy)
    })
    .await
    .unwrap();
    let a = node(&snap, "root/a");
    let error = a.last_error.as_deref().unwrap();
    assert!(
        error.contains("`TYPO`") && error.contains("root/a") && error.contains("label"),
        "{error}"
    );
    // Its last good desired state holds: its child still runs.
    assert_eq!(a.state, "running");
    assert_eq!(node(&snap, "root/a/a1").state, "running");
    assert_eq!(world.journal.constructions("root/a/a1"), 1);
    // Nobody else is affected, and a bad template is no failure: no restart,
    // no staleness, however long it lasts.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let snap = tree.inspect().await.unwrap();
    for n in snap
        .iter()
        .filter(|n| n.path.as_str() != "root/a" && n.path.as_str() != "root")
    {
        assert!(n.healthy && n.converged, "{}", integration::render(&snap));
    }
    assert!(node(&snap, "root").healthy);
    assert_eq!(world.journal.constructions("root/a"), 1);
    assert!(!node(&snap, "root/a").stale);

    // Fixed: it heals on its own.
    tree.update_root_spec(with_label("{{ GOOD }}-fixed"))
        .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        world.journal.derived_labels("root/a"),
        ["yes", "yes-fixed"],
        "the failed template never derived"
    );
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_first_spec_does_not_render_waits_unhealthy_without_failing() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(
        with_label("{{ NOPE }}"),
        probe_registry(&world),
        test_config(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let snap = tree.inspect().await.unwrap();
    let a = node(&snap, "root/a");
    assert!(!a.healthy && !a.stale && a.restarts == 0, "{a:?}");
    assert!(a.last_error.as_deref().unwrap().contains("`NOPE`"));
    assert!(
        a.children.is_empty(),
        "it derived nothing, so it declares nothing"
    );
    assert!(node(&snap, "root/b").converged);
    assert_eq!(world.journal.constructions("root/a"), 1);

    tree.update_root_spec(with_label("ok")).unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_rendered_value_of_the_wrong_type_is_reported_with_the_node_and_field_path() {
    // `a`'s restart limit is a template that renders to a word, not a number.
    let intensity = Value::map([("max_restarts", Value::from("{{ RESTARTS }}"))]);
    let a = ChildSpec::new("a", "probe")
        .with_spec(Value::map([(
            "supervision",
            Value::map([("intensity", intensity)]),
        )]))
        .with_variable("RESTARTS", "many");
    let root = labelled("root", vec![])
        .with_children(vec![a])
        .named("root");
    let world = ProbeWorld::default();
    let tree = Tree::spawn(root, probe_registry(&world), test_config())
        .await
        .unwrap();
    let snap = wait_for_snapshot(&tree, "a unhealthy", Duration::from_secs(10), |s| {
        s.find("root/a").is_some_and(|a| a.last_error.is_some())
    })
    .await
    .unwrap();
    let error = node(&snap, "root/a").last_error.clone().unwrap();
    assert!(
        error.contains("node `root/a`")
            && error.contains(
                "supervision.intensity.max_restarts: invalid type: string \"many\", expected u32"
            ),
        "{error}"
    );
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_child_that_moves_an_inherited_location_level_is_unhealthy_with_a_clear_error() {
    let world = ProbeWorld::default();
    let root = labelled(
        "root",
        vec![
            labelled("a", vec![])
                .named("a")
                .with_location("site", "plant-b"),
        ],
    )
    .named("root")
    .with_location("site", "plant-a");
    let tree = Tree::spawn(root, probe_registry(&world), test_config())
        .await
        .unwrap();
    let snap = wait_for_snapshot(&tree, "a unhealthy", Duration::from_secs(10), |s| {
        s.find("root/a").is_some_and(|a| !a.healthy)
    })
    .await
    .unwrap();
    let error = node(&snap, "root/a").last_error.clone().unwrap();
    assert!(
        error.contains("`site`") && error.contains("plant-a") && error.contains("plant-b"),
        "{error}"
    );
    tree.shutdown(Duration::from_secs(5)).await;
}

// ----- templates carried for children ----------------------------------------

/// A parent that declares one probe per bridge of its spec; each probe's
/// label is the bridge's `address`, and its variable `PORT` the bridge's
/// `port`. `A` is how the parent's spec types `address`.
struct Bridges<A>(std::marker::PhantomData<fn() -> A>);

#[derive(Deserialize)]
struct BridgesSpec<A> {
    line: String,
    bridges: Vec<Bridge<A>>,
}

#[derive(Deserialize)]
struct Bridge<A> {
    name: String,
    port: i64,
    address: A,
}

#[derive(Clone, Debug)]
struct Up;

impl<A: serde::de::DeserializeOwned + Clone + Into<String> + Send + Sync + 'static> Worker
    for Bridges<A>
{
    type Spec = BridgesSpec<A>;
    type Observed = ();
    type State = Up;

    fn initial_state(&self) -> Up {
        Up
    }

    async fn collect(&self, _: &CollectContext<'_, BridgesSpec<A>>) -> Result<(), BoxError> {
        Ok(())
    }

    fn derive_desired(
        &self,
        spec: &BridgesSpec<A>,
        _: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        Ok(
            DesiredState::new("running").with_children(spec.bridges.iter().map(|b| {
                let label = format!("{} {}", spec.line, b.address.clone().into());
                labelled(&label, vec![])
                    .named(&b.name)
                    .with_variable("PORT", b.port)
            })),
        )
    }
}

impl fsm_core::StateNames for Up {
    const NAMES: &'static [&'static str] = &["running"];

    fn name(&self) -> &'static str {
        "running"
    }
}

impl<A: serde::de::DeserializeOwned + Clone + Into<String> + Send + Sync + 'static>
    State<Bridges<A>> for Up
{
    fn next(&self, _: &TickContext<'_, Bridges<A>>) -> Transition<Up> {
        Transition::stay()
    }
}

fn bridges_tree(worker_type: &str) -> ChildSpec {
    let bridge = |name: &str, port: i64| {
        Value::map([
            ("name", Value::from(name)),
            ("port", Value::from(port)),
            ("address", Value::from("h:{{ PORT }}")),
        ])
    };
    ChildSpec::new("root", worker_type)
        .with_variable("LINE", 4)
        .with_spec(Value::map([
            ("line", Value::from("line {{ LINE }}")),
            (
                "bridges",
                Value::List(vec![bridge("b1", 502), bridge("b2", 503)]),
            ),
        ]))
}

fn bridges_registry(world: &ProbeWorld) -> fsm_core::WorkerRegistry {
    let mut registry = probe_registry(world);
    registry
        .register("bridges", |_| Bridges::<Template>(std::marker::PhantomData))
        .unwrap();
    registry
        .register("eager-bridges", |_| {
            Bridges::<String>(std::marker::PhantomData)
        })
        .unwrap();
    registry
}

#[tokio::test(start_paused = true)]
async fn a_template_field_of_a_parent_renders_at_the_child_with_the_childs_variables() {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(
        bridges_tree("bridges"),
        bridges_registry(&world),
        test_config(),
    )
    .await
    .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    let snap = tree.inspect().await.unwrap();
    assert!(
        node(&snap, "root").healthy,
        "{}",
        integration::render(&snap)
    );
    // `line` rendered at the parent (its `LINE`), `address` at each child
    // (its own `PORT`).
    assert_eq!(world.journal.derived_labels("root/b1"), ["line 4 h:502"]);
    assert_eq!(world.journal.derived_labels("root/b2"), ["line 4 h:503"]);
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_plain_string_field_of_a_parent_renders_at_the_parent_where_the_childs_variable_is_undefined()
 {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(
        bridges_tree("eager-bridges"),
        bridges_registry(&world),
        test_config(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let snap = tree.inspect().await.unwrap();
    let root = node(&snap, "root");
    assert!(!root.healthy, "{root:?}");
    let error = root.last_error.as_deref().unwrap();
    assert!(
        error.contains("PORT") && error.contains("address"),
        "{error}"
    );
    assert!(root.children.is_empty());
    tree.shutdown(Duration::from_secs(5)).await;
}
