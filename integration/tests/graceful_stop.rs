//! A node that stops for good (removed, or stopped with the tree) or
//! restarts on its own request is first driven to its `stopped` state by its
//! own state machine, within the removal budget; only then does its stop
//! hook run. A worker without a `stopped` state goes straight to its hook.

// Test workers: a panic is how they fail a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fsm_actors::{Tree, TreeConfig};
use fsm_core::{
    Action, ActionContext, BoxError, ChildSpec, CollectContext, DeriveContext, DesiredState,
    Signal, State, StopContext, TickContext, Transition, Value, Worker, WorkerRegistry,
};
use integration::test_config;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);

/// What the pumps did, in order, with the (virtual) time since the test
/// began.
#[derive(Clone, Default)]
struct World {
    log: Arc<Mutex<Vec<(Duration, String)>>>,
    motors: Arc<Mutex<BTreeSet<String>>>,
    /// Paths whose state machine asks for a restart on its next step.
    restart: Arc<Mutex<BTreeSet<String>>>,
    begun: Arc<Mutex<Option<Instant>>>,
}

impl World {
    fn push(&self, entry: String) {
        let begun = *self.begun.lock().unwrap().get_or_insert_with(Instant::now);
        self.log.lock().unwrap().push((begun.elapsed(), entry));
    }

    fn entries(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    fn when(&self, entry: &str) -> Option<Duration> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|(_, e)| e == entry)
            .map(|(t, _)| *t)
    }

    fn motor_on(&self, path: &str) -> bool {
        self.motors.lock().unwrap().contains(path)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct PumpSpec {
    children: Vec<ChildSpec>,
    /// Its state machine never goes to `stopped`.
    stubborn: bool,
}

fn pump(name: &str, children: Vec<ChildSpec>) -> ChildSpec {
    let spec = PumpSpec {
        children,
        stubborn: false,
    };
    ChildSpec::new(name, "pump").with_spec(Value::from_serialize(&spec).unwrap())
}

fn stubborn_pump(name: &str) -> ChildSpec {
    let spec = PumpSpec {
        children: Vec::new(),
        stubborn: true,
    };
    ChildSpec::new(name, "pump").with_spec(Value::from_serialize(&spec).unwrap())
}

/// A pump: `running` while its motor is on, `stopped` while it is off; it
/// switches the motor with an action that takes 50 ms.
struct Pump {
    world: World,
}

#[derive(Clone, Debug)]
enum PumpState {
    Stopped,
    Running,
}

struct Switch {
    world: World,
    path: String,
    on: bool,
}

impl Action for Switch {
    fn name(&self) -> &'static str {
        if self.on { "switch-on" } else { "switch-off" }
    }

    async fn execute(&self, _ctx: &ActionContext) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut motors = self.world.motors.lock().unwrap();
        if self.on {
            motors.insert(self.path.clone());
        } else {
            motors.remove(&self.path);
        }
        drop(motors);
        self.world.push(format!("{} {}", self.name(), self.path));
        Ok(())
    }
}

impl Worker for Pump {
    type Spec = PumpSpec;
    type Observed = bool;
    type State = PumpState;

    fn initial_state(&self) -> PumpState {
        PumpState::Stopped
    }

    async fn collect(&self, ctx: &CollectContext<'_, PumpSpec>) -> Result<bool, BoxError> {
        if ctx.desired() == "stopped" {
            self.world.push(format!(
                "collect in {} wanting stopped {}",
                ctx.state(),
                ctx.path()
            ));
        }
        Ok(self.world.motor_on(ctx.path().as_str()))
    }

    fn derive_desired(
        &self,
        spec: &PumpSpec,
        _ctx: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        Ok(DesiredState::new("running").with_children(spec.children.iter().cloned()))
    }

    async fn on_stop(&self, ctx: &StopContext<'_, PumpSpec>) {
        self.world.push(format!(
            "on_stop {} in {} wanting {}",
            ctx.path(),
            ctx.state(),
            ctx.desired()
        ));
    }
}

impl fsm_core::StateNames for PumpState {
    const NAMES: &'static [&'static str] = &["stopped", "running"];

    fn name(&self) -> &'static str {
        match self {
            PumpState::Stopped => "stopped",
            PumpState::Running => "running",
        }
    }
}

impl State<Pump> for PumpState {
    fn next(&self, s: &TickContext<'_, Pump>) -> Transition<PumpState> {
        let world = &s.worker().world;
        let path = s.path().as_str();
        if world.restart.lock().unwrap().remove(path) {
            return Transition::signal(Signal::NeedsRestart).because("asked to restart");
        }
        let on = *s.observed();
        let want_on = s.desired() == "running" || s.spec().stubborn;
        let switch = |on| Switch {
            world: world.clone(),
            path: path.to_owned(),
            on,
        };
        match (want_on, on) {
            (true, true) => Transition::to(PumpState::Running),
            (false, false) => Transition::to(PumpState::Stopped),
            (true, false) => Transition::stay().with_action(switch(true)),
            (false, true) => Transition::stay().with_action(switch(false)),
        }
    }
}

/// A worker with no `stopped` state.
struct Plain {
    world: World,
}

#[derive(Clone, Debug)]
struct Idle;

impl Worker for Plain {
    type Spec = ();
    type Observed = ();
    type State = Idle;

    fn initial_state(&self) -> Idle {
        Idle
    }

    async fn collect(&self, _ctx: &CollectContext<'_, ()>) -> Result<(), BoxError> {
        Ok(())
    }

    fn derive_desired(
        &self,
        _spec: &(),
        _ctx: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        Ok(DesiredState::new("idle"))
    }

    async fn on_stop(&self, ctx: &StopContext<'_, ()>) {
        self.world
            .push(format!("on_stop {} in {}", ctx.path(), ctx.state()));
    }
}

impl fsm_core::StateNames for Idle {
    const NAMES: &'static [&'static str] = &["idle"];

    fn name(&self) -> &'static str {
        "idle"
    }
}

impl State<Plain> for Idle {
    fn next(&self, _s: &TickContext<'_, Plain>) -> Transition<Idle> {
        Transition::stay()
    }
}

fn registry(world: &World) -> WorkerRegistry {
    let mut r = WorkerRegistry::new();
    let w = world.clone();
    r.register("pump", move |init| {
        w.push(format!("constructed {}", init.path()));
        Pump { world: w.clone() }
    })
    .unwrap();
    let w = world.clone();
    r.register("plain", move |_| Plain { world: w.clone() })
        .unwrap();
    r
}

async fn spawn(world: &World, root: ChildSpec, config: TreeConfig) -> Tree {
    let tree = Tree::spawn(root, registry(world), config).await.unwrap();
    tree.wait_converged(WAIT).await.unwrap();
    tree
}

/// Waits until `entry` is in the log.
async fn wait_for(world: &World, entry: &str) -> Duration {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(t) = world.when(entry) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{entry:?} never came: {:#?}",
            world.entries()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn position(entries: &[String], entry: &str) -> usize {
    entries
        .iter()
        .position(|e| e == entry)
        .unwrap_or_else(|| panic!("{entry:?} not in {entries:#?}"))
}

#[tokio::test(start_paused = true)]
async fn a_removed_pump_switches_its_motor_off_and_reaches_stopped_before_its_stop_hook() {
    let world = World::default();
    let tree = spawn(
        &world,
        pump("root", vec![pump("p1", vec![])]),
        test_config(),
    )
    .await;
    assert!(world.motor_on("root/p1"));

    tree.update_root_spec(pump("root", vec![])).unwrap();
    wait_for(&world, "on_stop root/p1 in stopped wanting stopped").await;
    let entries = world.entries();
    assert!(
        position(&entries, "switch-off root/p1")
            < position(&entries, "on_stop root/p1 in stopped wanting stopped"),
        "{entries:#?}"
    );
    assert!(!world.motor_on("root/p1"));
    assert!(world.motor_on("root"), "only the removed pump stops");
    // Its collects knew it was being stopped.
    assert!(
        position(&entries, "collect in running wanting stopped root/p1")
            < position(&entries, "on_stop root/p1 in stopped wanting stopped"),
        "{entries:#?}"
    );
    let _ = tree.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_without_a_stopped_state_goes_straight_to_its_stop_hook() {
    let world = World::default();
    let plain = ChildSpec::new("plain", "plain");
    let tree = spawn(&world, pump("root", vec![plain]), test_config()).await;
    let removed_at = world.begun.lock().unwrap().unwrap().elapsed();

    tree.update_root_spec(pump("root", vec![])).unwrap();
    let stopped_at = wait_for(&world, "on_stop root/plain in idle").await;
    // Within the tick that removed it: nothing waited for a budget.
    assert!(
        stopped_at - removed_at <= Duration::from_millis(200),
        "{:?}",
        stopped_at - removed_at
    );
    let _ = tree.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn a_pump_that_never_reaches_stopped_gets_its_stop_hook_after_the_removal_budget() {
    let world = World::default();
    let mut config = test_config();
    config.removal_timeout = Duration::from_secs(2);
    let tree = spawn(&world, pump("root", vec![stubborn_pump("p1")]), config).await;
    let removed_at = world.begun.lock().unwrap().unwrap().elapsed();

    tree.update_root_spec(pump("root", vec![])).unwrap();
    let stopped_at = wait_for(&world, "on_stop root/p1 in running wanting stopped").await;
    let took = stopped_at - removed_at;
    assert!(
        took >= Duration::from_secs(2) && took <= Duration::from_millis(2300),
        "the hook ran after {took:?}, not once the 2 s budget was up"
    );
    let _ = tree.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn a_tree_shutdown_drives_every_pump_to_stopped_children_first() {
    let world = World::default();
    let tree = spawn(
        &world,
        pump(
            "root",
            vec![pump("a", vec![pump("a1", vec![])]), pump("b", vec![])],
        ),
        test_config(),
    )
    .await;
    let report = tree.shutdown(WAIT).await;
    assert!(report.all_clean(), "{report:#?}");
    let entries: Vec<String> = world
        .entries()
        .into_iter()
        .filter(|e| e.starts_with("switch-off") || e.starts_with("on_stop"))
        .collect();
    assert_eq!(
        entries,
        [
            "switch-off root/b",
            "on_stop root/b in stopped wanting stopped",
            "switch-off root/a/a1",
            "on_stop root/a/a1 in stopped wanting stopped",
            "switch-off root/a",
            "on_stop root/a in stopped wanting stopped",
            "switch-off root",
            "on_stop root in stopped wanting stopped",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_pump_that_asks_for_a_restart_is_driven_to_stopped_before_it_restarts() {
    let world = World::default();
    let tree = spawn(
        &world,
        pump("root", vec![pump("p1", vec![])]),
        test_config(),
    )
    .await;
    world.restart.lock().unwrap().insert("root/p1".to_owned());
    let restarted = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + WAIT;
    while !restarted.load(Ordering::SeqCst) {
        let built = world
            .entries()
            .iter()
            .filter(|e| *e == "constructed root/p1")
            .count();
        restarted.store(built == 2, Ordering::SeqCst);
        assert!(Instant::now() < deadline, "{:#?}", world.entries());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let entries = world.entries();
    let rebuilt = entries
        .iter()
        .rposition(|e| e == "constructed root/p1")
        .unwrap();
    assert!(
        position(&entries, "switch-off root/p1") < rebuilt,
        "{entries:#?}"
    );
    // A restart is no removal: the stop hook does not run.
    assert!(
        !entries.iter().any(|e| e.starts_with("on_stop root/p1")),
        "{entries:#?}"
    );
    tree.wait_converged(WAIT).await.unwrap();
    assert!(world.motor_on("root/p1"));
    let _ = tree.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn a_pump_removed_with_an_action_in_flight_waits_for_it_then_stops() {
    let world = World::default();
    let tree = Tree::spawn(
        pump("root", vec![pump("p1", vec![])]),
        registry(&world),
        test_config(),
    )
    .await
    .unwrap();
    // Once p1 has started, it is switching its motor on (50 ms): remove it
    // then, before that ends.
    wait_for(&world, "constructed root/p1").await;
    assert!(!world.motor_on("root/p1"));
    tree.update_root_spec(pump("root", vec![])).unwrap();
    tree.tick().unwrap();
    wait_for(&world, "on_stop root/p1 in stopped wanting stopped").await;
    let entries = world.entries();
    let on = position(&entries, "switch-on root/p1");
    let off = position(&entries, "switch-off root/p1");
    let hook = position(&entries, "on_stop root/p1 in stopped wanting stopped");
    assert!(on < off && off < hook, "{entries:#?}");
    assert!(!world.motor_on("root/p1"));
    let _ = tree.shutdown(WAIT).await;
}
