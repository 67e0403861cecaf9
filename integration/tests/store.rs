//! A tree with a store: what changed is written off the tick, in batches;
//! nothing is written while nothing changes; a failing store is a visible,
//! counted backlog that the tree runs through; an action's started record
//! is written before the action runs and before its outcome.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fsm_actors::{NodeSnapshot, Tree, TreeHandle};
use fsm_core::store::{Change, MemoryStore, Store, StoreError, StoredOutcome, StoredTree};
use fsm_core::{Backoff, ChildSpec, NodePath, RestartIntensity, Strategy, Supervision};
use integration::{Fault, ProbeSpec, ProbeWorld, probe_registry, probe_spec, render, test_config};

const WAIT: Duration = Duration::from_secs(10);

/// A [`MemoryStore`] that keeps every batch it committed, with how many
/// times the root's `start` action had begun when it did.
struct Recorder {
    store: MemoryStore,
    world: ProbeWorld,
    batches: Vec<(Vec<Change>, usize)>,
}

impl Store for Recorder {
    fn write(&mut self, batch: &[Change]) -> Result<(), StoreError> {
        self.store.write(batch)?;
        let began = self.world.journal.actions_began("root", "start");
        self.batches.push((batch.to_vec(), began));
        Ok(())
    }

    fn read_all(&self) -> Result<Option<StoredTree>, StoreError> {
        self.store.read_all()
    }
}

type Shared = Arc<Mutex<Recorder>>;

fn recorder(world: &ProbeWorld) -> Shared {
    Arc::new(Mutex::new(Recorder {
        store: MemoryStore::new(),
        world: world.clone(),
        batches: Vec::new(),
    }))
}

fn batches(store: &Shared) -> usize {
    store.lock().unwrap().batches.len()
}

fn stored(store: &Shared) -> StoredTree {
    store
        .lock()
        .unwrap()
        .store
        .load()
        .unwrap()
        .expect("a stored tree")
}

fn tree_spec(label: &str) -> ChildSpec {
    let mut a = ProbeSpec::default()
        .with_children(vec![probe_spec("a1", vec![])])
        .with_label(label);
    a.target = String::new();
    probe_spec("root", vec![a.named("a"), probe_spec("b", vec![])])
}

async fn spawn(world: &ProbeWorld, store: &Shared) -> Tree {
    let config = test_config().with_store(Arc::clone(store));
    let tree = Tree::spawn(tree_spec("one"), probe_registry(world), config)
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    tree
}

/// Ticks until the store actor has nothing waiting and `store` took no
/// batch for ten ticks in a row (or fails, after 500 ticks).
async fn settle(tree: &TreeHandle, store: &Shared) {
    let mut last = batches(store);
    let mut quiet = 0;
    for _ in 0..500 {
        if quiet == 10 {
            return;
        }
        let ticks = tree.status().ticks;
        tree.wait_ticks(ticks + 1).await.unwrap();
        let now = batches(store);
        let backlog = tree.store_stats().unwrap().backlog;
        if now == last && backlog == 0 {
            quiet += 1;
        } else {
            quiet = 0;
            last = now;
        }
    }
    panic!("the store never went quiet: {:?}", tree.store_stats());
}

fn root(snap: &NodeSnapshot) -> &NodeSnapshot {
    snap.find("root")
        .unwrap_or_else(|| panic!("no root in\n{}", render(snap)))
}

#[tokio::test(start_paused = true)]
async fn every_node_of_a_tree_is_written_with_its_documents() {
    let world = ProbeWorld::default();
    let store = recorder(&world);
    let tree = spawn(&world, &store).await;
    settle(&tree, &store).await;
    let tree_stored = stored(&store);
    let paths: Vec<_> = tree_stored.nodes.keys().map(NodePath::as_str).collect();
    assert_eq!(paths, ["root", "root/a", "root/a/a1", "root/b"]);
    let root_spec = tree_stored.root.as_ref().expect("the root spec");
    assert_eq!(
        (root_spec.generation, &root_spec.spec),
        (1, &tree_spec("one"))
    );
    for (path, record) in &tree_stored.nodes {
        assert_eq!(record.identity.worker_type, "probe", "{path}");
        let desired = record.desired.as_ref().expect("a desired document");
        assert_eq!(desired.generation, 1, "{path}");
        let observed = record.observed.as_ref().expect("an observed document");
        assert_eq!(observed.state, "running", "{path}");
        assert!(observed.observed_at_ms.is_some(), "{path}");
        let last = observed.last_action.as_ref().expect("the start action");
        assert_eq!(last.outcome, Some(StoredOutcome::Succeeded), "{path}");
    }
    let _ = tree.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn nothing_is_written_while_nothing_changes() {
    let world = ProbeWorld::default();
    let store = recorder(&world);
    let tree = spawn(&world, &store).await;
    settle(&tree, &store).await;
    let before = batches(&store);
    let ticks = tree.status().ticks;
    tree.wait_ticks(ticks + 100).await.unwrap();
    assert_eq!(
        batches(&store),
        before,
        "a tree in which nothing changes wrote batches"
    );
    let stats = tree.store_stats().unwrap();
    assert_eq!(stats.backlog, 0, "{stats:?}");
    assert_eq!(stats.batches as usize, before, "{stats:?}");
    let _ = tree.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn a_spec_change_is_written_in_the_next_batch() {
    let world = ProbeWorld::default();
    let store = recorder(&world);
    let tree = spawn(&world, &store).await;
    settle(&tree, &store).await;
    let before = batches(&store);
    let generation = tree.update_root_spec(tree_spec("two")).unwrap();
    tree.wait_generation(generation, WAIT).await.unwrap();
    settle(&tree, &store).await;
    let recorded = store.lock().unwrap().batches[before..].to_vec();
    // The root spec goes at once; `a`'s desired document when `a` takes it.
    let with_a: Vec<_> = recorded
        .iter()
        .filter(|(batch, _)| {
            batch.iter().any(|c| {
                matches!(c, Change::Desired(p, d) if p.as_str() == "root/a" && d.generation == 2)
            })
        })
        .collect();
    assert_eq!(with_a.len(), 1, "{recorded:#?}");
    assert!(
        recorded.len() <= 3,
        "one change took {} batches: {recorded:#?}",
        recorded.len()
    );
    let now = stored(&store);
    assert_eq!(now.root.as_ref().map(|r| r.generation), Some(generation));
    assert_eq!(now.root.unwrap().spec, tree_spec("two"));
    let a = &now.nodes[&NodePath::parse("root/a")];
    assert_eq!(a.desired.as_ref().unwrap().generation, 2);
    // `a` changed, and so did `root`, whose spec declares `a`'s: the
    // others' desired documents were not written again.
    assert_eq!(
        now.nodes[&NodePath::parse("root")]
            .desired
            .as_ref()
            .unwrap()
            .generation,
        2
    );
    for path in ["root/b", "root/a/a1"] {
        let written = recorded
            .iter()
            .flat_map(|(b, _)| b)
            .any(|c| matches!(c, Change::Desired(p, _) if p.as_str() == path));
        assert!(
            !written,
            "{path}'s unchanged desired document was written again"
        );
    }
    let _ = tree.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_is_a_visible_counted_backlog_and_the_tree_runs_on() {
    let world = ProbeWorld::default();
    let store = recorder(&world);
    let tree = spawn(&world, &store).await;
    settle(&tree, &store).await;
    store.lock().unwrap().store.fail_writes(Some("disk full"));
    let generation = tree.update_root_spec(tree_spec("two")).unwrap();
    tree.wait_generation(generation, WAIT).await.unwrap();
    // The root shows the store's problem; the tree keeps ticking.
    let mut shown = None;
    for _ in 0..100 {
        let ticks = tree.status().ticks;
        tree.wait_ticks(ticks + 1).await.unwrap();
        let snap = tree.inspect().await.unwrap();
        let node = root(&snap);
        if node
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("disk full"))
        {
            shown = Some(node.clone());
            break;
        }
    }
    let node = shown.expect("the root never showed the store's problem");
    assert!(!node.healthy);
    assert!(
        node.last_error.as_deref().unwrap().starts_with("store"),
        "{:?}",
        node.last_error
    );
    let stats = tree.store_stats().unwrap();
    assert!(stats.failed_writes >= 1, "{stats:?}");
    assert!(stats.backlog >= 1, "{stats:?}");
    assert!(stats.last_error.as_deref().unwrap().contains("disk full"));
    let ticks = tree.status().ticks;
    tree.wait_ticks(ticks + 50).await.unwrap();
    // Bounded: a few records per node at most, however long it fails.
    let stats = tree.store_stats().unwrap();
    assert!(stats.backlog <= 4 * 4, "{stats:?}");
    // The disk recovers: the backlog is written, the problem goes.
    store.lock().unwrap().store.fail_writes(None);
    tree.wait_converged(WAIT).await.unwrap();
    settle(&tree, &store).await;
    let snap = tree.inspect().await.unwrap();
    assert!(root(&snap).healthy, "{}", render(&snap));
    let stats = tree.store_stats().unwrap();
    assert_eq!(
        (stats.backlog, stats.last_error.clone()),
        (0, None),
        "{stats:?}"
    );
    let now = stored(&store);
    assert_eq!(now.root.map(|r| r.generation), Some(generation));
    let a = &now.nodes[&NodePath::parse("root/a")];
    assert_eq!(a.desired.as_ref().unwrap().generation, 2);
    let _ = tree.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn an_action_s_started_record_is_written_before_it_runs_and_before_its_outcome() {
    let world = ProbeWorld::default();
    let store = recorder(&world);
    let tree = spawn(&world, &store).await;
    settle(&tree, &store).await;
    let recorded = store.lock().unwrap().batches.clone();
    let root_path = NodePath::parse("root");
    let position = |finished: bool| {
        recorded.iter().position(|(batch, _)| {
            batch.iter().any(|c| {
                matches!(c, Change::Action(a)
                    if a.node == root_path && a.action == "start" && a.outcome.is_some() == finished)
            })
        })
    };
    let started = position(false).expect("no started record of root's start action");
    let ended = position(true).expect("no outcome record of root's start action");
    assert!(
        started < ended,
        "started in batch {started}, ended in batch {ended}"
    );
    assert_eq!(
        recorded[started].1, 0,
        "the action had begun before its started record was written"
    );
    let _ = tree.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn a_removed_child_s_records_are_removed_with_its_subtree() {
    let world = ProbeWorld::default();
    let store = recorder(&world);
    let tree = spawn(&world, &store).await;
    settle(&tree, &store).await;
    let without_a = probe_spec("root", vec![probe_spec("b", vec![])]);
    let generation = tree.update_root_spec(without_a).unwrap();
    tree.wait_generation(generation, WAIT).await.unwrap();
    settle(&tree, &store).await;
    let now = stored(&store);
    let paths: Vec<_> = now.nodes.keys().map(NodePath::as_str).collect();
    assert_eq!(paths, ["root", "root/b"]);
    let _ = tree.shutdown(WAIT).await;
}

/// A store shared by the processes of a test.
type Memory = Arc<Mutex<MemoryStore>>;

async fn run_once(world: &ProbeWorld, store: &Memory, spec: ChildSpec) -> Tree {
    let config = test_config().with_store(Arc::clone(store));
    Tree::spawn(spec, probe_registry(world), config)
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_tree_spawned_on_a_store_goes_on_from_its_last_root_spec_and_shows_what_was_seen() {
    let world = ProbeWorld::default();
    let store: Memory = Arc::default();
    let first = run_once(&world, &store, tree_spec("one")).await;
    first.wait_converged(WAIT).await.unwrap();
    assert_eq!(first.restored(), None, "an empty store restores nothing");
    let generation = first.update_root_spec(tree_spec("two")).unwrap();
    first.wait_generation(generation, WAIT).await.unwrap();
    first.wait_converged(WAIT).await.unwrap();
    let restarts_before = first.inspect().await.unwrap();
    let _ = first.shutdown(WAIT).await;

    // The next process is given the first spec; the store's last one wins.
    let second = run_once(&world, &store, tree_spec("one")).await;
    let info = second.restored().expect("the store held a tree");
    assert_eq!(info.nodes, 4, "{info:?}");
    assert_eq!(info.generation, generation, "{info:?}");
    assert!(info.saved_at_ms.is_some(), "{info:?}");
    second.wait_converged(WAIT).await.unwrap();
    let labels = world.journal.derived_labels("root/a");
    assert_eq!(labels.last().map(String::as_str), Some("two"), "{labels:?}");
    let snap = second.inspect().await.unwrap();
    for node in snap.iter() {
        let restored = node
            .restored
            .as_ref()
            .unwrap_or_else(|| panic!("{} shows nothing restored", node.path));
        // The first process's last documents were written at its shutdown.
        assert_eq!(restored.state, "stopped", "{}", node.path);
        let before = restarts_before.find(node.path.as_str()).unwrap();
        assert_eq!(node.restarts, before.restarts, "{}", node.path);
    }
    // The JSON shows it too.
    let json = snap.to_json().unwrap();
    assert!(
        json.contains("\"restored\":{\"state\":\"stopped\""),
        "{json}"
    );
    let _ = second.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn an_action_cut_off_by_the_end_of_its_process_is_interrupted_once() {
    let world = ProbeWorld::default();
    let store: Memory = Arc::default();
    // The root's start action never ends, so the last action a snapshot
    // shows stays the restored one.
    let spec = ProbeSpec::default()
        .with_action(integration::ActionMode::Hang)
        .with_action_timeout_ms(3_600_000)
        .named("root");
    let first = run_once(&world, &store, spec.clone()).await;
    first.wait_ticks(5).await.unwrap();
    let _ = first.shutdown(WAIT).await;
    // As a killed process leaves it: an action started, without an outcome.
    let root_path = NodePath::parse("root");
    store
        .lock()
        .unwrap()
        .write(&[Change::Action(fsm_core::store::ActionRecord::started(
            root_path.clone(),
            "start",
            999,
            1_764_000_000_000,
        ))])
        .unwrap();

    let (provider, exporter) = integration::in_memory_meter();
    let config = test_config()
        .with_store(Arc::clone(&store))
        .with_meter(Some(opentelemetry::metrics::MeterProvider::meter(
            &provider,
            "store-test",
        )));
    let second = Tree::spawn(spec.clone(), probe_registry(&world), config)
        .await
        .unwrap();
    assert_eq!(second.restored().unwrap().interrupted, 1);
    second.wait_ticks(2).await.unwrap();
    let snap = second.inspect().await.unwrap();
    let last = root(&snap).last_action.clone().expect("a last action");
    assert_eq!(
        (last.action.as_str(), last.outcome),
        ("start", fsm_core::ActionOutcome::Interrupted)
    );
    let stats = second.executor_stats().await.unwrap();
    assert_eq!(stats.interrupted, 1, "{stats:?}");
    assert_eq!(stats.outcomes(), stats.interrupted, "{stats:?}");
    assert_eq!(
        interrupted_in_metrics(&provider, &exporter),
        1,
        "the interrupted action is counted once in the action metric"
    );
    // Written back: the store now holds it interrupted.
    let action =
        store.lock().unwrap().read_all().unwrap().unwrap().nodes[&root_path].actions[&999].clone();
    assert_eq!(action.outcome, Some(StoredOutcome::Interrupted));
    let _ = second.shutdown(WAIT).await;

    // A third process finds nothing left without an outcome: counted once.
    let third = run_once(&world, &store, spec).await;
    assert_eq!(third.restored().unwrap().interrupted, 0);
    third.wait_ticks(2).await.unwrap();
    assert_eq!(third.executor_stats().await.unwrap().interrupted, 0);
    let _ = third.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn a_store_that_cannot_be_read_refuses_the_tree_naming_the_node() {
    let world = ProbeWorld::default();
    let mut memory = MemoryStore::new();
    let path = NodePath::parse("root/a");
    memory
        .write(&[Change::Identity(fsm_core::store::NodeIdentity::new(
            path.clone(),
            "probe",
        ))])
        .unwrap();
    memory.put_raw_observed(&path, b"\x01not a record");
    let config = test_config().with_store(memory);
    let err = Tree::spawn(tree_spec("one"), probe_registry(&world), config)
        .await
        .unwrap_err();
    assert!(matches!(err, fsm_actors::TreeError::Store(_)), "{err:?}");
    assert!(err.to_string().contains("root/a"), "{err}");
}

/// How many actions the action duration metric counts as interrupted.
fn interrupted_in_metrics(
    provider: &opentelemetry_sdk::metrics::SdkMeterProvider,
    exporter: &opentelemetry_sdk::metrics::InMemoryMetricExporter,
) -> u64 {
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    provider.force_flush().unwrap();
    let all = exporter.get_finished_metrics().unwrap();
    let Some(latest) = all.last() else {
        return 0;
    };
    let mut count = 0;
    for scope in latest.scope_metrics() {
        for metric in scope
            .metrics()
            .filter(|m| m.name() == fsm_actors::telemetry::names::ACTION_DURATION)
        {
            if let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() {
                count += h
                    .data_points()
                    .filter(|p| {
                        p.attributes().any(|kv| {
                            kv.key.as_str() == "outcome" && kv.value.to_string() == "interrupted"
                        })
                    })
                    .map(|p| p.count())
                    .sum::<u64>();
            }
        }
    }
    count
}

/// One-for-one supervision with an exact backoff of 100 ms doubling (no
/// jitter, no reset within the test), on `store`.
fn backing_off_config(store: &Memory) -> fsm_actors::TreeConfig {
    let mut config = test_config().with_store(Arc::clone(store));
    config.supervision = Supervision::new(Strategy::OneForOne)
        .with_intensity(RestartIntensity::new(100, Duration::from_secs(600)))
        .with_backoff(Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(100),
            jitter: 0.0,
            reset_after: Duration::from_secs(3600),
        });
    config
}

/// Polls `tree`'s snapshot (a few milliseconds apart) until `done` holds.
async fn snapshot_when(
    tree: &TreeHandle,
    what: &str,
    done: impl Fn(&NodeSnapshot) -> bool,
) -> NodeSnapshot {
    for _ in 0..2000 {
        let snap = tree.inspect().await.unwrap();
        if done(&snap) {
            return snap;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never saw {what}");
}

#[tokio::test(start_paused = true)]
async fn a_restored_node_that_was_backing_off_goes_on_at_its_stored_backoff_attempt() {
    let world = ProbeWorld::default();
    let store: Memory = Arc::default();
    let spec = probe_spec("root", vec![probe_spec("b", vec![])]);
    let b = |s: &NodeSnapshot| s.find("root/b").cloned();

    // Three failures in a row: b backs off at attempts 0, 1 and 2, and its
    // next failure would use attempt 3.
    let first = Tree::spawn(
        spec.clone(),
        probe_registry(&world),
        backing_off_config(&store),
    )
    .await
    .unwrap();
    first.wait_converged(WAIT).await.unwrap();
    world.arm("root/b", Fault::Crash, 3);
    snapshot_when(&first, "b running after three restarts", |s| {
        s.converged && b(s).is_some_and(|b| b.restarts == 3 && b.state == "running")
    })
    .await;
    let _ = first.shutdown(WAIT).await;
    let stored = store.lock().unwrap().load().unwrap().unwrap();
    let observed = stored.nodes[&NodePath::parse("root/b")]
        .observed
        .clone()
        .unwrap();
    assert_eq!((observed.restarts, observed.backoff_attempt), (3, 3));

    // The next process: b's next failure backs off at attempt 3 (800 ms),
    // not at the first attempt (100 ms).
    let second = Tree::spawn(spec, probe_registry(&world), backing_off_config(&store))
        .await
        .unwrap();
    second.wait_converged(WAIT).await.unwrap();
    world.arm("root/b", Fault::Crash, 1);
    let snap = snapshot_when(&second, "b restarting", |s| {
        b(s).is_some_and(|b| b.restarting.is_some())
    })
    .await;
    let b = b(&snap).unwrap();
    let info = b.restarting.clone().unwrap();
    assert_eq!(info.attempt, 3, "{info:?}");
    assert!((790..=800).contains(&info.next_try_in_ms), "{info:?}");
    assert_eq!(b.restarts, 4);
    let _ = second.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn a_removed_node_s_stop_action_runs_at_once_though_its_record_is_not_written() {
    let world = ProbeWorld::default();
    let store: Memory = Arc::default();
    let both = probe_spec(
        "root",
        vec![probe_spec("a", vec![]), probe_spec("b", vec![])],
    );
    let tree = run_once(&world, &store, both).await;
    tree.wait_converged(WAIT).await.unwrap();
    tree.wait_ticks(tree.status().ticks + 5).await.unwrap();
    assert!(world.is_up("root/b"));

    // b is removed: it drives itself to `stopped` with a stop action, whose
    // record the store drops (b's records are being removed).
    let removed_at = tokio::time::Instant::now();
    tree.update_root_spec(probe_spec("root", vec![probe_spec("a", vec![])]))
        .unwrap();
    // Its stop hook marks its end (a snapshot may leave out a child that is
    // busy stopping, so it is not the sign).
    while !world.journal.stopped().iter().any(|p| p == "root/b") {
        assert!(
            removed_at.elapsed() < Duration::from_secs(1),
            "b's removal took over a second"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        world.journal.actions_began("root/b", "stop"),
        1,
        "b was stopped without its stop action, after {:?}",
        removed_at.elapsed()
    );
    assert!(!world.is_up("root/b"));
    snapshot_when(&tree, "b gone", |s| s.find("root/b").is_none()).await;
    let _ = tree.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn a_restored_tree_numbers_its_actions_after_the_stored_ones_and_overwrites_none() {
    let world = ProbeWorld::default();
    let store: Memory = Arc::default();
    let actions = |store: &Memory| {
        let tree = store.lock().unwrap().read_all().unwrap().unwrap();
        tree.nodes
            .values()
            .flat_map(|n| n.actions.values().cloned())
            .map(|a| ((a.node.clone(), a.id), a))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let first = run_once(&world, &store, tree_spec("one")).await;
    first.wait_converged(WAIT).await.unwrap();
    let _ = first.shutdown(WAIT).await;
    let before = actions(&store);
    assert!(!before.is_empty(), "the first process ran no action");

    // The next process starts every probe again: as many actions again.
    let second = run_once(&world, &store, tree_spec("one")).await;
    second.wait_converged(WAIT).await.unwrap();
    let _ = second.shutdown(WAIT).await;
    let after = actions(&store);
    for (key, record) in &before {
        assert_eq!(
            after.get(key),
            Some(record),
            "overwritten by the next process"
        );
    }
    assert!(
        after.len() > before.len(),
        "{} then {}",
        before.len(),
        after.len()
    );
}

/// The gate of a [`GatedStore`]: armed, the next write waits inside the
/// store until the gate is opened.
#[derive(Default)]
struct GateState {
    armed: bool,
    entered: bool,
    open: bool,
}

type Gate = Arc<(Mutex<GateState>, std::sync::Condvar)>;

/// A [`MemoryStore`] whose writes can be held at a gate.
struct GatedStore {
    store: MemoryStore,
    gate: Gate,
}

impl Store for GatedStore {
    fn write(&mut self, batch: &[Change]) -> Result<(), StoreError> {
        let (state, cv) = &*self.gate;
        let mut state = state.lock().unwrap();
        if state.armed {
            state.armed = false;
            state.entered = true;
            cv.notify_all();
            while !state.open {
                state = cv.wait(state).unwrap();
            }
        }
        drop(state);
        self.store.write(batch)
    }

    fn read_all(&self) -> Result<Option<StoredTree>, StoreError> {
        self.store.read_all()
    }
}

#[tokio::test(start_paused = true)]
async fn changes_that_came_while_a_batch_was_written_are_written_next_without_waiting_for_the_runtime()
 {
    let world = ProbeWorld::default();
    let gate = Gate::default();
    let store = Arc::new(Mutex::new(GatedStore {
        store: MemoryStore::new(),
        gate: Arc::clone(&gate),
    }));
    let config = test_config().with_store(Arc::clone(&store));
    let tree = Tree::spawn(tree_spec("one"), probe_registry(&world), config)
        .await
        .unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    // Until the store has written the spawn: nothing waiting, and no batch
    // for ten ticks.
    let mut quiet = 0;
    let mut last = tree.store_stats().unwrap().batches;
    while quiet < 10 {
        let ticks = tree.status().ticks;
        tree.wait_ticks(ticks + 1).await.unwrap();
        let stats = tree.store_stats().unwrap();
        quiet = if stats.batches == last && stats.backlog == 0 {
            quiet + 1
        } else {
            0
        };
        last = stats.batches;
    }

    // A batch is held inside the store while it is written...
    gate.0.lock().unwrap().armed = true;
    let before = tree.store_stats().unwrap();
    tree.update_root_spec(tree_spec("two")).unwrap();
    while !gate.0.lock().unwrap().entered {
        tokio::task::yield_now().await;
        std::thread::yield_now();
    }
    // ...while another root spec comes in (replacing the one waiting).
    let generation = tree.update_root_spec(tree_spec("three")).unwrap();
    while tree.store_stats().unwrap().overwritten == before.overwritten {
        tokio::task::yield_now().await;
    }
    // The batch is committed while the runtime's only thread is busy (here:
    // held by this test, as a tree busy ticking holds its threads): the
    // next batch, with the last root spec, follows at once all the same.
    {
        let (state, cv) = &*gate;
        state.lock().unwrap().open = true;
        cv.notify_all();
    }
    // (A wait on other threads, on the real clock; the runtime is held.)
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tree.store_stats().unwrap().batches < before.batches + 2
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = tree.store_stats().unwrap();
    assert!(
        stats.batches >= before.batches + 2,
        "the second batch waited for the runtime: {stats:?}"
    );
    let root = store.lock().unwrap().store.load().unwrap().unwrap().root;
    assert_eq!(root.map(|r| r.generation), Some(generation));
    let _ = tree.shutdown(WAIT).await;
}
