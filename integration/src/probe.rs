//! The [`Probe`] worker: states `stopped` → `starting` → `running` (and back
//! to `stopped`), moved by a `start` / `stop` action that flips a flag in the
//! shared [`ProbeWorld`]. Everything else comes from the spec:
//!
//! * `children`: the child specs it declares (so one root spec describes a
//!   whole test tree);
//! * `target`: the desired state it derives (`running` by default);
//! * `action`: how its actions behave (`succeed`, `fail`, `panic`, `hang`),
//!   after `action_delay_ms`;
//! * `collect`: how collection behaves (`ok`, `fail`, `hang`, `panic`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fsm_core::{
    Action, ActionContext, BoxError, ChildSpec, CollectContext, DeriveContext, DesiredState,
    NodePath, Signal, State, StopContext, Supervision, TickContext, Transition, Value, Worker,
    WorkerMetrics, WorkerRegistry,
};
use serde::{Deserialize, Serialize};

/// What a probe did, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A worker was constructed for this path (start or restart).
    Constructed(String),
    /// The stop hook of this path ran.
    Stopped(String),
    /// An action of this path began executing.
    ActionBegan(String, &'static str),
    /// An action of this path finished executing (not cancelled).
    ActionEnded(String, &'static str),
    /// The worker of this path derived its desired state from a spec with
    /// this `label` (on start and after every spec change).
    Derived(String, String),
    /// While deriving, the worker of this path read a variable:
    /// `NAME=<value as JSON>`, or `NAME undefined`.
    ReadVariable(String, String),
}

/// A shared, ordered record of [`Event`]s.
#[derive(Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<Event>>>, bool);

impl Journal {
    /// A journal that records nothing, for long runs whose memory is
    /// measured.
    #[must_use]
    pub fn off() -> Self {
        Self(Arc::default(), true)
    }

    /// Appends an event.
    pub fn push(&self, e: Event) {
        if self.1 {
            return;
        }
        if let Ok(mut v) = self.0.lock() {
            v.push(e);
        }
    }

    /// All events so far.
    #[must_use]
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The paths whose stop hook ran, in order.
    #[must_use]
    pub fn stopped(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Stopped(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// The labels the worker(s) of `path` derived from, in order: one entry
    /// per start and per applied spec change.
    #[must_use]
    pub fn derived_labels(&self, path: &str) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Derived(p, label) if p == path => Some(label),
                _ => None,
            })
            .collect()
    }

    /// The variables the worker(s) of `path` read while deriving, in order
    /// (see [`ProbeSpec::read_variables`]).
    #[must_use]
    pub fn variables_read(&self, path: &str) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::ReadVariable(p, read) if p == path => Some(read),
                _ => None,
            })
            .collect()
    }

    /// How many actions named `action` began for `path`.
    #[must_use]
    pub fn actions_began(&self, path: &str, action: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, Event::ActionBegan(p, a) if p == path && *a == action))
            .count()
    }

    /// How many actions named `action` finished (not cancelled, not timed
    /// out) for `path`.
    #[must_use]
    pub fn actions_ended(&self, path: &str, action: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, Event::ActionEnded(p, a) if p == path && *a == action))
            .count()
    }

    /// How many times a worker was constructed for `path`.
    #[must_use]
    pub fn constructions(&self, path: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, Event::Constructed(p) if p == path))
            .count()
    }
}

/// A fault a test arms for one path; each arming fires a number of times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// `next` panics.
    Crash,
    /// `next` raises `NeedsRestart`.
    RequestRestart,
    /// `next` raises `NeedsRemoval` (the worker finished).
    Finish,
    /// The constructor panics, so the node fails to start.
    FailStart,
    /// The constructor returns an error, so the node fails to start.
    ConstructorError,
    /// `derive_desired` panics (it runs at start and on every spec change).
    CrashInDerive,
    /// A collect never answers (the node's observation times out).
    HangCollect,
}

/// The simulated world the probes act on: which paths are "up", and the
/// faults armed for them.
#[derive(Clone, Default)]
pub struct ProbeWorld {
    up: Arc<Mutex<BTreeMap<String, bool>>>,
    faults: Arc<Mutex<BTreeMap<(String, Fault), u32>>>,
    /// The journal every probe writes to.
    pub journal: Journal,
}

impl ProbeWorld {
    /// Whether the process of `path` is up.
    #[must_use]
    pub fn is_up(&self, path: &str) -> bool {
        self.up
            .lock()
            .map(|m| m.get(path).copied().unwrap_or(false))
            .unwrap_or(false)
    }

    fn set_up(&self, path: &str, up: bool) {
        if let Ok(mut m) = self.up.lock() {
            m.insert(path.to_owned(), up);
        }
    }

    /// Arms `fault` for `path`, to fire the next `times` occasions
    /// (`u32::MAX`: until [`heal`](Self::heal)).
    pub fn arm(&self, path: &str, fault: Fault, times: u32) {
        if let Ok(mut m) = self.faults.lock() {
            m.insert((path.to_owned(), fault), times);
        }
    }

    /// Disarms every fault of `path`.
    pub fn heal(&self, path: &str) {
        if let Ok(mut m) = self.faults.lock() {
            m.retain(|(p, _), _| p != path);
        }
    }

    /// Disarms every fault of every path.
    pub fn heal_all(&self) {
        if let Ok(mut m) = self.faults.lock() {
            m.clear();
        }
    }

    /// How many more times `fault` will fire for `path` (0 once it has
    /// fired as often as it was armed, or was never armed).
    #[must_use]
    pub fn armed(&self, path: &str, fault: Fault) -> u32 {
        self.faults
            .lock()
            .map(|m| m.get(&(path.to_owned(), fault)).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Fires `fault` for `path` if it is armed.
    fn fire(&self, path: &str, fault: Fault) -> bool {
        let Ok(mut m) = self.faults.lock() else {
            return false;
        };
        let key = (path.to_owned(), fault);
        match m.get_mut(&key) {
            Some(0) | None => false,
            Some(n) => {
                if *n != u32::MAX {
                    *n -= 1;
                }
                true
            }
        }
    }
}

/// How a probe's actions behave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionMode {
    /// Flip the flag and succeed.
    #[default]
    Succeed,
    /// Return an error.
    Fail,
    /// Panic.
    Panic,
    /// Never finish (until cancelled or timed out).
    Hang,
}

/// How a probe's collect behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectMode {
    /// Report the flag.
    #[default]
    Ok,
    /// Return an error.
    Fail,
    /// Never finish (times out).
    Hang,
    /// Panic.
    Panic,
}

/// The spec of a [`Probe`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeSpec {
    /// The children it declares.
    pub children: Vec<ChildSpec>,
    /// The desired state it derives; `running` when empty.
    pub target: String,
    /// How its actions behave.
    pub action: ActionMode,
    /// Delay before an action takes effect.
    pub action_delay_ms: u64,
    /// An action timeout overriding the tree's default.
    pub action_timeout_ms: Option<u64>,
    /// How its collect behaves.
    pub collect: CollectMode,
    /// How long its collect takes to answer (it reads the world first: the
    /// answer is what the world was when the collect started).
    pub collect_delay_ms: u64,
    /// Free-form data, so a test can change the spec without changing
    /// behaviour.
    pub label: String,
    /// Whether its stop hook hangs (never finishes).
    pub stop_hangs: bool,
    /// How it supervises its children (the tree's default when `None`).
    pub supervision: Option<Supervision>,
    /// Variables (dotted names) its derivation reads from its context,
    /// each recorded in the journal.
    pub read_variables: Vec<String>,
}

impl ProbeSpec {
    /// Declares these children.
    #[must_use]
    pub fn with_children(mut self, children: Vec<ChildSpec>) -> Self {
        self.children = children;
        self
    }

    /// Derives this desired state.
    #[must_use]
    pub fn with_target(mut self, target: &str) -> Self {
        target.clone_into(&mut self.target);
        self
    }

    /// Makes its actions behave like this.
    #[must_use]
    pub fn with_action(mut self, mode: ActionMode) -> Self {
        self.action = mode;
        self
    }

    /// Delays its actions' effect by this long.
    #[must_use]
    pub fn with_action_delay_ms(mut self, ms: u64) -> Self {
        self.action_delay_ms = ms;
        self
    }

    /// Gives its actions this timeout (instead of the executor's default).
    #[must_use]
    pub fn with_action_timeout_ms(mut self, ms: u64) -> Self {
        self.action_timeout_ms = Some(ms);
        self
    }

    /// Makes its collect behave like this.
    #[must_use]
    pub fn with_collect(mut self, mode: CollectMode) -> Self {
        self.collect = mode;
        self
    }

    /// Makes its collect answer after this long.
    #[must_use]
    pub fn with_collect_delay_ms(mut self, ms: u64) -> Self {
        self.collect_delay_ms = ms;
        self
    }

    /// Makes it supervise its children like this.
    #[must_use]
    pub fn with_supervision(mut self, supervision: Supervision) -> Self {
        self.supervision = Some(supervision);
        self
    }

    /// Makes its stop hook hang.
    #[must_use]
    pub fn with_hanging_stop(mut self) -> Self {
        self.stop_hangs = true;
        self
    }

    /// Sets the free-form label.
    #[must_use]
    pub fn with_label(mut self, label: &str) -> Self {
        label.clone_into(&mut self.label);
        self
    }

    /// A `probe` child with this spec.
    #[must_use]
    pub fn named(&self, name: &str) -> ChildSpec {
        self.named_as(name, "probe")
    }

    /// A child of the given worker type (`probe` or `other-probe`) with this
    /// spec.
    #[must_use]
    pub fn named_as(&self, name: &str, worker_type: &str) -> ChildSpec {
        ChildSpec::new(name, worker_type).with_spec(to_value(self))
    }
}

/// A child spec of a probe with the given children.
#[must_use]
pub fn probe_spec(name: &str, children: Vec<ChildSpec>) -> ChildSpec {
    let spec = ProbeSpec {
        children,
        ..ProbeSpec::default()
    };
    ChildSpec::new(name, "probe").with_spec(to_value(&spec))
}

/// A small tree of probes: `root` → `a` → `a1`, and `root` → `b`.
#[must_use]
pub fn small_tree() -> ChildSpec {
    probe_spec(
        "root",
        vec![
            probe_spec("a", vec![probe_spec("a1", vec![])]),
            probe_spec("b", vec![]),
        ],
    )
}

fn to_value(spec: &ProbeSpec) -> Value {
    // A ProbeSpec is plain data; it always converts.
    Value::from_serialize(spec).unwrap_or_default()
}

/// A registry with `probe` (and `other-probe`, the same worker under a second
/// type name, for replacement tests).
///
/// # Panics
///
/// Never: the two names are distinct.
#[must_use]
pub fn probe_registry(world: &ProbeWorld) -> WorkerRegistry {
    let mut registry = WorkerRegistry::new();
    for name in ["probe", "other-probe"] {
        let world = world.clone();
        registry
            .try_register(name, move |init| {
                let path = init.path().as_str();
                world.journal.push(Event::Constructed(path.to_owned()));
                if world.fire(path, Fault::FailStart) {
                    panic!("probe `{path}` configured to fail its start");
                }
                if world.fire(path, Fault::ConstructorError) {
                    return Err(
                        format!("probe `{path}` configured to fail its construction").into(),
                    );
                }
                Ok(Probe {
                    world: world.clone(),
                    metrics: init.metrics(),
                })
            })
            .map(drop)
            .unwrap_or_default();
    }
    registry
}

/// The probe worker.
pub struct Probe {
    world: ProbeWorld,
    /// Its node's metrics, for a metric of its own outside actions.
    metrics: Arc<dyn WorkerMetrics>,
}

/// The probe's states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeState {
    /// Not running.
    Stopped,
    /// Start requested.
    Starting,
    /// Running.
    Running,
}

impl Worker for Probe {
    type Spec = ProbeSpec;
    type Observed = bool;
    type State = ProbeState;

    fn initial_state(&self) -> ProbeState {
        ProbeState::Stopped
    }

    async fn collect(&self, ctx: &CollectContext<'_, ProbeSpec>) -> Result<bool, BoxError> {
        self.metrics.counter_add("collects", 1);
        if self.world.fire(ctx.path().as_str(), Fault::HangCollect) {
            std::future::pending::<()>().await;
        }
        match ctx.spec().collect {
            CollectMode::Ok => {
                let up = self.world.is_up(ctx.path().as_str());
                let delay = ctx.spec().collect_delay_ms;
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                Ok(up)
            }
            CollectMode::Fail => Err("probe collect configured to fail".into()),
            CollectMode::Hang => {
                std::future::pending::<()>().await;
                Ok(false)
            }
            CollectMode::Panic => panic!("probe collect configured to panic"),
        }
    }

    fn derive_desired(
        &self,
        spec: &ProbeSpec,
        ctx: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        let path = ctx.path().as_str();
        if self.world.fire(path, Fault::CrashInDerive) {
            panic!("probe `{path}` configured to crash in derive");
        }
        self.world.journal.push(Event::Derived(
            ctx.path().as_str().to_owned(),
            spec.label.clone(),
        ));
        for name in &spec.read_variables {
            let read = match ctx.variable(name) {
                Some(value) => format!("{name}={}", serde_json::to_string(value)?),
                None => format!("{name} undefined"),
            };
            self.world
                .journal
                .push(Event::ReadVariable(ctx.path().as_str().to_owned(), read));
        }
        let target = if spec.target.is_empty() {
            "running"
        } else {
            spec.target.as_str()
        };
        let desired = DesiredState::new(target).with_children(spec.children.iter().cloned());
        Ok(match &spec.supervision {
            Some(supervision) => desired.with_supervision(supervision.clone()),
            None => desired,
        })
    }

    async fn on_stop(&self, ctx: &StopContext<'_, ProbeSpec>) {
        if ctx.spec().stop_hangs {
            std::future::pending::<()>().await;
        }
        self.world.set_up(ctx.path().as_str(), false);
        self.world
            .journal
            .push(Event::Stopped(ctx.path().as_str().to_owned()));
    }
}

/// Starts or stops a probe's process.
pub struct Flip {
    world: ProbeWorld,
    path: NodePath,
    up: bool,
    mode: ActionMode,
    delay: Duration,
    timeout: Option<Duration>,
}

impl Action for Flip {
    fn name(&self) -> &'static str {
        if self.up { "start" } else { "stop" }
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<(), BoxError> {
        // A metric of the probe's own, under its node's labels.
        ctx.metrics().counter_add("flips", 1);
        let path = self.path.as_str().to_owned();
        self.world
            .journal
            .push(Event::ActionBegan(path.clone(), self.name()));
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        match self.mode {
            ActionMode::Succeed => self.world.set_up(&path, self.up),
            ActionMode::Fail => return Err("probe action configured to fail".into()),
            ActionMode::Panic => panic!("probe action configured to panic"),
            ActionMode::Hang => std::future::pending::<()>().await,
        }
        self.world
            .journal
            .push(Event::ActionEnded(path, self.name()));
        Ok(())
    }
}

impl fsm_core::StateNames for ProbeState {
    const NAMES: &'static [&'static str] = &["stopped", "starting", "running"];

    fn name(&self) -> &'static str {
        match self {
            ProbeState::Stopped => "stopped",
            ProbeState::Starting => "starting",
            ProbeState::Running => "running",
        }
    }
}

impl State<Probe> for ProbeState {
    fn next(&self, s: &TickContext<'_, Probe>) -> Transition<ProbeState> {
        let world = &s.worker().world;
        let path = s.path().as_str();
        if world.fire(path, Fault::Crash) {
            panic!("probe `{path}` configured to crash");
        }
        if world.fire(path, Fault::RequestRestart) {
            return Transition::signal(Signal::NeedsRestart).because("a test asked for a restart");
        }
        if world.fire(path, Fault::Finish) {
            return Transition::signal(Signal::NeedsRemoval).because("a test finished it");
        }
        let up = *s.observed();
        let want_up = s.desired() == "running";
        let flip = |up| Flip {
            world: s.worker().world.clone(),
            path: s.path().clone(),
            up,
            mode: s.spec().action,
            delay: Duration::from_millis(s.spec().action_delay_ms),
            timeout: s.spec().action_timeout_ms.map(Duration::from_millis),
        };
        match (self, want_up, up) {
            (ProbeState::Running, true, true) | (ProbeState::Stopped, false, false) => {
                Transition::stay()
            }
            (_, true, true) => Transition::to(ProbeState::Running).because("process is up"),
            (_, true, false) => Transition::to(ProbeState::Starting)
                .with_action(flip(true))
                .because("process should be up"),
            (_, false, true) => Transition::stay()
                .with_action(flip(false))
                .because("process should be down"),
            (_, false, false) => Transition::to(ProbeState::Stopped).because("process is down"),
        }
    }
}

/// Keeps the panics the probes are told to raise ("… configured to …") out
/// of a test's output; every other panic still reaches the hook installed
/// before. Installs itself once per process.
pub fn quiet_probe_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !fsm_core::runtime::panic_message(info.payload()).contains("configured to") {
                previous(info);
            }
        }));
    });
}
