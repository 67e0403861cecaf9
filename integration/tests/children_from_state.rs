//! Children from what a worker sees, not only from its spec: a worker
//! declares children from its state machine (`Transition::with_children`),
//! which the node reconciles together with those its spec derives.
//!
//! * `scanner` declares one probe child per device its collect discovers,
//!   beside the children its spec derives;
//! * `session` declares its transport children on entering `authenticated`
//!   and clears them on leaving it.

// The helpers below run outside `#[test]` functions, where clippy.toml's
// allow-unwrap-in-tests does not reach; a panic is how they fail a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fsm_actors::{NodeSnapshot, Tree};
use fsm_core::{
    BoxError, ChildSpec, CollectContext, DeriveContext, DesiredState, Signal, State, TickContext,
    Transition, Worker, WorkerRegistry,
};
use integration::{ProbeWorld, probe_registry, probe_spec, render, test_config, wait_for_snapshot};
use serde::Deserialize;

const WAIT: Duration = Duration::from_secs(10);

/// What the test shows the workers' collects.
#[derive(Default)]
struct Seen {
    devices: Mutex<Vec<String>>,
    authenticated: AtomicBool,
    /// Makes the next observation ask for a restart (once).
    restart: AtomicBool,
    /// `children_from_state().len()` on each incarnation's first step.
    first_steps: Mutex<Vec<usize>>,
}

impl Seen {
    fn set_devices(&self, devices: &[&str]) {
        *self.devices.lock().unwrap() = devices.iter().map(|d| (*d).to_owned()).collect();
    }
}

#[derive(Clone, Default)]
struct Observed {
    devices: Vec<String>,
    authenticated: bool,
    restart: bool,
}

/// The spec: the names of the children derived from it.
#[derive(Deserialize, Default)]
struct GatewaySpec {
    #[serde(default)]
    derived: Vec<String>,
}

struct Scanner {
    seen: Arc<Seen>,
    first_step: AtomicBool,
}

fsm_core::states! {
    #[derive(Clone, Debug, PartialEq)]
    enum ScannerState { Scanning }
}

impl Worker for Scanner {
    type Spec = GatewaySpec;
    type Observed = Observed;
    type State = ScannerState;

    fn initial_state(&self) -> ScannerState {
        ScannerState::Scanning
    }

    async fn collect(&self, _: &CollectContext<'_, GatewaySpec>) -> Result<Observed, BoxError> {
        Ok(Observed {
            devices: self.seen.devices.lock().unwrap().clone(),
            authenticated: false,
            restart: self.seen.restart.swap(false, Ordering::SeqCst),
        })
    }

    fn derive_desired(
        &self,
        spec: &GatewaySpec,
        _: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        let children = spec.derived.iter().map(|n| probe_spec(n, vec![]));
        Ok(DesiredState::new("scanning").with_children(children))
    }
}

impl State<Scanner> for ScannerState {
    fn next(&self, s: &TickContext<'_, Scanner>) -> Transition<ScannerState> {
        let declared: Vec<&str> = s
            .children_from_state()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        if s.worker().first_step.swap(false, Ordering::SeqCst) {
            s.worker()
                .seen
                .first_steps
                .lock()
                .unwrap()
                .push(declared.len());
        }
        let observed = s.observed();
        if observed.restart {
            return Transition::signal(Signal::NeedsRestart).because("asked to restart");
        }
        if declared == observed.devices {
            return Transition::stay();
        }
        // One child per device seen.
        Transition::stay()
            .with_children(observed.devices.iter().map(|d| probe_spec(d, vec![])))
            .because("the devices changed")
    }
}

struct Session {
    seen: Arc<Seen>,
}

fsm_core::states! {
    #[derive(Clone, Debug, PartialEq)]
    enum SessionState { Connecting, Authenticated }
}

impl Worker for Session {
    type Spec = GatewaySpec;
    type Observed = Observed;
    type State = SessionState;

    fn initial_state(&self) -> SessionState {
        SessionState::Connecting
    }

    async fn collect(&self, _: &CollectContext<'_, GatewaySpec>) -> Result<Observed, BoxError> {
        Ok(Observed {
            authenticated: self.seen.authenticated.load(Ordering::SeqCst),
            ..Observed::default()
        })
    }

    fn derive_desired(
        &self,
        spec: &GatewaySpec,
        _: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        let children = spec.derived.iter().map(|n| probe_spec(n, vec![]));
        Ok(DesiredState::new("authenticated").with_children(children))
    }
}

impl State<Session> for SessionState {
    fn next(&self, s: &TickContext<'_, Session>) -> Transition<SessionState> {
        match (self, s.observed().authenticated) {
            (SessionState::Connecting, true) => Transition::to(SessionState::Authenticated)
                .with_children([probe_spec("tx", vec![]), probe_spec("rx", vec![])])
                .because("authenticated"),
            (SessionState::Authenticated, false) => Transition::to(SessionState::Connecting)
                .with_children([])
                .because("the session was lost"),
            _ => Transition::stay(),
        }
    }
}

fn registry(world: &ProbeWorld, seen: &Arc<Seen>) -> WorkerRegistry {
    let mut registry = probe_registry(world);
    let shared = Arc::clone(seen);
    registry
        .register("scanner", move |_| Scanner {
            seen: Arc::clone(&shared),
            first_step: AtomicBool::new(true),
        })
        .unwrap();
    let shared = Arc::clone(seen);
    registry
        .register("session", move |_| Session {
            seen: Arc::clone(&shared),
        })
        .unwrap();
    registry
}

fn gateway(worker_type: &str, derived: &[&str]) -> ChildSpec {
    let derived = derived
        .iter()
        .map(|d| fsm_core::Value::from(*d))
        .collect::<Vec<_>>();
    ChildSpec::new("gw", worker_type).with_spec(fsm_core::Value::map([(
        "derived",
        fsm_core::Value::List(derived),
    )]))
}

async fn spawn(worker_type: &str, derived: &[&str]) -> (Tree, ProbeWorld, Arc<Seen>) {
    let world = ProbeWorld::default();
    let seen = Arc::new(Seen::default());
    let tree = Tree::spawn(
        gateway(worker_type, derived),
        registry(&world, &seen),
        test_config(),
    )
    .await
    .unwrap();
    (tree, world, seen)
}

fn child_names(snap: &NodeSnapshot) -> Vec<String> {
    snap.children.iter().map(|c| c.name.clone()).collect()
}

/// Waits until `gw`'s children, in start order, are `names`, all converged.
async fn wait_children(tree: &Tree, names: &[&str]) -> NodeSnapshot {
    let what = format!("the children of gw to be {names:?}");
    wait_for_snapshot(tree, &what, WAIT, |s| {
        child_names(s) == names && s.children.iter().all(|c| c.converged)
    })
    .await
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_worker_declares_one_child_per_discovered_device_and_they_follow_what_it_sees() {
    let (tree, world, seen) = spawn("scanner", &["hub"]).await;
    wait_children(&tree, &["hub"]).await;

    seen.set_devices(&["dev-a", "dev-b"]);
    // Derived children first, then the ones from state, in their order.
    let snap = wait_children(&tree, &["hub", "dev-a", "dev-b"]).await;
    assert!(snap.healthy, "{}", render(&snap));
    assert!(world.is_up("gw/dev-a") && world.is_up("gw/dev-b"));

    // A device disappears, another appears.
    seen.set_devices(&["dev-b", "dev-c"]);
    wait_children(&tree, &["hub", "dev-b", "dev-c"]).await;
    assert!(
        !world.is_up("gw/dev-a"),
        "a device that went away is stopped"
    );
    assert!(world.is_up("gw/dev-c"));
    assert!(world.is_up("gw/hub"), "the derived child is untouched");

    seen.set_devices(&[]);
    let snap = wait_children(&tree, &["hub"]).await;
    assert!(!world.is_up("gw/dev-b") && !world.is_up("gw/dev-c"));
    tree.wait_converged(WAIT).await.unwrap();
    assert!(snap.healthy, "{}", render(&snap));
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn transport_children_run_only_while_the_session_is_authenticated() {
    let (tree, world, seen) = spawn("session", &["watchdog"]).await;
    wait_children(&tree, &["watchdog"]).await;
    // Not authenticated: a second later, still no transport.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let snap = tree.inspect().await.unwrap();
    assert_eq!(child_names(&snap), ["watchdog"], "{}", render(&snap));

    seen.authenticated.store(true, Ordering::SeqCst);
    let snap = wait_children(&tree, &["watchdog", "tx", "rx"]).await;
    assert_eq!(snap.state, "authenticated");
    assert!(world.is_up("gw/tx") && world.is_up("gw/rx"));
    tree.wait_converged(WAIT).await.unwrap();

    // Later transitions that do not declare children keep them: the node
    // stays on them while it stays authenticated.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(world.is_up("gw/tx") && world.is_up("gw/rx"));

    seen.authenticated.store(false, Ordering::SeqCst);
    let snap = wait_children(&tree, &["watchdog"]).await;
    assert_eq!(snap.state, "connecting");
    assert!(!world.is_up("gw/tx") && !world.is_up("gw/rx"));
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_name_declared_by_the_spec_and_from_state_is_a_problem_naming_both() {
    let (tree, world, seen) = spawn("scanner", &["hub", "dev-a"]).await;
    seen.set_devices(&["dev-b"]);
    wait_children(&tree, &["hub", "dev-a", "dev-b"]).await;

    // `dev-a` is derived already: the whole change is refused.
    seen.set_devices(&["dev-a", "dev-c"]);
    let snap = wait_for_snapshot(&tree, "gw to report the duplicate", WAIT, |s| {
        s.last_error.is_some()
    })
    .await
    .unwrap();
    assert!(!snap.healthy, "{}", render(&snap));
    let error = snap.last_error.clone().unwrap();
    assert!(error.contains("node `gw`"), "{error}");
    assert!(error.contains("`dev-a`"), "{error}");
    assert!(error.contains("derive_desired"), "{error}");
    assert!(error.contains("Transition::with_children"), "{error}");
    // The last good children keep running; the new one does not start.
    assert_eq!(child_names(&snap), ["hub", "dev-a", "dev-b"]);
    assert!(world.is_up("gw/dev-b"));
    assert!(!world.is_up("gw/dev-c"));

    // Fixed: it heals and applies the new declaration.
    seen.set_devices(&["dev-c"]);
    let snap = wait_children(&tree, &["hub", "dev-a", "dev-c"]).await;
    tree.wait_converged(WAIT).await.unwrap();
    let snap = tree.inspect().await.map_or(snap, |s| s);
    assert!(snap.healthy, "{}", render(&snap));
    assert_eq!(snap.last_error, None);
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_restarted_worker_starts_with_no_children_from_state() {
    let (tree, world, seen) = spawn("scanner", &[]).await;
    seen.set_devices(&["dev-a"]);
    wait_children(&tree, &["dev-a"]).await;

    assert_eq!(*seen.first_steps.lock().unwrap(), [0]);

    // The new incarnation starts with no children from state, and declares
    // them again from what it sees.
    seen.restart.store(true, Ordering::SeqCst);
    wait_for_snapshot(&tree, "gw to restart", WAIT, |s| s.restarts >= 1)
        .await
        .unwrap();
    let snap = wait_children(&tree, &["dev-a"]).await;
    assert!(world.is_up("gw/dev-a"), "{}", render(&snap));
    let first_steps = seen.first_steps.lock().unwrap().clone();
    assert_eq!(first_steps, [0, 0], "each incarnation starts with none");

    seen.set_devices(&["dev-b"]);
    wait_children(&tree, &["dev-b"]).await;
    tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_spec_update_changes_the_derived_children_and_keeps_those_from_state() {
    let (tree, world, seen) = spawn("scanner", &["hub"]).await;
    seen.set_devices(&["dev-a"]);
    wait_children(&tree, &["hub", "dev-a"]).await;

    let generation = tree
        .update_root_spec(gateway("scanner", &["hub", "relay"]))
        .unwrap();
    tree.wait_generation(generation, WAIT).await.unwrap();
    // A new derived child is started after those already running.
    let snap = wait_children(&tree, &["hub", "dev-a", "relay"]).await;
    assert!(snap.healthy, "{}", render(&snap));
    assert!(world.is_up("gw/relay") && world.is_up("gw/dev-a"));

    let generation = tree.update_root_spec(gateway("scanner", &[])).unwrap();
    tree.wait_generation(generation, WAIT).await.unwrap();
    wait_children(&tree, &["dev-a"]).await;
    assert!(!world.is_up("gw/hub") && !world.is_up("gw/relay"));
    tree.shutdown(Duration::from_secs(5)).await;
}
