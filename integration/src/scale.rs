//! The scale harness's pieces, shared by the `scale` binary and benches:
//!
//! * [`Shape`]: a tree of exactly `workers` nodes and `depth` levels with an
//!   even fan-out `f` (the smallest with `1 + f + … + f^(depth-1) ≥
//!   workers`); every level is full except the last, whose nodes are spread
//!   as evenly as possible over the parents of the level above.
//! * [`ScaleWorker`]: a trivial worker whose spec is three numbers
//!   (`level`, `index`, a `generation`); it derives its children's specs
//!   from them and the tree's [`Shape`], which every worker shares through
//!   its [`ScaleWorld`] (as every bare actor shares an `Arc<Shape>`), so a
//!   parent's spec never holds its subtree. Its collect
//!   returns at once; its state machine starts in its desired state
//!   (`running`), so a node converges as soon as it has an observation. It
//!   counts every state machine step in [`ScaleWorld::ticks`], which is how
//!   a driver knows that a root tick has reached every node.
//! * [`bare`]: the same tree shape as plain ractor actors that forward a
//!   tick, the baseline to compare against.
//! * [`process_cpu`] and [`resident_bytes`]: the process's CPU time and
//!   resident memory, from `/proc/self`.
//!
//! # A spec change
//!
//! The root spec carries a `generation`; the deepest-level nodes whose
//! index is a multiple of [`ScaleWorld::every`] get that generation in their
//! spec (their ancestors too, so the change travels down; every other node's
//! spec stays as it was). A leaf whose spec generation differs from the one
//! it runs goes to `applying` (not its desired state, so it is not
//! converged), and back to `running` once its collect observes the new
//! generation; it then counts itself in [`ScaleWorld::applied`].

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fsm_core::{
    Action, ActionContext, BoxError, ChildSpec, CollectContext, DeriveContext, DesiredState,
    RegistryError, State, TickContext, Transition, Value, Worker, WorkerRegistry,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub mod bare;

/// The worker type the scale worker is registered under.
pub const WORKER_TYPE: &str = "scale";

/// A [`Shape`] that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// Zero workers or zero levels.
    #[error(
        "a tree needs at least one worker and one level (got {workers} workers, depth {depth})"
    )]
    Empty {
        /// Workers asked for.
        workers: u64,
        /// Levels asked for.
        depth: u32,
    },
    /// Fewer workers than levels, or more than one worker in one level.
    #[error(
        "{workers} workers cannot fill {depth} levels: every level needs at least one node, and a single level holds exactly one"
    )]
    TooFew {
        /// Workers asked for.
        workers: u64,
        /// Levels asked for.
        depth: u32,
    },
    /// Beyond what the spec's 32-bit numbers hold.
    #[error("{workers} workers is more than the harness supports ({max})")]
    TooMany {
        /// Workers asked for.
        workers: u64,
        /// The limit.
        max: u64,
    },
    /// A fan-out that does not give the requested size.
    #[error(
        "fan-out {fanout} does not build {workers} workers in {depth} levels with every level full but the last (and the last non-empty)"
    )]
    BadFanout {
        /// Workers asked for.
        workers: u64,
        /// Levels asked for.
        depth: u32,
        /// The fan-out given.
        fanout: u64,
    },
}

/// The largest tree the harness builds (indices travel as 32-bit numbers).
pub const MAX_WORKERS: u64 = u32::MAX as u64;

/// A tree of exactly `workers` nodes in `depth` levels with an even fan-out.
///
/// # Examples
///
/// ```
/// use integration::scale::Shape;
///
/// let shape = Shape::new(1000, 4)?;
/// assert_eq!(shape.fanout(), 10);
/// assert_eq!(shape.level_sizes(), &[1, 10, 100, 889]);
/// // The 889 leaves are spread over the 100 nodes of level 2: 89 get 9, 11 get 8.
/// assert_eq!(shape.children_of(2, 0), 0..9);
/// assert_eq!(shape.children_of(2, 99), 881..889);
/// # Ok::<(), integration::scale::ShapeError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    workers: u64,
    depth: u32,
    fanout: u64,
    level_sizes: Vec<u64>,
}

/// `1 + f + … + f^(levels-1)`, saturating.
fn full_tree(fanout: u64, levels: u32) -> u64 {
    let mut total: u64 = 0;
    let mut level: u64 = 1;
    for _ in 0..levels {
        total = total.saturating_add(level);
        level = level.saturating_mul(fanout);
    }
    total
}

impl Shape {
    /// The shape with the smallest fan-out `f` such that a full tree of
    /// `depth` levels holds at least `workers` nodes; the last level holds
    /// the rest.
    ///
    /// # Errors
    ///
    /// [`ShapeError`] when no such tree has every level non-empty.
    pub fn new(workers: u64, depth: u32) -> Result<Self, ShapeError> {
        if workers == 0 || depth == 0 {
            return Err(ShapeError::Empty { workers, depth });
        }
        if workers > MAX_WORKERS {
            return Err(ShapeError::TooMany {
                workers,
                max: MAX_WORKERS,
            });
        }
        if depth == 1 {
            return Self::with_fanout(workers, depth, 0);
        }
        // The smallest f with full_tree(f, depth) >= workers, by bisection
        // (full_tree grows with f; f = workers - 1 always suffices).
        let (mut lo, mut hi) = (1u64, workers.max(2) - 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if full_tree(mid, depth) >= workers {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Self::with_fanout(workers, depth, lo)
    }

    /// The shape with this fan-out (as a node re-derives it from its spec).
    ///
    /// # Errors
    ///
    /// [`ShapeError`] when the fan-out does not give a tree of `workers`
    /// nodes with every level non-empty and only the last one partial.
    pub fn with_fanout(workers: u64, depth: u32, fanout: u64) -> Result<Self, ShapeError> {
        if workers == 0 || depth == 0 {
            return Err(ShapeError::Empty { workers, depth });
        }
        if depth == 1 {
            return if workers == 1 {
                Ok(Self {
                    workers,
                    depth,
                    fanout: 0,
                    level_sizes: vec![1],
                })
            } else {
                Err(ShapeError::TooFew { workers, depth })
            };
        }
        if workers < u64::from(depth) {
            return Err(ShapeError::TooFew { workers, depth });
        }
        let upper = full_tree(fanout, depth - 1);
        let bad = || ShapeError::BadFanout {
            workers,
            depth,
            fanout,
        };
        if fanout == 0 || upper >= workers || full_tree(fanout, depth) < workers {
            return Err(bad());
        }
        let mut level_sizes = Vec::with_capacity(depth as usize);
        let mut size = 1u64;
        for _ in 0..depth - 1 {
            level_sizes.push(size);
            size = size.checked_mul(fanout).ok_or_else(bad)?;
        }
        level_sizes.push(workers - upper);
        Ok(Self {
            workers,
            depth,
            fanout,
            level_sizes,
        })
    }

    /// The number of nodes.
    #[must_use]
    pub fn workers(&self) -> u64 {
        self.workers
    }

    /// The number of levels.
    #[must_use]
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// The fan-out of every full level.
    #[must_use]
    pub fn fanout(&self) -> u64 {
        self.fanout
    }

    /// The number of nodes in each level, from the root.
    #[must_use]
    pub fn level_sizes(&self) -> &[u64] {
        &self.level_sizes
    }

    /// The number of nodes in the deepest level.
    #[must_use]
    pub fn leaves(&self) -> u64 {
        self.level_sizes.last().copied().unwrap_or(0)
    }

    /// Where the children of the node `parent` of the last-but-one level
    /// start in the last level: the last level is spread evenly.
    fn last_level_start(&self, parent: u64) -> u64 {
        let parents = self.level_sizes[self.level_sizes.len() - 2];
        let base = self.leaves() / parents;
        let extra = self.leaves() % parents;
        parent * base + parent.min(extra)
    }

    /// The indices, within level `level + 1`, of the children of node
    /// `index` of level `level`.
    #[must_use]
    pub fn children_of(&self, level: u32, index: u64) -> Range<u64> {
        if level + 1 >= self.depth {
            return 0..0;
        }
        if level + 2 < self.depth {
            let start = index * self.fanout;
            return start..start + self.fanout;
        }
        self.last_level_start(index)..self.last_level_start(index + 1)
    }

    /// The indices, within the deepest level, of the deepest-level nodes in
    /// the subtree of node `index` of level `level`.
    #[must_use]
    pub fn leaves_under(&self, level: u32, index: u64) -> Range<u64> {
        if level + 1 >= self.depth {
            return index..index + 1;
        }
        let span = self.fanout.pow(self.depth - 2 - level);
        self.last_level_start(index * span)..self.last_level_start((index + 1) * span)
    }

    /// How many deepest-level nodes have an index that is a multiple of
    /// `every` (the ones a spec change touches).
    #[must_use]
    pub fn selected_leaves(&self, every: u64) -> u64 {
        self.leaves().div_ceil(every.max(1))
    }
}

/// Whether `range` holds a multiple of `every`.
fn holds_multiple(range: &Range<u64>, every: u64) -> bool {
    let every = every.max(1);
    range.start.div_ceil(every) * every < range.end
}

/// The spec of a [`ScaleWorker`]: where the node sits and the change it
/// carries. (What is the same for every node, the tree's shape and which
/// leaves a change selects, is in the [`ScaleWorld`] the workers share, as
/// the bare actors share their `Arc<Shape>`.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleSpec {
    /// Its level (the root is 0).
    pub level: u32,
    /// Its index within its level.
    pub index: u32,
    /// The generation of the change this node's subtree carries (0: none).
    pub generation: u32,
}

impl ScaleSpec {
    /// The spec as a [`Value`] (a map of three numbers).
    #[must_use]
    pub fn to_value(&self) -> Value {
        Value::map([
            ("level", Value::from(self.level)),
            ("index", Value::from(self.index)),
            ("generation", Value::from(self.generation)),
        ])
    }

    /// The child spec of this node, named `n<index>`.
    #[must_use]
    pub fn named(&self) -> ChildSpec {
        ChildSpec::new(format!("n{}", self.index), WORKER_TYPE).with_spec(self.to_value())
    }
}

/// The root spec of a scale tree, with a change of `generation` for the
/// deepest-level nodes its [`ScaleWorld`] selects (`generation` 0: no
/// change).
#[must_use]
pub fn root_spec(generation: u32) -> ChildSpec {
    ScaleSpec {
        level: 0,
        index: 0,
        generation,
    }
    .named()
}

/// Counts events and wakes one waiter when the count reaches its target.
/// One `fetch_add` and one load per event.
#[derive(Debug)]
pub struct Counter {
    count: AtomicU64,
    target: AtomicU64,
    reached: Notify,
}

impl Default for Counter {
    fn default() -> Self {
        Self {
            count: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            reached: Notify::new(),
        }
    }
}

impl Counter {
    /// Counts one event.
    pub fn hit(&self) {
        let now = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if now == self.target.load(Ordering::SeqCst) {
            self.reached.notify_one();
        }
    }

    /// The events counted so far.
    #[must_use]
    pub fn get(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until at least `target` events have been counted. One waiter at
    /// a time.
    pub async fn wait_for(&self, target: u64) {
        self.target.store(target, Ordering::SeqCst);
        while self.get() < target {
            self.reached.notified().await;
        }
    }
}

/// What every [`ScaleWorker`] of a tree shares: the tree's shape, what a
/// change selects, and counters the driver reads.
#[derive(Debug)]
pub struct ScaleWorld {
    /// The tree's shape.
    pub shape: Shape,
    /// A change touches the deepest-level nodes whose index is a multiple
    /// of this.
    pub every: u64,
    /// Whether nodes issue a no-op action whenever none is in flight (while
    /// the action budget lasts).
    pub act: bool,
    /// State machine steps (one per node per tick once the node has an
    /// observation).
    pub ticks: Counter,
    /// Changed leaves back in `running` at their new generation.
    pub applied: AtomicU64,
    /// `derive_desired` calls (one per start and per spec change).
    pub derived: AtomicU64,
    /// Workers constructed.
    pub constructed: AtomicU64,
    /// No-op actions that may still be issued.
    pub action_budget: AtomicU64,
    /// No-op actions executed.
    pub actions_done: AtomicU64,
}

impl ScaleWorld {
    /// The world of a tree of `shape` whose changes touch every
    /// `every`-th deepest-level node, whose nodes act if `act`.
    ///
    /// # Errors
    ///
    /// [`ShapeError::TooMany`] if the shape's indices do not fit a spec's
    /// 32-bit numbers.
    pub fn new(shape: Shape, every: u32, act: bool) -> Result<Self, ShapeError> {
        if shape.workers() > MAX_WORKERS {
            return Err(ShapeError::TooMany {
                workers: shape.workers(),
                max: MAX_WORKERS,
            });
        }
        Ok(Self {
            shape,
            every: u64::from(every.max(1)),
            act,
            ticks: Counter::default(),
            applied: AtomicU64::new(0),
            derived: AtomicU64::new(0),
            constructed: AtomicU64::new(0),
            action_budget: AtomicU64::new(0),
            actions_done: AtomicU64::new(0),
        })
    }

    fn take_action(&self) -> bool {
        self.action_budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// A registry with the scale worker under [`WORKER_TYPE`].
///
/// # Errors
///
/// Never in practice (the registry starts empty).
pub fn scale_registry(world: &Arc<ScaleWorld>) -> Result<WorkerRegistry, RegistryError> {
    let mut registry = WorkerRegistry::new();
    let world = Arc::clone(world);
    registry.register(WORKER_TYPE, move |_init| {
        world.constructed.fetch_add(1, Ordering::Relaxed);
        ScaleWorker {
            world: Arc::clone(&world),
        }
    })?;
    Ok(registry)
}

/// The trivial worker of the scale harness.
pub struct ScaleWorker {
    world: Arc<ScaleWorld>,
}

/// The scale worker's states: `running` the generation it last applied, or
/// `applying` a new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaleState {
    /// In the desired state, at this generation.
    Running {
        /// The generation it runs.
        generation: u32,
    },
    /// Waiting to observe this generation.
    Applying {
        /// The generation it applies.
        generation: u32,
    },
}

impl Worker for ScaleWorker {
    type Spec = ScaleSpec;
    /// The generation "the world" runs: the spec's, at once.
    type Observed = u32;
    type State = ScaleState;

    fn initial_state(&self) -> ScaleState {
        ScaleState::Running { generation: 0 }
    }

    async fn collect(&self, ctx: &CollectContext<'_, ScaleSpec>) -> Result<u32, BoxError> {
        Ok(ctx.spec().generation)
    }

    fn derive_desired(
        &self,
        spec: &ScaleSpec,
        _ctx: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        let world = &self.world;
        world.derived.fetch_add(1, Ordering::Relaxed);
        let shape = &world.shape;
        if spec.level + 1 >= shape.depth() {
            // The deepest level: no children.
            return Ok(DesiredState::new("running"));
        }
        // Siblings differ in their index and generation only: each child's
        // spec is a copy of one built once, with those two numbers set.
        let template = ScaleSpec {
            level: spec.level + 1,
            ..spec.clone()
        }
        .to_value();
        let range = shape.children_of(spec.level, u64::from(spec.index));
        let mut children = Vec::with_capacity(usize::try_from(range.end - range.start)?);
        for j in range {
            let generation = if holds_multiple(&shape.leaves_under(spec.level + 1, j), world.every)
            {
                spec.generation
            } else {
                0
            };
            let mut name = String::with_capacity(12);
            write!(name, "n{j}")?;
            let mut child = ChildSpec::new(name, WORKER_TYPE).with_spec(template.clone());
            if let Value::Map(fields) = &mut child.user_spec {
                for (field, value) in [("index", u32::try_from(j)?), ("generation", generation)] {
                    if let Some(slot) = fields.get_mut(field) {
                        *slot = Value::from(value);
                    }
                }
            }
            children.push(child);
        }
        Ok(DesiredState::new("running").with_children(children))
    }
}

/// A no-op action: counts itself and succeeds.
pub struct Noop(Arc<ScaleWorld>);

impl Action for Noop {
    async fn execute(&self, _ctx: &ActionContext) -> Result<(), BoxError> {
        self.0.actions_done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl fsm_core::StateNames for ScaleState {
    const NAMES: &'static [&'static str] = &["running", "applying"];

    fn name(&self) -> &'static str {
        match self {
            ScaleState::Running { .. } => "running",
            ScaleState::Applying { .. } => "applying",
        }
    }
}

impl State<ScaleWorker> for ScaleState {
    fn next(&self, s: &TickContext<'_, ScaleWorker>) -> Transition<ScaleState> {
        let world = &s.worker().world;
        world.ticks.hit();
        let spec = s.spec();
        // Only the deepest level takes part in the change; the levels above
        // merely pass it down.
        let target = if spec.level + 1 == world.shape.depth() {
            spec.generation
        } else {
            0
        };
        let transition = match *self {
            ScaleState::Running { generation } | ScaleState::Applying { generation }
                if generation != target =>
            {
                Transition::to(ScaleState::Applying { generation: target })
                    .because("the spec's generation changed")
            }
            ScaleState::Applying { generation } if *s.observed() == generation => {
                world.applied.fetch_add(1, Ordering::Relaxed);
                Transition::to(ScaleState::Running { generation }).because("generation applied")
            }
            _ => Transition::stay(),
        };
        if world.act && !s.action_in_flight() && world.take_action() {
            transition.with_action(Noop(Arc::clone(world)))
        } else {
            transition
        }
    }
}

/// The process's CPU time (user + system, all threads), from
/// `/proc/self/stat`, in seconds. The kernel counts it in clock ticks of
/// `USER_HZ`, which is 100 on every Linux architecture the harness targets
/// (reading `sysconf(_SC_CLK_TCK)` would need `unsafe` or a new dependency):
/// a resolution of 10 ms, so measure over seconds.
///
/// # Errors
///
/// When `/proc/self/stat` cannot be read or parsed (not Linux).
pub fn process_cpu() -> Result<f64, std::io::Error> {
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) is in parentheses and may hold spaces; the
    // fields after the last ')' start with field 3.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Result<u64, std::io::Error> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("/proc/self/stat has no numeric field {n}"),
                )
            })
    };
    let ticks = field(14)? + field(15)?;
    Ok(ticks as f64 / USER_HZ)
}

/// The process's resident memory in bytes (`VmRSS` in
/// `/proc/self/status`).
///
/// # Errors
///
/// When `/proc/self/status` cannot be read or has no `VmRSS` line.
pub fn resident_bytes() -> Result<u64, std::io::Error> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| {
            let kb = line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?;
            kb.trim().parse::<u64>().ok()
        })
        .map(|kb| kb * 1024)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "/proc/self/status has no VmRSS line",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_exactly_the_requested_size() {
        for (workers, depth) in [(1, 1), (2, 2), (5, 3), (1000, 4), (10_000, 4), (100_000, 4)] {
            let shape = Shape::new(workers, depth).unwrap();
            assert_eq!(shape.level_sizes().iter().sum::<u64>(), workers);
            assert_eq!(shape.level_sizes().len(), depth as usize);
            // Every node's children tile the next level.
            for level in 0..depth.saturating_sub(1) {
                let mut next = 0;
                for i in 0..shape.level_sizes()[level as usize] {
                    let c = shape.children_of(level, i);
                    assert_eq!(c.start, next);
                    next = c.end;
                }
                assert_eq!(next, shape.level_sizes()[level as usize + 1]);
            }
        }
        assert_eq!(Shape::new(10_000, 4).unwrap().fanout(), 22);
        assert_eq!(Shape::new(100_000, 4).unwrap().fanout(), 47);
    }

    #[test]
    fn impossible_shapes_are_refused() {
        assert!(Shape::new(0, 3).is_err());
        assert!(Shape::new(3, 4).is_err());
        assert!(Shape::new(2, 1).is_err());
        assert!(Shape::with_fanout(1000, 4, 9).is_err());
    }

    #[test]
    fn the_change_reaches_exactly_the_selected_leaves() {
        let shape = Shape::new(1000, 4).unwrap();
        let leaves = shape.leaves_under(0, 0);
        assert_eq!(leaves, 0..shape.leaves());
        let marked = (0..shape.level_sizes()[2])
            .flat_map(|p| shape.children_of(2, p))
            .filter(|j| holds_multiple(&shape.leaves_under(3, *j), 100))
            .count() as u64;
        assert_eq!(marked, shape.selected_leaves(100));
        assert_eq!(marked, 9);
    }

    #[test]
    fn children_specs_carry_their_place_and_the_change() {
        let shape = Shape::new(300, 3).unwrap();
        let worker = ScaleWorker {
            world: Arc::new(ScaleWorld::new(shape.clone(), 10, false).unwrap()),
        };
        let root: ScaleSpec = root_spec(7).user_spec.decode().unwrap();
        let path = fsm_core::NodePath::top();
        for level in 0..shape.depth() {
            for index in 0..shape.level_sizes()[level as usize] {
                let spec = ScaleSpec {
                    level,
                    index: u32::try_from(index).unwrap(),
                    ..root.clone()
                };
                let desired = worker
                    .derive_desired(&spec, &DeriveContext::new(&path))
                    .unwrap();
                let expected: Vec<ScaleSpec> = shape
                    .children_of(level, index)
                    .map(|j| ScaleSpec {
                        level: level + 1,
                        index: u32::try_from(j).unwrap(),
                        generation: if holds_multiple(&shape.leaves_under(level + 1, j), 10) {
                            7
                        } else {
                            0
                        },
                    })
                    .collect();
                let got: Vec<ScaleSpec> = desired
                    .children
                    .iter()
                    .map(|c| c.user_spec.decode().unwrap())
                    .collect();
                assert_eq!(got, expected, "level {level}, node {index}");
                for (child, spec) in desired.children.iter().zip(&expected) {
                    assert_eq!(child, &spec.named());
                }
            }
        }
    }

    #[test]
    fn proc_readers_work() {
        assert!(process_cpu().unwrap() >= 0.0);
        assert!(resident_bytes().unwrap() > 0);
    }
}
