//! The light way to write a worker runs like the long one: state names from
//! `states!`, an action from a closure that moves what it captured, and a
//! supervisor that has no `collect` at all, which sees what its children
//! want.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fsm_actors::{Tree, TreeConfig};
use fsm_core::{
    BoxError, ChildSpec, DeriveContext, DesiredState, State, TickContext, Transition, Worker,
    WorkerRegistry, action,
};
use integration::{ProbeWorld, probe_registry, probe_spec};

/// A supervisor: its state follows its children; it observes nothing.
struct Site {
    /// What the `announce` action wrote, by run.
    announced: Arc<Mutex<Vec<String>>>,
}

fsm_core::states! {
    #[derive(Clone, Debug, PartialEq)]
    enum SiteState { Starting, AllRunning }
}

impl Worker for Site {
    type Spec = ();
    type Observed = ();
    type State = SiteState;

    fn initial_state(&self) -> SiteState {
        SiteState::Starting
    }

    fn derive_desired(&self, _: &(), _: &DeriveContext<'_>) -> Result<DesiredState, BoxError> {
        let pumps = ["pump-1", "pump-2"]
            .map(|name| probe_spec(name, vec![]).map_state("all_running", "running"));
        Ok(DesiredState::new("all_running").with_children(pumps))
    }
}

impl State<Site> for SiteState {
    fn next(&self, s: &TickContext<'_, Site>) -> Transition<SiteState> {
        match self {
            SiteState::Starting if s.children_converged() && !s.children().is_empty() => {
                // What the children reported wanting, as their parent sees
                // it. Not `Clone`: the closure moves it into its future.
                let wanted: Vec<String> = s
                    .children()
                    .iter()
                    .map(|c| format!("{} {}", c.name, c.desired))
                    .collect();
                let message = format!("{} is up: {}", s.path(), wanted.join(", "));
                let announced = Arc::clone(&s.worker().announced);
                Transition::to(SiteState::AllRunning)
                    .with_action(action("announce", move |_ctx| async move {
                        announced.lock().map_err(|e| e.to_string())?.push(message);
                        Ok(())
                    }))
                    .because("every pump runs")
            }
            _ => Transition::stay(),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_without_collect_and_with_a_closure_action_converges() {
    let world = ProbeWorld::default();
    let announced = Arc::new(Mutex::new(Vec::new()));
    let mut registry: WorkerRegistry = probe_registry(&world);
    let shared = Arc::clone(&announced);
    registry
        .register("site", move |_| Site {
            announced: Arc::clone(&shared),
        })
        .unwrap();
    let mut config = TreeConfig::default();
    config.tick_interval = Some(Duration::from_millis(100));
    let tree = Tree::spawn(ChildSpec::new("site", "site"), registry, config)
        .await
        .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();

    let snap = tree.inspect().await.unwrap();
    // The state's name is the variant's, in snake_case.
    assert_eq!(snap.state, "all_running");
    assert!(snap.healthy, "{snap:?}");
    assert_eq!(snap.children.len(), 2);
    assert!(world.is_up("site/pump-1") && world.is_up("site/pump-2"));
    assert_eq!(
        *announced.lock().unwrap(),
        ["site is up: pump-1 running, pump-2 running"]
    );
    let last = snap.last_action.as_ref().map(|a| a.action.as_str());
    assert_eq!(last, Some("announce"));
    assert!(tree.shutdown(Duration::from_secs(5)).await.all_clean());
}

#[tokio::test(start_paused = true)]
async fn a_state_name_the_macro_does_not_produce_is_refused_as_a_desired_state() {
    let world = ProbeWorld::default();
    let mut registry = probe_registry(&world);
    registry
        .register("site", |_| Site {
            announced: Arc::default(),
        })
        .unwrap();
    // A child of the probe's supervisor mapped to a name `SiteState` lacks:
    // `AllRunning` is `all_running`, not `allrunning`.
    let root = probe_spec(
        "root",
        vec![ChildSpec::new("site", "site").map_state("running", "allrunning")],
    );
    let mut config = TreeConfig::default();
    config.tick_interval = Some(Duration::from_millis(100));
    let tree = Tree::spawn(root, registry, config).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snap = tree.inspect().await.unwrap();
    let error = snap.last_error.clone().unwrap_or_default();
    assert!(error.contains("allrunning"), "{snap:?}");
    assert!(error.contains("all_running"), "{error}");
    tree.shutdown(Duration::from_secs(5)).await;
}
