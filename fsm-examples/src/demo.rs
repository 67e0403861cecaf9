//! The pieces of `fsm-demo` that are worth testing on their own: the
//! embedded root spec, the change applied halfway through a run, and the
//! readable tree printer.

use std::fmt::Write as _;
use std::time::Duration;

use fsm_actors::{NodeSnapshot, ShutdownReport, Tree, TreeConfig, TreeError};
use fsm_core::{Backoff, ChildSpec, RegistryError, RestartIntensity, Supervision, Value};

use crate::sim::SimIo;
use crate::workers::{BridgeSpec, LineSpec, PlantSpec, registry};

/// How a demo run goes.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The root spec to run.
    pub root: ChildSpec,
    /// Root ticks to run before shutting down.
    pub ticks: u64,
    /// Time between root ticks.
    pub tick: Duration,
    /// Apply [`changed_root_spec`] halfway through the run.
    pub change_halfway: bool,
    /// During the first half of the run, every node panics with this
    /// probability per tick (0: no fault injection).
    pub chaos: f64,
    /// Keep the tree in this store; when it holds a tree already, that
    /// tree is restored instead of `root` (and runs as restored: no change
    /// halfway).
    pub store: Option<fsm_actors::store::TreeStore>,
}

/// What a demo run ends with.
#[derive(Debug)]
pub struct DemoRun {
    /// The tree after the last tick, before shutdown.
    pub snapshot: NodeSnapshot,
    /// How the shutdown went.
    pub shutdown: ShutdownReport,
    /// Whether the halfway change was applied.
    pub changed: bool,
    /// Restarts over the whole run, as the restart warnings count them
    /// (nodes removed since included; see [`Tree::restarts`](fsm_actors::TreeHandle::restarts)).
    pub restarts: u64,
    /// What the tree restored from its store, if it did.
    pub restored: Option<fsm_actors::RestoreInfo>,
}

/// A demo run failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The registry could not be built.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The tree refused the spec or stopped answering.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// The tree configuration of the demo: everything scaled to the tick, so
/// that a run of a few dozen ticks shows the whole life cycle (restarts wait
/// one to four ticks; a supervisor tolerates 30 restarts within 30 ticks).
#[must_use]
pub fn demo_config(tick: Duration) -> TreeConfig {
    let mut config = TreeConfig::default();
    config.tick_interval = Some(tick);
    config.observation_timeout = tick * 4;
    config.stale_after = tick * 20;
    config.collector_restart_after = tick * 40;
    config.recovery_heartbeat = tick * 10;
    config.executor.default_timeout = Duration::from_secs(5);
    config.supervision = Supervision::default()
        .with_intensity(RestartIntensity::new(30, tick * 30))
        .with_backoff(Backoff {
            base: tick,
            max: tick * 4,
            jitter: 0.2,
            reset_after: tick * 20,
        });
    config
}

/// Runs the demo: spawns the tree on simulated I/O, applies the change
/// halfway (if asked), runs `ticks` root ticks, inspects, and shuts down.
///
/// # Errors
///
/// [`DemoError::Tree`] when the root spec is invalid or the tree stops
/// answering.
pub async fn run_demo(options: &DemoOptions) -> Result<DemoRun, DemoError> {
    run_demo_with(options, |_| {}).await
}

/// [`run_demo`], calling `spawned` with the tree as soon as it runs (to
/// serve it over HTTP, say).
///
/// # Errors
///
/// As [`run_demo`].
pub async fn run_demo_with(
    options: &DemoOptions,
    spawned: impl FnOnce(&Tree),
) -> Result<DemoRun, DemoError> {
    let io = SimIo::default();
    let mut config = demo_config(options.tick);
    config.store.clone_from(&options.store);
    let tree = Tree::spawn(options.root.clone(), registry(&io)?, config).await?;
    let restored = tree.restored();
    spawned(&tree);
    let halfway = options.ticks / 2;
    if options.chaos > 0.0 {
        tracing::info!(
            probability = options.chaos,
            "injecting faults until the halfway tick"
        );
        tree.inject_faults(options.chaos);
    }
    tree.wait_ticks(halfway).await?;
    tree.inject_faults(0.0);
    let mut changed = false;
    // A restored tree runs as it was restored (its own change, if it had
    // one, is in it).
    if options.change_halfway && restored.is_none() {
        match changed_root_spec(&options.root) {
            Some(spec) => {
                tracing::info!(tick = halfway, "applying the changed root spec");
                tree.update_root_spec(spec)?;
                changed = true;
            }
            None => tracing::warn!(
                "the root is not a plant; no change applied (use --static to silence this)"
            ),
        }
    }
    tree.wait_ticks(options.ticks).await?;
    let snapshot = tree.inspect().await?;
    let restarts = tree.restarts();
    let shutdown = tree.shutdown(Duration::from_secs(5)).await;
    Ok(DemoRun {
        snapshot,
        shutdown,
        changed,
        restarts,
        restored,
    })
}

/// The embedded root spec, as JSON (what `fsm-demo --print-spec` prints).
pub const EMBEDDED_SPEC: &str = include_str!("../specs/plant.json");

/// The embedded root spec.
///
/// # Errors
///
/// Only if the embedded JSON were malformed, which a test rules out.
pub fn embedded_root_spec() -> Result<ChildSpec, serde_json::Error> {
    serde_json::from_str(EMBEDDED_SPEC)
}

/// The change `fsm-demo` applies halfway through a run: a new line is added
/// (a whole subtree, on its own subnet), the last of the original lines is
/// removed (with its subtree), and the first bridge reads one more tag (a
/// leaf's spec changes: its read flow is reconfigured in place).
///
/// Returns `None` when the root is not a plant this change understands.
#[must_use]
pub fn changed_root_spec(root: &ChildSpec) -> Option<ChildSpec> {
    if root.worker_type != "plant" {
        return None;
    }
    let mut plant: PlantSpec = root.user_spec.decode().ok()?;
    let number = plant.lines.len() + 1;
    let mut added = plant.lines.first()?.clone();
    added.name = format!("line-{number}");
    added.location.insert("line".to_owned(), added.name.clone());
    added
        .variables
        .insert("SUBNET".to_owned(), Value::from(format!("10.0.{number}")));
    if plant.lines.len() >= 2 {
        plant.lines.pop();
    }
    let line = plant.lines.first_mut()?;
    let mut line_spec: LineSpec = line.user_spec.decode().ok()?;
    let bridge = line_spec.bridges.first_mut()?;
    let mut bridge_spec: BridgeSpec = bridge.user_spec.decode().ok()?;
    bridge_spec.read.push("vibration".to_owned());
    bridge.user_spec = Value::from_serialize(&bridge_spec).ok()?;
    line.user_spec = Value::from_serialize(&line_spec).ok()?;
    plant.lines.push(added);
    let mut changed = root.clone();
    changed.user_spec = Value::from_serialize(&plant).ok()?;
    Some(changed)
}

/// The nodes of `root` that are not healthy in their desired state, each
/// with what is wrong: `path: state S, desired D, unhealthy, last error: E`.
/// Empty when the tree has converged.
#[must_use]
pub fn unsettled_nodes(root: &NodeSnapshot) -> Vec<String> {
    root.iter()
        .filter(|n| !n.healthy || n.state != n.desired_state)
        .map(|n| {
            let mut line = format!("{}: state {}, desired {}", n.path, n.state, n.desired_state);
            if !n.healthy {
                line.push_str(", unhealthy");
            }
            match &n.last_error {
                Some(e) => {
                    let _ = write!(line, ", last error: {e}");
                }
                None => line.push_str(", no error reported"),
            }
            line
        })
        .collect()
}

/// Renders a snapshot as an indented table: path, worker type, state,
/// desired state, location, health.
#[must_use]
pub fn render_tree(root: &NodeSnapshot) -> String {
    fn row(node: &NodeSnapshot, depth: usize) -> [String; 6] {
        let health = match (&node.last_error, node.healthy) {
            (None, true) => "healthy".to_owned(),
            (Some(e), true) => format!("healthy (last error: {e})"),
            (Some(e), false) => format!("UNHEALTHY: {e}"),
            (None, false) => "UNHEALTHY".to_owned(),
        };
        [
            format!("{}{}", "  ".repeat(depth), node.path),
            node.worker_type.clone(),
            node.state.clone(),
            node.desired_state.clone(),
            node.location_path.clone(),
            health,
        ]
    }
    let mut rows = vec![[
        "PATH".to_owned(),
        "TYPE".to_owned(),
        "STATE".to_owned(),
        "DESIRED".to_owned(),
        "LOCATION".to_owned(),
        "HEALTH".to_owned(),
    ]];
    // Without recursion: a tree may be deeper than a stack allows.
    let top = root.path.depth();
    rows.extend(
        root.iter()
            .map(|node| row(node, node.path.depth().saturating_sub(top))),
    );
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        for (w, cell) in widths.iter().zip(row.iter()) {
            let _ = write!(out, "{cell:<w$}  ");
        }
        let _ = writeln!(out, "{}", row[5]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_spec_is_a_valid_plant() {
        let root = embedded_root_spec().unwrap();
        let plant: PlantSpec = root.user_spec.decode().unwrap();
        assert_eq!(plant.lines.len(), 2);
        for line in &plant.lines {
            let line: LineSpec = line.user_spec.decode().unwrap();
            for bridge in &line.bridges {
                let _: BridgeSpec = bridge.user_spec.decode().unwrap();
            }
        }
    }

    #[test]
    fn the_change_adds_a_line_removes_one_and_changes_a_leaf() {
        let root = embedded_root_spec().unwrap();
        let before: PlantSpec = root.user_spec.decode().unwrap();
        let after: PlantSpec = changed_root_spec(&root)
            .unwrap()
            .user_spec
            .decode()
            .unwrap();
        let names: Vec<&str> = after.lines.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["line-1", "line-3"]);
        assert_eq!(
            after.lines[1].variables.get("SUBNET"),
            Some(&Value::from("10.0.3"))
        );
        assert_eq!(
            after.lines[1].location.get("line").map(String::as_str),
            Some("line-3")
        );
        let bridges = |spec: &PlantSpec| -> Vec<BridgeSpec> {
            let line: LineSpec = spec.lines[0].user_spec.decode().unwrap();
            line.bridges
                .iter()
                .map(|b| b.user_spec.decode().unwrap())
                .collect()
        };
        let (b, a) = (bridges(&before), bridges(&after));
        assert_eq!(a[0].read.len(), b[0].read.len() + 1);
        assert_eq!(a[0].host, "{{ SUBNET }}.10", "templates stay templates");
        assert_eq!(a[1], b[1]);
    }

    #[test]
    fn the_change_leaves_other_roots_alone() {
        assert!(changed_root_spec(&ChildSpec::new("x", "line")).is_none());
    }
}
