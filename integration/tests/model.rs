//! Model-based test: random sequences of operations on a real tree of
//! probes — root spec changes, crashes, signals, failing and hanging actions
//! and collects, clock advances, ticks — applied both to the tree and to a
//! small model of what the tree should be. Once the tree is quiet, the live
//! tree must equal the model: the same nodes in start order, with the same
//! worker types, generations and restart counts; no leaked actor; one stop
//! hook per incarnation stopped in order; every action one outcome.
//!
//! `PROPTEST_CASES` sets the number of cases (256 by default); a failing
//! sequence shrinks to a minimal one. See `docs/reliability.md`.

// The helpers below run outside `#[test]` functions, where clippy.toml's
// allow-unwrap-in-tests does not reach; a panic is how they fail a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use fsm_actors::{NodeSnapshot, Tree, TreeConfig};
use fsm_core::{Backoff, ChildSpec, RestartIntensity, RestartPolicy, Supervision};
use integration::{
    ActionMode, CollectMode, Fault, ProbeSpec, ProbeWorld, probe_registry, quiet_probe_panics,
    render, test_config,
};
use proptest::prelude::*;

/// The names children are drawn from: few, so that sequences reuse them.
const NAMES: [&str; 4] = ["a", "b", "c", "d"];
/// How long a fault may take to fire before the test gives up on it (its
/// node's state machine may be paused: stale, or its circuit open).
const FIRE_WAIT: Duration = Duration::from_secs(3);
/// How long anything the runtime must do may take, in virtual time.
const SETTLE: Duration = Duration::from_secs(30);
/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------
// Operations

/// What an operation targets among the running nodes: an index into the
/// model's nodes (root first, then each child and its grandchild, in start
/// order), taken modulo their number.
type Target = u8;

#[derive(Clone, Debug)]
enum Op {
    /// Declares a child (no-op if the name is declared already).
    Add {
        name: u8,
        other_type: bool,
        restart: RestartPolicy,
        grandchild: bool,
    },
    /// Removes the `i`th declared child.
    Remove(u8),
    /// Renames the `i`th declared child.
    Rename(u8, u8),
    /// Switches the worker type of the `i`th declared child.
    ChangeType(u8),
    /// Changes the spec (label) of the `i`th declared child.
    Relabel(u8),
    /// Makes the root supervise its children with this strategy.
    SetStrategy(fsm_core::Strategy),
    /// Changes the restart policy of the `i`th declared child.
    ChangePolicy(u8, RestartPolicy),
    /// Adds or removes the grandchild of the `i`th declared child.
    ToggleGrandchild(u8),
    /// Makes the actions of the `i`th declared child behave like this.
    SetAction(u8, ActionMode),
    /// Makes the collect of the `i`th declared child behave like this.
    SetCollect(u8, CollectMode),
    /// The node panics in `next`; `then` is a fault armed for its restart.
    Crash(Target, Option<Fault>),
    /// The node's `derive_desired` panics on its next spec change (the
    /// `i`th declared child, relabelled).
    CrashInDerive(u8),
    /// The node's actor is killed from outside, as a crashing dependency
    /// would stop it.
    Kill(Target),
    /// The node raises `NeedsRestart`.
    RequestRestart(Target),
    /// The node raises `NeedsRemoval`.
    Finish(Target),
    /// Virtual time passes.
    Advance(u16),
    /// An extra tick.
    Tick,
}

fn restart_policy() -> impl Strategy<Value = RestartPolicy> {
    prop_oneof![
        Just(RestartPolicy::Permanent),
        Just(RestartPolicy::Transient),
        Just(RestartPolicy::Temporary),
    ]
}

fn action_mode() -> impl Strategy<Value = ActionMode> {
    prop_oneof![
        Just(ActionMode::Succeed),
        Just(ActionMode::Fail),
        Just(ActionMode::Panic),
        Just(ActionMode::Hang),
    ]
}

fn collect_mode() -> impl Strategy<Value = CollectMode> {
    prop_oneof![
        Just(CollectMode::Ok),
        Just(CollectMode::Fail),
        Just(CollectMode::Hang),
        Just(CollectMode::Panic),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let idx = any::<u8>;
    prop_oneof![
        3 => (0..NAMES.len() as u8, any::<bool>(), restart_policy(), any::<bool>()).prop_map(
            |(name, other_type, restart, grandchild)| Op::Add { name, other_type, restart, grandchild }
        ),
        2 => idx().prop_map(Op::Remove),
        1 => (idx(), 0..NAMES.len() as u8).prop_map(|(i, n)| Op::Rename(i, n)),
        1 => idx().prop_map(Op::ChangeType),
        1 => idx().prop_map(Op::Relabel),
        1 => (idx(), restart_policy()).prop_map(|(i, p)| Op::ChangePolicy(i, p)),
        1 => prop_oneof![
            Just(fsm_core::Strategy::OneForOne),
            Just(fsm_core::Strategy::OneForAll),
            Just(fsm_core::Strategy::RestForOne),
        ].prop_map(Op::SetStrategy),
        1 => idx().prop_map(Op::ToggleGrandchild),
        2 => (idx(), action_mode()).prop_map(|(i, m)| Op::SetAction(i, m)),
        1 => (idx(), collect_mode()).prop_map(|(i, m)| Op::SetCollect(i, m)),
        3 => (idx(), prop_oneof![
            4 => Just(None),
            1 => Just(Some(Fault::FailStart)),
            1 => Just(Some(Fault::ConstructorError)),
        ]).prop_map(|(t, f)| Op::Crash(t, f)),
        1 => idx().prop_map(Op::CrashInDerive),
        2 => idx().prop_map(Op::Kill),
        2 => idx().prop_map(Op::RequestRestart),
        2 => idx().prop_map(Op::Finish),
        2 => (1..3000u16).prop_map(Op::Advance),
        1 => Just(Op::Tick),
    ]
}

// ---------------------------------------------------------------------------
// The model

/// A declared child of the root, as the test declares it.
#[derive(Clone, Debug, PartialEq)]
struct Declared {
    name: &'static str,
    other_type: bool,
    restart: RestartPolicy,
    label: u32,
    action: ActionMode,
    collect: CollectMode,
    grandchild: bool,
}

impl Declared {
    fn worker_type(&self) -> &'static str {
        if self.other_type {
            "other-probe"
        } else {
            "probe"
        }
    }

    fn spec(&self) -> ChildSpec {
        let mut probe = ProbeSpec::default()
            .with_action(self.action)
            .with_collect(self.collect)
            .with_label(&format!("v{}", self.label));
        if self.grandchild {
            probe = probe.with_children(vec![ProbeSpec::default().named("g")]);
        }
        probe
            .named_as(self.name, self.worker_type())
            .with_restart(self.restart)
    }
}

/// A running child of the root, as the model expects it.
#[derive(Clone, Debug)]
struct Slot {
    declared: Declared,
    generation: u64,
    restarts: u64,
    /// Restarts of its grandchild `g`, when it declares one.
    g_restarts: u64,
}

/// What the tree should be, and what its workers should have done.
#[derive(Clone, Debug, Default)]
struct Model {
    /// The root's children, in declaration order.
    declared: Vec<Declared>,
    /// The strategy the root declares for its children, if any.
    strategy: Option<fsm_core::Strategy>,
    /// The running children, in start order.
    slots: Vec<Slot>,
    /// Children that ended for good, with the spec they ended with: they
    /// stay absent while declared the same.
    completed: BTreeMap<&'static str, ChildSpec>,
    root_generation: u64,
    root_restarts: u64,
    /// Every restart scheduled, of nodes removed since too.
    all_restarts: u64,
    /// Expected constructions and stop hooks, per path.
    constructed: BTreeMap<String, u64>,
    stopped: BTreeMap<String, u64>,
    /// A counter for fresh labels.
    labels: u32,
}

fn child_path(name: &str) -> String {
    format!("root/{name}")
}

fn g_path(name: &str) -> String {
    format!("root/{name}/g")
}

/// The root's spec: its children, and the strategy it supervises them with
/// (the tree's default, one for one, when `None`).
fn root_spec(declared: &[Declared], strategy: Option<fsm_core::Strategy>) -> ChildSpec {
    let mut root =
        ProbeSpec::default().with_children(declared.iter().map(Declared::spec).collect());
    if let Some(strategy) = strategy {
        let mut supervision = config().supervision;
        supervision.strategy = strategy;
        root = root.with_supervision(supervision);
    }
    root.named("root")
}

/// Which node a fault targets.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    Root,
    Child(&'static str),
    Grandchild(&'static str),
}

impl Node {
    fn path(&self) -> String {
        match self {
            Node::Root => "root".to_owned(),
            Node::Child(n) => child_path(n),
            Node::Grandchild(n) => g_path(n),
        }
    }
}

/// How a node ended.
#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    /// It panicked (in `next` or `derive_desired`) or was killed: nothing
    /// below it is stopped in order.
    Crash,
    /// `NeedsRestart`: its children stopped in order, no stop hook of its
    /// own, then an abnormal exit.
    Restart,
    /// `NeedsRemoval`: its children and itself stopped in order, then a
    /// normal exit.
    Finish,
}

impl Model {
    fn new() -> Self {
        let mut m = Model {
            root_generation: 1,
            ..Model::default()
        };
        m.bump("constructed", "root");
        m
    }

    fn bump(&mut self, which: &str, path: &str) {
        let map = if which == "constructed" {
            &mut self.constructed
        } else {
            &mut self.stopped
        };
        *map.entry(path.to_owned()).or_default() += 1;
    }

    fn fresh_label(&mut self) -> u32 {
        self.labels += 1;
        self.labels
    }

    /// A child starts (a new incarnation), with its grandchild.
    fn construct_child(&mut self, d: &Declared) {
        self.bump("constructed", &child_path(d.name));
        if d.grandchild {
            self.bump("constructed", &g_path(d.name));
        }
    }

    /// A child is stopped in order, with its grandchild (first).
    fn stop_child(&mut self, d: &Declared) {
        if d.grandchild {
            self.bump("stopped", &g_path(d.name));
        }
        self.bump("stopped", &child_path(d.name));
    }

    /// The root declares `new`: the runtime's reconcile, in the model.
    fn declare(&mut self, new: Vec<Declared>, strategy: Option<fsm_core::Strategy>) {
        let old_root = root_spec(&self.declared, self.strategy);
        let new_root = root_spec(&new, strategy);
        if old_root != new_root {
            self.root_generation += 1;
        }
        self.strategy = strategy;
        // Ended children stay ended only while declared the same.
        self.completed
            .retain(|name, spec| new.iter().any(|d| d.name == *name && d.spec() == *spec));
        let wanted: Vec<Declared> = new
            .iter()
            .filter(|d| !self.completed.contains_key(d.name))
            .cloned()
            .collect();
        // Stops, in reverse start order.
        for i in (0..self.slots.len()).rev() {
            if !wanted.iter().any(|d| d.name == self.slots[i].declared.name) {
                let slot = self.slots.remove(i);
                self.stop_child(&slot.declared);
            }
        }
        // Updates, replacements and spawns, in declaration order.
        for d in wanted {
            match self.slots.iter().position(|s| s.declared.name == d.name) {
                Some(i) => {
                    let old = self.slots[i].declared.clone();
                    if old.spec() == d.spec() {
                        continue;
                    }
                    self.slots[i].generation += 1;
                    if old.other_type != d.other_type {
                        self.stop_child(&old);
                        self.construct_child(&d);
                        self.slots[i].g_restarts = 0;
                    } else if old.grandchild != d.grandchild {
                        if d.grandchild {
                            self.bump("constructed", &g_path(d.name));
                        } else {
                            self.bump("stopped", &g_path(d.name));
                        }
                        self.slots[i].g_restarts = 0;
                    }
                    self.slots[i].declared = d;
                }
                None => {
                    self.construct_child(&d);
                    self.slots.push(Slot {
                        declared: d,
                        generation: 1,
                        restarts: 0,
                        g_restarts: 0,
                    });
                }
            }
        }
        self.declared = new;
    }

    /// The nodes a fault can target, root first, in start order.
    fn nodes(&self) -> Vec<Node> {
        let mut nodes = vec![Node::Root];
        for s in &self.slots {
            nodes.push(Node::Child(s.declared.name));
            if s.declared.grandchild {
                nodes.push(Node::Grandchild(s.declared.name));
            }
        }
        nodes
    }

    fn restart_policy(&self, node: &Node) -> RestartPolicy {
        match node {
            Node::Child(n) => self.slot(n).declared.restart,
            Node::Root | Node::Grandchild(_) => RestartPolicy::Permanent,
        }
    }

    fn slot(&self, name: &str) -> &Slot {
        self.slots
            .iter()
            .find(|s| s.declared.name == name)
            .expect("a running child")
    }

    fn slot_mut(&mut self, name: &str) -> &mut Slot {
        self.slots
            .iter_mut()
            .find(|s| s.declared.name == name)
            .expect("a running child")
    }

    /// Whether `node` is restarted after ending like this.
    fn restarts_after(&self, node: &Node, end: End) -> bool {
        matches!(
            (self.restart_policy(node), end),
            (RestartPolicy::Permanent, _) | (RestartPolicy::Transient, End::Crash | End::Restart)
        )
    }

    /// `node` ended like this; `failed_starts` of its restarts failed first.
    /// Returns whether it is restarted.
    fn end(&mut self, node: &Node, end: End, failed_starts: u64) -> bool {
        let restarted = self.restarts_after(node, end);
        let path = node.path();
        // Its children: killed with it on a crash, stopped in order else.
        if end != End::Crash {
            match node {
                Node::Root => {
                    for s in self.slots.clone().iter().rev() {
                        self.stop_child(&s.declared);
                    }
                }
                Node::Child(n) => {
                    if self.slot(n).declared.grandchild {
                        self.bump("stopped", &g_path(n));
                    }
                }
                Node::Grandchild(_) => {}
            }
        }
        if end == End::Finish {
            self.bump("stopped", &path);
        }
        if !restarted {
            if let Node::Child(n) = node {
                let i = self
                    .slots
                    .iter()
                    .position(|s| s.declared.name == *n)
                    .expect("a running child");
                let slot = self.slots.remove(i);
                self.completed.insert(n, slot.declared.spec());
            }
            return false;
        }
        *self.constructed.entry(path.clone()).or_default() += failed_starts;
        self.all_restarts += 1 + failed_starts;
        match node {
            Node::Root => {
                self.root_restarts += 1 + failed_starts;
                self.bump("constructed", "root");
                // A new root declares every child afresh.
                self.completed.clear();
                self.slots.clear();
                for d in self.declared.clone() {
                    self.construct_child(&d);
                    self.slots.push(Slot {
                        declared: d,
                        generation: 1,
                        restarts: 0,
                        g_restarts: 0,
                    });
                }
            }
            Node::Child(n) => {
                self.restart_bystanders(n);
                let d = self.slot(n).declared.clone();
                self.construct_child(&d);
                let slot = self.slot_mut(n);
                slot.restarts += 1 + failed_starts;
                slot.g_restarts = 0;
            }
            Node::Grandchild(n) => {
                self.bump("constructed", &path);
                self.slot_mut(n).g_restarts += 1 + failed_starts;
            }
        }
        true
    }

    /// The root's strategy restarts the children of the failed child's
    /// group with it: each stopped in order (reverse start order) and
    /// started again, but temporary ones, which are removed.
    fn restart_bystanders(&mut self, failed: &str) {
        let i = self
            .slots
            .iter()
            .position(|s| s.declared.name == failed)
            .expect("a running child");
        let group = match self.strategy.unwrap_or(fsm_core::Strategy::OneForOne) {
            fsm_core::Strategy::OneForOne => i..i + 1,
            fsm_core::Strategy::OneForAll => 0..self.slots.len(),
            fsm_core::Strategy::RestForOne => i..self.slots.len(),
        };
        for j in group.rev().filter(|j| *j != i) {
            let d = self.slots[j].declared.clone();
            self.stop_child(&d);
            if d.restart == RestartPolicy::Temporary {
                let slot = self.slots.remove(j);
                self.completed.insert(d.name, slot.declared.spec());
            } else {
                self.construct_child(&d);
                self.all_restarts += 1;
                self.slots[j].restarts += 1;
                self.slots[j].g_restarts = 0;
            }
        }
    }

    /// The expected tree: `(path, worker type, generation, restarts)`,
    /// parents before children, children in start order.
    fn expected(&self) -> Vec<(String, String, u64, u64)> {
        let mut nodes = vec![(
            "root".to_owned(),
            "probe".to_owned(),
            self.root_generation,
            self.root_restarts,
        )];
        for s in &self.slots {
            let d = &s.declared;
            nodes.push((
                child_path(d.name),
                d.worker_type().to_owned(),
                s.generation,
                s.restarts,
            ));
            if d.grandchild {
                nodes.push((g_path(d.name), "probe".to_owned(), 1, s.g_restarts));
            }
        }
        nodes
    }
}

// ---------------------------------------------------------------------------
// Driving a real tree

fn config() -> TreeConfig {
    let mut c = test_config();
    // Restarts only for what the model knows of: no collector restarts.
    c.collector_restart_after = Duration::from_secs(3600);
    // Quick restarts, and an intensity no sequence reaches.
    c.supervision = Supervision::new(fsm_core::Strategy::OneForOne)
        .with_intensity(RestartIntensity::new(10_000, Duration::from_secs(60)))
        .with_backoff(Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(40),
            jitter: 0.2,
            reset_after: Duration::from_secs(60),
        });
    c.action_backoff = Backoff {
        base: Duration::from_millis(50),
        max: Duration::from_millis(200),
        jitter: 0.2,
        reset_after: Duration::from_secs(1),
    };
    c.executor.default_timeout = Duration::from_millis(300);
    c.removal_timeout = Duration::from_secs(1);
    c.stop_timeout = Duration::from_secs(5);
    c
}

struct Run {
    tree: Tree,
    world: ProbeWorld,
    model: Model,
    log: String,
}

type Outcome = Result<(), String>;

impl Run {
    async fn new() -> Result<Self, String> {
        let world = ProbeWorld::default();
        let mut model = Model::new();
        let initial = vec![
            Declared {
                name: "a",
                other_type: false,
                restart: RestartPolicy::Permanent,
                label: 0,
                action: ActionMode::Succeed,
                collect: CollectMode::Ok,
                grandchild: true,
            },
            Declared {
                name: "b",
                other_type: false,
                restart: RestartPolicy::Transient,
                label: 0,
                action: ActionMode::Succeed,
                collect: CollectMode::Ok,
                grandchild: false,
            },
        ];
        let tree = Tree::spawn(root_spec(&initial, None), probe_registry(&world), config())
            .await
            .map_err(|e| format!("spawn: {e}"))?;
        // The root declared them from the start: generation 1.
        model.declared.clone_from(&initial);
        for d in initial {
            model.construct_child(&d);
            model.slots.push(Slot {
                declared: d,
                generation: 1,
                restarts: 0,
                g_restarts: 0,
            });
        }
        let run = Run {
            tree,
            world,
            model,
            log: String::new(),
        };
        run.converged("the initial tree").await?;
        Ok(run)
    }

    async fn snapshot(&self) -> String {
        match self.tree.inspect().await {
            Ok(s) => render(&s),
            Err(e) => format!("(inspect failed: {e})"),
        }
    }

    async fn fail<T>(&self, what: String) -> Result<T, String> {
        Err(format!(
            "{what}\nafter:\n{}\nlive tree:\n{}",
            self.log,
            self.snapshot().await
        ))
    }

    async fn converged(&self, what: &str) -> Outcome {
        if let Err(e) = self.tree.wait_converged(SETTLE).await {
            return self.fail(format!("{what} did not converge: {e}")).await;
        }
        Ok(())
    }

    /// Declares `new` on the real tree and in the model, and waits until
    /// every node has acted on it.
    async fn declare(&mut self, new: Vec<Declared>) -> Outcome {
        self.declare_with(new, self.model.strategy).await
    }

    /// Declares `new` with the root supervising them with `strategy`.
    async fn declare_with(
        &mut self,
        new: Vec<Declared>,
        strategy: Option<fsm_core::Strategy>,
    ) -> Outcome {
        let generation = self
            .tree
            .update_root_spec(root_spec(&new, strategy))
            .map_err(|e| format!("update_root_spec: {e}"))?;
        self.model.declare(new, strategy);
        if let Err(e) = self.tree.wait_generation(generation, SETTLE).await {
            return self
                .fail(format!("generation {generation} was not acted on: {e}"))
                .await;
        }
        Ok(())
    }

    /// Waits until `fault`, armed once for `path`, has fired: `true`; or
    /// disarms it after [`FIRE_WAIT`]: `false`.
    async fn fired(&self, path: &str, fault: Fault) -> bool {
        let deadline = tokio::time::Instant::now() + FIRE_WAIT;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            if self.world.armed(path, fault) == 0 {
                return true;
            }
        }
        self.world.heal(path);
        false
    }

    /// After `node` ended: waits until the workers constructed and the stop
    /// hooks run, per path, are the model's (the node and the bystanders of
    /// its restart have stopped and started again), and, if it is not
    /// restarted, until it is gone from the tree.
    async fn ended(&self, node: &Node, restarted: bool) -> Outcome {
        let path = node.path();
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let counts = journal_counts(&self.world);
            let done = counts.as_ref().is_ok_and(|(constructed, stopped)| {
                *constructed == self.model.constructed && *stopped == self.model.stopped
            }) && (restarted
                || matches!(self.tree.inspect().await, Ok(s) if s.find(&path).is_none()));
            if done {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let counts = match counts {
                    Ok((constructed, stopped)) => format!(
                        "constructed: {constructed:?}\n  model: {:?}\nstop hooks: {stopped:?}\n  model: {:?}",
                        self.model.constructed, self.model.stopped
                    ),
                    Err(e) => e,
                };
                return self
                    .fail(format!(
                        "the tree did not catch up with the model within {SETTLE:?} after `{path}` ended ({}):\n{counts}",
                        if restarted { "restarted" } else { "gone" }
                    ))
                    .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The `i`th declared child, changed by `change`.
    async fn change_child(&mut self, i: u8, change: impl FnOnce(&mut Declared)) -> Outcome {
        if self.model.declared.is_empty() {
            return Ok(());
        }
        let i = usize::from(i) % self.model.declared.len();
        let mut new = self.model.declared.clone();
        change(&mut new[i]);
        self.declare(new).await
    }

    fn target(&self, t: Target) -> Node {
        let nodes = self.model.nodes();
        nodes[usize::from(t) % nodes.len()].clone()
    }

    async fn apply(&mut self, op: &Op) -> Outcome {
        let _ = writeln!(self.log, "  {op:?}");
        match *op {
            Op::Add {
                name,
                other_type,
                restart,
                grandchild,
            } => {
                let name = NAMES[usize::from(name)];
                if self.model.declared.iter().any(|d| d.name == name) {
                    return Ok(());
                }
                let mut new = self.model.declared.clone();
                new.push(Declared {
                    name,
                    other_type,
                    restart,
                    label: self.model.fresh_label(),
                    action: ActionMode::Succeed,
                    collect: CollectMode::Ok,
                    grandchild,
                });
                self.declare(new).await
            }
            Op::Remove(i) => {
                if self.model.declared.is_empty() {
                    return Ok(());
                }
                let mut new = self.model.declared.clone();
                new.remove(usize::from(i) % new.len());
                self.declare(new).await
            }
            Op::Rename(i, name) => {
                let name = NAMES[usize::from(name)];
                if self.model.declared.iter().any(|d| d.name == name) {
                    return Ok(());
                }
                self.change_child(i, |d| d.name = name).await
            }
            Op::ChangeType(i) => self.change_child(i, |d| d.other_type = !d.other_type).await,
            Op::Relabel(i) => {
                let label = self.model.fresh_label();
                self.change_child(i, |d| d.label = label).await
            }
            Op::SetStrategy(strategy) => {
                let declared = self.model.declared.clone();
                self.declare_with(declared, Some(strategy)).await
            }
            Op::ChangePolicy(i, p) => self.change_child(i, |d| d.restart = p).await,
            Op::ToggleGrandchild(i) => self.change_child(i, |d| d.grandchild = !d.grandchild).await,
            Op::SetAction(i, m) => self.change_child(i, |d| d.action = m).await,
            Op::SetCollect(i, m) => self.change_child(i, |d| d.collect = m).await,
            Op::Crash(t, then) => {
                let node = self.target(t);
                // A failed restart needs a restart to fail; and under a
                // group strategy, how often a failed start restarts the
                // group depends on the order the group starts in, which the
                // model leaves out.
                let group = matches!(node, Node::Child(_))
                    && !matches!(
                        self.model.strategy,
                        None | Some(fsm_core::Strategy::OneForOne)
                    );
                let then = then.filter(|_| !group && self.model.restarts_after(&node, End::Crash));
                self.signal(node, Fault::Crash, End::Crash, then).await
            }
            Op::Kill(t) => {
                let node = self.target(t);
                let path = node.path();
                self.tree
                    .kill_node(&path)
                    .map_err(|e| format!("kill_node: {e}"))?;
                let restarted = self.model.end(&node, End::Crash, 0);
                self.ended(&node, restarted).await
            }
            Op::RequestRestart(t) => {
                let node = self.target(t);
                self.signal(node, Fault::RequestRestart, End::Restart, None)
                    .await
            }
            Op::Finish(t) => {
                let node = self.target(t);
                self.signal(node, Fault::Finish, End::Finish, None).await
            }
            Op::CrashInDerive(i) => self.crash_in_derive(i).await,
            Op::Advance(ms) => {
                tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
                Ok(())
            }
            Op::Tick => self.tree.tick().map_err(|e| format!("tick: {e}")),
        }
    }

    /// Arms `fault` (raised from `next`) for `node`, and `then` for its
    /// restart; once it fired, the model follows and the tree catches up.
    async fn signal(&mut self, node: Node, fault: Fault, end: End, then: Option<Fault>) -> Outcome {
        let path = node.path();
        if let Some(then) = then {
            self.world.arm(&path, then, 1);
        }
        self.world.arm(&path, fault, 1);
        if !self.fired(&path, fault).await {
            let _ = writeln!(self.log, "    (did not fire)");
            return Ok(());
        }
        let failed_starts = u64::from(then.is_some());
        let restarted = self.model.end(&node, end, failed_starts);
        self.ended(&node, restarted).await
    }

    /// Arms a panic in the derivation of the `i`th declared child and
    /// changes its spec, so that it derives again.
    async fn crash_in_derive(&mut self, i: u8) -> Outcome {
        if self.model.declared.is_empty() {
            return Ok(());
        }
        let d = &self.model.declared[usize::from(i) % self.model.declared.len()];
        let name = d.name;
        if !self.model.slots.iter().any(|s| s.declared.name == name) {
            // Not running: nothing would derive.
            return Ok(());
        }
        let node = Node::Child(name);
        let path = node.path();
        self.world.arm(&path, Fault::CrashInDerive, 1);
        let label = self.model.fresh_label();
        let mut new = self.model.declared.clone();
        if let Some(d) = new.iter_mut().find(|d| d.name == name) {
            d.label = label;
        }
        let generation = self
            .tree
            .update_root_spec(root_spec(&new, self.model.strategy))
            .map_err(|e| format!("update_root_spec: {e}"))?;
        self.model.declare(new, self.model.strategy);
        if !self.fired(&path, Fault::CrashInDerive).await {
            return self.fail(format!("`{path}` did not derive again")).await;
        }
        let restarted = self.model.end(&node, End::Crash, 0);
        self.ended(&node, restarted).await?;
        if let Err(e) = self.tree.wait_generation(generation, SETTLE).await {
            return self
                .fail(format!("generation {generation} was not acted on: {e}"))
                .await;
        }
        Ok(())
    }

    /// Whether the tree has the model's nodes, in the model's order, with
    /// its worker types, generations and restart counts.
    async fn compare(&self, snapshot: &NodeSnapshot) -> Outcome {
        let live: Vec<(String, String, u64, u64)> = snapshot
            .iter()
            .map(|n| {
                (
                    n.path.as_str().to_owned(),
                    n.worker_type.clone(),
                    n.generation,
                    n.restarts,
                )
            })
            .collect();
        let expected = self.model.expected();
        if live != expected {
            return self
                .fail(format!(
                    "the live tree (path, type, generation, restarts) differs from the model:\n live:     {live:?}\n expected: {expected:?}"
                ))
                .await;
        }
        Ok(())
    }

    /// Heals every child, waits for quiet, and compares the tree with the
    /// model; then shuts it down and checks the stop hooks.
    async fn check(mut self) -> Outcome {
        let _ = writeln!(self.log, "  (heal)");
        let healed: Vec<Declared> = self
            .model
            .declared
            .iter()
            .map(|d| Declared {
                action: ActionMode::Succeed,
                collect: CollectMode::Ok,
                ..d.clone()
            })
            .collect();
        self.declare(healed).await?;
        self.converged("the healed tree").await?;

        let snapshot = self
            .tree
            .inspect()
            .await
            .map_err(|e| format!("inspect: {e}"))?;
        self.compare(&snapshot).await?;
        let expected = self.model.expected();
        check_nodes(&snapshot).map_err(|e| format!("{e}\nafter:\n{}", self.log))?;
        if self.tree.restarts() != self.model.all_restarts {
            return self
                .fail(format!(
                    "{} restarts scheduled, the model expects {}",
                    self.tree.restarts(),
                    self.model.all_restarts
                ))
                .await;
        }
        let nodes = expected.len() as u64;
        if self.tree.live_nodes() != nodes {
            return self
                .fail(format!(
                    "{} node actors alive for {nodes} nodes",
                    self.tree.live_nodes()
                ))
                .await;
        }
        let deadline = tokio::time::Instant::now() + SETTLE;
        let stats = loop {
            let stats = self
                .tree
                .executor_stats()
                .await
                .map_err(|e| format!("executor_stats: {e}"))?;
            if stats.queued == 0 && stats.running == 0 {
                break stats;
            }
            if tokio::time::Instant::now() >= deadline {
                return self
                    .fail(format!("the executor stays busy: {stats:?}"))
                    .await;
            }
            tokio::time::sleep(POLL).await;
        };
        if stats.enqueued != stats.outcomes() {
            return self
                .fail(format!("actions without exactly one outcome: {stats:?}"))
                .await;
        }

        let report = self.tree.shutdown(Duration::from_secs(10)).await;
        let log = self.log;
        if report.stopped.len() as u64 != nodes || !report.all_clean() {
            return Err(format!(
                "shutdown stopped {} of {nodes} nodes, forced: {:?}\nafter:\n{log}",
                report.stopped.len(),
                report.forced().collect::<Vec<_>>()
            ));
        }
        for (path, _, _, _) in &expected {
            *self.model.stopped.entry(path.clone()).or_default() += 1;
        }
        check_journal(&self.world, &self.model).map_err(|e| format!("{e}\nafter:\n{log}"))
    }
}

/// Every node healthy, converged, in its desired state, nothing pending.
fn check_nodes(snapshot: &NodeSnapshot) -> Result<(), String> {
    for n in snapshot.iter() {
        if !(n.healthy
            && n.converged
            && n.state == n.desired_state
            && n.restarting.is_none()
            && !n.circuit_open
            && n.observed_generation == n.generation)
        {
            return Err(format!(
                "`{}` is not settled after healing:\n{}",
                n.path,
                render(snapshot)
            ));
        }
    }
    Ok(())
}

/// A count per path.
type Counts = BTreeMap<String, u64>;

/// Constructions and stop hooks per path, from the journal; an error if at
/// some point a path had more stop hooks than constructions.
fn journal_counts(world: &ProbeWorld) -> Result<(Counts, Counts), String> {
    let mut constructed: BTreeMap<String, u64> = BTreeMap::new();
    let mut stopped: BTreeMap<String, u64> = BTreeMap::new();
    for e in world.journal.events() {
        match e {
            integration::Event::Constructed(p) => *constructed.entry(p).or_default() += 1,
            integration::Event::Stopped(p) => {
                let hooks = stopped.entry(p.clone()).or_default();
                *hooks += 1;
                if *hooks > constructed.get(&p).copied().unwrap_or(0) {
                    return Err(format!("`{p}`: more stop hooks than incarnations"));
                }
            }
            _ => {}
        }
    }
    Ok((constructed, stopped))
}

/// Constructions and stop hooks per path, as the model expects them.
fn check_journal(world: &ProbeWorld, model: &Model) -> Result<(), String> {
    let (constructed, stopped) = journal_counts(world)?;
    if constructed != model.constructed {
        return Err(format!(
            "constructions differ from the model:\n live:     {constructed:?}\n expected: {:?}",
            model.constructed
        ));
    }
    if stopped != model.stopped {
        return Err(format!(
            "stop hooks differ from the model:\n live:     {stopped:?}\n expected: {:?}",
            model.stopped
        ));
    }
    Ok(())
}

async fn run(ops: Vec<Op>) -> Outcome {
    let mut run = Run::new().await?;
    for op in &ops {
        run.apply(op).await?;
        // Whatever the workers do, the tree's shape follows the model after
        // every operation, not only once healed.
        if let Ok(snapshot) = run.tree.inspect().await {
            run.compare(&snapshot).await?;
        }
    }
    run.check().await
}

fn run_case(ops: Vec<Op>) -> Outcome {
    quiet_probe_panics();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(run(ops))
}

/// The longest sequence generated, plus one: `MODEL_MAX_OPS` (24 by
/// default), for long runs with longer sequences.
fn max_ops() -> usize {
    std::env::var("MODEL_MAX_OPS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 1)
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Each case runs a tree: shrinking is bounded in time, not steps.
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_live_tree_matches_the_model_after_any_sequence_of_operations(
        ops in prop::collection::vec(op(), 1..max_ops())
    ) {
        run_case(ops).map_err(TestCaseError::fail)?;
    }
}

/// The kill the model uses, on its own: the killed node and its subtree run
/// no stop hook, its parent restarts it, and nothing leaks.
#[tokio::test(start_paused = true)]
async fn a_node_killed_from_outside_restarts_without_its_stop_hook() {
    let world = ProbeWorld::default();
    let root = ProbeSpec::default()
        .with_children(vec![
            ProbeSpec::default()
                .with_children(vec![ProbeSpec::default().named("g")])
                .named("a"),
        ])
        .named("root");
    let tree = Tree::spawn(root, probe_registry(&world), config())
        .await
        .unwrap();
    tree.wait_converged(SETTLE).await.unwrap();

    tree.kill_node("root/a").unwrap();
    while world.journal.constructions("root/a/g") < 2 {
        tokio::time::sleep(POLL).await;
    }
    tree.wait_converged(SETTLE).await.unwrap();
    let snapshot = tree.inspect().await.unwrap();
    assert_eq!(
        snapshot.find("root/a").unwrap().restarts,
        1,
        "{}",
        render(&snapshot)
    );
    assert_eq!(world.journal.constructions("root/a"), 2);
    assert!(
        world.journal.stopped().is_empty(),
        "{:?}",
        world.journal.stopped()
    );
    assert_eq!(tree.live_nodes(), 3);
    assert_eq!(tree.restarts(), 1);
    // A path no node has is ignored.
    tree.kill_node("root/nobody").unwrap();
    tree.wait_converged(SETTLE).await.unwrap();
    assert_eq!(tree.restarts(), 1);
    let report = tree.shutdown(Duration::from_secs(10)).await;
    assert!(report.all_clean());
}
