//! The application of `docs/guide.md`, whole: a site runs pumps, each pump
//! reads its pressure sensors. Every code block of the guide is a piece of
//! this file (a test checks it), so the guide always compiles and runs.
//!
//! ```text
//! site ──▶ pump (one per spec entry) ──▶ sensor (one per spec entry)
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fsm_actors::telemetry::{Telemetry, TelemetryError, TelemetryGuard};
use fsm_actors::{NodeSnapshot, ShutdownReport, Tree, TreeConfig, TreeHandle};
use fsm_core::{
    BoxError, ChildSpec, CollectContext, DeriveContext, DesiredState, RegistryError, State,
    TickContext, Transition, Value, Worker, WorkerRegistry, action,
};
use serde::{Deserialize, Serialize};

// ANCHOR: world
/// The world the guide's workers act on, simulated: motors that turn or
/// not, and a pressure per device address (`host:port`).
#[derive(Clone, Default)]
pub struct World {
    motors: Arc<Mutex<BTreeMap<String, bool>>>,
    jammed: Arc<Mutex<BTreeMap<String, bool>>>,
    pressures: Arc<Mutex<BTreeMap<String, f64>>>,
}

impl World {
    /// Whether the motor of `pump` turns.
    #[must_use]
    pub fn motor_on(&self, pump: &str) -> bool {
        let motors = self.motors.lock().unwrap_or_else(PoisonError::into_inner);
        motors.get(pump).copied().unwrap_or(false)
    }

    /// Switches the motor of `pump`; fails while the motor is jammed.
    ///
    /// # Errors
    ///
    /// When the motor is jammed.
    pub fn switch_motor(&self, pump: &str, on: bool) -> Result<(), String> {
        let jammed = self.jammed.lock().unwrap_or_else(PoisonError::into_inner);
        if jammed.get(pump).copied().unwrap_or(false) {
            return Err(format!("the motor of {pump} is jammed"));
        }
        let mut motors = self.motors.lock().unwrap_or_else(PoisonError::into_inner);
        motors.insert(pump.to_owned(), on);
        Ok(())
    }

    /// Jams (or frees) the motor of `pump`: switching it fails meanwhile.
    pub fn jam(&self, pump: &str, jammed: bool) {
        let mut map = self.jammed.lock().unwrap_or_else(PoisonError::into_inner);
        map.insert(pump.to_owned(), jammed);
    }

    /// The pressure at `address`, in bar, if a device answers there.
    #[must_use]
    pub fn pressure(&self, address: &str) -> Option<f64> {
        let pressures = self
            .pressures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pressures.get(address).copied()
    }

    /// Sets the pressure a device at `address` reports.
    pub fn set_pressure(&self, address: &str, bar: f64) {
        let mut map = self
            .pressures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.insert(address.to_owned(), bar);
    }
}
// ANCHOR_END: world

// ANCHOR: sensor
/// A sensor's spec: where its device answers and the highest normal
/// pressure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorSpec {
    /// The device's `host:port`.
    pub address: String,
    /// Above this pressure (bar) the sensor is `high`.
    pub max_bar: f64,
}

fsm_core::states! {
    /// A sensor's states, named `stopped`, `normal`, `high`, `no_signal`.
    #[derive(Clone, Debug, PartialEq)]
    pub enum SensorState {
        /// Not reading.
        Stopped,
        /// The pressure is at most `max_bar`.
        Normal,
        /// The pressure is above `max_bar`.
        High,
        /// The device does not answer.
        NoSignal,
    }
}

/// Reads the pressure of one device.
pub struct Sensor {
    world: World,
}

impl Worker for Sensor {
    type Spec = SensorSpec;
    type Observed = Option<f64>; // the pressure, if the device answers
    type State = SensorState;

    fn initial_state(&self) -> SensorState {
        SensorState::Stopped
    }

    async fn collect(&self, ctx: &CollectContext<'_, SensorSpec>) -> Result<Option<f64>, BoxError> {
        Ok(self.world.pressure(&ctx.spec().address))
    }

    fn derive_desired(
        &self,
        _: &SensorSpec,
        _: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        Ok(DesiredState::new("normal"))
    }
}

impl State<Sensor> for SensorState {
    fn next(&self, s: &TickContext<'_, Sensor>) -> Transition<SensorState> {
        let now = match (s.desired(), *s.observed()) {
            ("stopped", _) => SensorState::Stopped,
            (_, None) => SensorState::NoSignal,
            (_, Some(bar)) if bar > s.spec().max_bar => SensorState::High,
            (_, Some(_)) => SensorState::Normal,
        };
        if now == *self {
            Transition::stay()
        } else {
            Transition::to(now).because(format!("pressure {:?} bar", s.observed()))
        }
    }
}
// ANCHOR_END: sensor

// ANCHOR: pump
/// A pump's spec: whether it runs, its device host, and its sensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PumpSpec {
    /// Whether the pump should run.
    pub on: bool,
    /// The host its sensors answer on.
    pub host: String,
    /// Its pressure sensors.
    #[serde(default)]
    pub sensors: Vec<SensorEntry>,
}

/// One sensor of a pump, as the pump's spec lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorEntry {
    /// The sensor's name (its node's name).
    pub name: String,
    /// The port its device answers on.
    pub port: u16,
    /// Its highest normal pressure.
    pub max_bar: f64,
}

fsm_core::states! {
    /// A pump's states, named `stopped`, `starting`, `running`, `stopping`.
    #[derive(Clone, Debug, PartialEq)]
    pub enum PumpState {
        /// The motor is still.
        Stopped,
        /// Switching the motor on.
        Starting,
        /// The motor turns.
        Running,
        /// Switching the motor off.
        Stopping,
    }
}

/// Runs one motor and supervises its sensors.
pub struct Pump {
    world: World,
}

impl Worker for Pump {
    type Spec = PumpSpec;
    type Observed = bool; // does the motor turn?
    type State = PumpState;

    fn initial_state(&self) -> PumpState {
        PumpState::Stopped
    }

    async fn collect(&self, ctx: &CollectContext<'_, PumpSpec>) -> Result<bool, BoxError> {
        Ok(self.world.motor_on(ctx.path().as_str()))
    }
    // ANCHOR_END: pump

    // ANCHOR: pump_children
    fn derive_desired(
        &self,
        spec: &PumpSpec,
        _: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        let sensors = spec.sensors.iter().map(|sensor| {
            ChildSpec::new(&sensor.name, "sensor")
                // Rendered by the sensor, with the variables it is given here.
                .with_spec(Value::map([
                    ("address", Value::from("{{ HOST }}:{{ PORT }}")),
                    ("max_bar", Value::from(sensor.max_bar)),
                ]))
                .with_variable("HOST", spec.host.as_str())
                .with_variable("PORT", sensor.port)
                // The pump's desired state decides its sensors'.
                .map_state("running", "normal")
                .map_state("stopped", "stopped")
        });
        let desired = if spec.on { "running" } else { "stopped" };
        Ok(DesiredState::new(desired).with_children(sensors))
    }
    // ANCHOR_END: pump_children
}

// ANCHOR: pump_next
impl State<Pump> for PumpState {
    fn next(&self, s: &TickContext<'_, Pump>) -> Transition<PumpState> {
        let turning = *s.observed();
        match (s.desired(), turning, self) {
            ("running", true, PumpState::Running) | ("stopped", false, PumpState::Stopped) => {
                Transition::stay()
            }
            ("running", true, _) => Transition::to(PumpState::Running).because("motor turns"),
            ("stopped", false, _) => Transition::to(PumpState::Stopped).because("motor is still"),
            (desired, _, _) => {
                let on = desired == "running";
                let world = s.worker().world.clone();
                let switch = action(
                    if on { "switch-on" } else { "switch-off" },
                    move |ctx| async move {
                        // Idempotent: switching a turning motor on changes nothing.
                        Ok(world.switch_motor(ctx.path().as_str(), on)?)
                    },
                );
                let next = if on {
                    PumpState::Starting
                } else {
                    PumpState::Stopping
                };
                Transition::to(next)
                    .with_action(switch)
                    .because("motor must follow the spec")
            }
        }
    }
}
// ANCHOR_END: pump_next

// ANCHOR: site
/// The site's spec: its pumps, by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// The pumps, in start order.
    pub pumps: Vec<PumpEntry>,
}

/// One pump of the site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PumpEntry {
    /// The pump's name (its node's name).
    pub name: String,
    /// The pump's own spec.
    pub pump: PumpSpec,
}

fsm_core::states! {
    /// The site's one state.
    #[derive(Clone, Debug, PartialEq)]
    pub enum SiteState {
        /// Running its pumps.
        Running,
    }
}

/// The site: a supervisor of pumps. It observes nothing, so it has no
/// `collect`.
pub struct Site;

impl Worker for Site {
    type Spec = SiteSpec;
    type Observed = ();
    type State = SiteState;

    fn initial_state(&self) -> SiteState {
        SiteState::Running
    }

    fn derive_desired(
        &self,
        spec: &SiteSpec,
        _: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        let mut pumps = Vec::with_capacity(spec.pumps.len());
        for entry in &spec.pumps {
            pumps.push(
                ChildSpec::new(&entry.name, "pump")
                    .with_typed_spec(&entry.pump)?
                    // No state mapping: each pump's spec says if it runs.
                    .with_location("line", &entry.name),
            );
        }
        Ok(DesiredState::new("running").with_children(pumps))
    }
}

impl State<Site> for SiteState {
    fn next(&self, _: &TickContext<'_, Site>) -> Transition<SiteState> {
        Transition::stay()
    }
}
// ANCHOR_END: site

// ANCHOR: registry
/// The guide's registry: `site`, `pump` and `sensor`, acting on `world`.
///
/// # Errors
///
/// Only if a worker type were registered twice.
pub fn registry(world: &World) -> Result<WorkerRegistry, RegistryError> {
    let mut registry = WorkerRegistry::new();
    registry.register("site", |_| Site)?;
    let w = world.clone();
    registry.register("pump", move |_| Pump { world: w.clone() })?;
    let w = world.clone();
    registry.register("sensor", move |_| Sensor { world: w.clone() })?;
    Ok(registry)
}
// ANCHOR_END: registry

// ANCHOR: root_spec
/// The site as JSON: two pumps, the first with two sensors.
pub const SITE_JSON: &str = r#"{
  "name": "site",
  "worker_type": "site",
  "location": { "enterprise": "acme", "site": "plant-a", "area": "water" },
  "user_spec": {
    "pumps": [
      { "name": "pump-1", "pump": { "on": true, "host": "10.0.0.1",
          "sensors": [ { "name": "inlet",  "port": 502, "max_bar": 6.0 },
                       { "name": "outlet", "port": 503, "max_bar": 9.0 } ] } },
      { "name": "pump-2", "pump": { "on": false, "host": "10.0.0.2" } }
    ]
  }
}"#;

/// The root spec of [`SITE_JSON`].
///
/// # Errors
///
/// When the JSON is not a valid `ChildSpec` (unknown keys are refused).
pub fn site_spec() -> Result<ChildSpec, serde_json::Error> {
    serde_json::from_str(SITE_JSON)
}
// ANCHOR_END: root_spec

// ANCHOR: spawn
/// Spawns the site on `world` and waits until it has converged.
///
/// # Errors
///
/// When the tree cannot start or does not converge within ten seconds.
pub async fn start(world: &World) -> Result<Tree, Box<dyn std::error::Error>> {
    world.set_pressure("10.0.0.1:502", 4.2);
    world.set_pressure("10.0.0.1:503", 7.5);
    let mut config = TreeConfig::default();
    config.tick_interval = Some(Duration::from_millis(100));
    let tree = Tree::spawn(site_spec()?, registry(world)?, config).await?;
    tree.wait_converged(Duration::from_secs(10)).await?;
    Ok(tree)
}
// ANCHOR_END: spawn

// ANCHOR: snapshot
/// Prints one line per node: path, state, desired state, health.
pub fn print_tree(snapshot: &NodeSnapshot) -> String {
    let mut out = String::new();
    for node in snapshot.iter() {
        let health = if node.healthy { "ok" } else { "UNHEALTHY" };
        out.push_str(&format!(
            "{:<24} {:<10} (wants {:<8}) {health} {}\n",
            node.path.as_str(),
            node.state,
            node.desired_state,
            node.location_path
        ));
    }
    out
}
// ANCHOR_END: snapshot

// ANCHOR: change
/// Switches `pump-2` on at runtime and waits until every node has acted
/// on that change.
///
/// # Errors
///
/// When the tree has stopped, or does not act on the change in time.
pub async fn switch_on_pump_2(tree: &TreeHandle) -> Result<u64, Box<dyn std::error::Error>> {
    let mut root = site_spec()?;
    let mut spec: SiteSpec = root.user_spec.decode()?;
    for entry in &mut spec.pumps {
        if entry.name == "pump-2" {
            entry.pump.on = true;
        }
    }
    root = root.with_typed_spec(&spec)?;
    let generation = tree.update_root_spec(root)?;
    tree.wait_generation(generation, Duration::from_secs(10))
        .await?;
    tree.wait_converged(Duration::from_secs(10)).await?;
    Ok(generation)
}
// ANCHOR_END: change

// ANCHOR: telemetry
/// Logs to stderr (filtered by `RUST_LOG`) and every tick's spans to a
/// JSON-lines file; keep the guard until the tree has shut down.
///
/// # Errors
///
/// When a global subscriber is already installed or the file cannot be
/// created.
pub fn telemetry(spans: &Path) -> Result<TelemetryGuard, TelemetryError> {
    Telemetry::new("guide").json_file(spans).install()
}
// ANCHOR_END: telemetry

// ANCHOR: shutdown
/// Stops the tree: every node after its children, each stop hook run.
pub async fn stop(tree: Tree) -> ShutdownReport {
    let report = tree.shutdown(Duration::from_secs(5)).await;
    for forced in report.forced() {
        tracing::warn!(path = %forced.path, "did not stop in time and was killed");
    }
    report
}
// ANCHOR_END: shutdown
