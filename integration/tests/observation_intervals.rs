//! How often a node is collected: once as it starts (its first tick steps
//! on that observation), then on every tick; a worker type with an
//! observation interval (`TreeConfig::with_observation_interval`) about
//! once per interval, and it is not stale between its collects.

// The helpers below run outside `#[test]` functions, where clippy.toml's
// allow-unwrap-in-tests does not reach; a panic is how they fail a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fsm_actors::{ConfigError, Tree};
use fsm_core::{
    BoxError, ChildSpec, CollectContext, DeriveContext, DesiredState, State, TickContext,
    Transition, Worker, WorkerRegistry,
};
use integration::{ProbeSpec, ProbeWorld, probe_registry, render, test_config};

/// Counts its collects.
struct Counted {
    collects: Arc<AtomicU64>,
}

fsm_core::states! {
    #[derive(Clone, Debug, PartialEq)]
    enum CountedState { Running }
}

impl Worker for Counted {
    type Spec = ();
    type Observed = ();
    type State = CountedState;

    fn initial_state(&self) -> CountedState {
        CountedState::Running
    }

    async fn collect(&self, _: &CollectContext<'_, ()>) -> Result<(), BoxError> {
        self.collects.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn derive_desired(&self, _: &(), _: &DeriveContext<'_>) -> Result<DesiredState, BoxError> {
        Ok(DesiredState::new("running"))
    }
}

impl State<Counted> for CountedState {
    fn next(&self, _: &TickContext<'_, Counted>) -> Transition<CountedState> {
        Transition::stay()
    }
}

#[tokio::test(start_paused = true)]
async fn a_starting_node_collects_once_and_then_once_per_tick() {
    let collects = Arc::new(AtomicU64::new(0));
    let mut registry = WorkerRegistry::new();
    let counter = Arc::clone(&collects);
    registry
        .register("counted", move |_| Counted {
            collects: Arc::clone(&counter),
        })
        .unwrap();
    // Ticked by hand only: the one tick below starts the root, which
    // collects as it starts and steps on that observation.
    let config = test_config().with_tick_interval(None);
    let tree = Tree::spawn(ChildSpec::new("root", "counted"), registry, config)
        .await
        .unwrap();
    tree.tick().unwrap();
    tree.wait_converged(Duration::from_secs(5)).await.unwrap();
    tree.wait_ticks(1).await.unwrap();
    assert_eq!(
        collects.load(Ordering::SeqCst),
        1,
        "collects while starting"
    );
    // From then on, one collect per tick.
    for ticks in 2..=4 {
        tree.tick().unwrap();
        tree.wait_ticks(ticks).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        collects.load(Ordering::SeqCst),
        4,
        "collects after three more ticks"
    );
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_type_with_an_interval_is_collected_once_per_interval_and_never_stale_between() {
    let world = ProbeWorld::default();
    let mut registry: WorkerRegistry = probe_registry(&world);
    let slow = Arc::new(AtomicU64::new(0));
    let fast = Arc::new(AtomicU64::new(0));
    for (worker_type, counter) in [("slow", &slow), ("fast", &fast)] {
        let counter = Arc::clone(counter);
        registry
            .register(worker_type, move |_| Counted {
                collects: Arc::clone(&counter),
            })
            .unwrap();
    }
    // Ticks every 100 ms; stale after 2 s.
    let config = test_config().with_observation_interval("slow", Duration::from_secs(10));
    let root = ProbeSpec::default()
        .with_children(vec![
            ChildSpec::new("slow", "slow"),
            ChildSpec::new("fast", "fast"),
        ])
        .named("root");
    let tree = Tree::spawn(root, registry, config).await.unwrap();
    tree.wait_converged(Duration::from_secs(5)).await.unwrap();
    let (slow0, fast0) = (slow.load(Ordering::SeqCst), fast.load(Ordering::SeqCst));
    assert_eq!(slow0, 1, "the first collect is at once");

    // 30 s in steps of 1 s: never stale, though 2 s < 10 s.
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let snap = tree.inspect().await.unwrap();
        let node = snap.find("root/slow").unwrap();
        assert!(!node.stale, "{}", render(&snap));
        assert!(node.healthy, "{}", render(&snap));
    }
    let slow_n = slow.load(Ordering::SeqCst) - slow0;
    let fast_n = fast.load(Ordering::SeqCst) - fast0;
    // About one per 10 s...
    assert!(
        (2..=4).contains(&slow_n),
        "{slow_n} collects of `slow` in 30 s"
    );
    // ...while the others are collected on every tick (about 300).
    assert!(fast_n >= 250, "{fast_n} collects of `fast` in 30 s");
    assert!(tree.status().converged, "{:?}", tree.status());
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_zero_observation_interval_refuses_the_tree_naming_the_worker_type() {
    let world = ProbeWorld::default();
    let config = test_config().with_observation_interval("probe", Duration::ZERO);
    let result = Tree::spawn(
        ProbeSpec::default().named("root"),
        probe_registry(&world),
        config,
    )
    .await;
    let Err(e) = result else {
        panic!("a zero interval was accepted")
    };
    let text = e.to_string();
    assert!(text.contains("`probe`"), "{text}");
    assert!(
        format!("{e:?}").contains(&format!(
            "{:?}",
            ConfigError::ZeroObservationInterval {
                worker_type: "probe".into()
            }
        )),
        "{e:?}"
    );
}
