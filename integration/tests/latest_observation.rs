//! `TreeHandle::observation`: a typed read of one node's latest
//! observation with its freshness, routed to the node through the tree.

// The helpers below run outside `#[test]` functions, where clippy.toml's
// allow-unwrap-in-tests does not reach; a panic is how they fail a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fsm_actors::{LatestObservation, Tree, TreeError};
use fsm_core::{
    BoxError, ChildSpec, CollectContext, DeriveContext, DesiredState, State, TickContext,
    Transition, Worker, WorkerRegistry,
};
use integration::{ProbeSpec, ProbeWorld, probe_registry, test_config};

/// What the meter reads.
#[derive(Clone, Debug, Default, PartialEq)]
struct Reading {
    litres: u64,
}

#[derive(Default)]
struct Dial {
    litres: AtomicU64,
    /// Collects hang while set.
    hang: AtomicBool,
}

struct Meter {
    dial: Arc<Dial>,
}

fsm_core::states! {
    #[derive(Clone, Debug, PartialEq)]
    enum MeterState { Running }
}

impl Worker for Meter {
    type Spec = ();
    type Observed = Reading;
    type State = MeterState;

    fn initial_state(&self) -> MeterState {
        MeterState::Running
    }

    async fn collect(&self, _: &CollectContext<'_, ()>) -> Result<Reading, BoxError> {
        if self.dial.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(Reading {
            litres: self.dial.litres.load(Ordering::SeqCst),
        })
    }

    fn derive_desired(&self, _: &(), _: &DeriveContext<'_>) -> Result<DesiredState, BoxError> {
        Ok(DesiredState::new("running"))
    }
}

impl State<Meter> for MeterState {
    fn next(&self, _: &TickContext<'_, Meter>) -> Transition<MeterState> {
        Transition::stay()
    }
}

/// `root ─ meter` (stale after 2 s).
async fn spawn(dial: &Arc<Dial>) -> Tree {
    let world = ProbeWorld::default();
    let mut registry: WorkerRegistry = probe_registry(&world);
    let dial = Arc::clone(dial);
    registry
        .register("meter", move |_| Meter {
            dial: Arc::clone(&dial),
        })
        .unwrap();
    let root = ProbeSpec::default()
        .with_children(vec![ChildSpec::new("meter", "meter")])
        .named("root");
    Tree::spawn(root, registry, test_config()).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_fresh_observation_is_read_with_its_age() {
    let dial = Arc::new(Dial::default());
    dial.litres.store(7, Ordering::SeqCst);
    let tree = spawn(&dial).await;
    tree.wait_converged(Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let read = tree.observation::<Reading>("root/meter").await.unwrap();
    let LatestObservation::Fresh { value, age } = read else {
        panic!("expected a fresh observation, got {read:?}")
    };
    assert_eq!(value, Reading { litres: 7 });
    // Collected on every tick (100 ms).
    assert!(age <= Duration::from_millis(100), "{age:?}");

    dial.litres.store(8, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let read = tree.observation::<Reading>("/root/meter/").await.unwrap();
    assert_eq!(read.value(), Some(&Reading { litres: 8 }));
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_collect_hanging_past_stale_after_makes_the_last_observation_stale() {
    let dial = Arc::new(Dial::default());
    dial.litres.store(3, Ordering::SeqCst);
    let tree = spawn(&dial).await;
    tree.wait_converged(Duration::from_secs(5)).await.unwrap();
    dial.hang.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let read = tree.observation::<Reading>("root/meter").await.unwrap();
    let LatestObservation::Stale { value, age } = read else {
        panic!("expected a stale observation, got {read:?}")
    };
    assert_eq!(value, Reading { litres: 3 }, "the last one seen");
    assert!(age > Duration::from_secs(2), "{age:?}");
    assert!(age <= Duration::from_secs(3), "{age:?}");
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_node_whose_collect_hangs_from_the_start_has_never_observed() {
    let dial = Arc::new(Dial::default());
    dial.hang.store(true, Ordering::SeqCst);
    let tree = spawn(&dial).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let read = tree.observation::<Reading>("root/meter").await.unwrap();
    assert_eq!(read, LatestObservation::NeverObserved);
    // Stale now, and still nothing to read.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let read = tree.observation::<Reading>("root/meter").await.unwrap();
    assert_eq!(read, LatestObservation::NeverObserved);
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_path_no_node_has_is_no_such_node() {
    let dial = Arc::new(Dial::default());
    let tree = spawn(&dial).await;
    tree.wait_converged(Duration::from_secs(5)).await.unwrap();
    for path in ["root/nope", "root/meter/below", "other", "other/meter", ""] {
        let read = tree.observation::<Reading>(path).await;
        let Err(TreeError::NoSuchNode { path: named }) = &read else {
            panic!("{path}: expected NoSuchNode, got {read:?}")
        };
        assert_eq!(named, path, "{path}");
    }
    let e = tree.observation::<Reading>("root/nope").await.unwrap_err();
    assert!(e.to_string().contains("`root/nope`"), "{e}");
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn reading_as_another_type_is_an_error_naming_the_path_and_both_types() {
    let dial = Arc::new(Dial::default());
    let tree = spawn(&dial).await;
    tree.wait_converged(Duration::from_secs(5)).await.unwrap();
    let read = tree.observation::<String>("root/meter").await;
    let Err(TreeError::ObservationType {
        path,
        asked,
        observed,
    }) = &read
    else {
        panic!("expected ObservationType, got {read:?}")
    };
    assert_eq!(path, "root/meter");
    assert_eq!(*asked, std::any::type_name::<String>());
    assert_eq!(*observed, std::any::type_name::<Reading>());
    let e = read.unwrap_err().to_string();
    assert!(
        e.contains("root/meter") && e.contains("Reading") && e.contains("String"),
        "{e}"
    );
    // The probe root observes a `bool`.
    let root = tree.observation::<bool>("root").await.unwrap();
    assert_eq!(root.value(), Some(&true));
    tree.shutdown(Duration::from_secs(5)).await;
}
