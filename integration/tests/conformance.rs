//! Conformance of the supervision semantics (restart policies × exit
//! reasons, strategies, intensity and escalation, backoff, the circuit
//! breaker, ordered start and stop) on tokio's paused clock.
//!
//! Faults are armed on the probe worker (`ProbeWorld::arm`): `Crash` panics
//! in `next` (abnormal), `RequestRestart` raises `NeedsRestart` (abnormal),
//! `Finish` raises `NeedsRemoval` (normal), `FailStart` panics in the
//! constructor (a failed start, abnormal). A deliberate stop (shutdown exit)
//! is the removal of a child's declaration.
//!
//! "Restarted" means: the worker is constructed again and the node is back
//! running with its `restarts` incremented. "Not restarted" means: the node
//! stays absent from `inspect` for many ticks, is never constructed again,
//! and its parent converges without it.

// The helpers below run outside `#[test]` functions, where clippy.toml's
// allow-unwrap-in-tests does not reach; a panic is how they fail a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fsm_actors::{ExecutorStats, NodeSnapshot, Tree, TreeConfig, TreeError};
use fsm_core::{Backoff, ChildSpec, RestartIntensity, RestartPolicy, Strategy, Supervision};
use integration::{
    ActionMode, CollectMode, Event, Fault, ProbeSpec, ProbeWorld, probe_registry, render,
    test_config, wait_for_snapshot, wait_for_stats,
};
use tokio::time::Instant;

/// How long any condition may take to come true (virtual time).
const WAIT: Duration = Duration::from_secs(60);
/// The shutdown budget.
const STOP: Duration = Duration::from_secs(10);
/// How often `wait_until` looks (virtual time, so it costs nothing real).
const POLL: Duration = Duration::from_millis(1);
/// The runbook section every escalation names.
const RUNBOOK: &str = "docs/runbook.md#restart-intensity-exceeded";

// ----- specs ---------------------------------------------------------------

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `base` doubling up to `max`, no jitter (exact timing), reset after a
/// minute of stable running.
fn exact_backoff(base_ms: u64, max_ms: u64) -> Backoff {
    Backoff {
        base: ms(base_ms),
        max: ms(max_ms),
        jitter: 0.0,
        reset_after: Duration::from_secs(60),
    }
}

fn supervision(
    strategy: Strategy,
    max_restarts: u32,
    period: Duration,
    backoff: Backoff,
) -> Supervision {
    Supervision::new(strategy)
        .with_intensity(RestartIntensity::new(max_restarts, period))
        .with_backoff(backoff)
}

/// `test_config` (a tick every 100 ms) with one_for_one, 10 restarts in
/// 10 s and an exact backoff of 100 ms doubling up to 1 s as the default
/// supervision.
fn config() -> TreeConfig {
    let mut c = test_config();
    c.supervision = supervision(
        Strategy::OneForOne,
        10,
        Duration::from_secs(10),
        exact_backoff(100, 1000),
    );
    c
}

fn leaf(name: &str) -> ChildSpec {
    ProbeSpec::default().named(name)
}

/// A probe with children, supervising them with the tree's default.
fn parent(name: &str, children: Vec<ChildSpec>) -> ChildSpec {
    ProbeSpec::default().with_children(children).named(name)
}

/// A probe with children, supervising them as `sup` says.
fn supervisor(name: &str, sup: Supervision, children: Vec<ChildSpec>) -> ChildSpec {
    ProbeSpec::default()
        .with_children(children)
        .with_supervision(sup)
        .named(name)
}

fn leaves(names: &[&str]) -> Vec<ChildSpec> {
    names.iter().map(|n| leaf(n)).collect()
}

// ----- running ---------------------------------------------------------------

async fn spawn(world: &ProbeWorld, root: ChildSpec, config: TreeConfig) -> Tree {
    Tree::spawn(root, probe_registry(world), config)
        .await
        .unwrap()
}

async fn spawn_converged(world: &ProbeWorld, root: ChildSpec, config: TreeConfig) -> Tree {
    let tree = spawn(world, root, config).await;
    tree.wait_converged(WAIT).await.unwrap();
    tree
}

/// Polls `cond` every millisecond (virtual) until it holds.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "waited {WAIT:?} in vain for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn snapshot_when(
    tree: &Tree,
    what: &str,
    pred: impl FnMut(&NodeSnapshot) -> bool,
) -> NodeSnapshot {
    wait_for_snapshot(tree, what, WAIT, pred).await.unwrap()
}

fn node<'a>(snap: &'a NodeSnapshot, path: &str) -> &'a NodeSnapshot {
    snap.find(path)
        .unwrap_or_else(|| panic!("no `{path}` in\n{}", render(snap)))
}

fn is_running(snap: &NodeSnapshot, path: &str) -> bool {
    snap.find(path).is_some_and(|n| n.state == "running")
}

fn restarts_of(snap: &NodeSnapshot, path: &str) -> Option<u64> {
    snap.find(path).map(|n| n.restarts)
}

/// Lets the tree run `n` more ticks.
async fn run_ticks(tree: &Tree, n: u64) {
    let now = tree.status().ticks;
    tree.wait_ticks(now + n).await.unwrap();
}

// ----- the journal -------------------------------------------------------------

fn constructed(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Constructed(p) => Some(p.as_str()),
            _ => None,
        })
        .collect()
}

fn stopped(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Stopped(p) => Some(p.as_str()),
            _ => None,
        })
        .collect()
}

/// The paths among `paths` that are direct children of `parent`.
fn children_of<'a>(paths: &[&'a str], parent: &str) -> Vec<&'a str> {
    paths
        .iter()
        .copied()
        .filter(|p| {
            p.strip_prefix(parent)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|name| !name.contains('/'))
        })
        .collect()
}

/// The events before the `n`-th (1-based) construction of `path`.
fn before_construction(events: &[Event], path: &str, n: usize) -> Vec<Event> {
    let at = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Event::Constructed(p) if p == path))
        .nth(n - 1)
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("`{path}` was not constructed {n} times: {events:?}"));
    events[..at].to_vec()
}

fn count(paths: &[&str], path: &str) -> usize {
    paths.iter().filter(|p| **p == path).count()
}

/// Every enqueued action is waiting, running, or has its one outcome.
fn assert_accounted(stats: &ExecutorStats) {
    assert_eq!(
        stats.enqueued,
        stats.outcomes() + stats.queued + stats.running,
        "{stats:?}"
    );
}

// ===== 1. restart policy × exit reason ==========================================

#[derive(Clone, Copy, Debug)]
enum Exit {
    /// The worker finished (`NeedsRemoval`).
    Normal,
    /// Its supervisor stopped it on purpose (declaration removed).
    Shutdown,
    /// It crashed.
    Abnormal,
}

const CHILD: &str = "root/child";

/// `root ─ {keep, child}` with `child` under `policy`, converged; then
/// `child` ends for `exit`.
async fn end_child(policy: RestartPolicy, exit: Exit) -> (ProbeWorld, Tree) {
    let world = ProbeWorld::default();
    let root = parent(
        "root",
        vec![leaf("keep"), leaf("child").with_restart(policy)],
    );
    let tree = spawn_converged(&world, root, config()).await;
    assert_eq!(world.journal.constructions(CHILD), 1);
    match exit {
        Exit::Normal => world.arm(CHILD, Fault::Finish, 1),
        Exit::Abnormal => world.arm(CHILD, Fault::Crash, 1),
        Exit::Shutdown => {
            tree.update_root_spec(parent("root", vec![leaf("keep")]))
                .unwrap();
        }
    }
    (world, tree)
}

/// The child comes back: constructed again, running, `restarts` 1, and the
/// tree converges.
async fn assert_restarted(world: &ProbeWorld, tree: &Tree) {
    wait_until("the child to be constructed again", || {
        world.journal.constructions(CHILD) == 2
    })
    .await;
    let snap = snapshot_when(tree, "the restarted child to run and converge", |s| {
        s.converged && is_running(s, CHILD)
    })
    .await;
    assert_eq!(node(&snap, CHILD).restarts, 1, "{}", render(&snap));
    assert_eq!(node(&snap, "root/keep").restarts, 0, "{}", render(&snap));
    // Restarted once, and only once.
    run_ticks(tree, 20).await;
    assert_eq!(world.journal.constructions(CHILD), 2);
    assert_eq!(world.journal.constructions("root/keep"), 1);
}

/// The child stays gone for many ticks, is never constructed again, and the
/// parent converges without it.
async fn assert_not_restarted(world: &ProbeWorld, tree: &Tree) {
    snapshot_when(tree, "the child to be gone", |s| s.find(CHILD).is_none()).await;
    run_ticks(tree, 30).await;
    let snap = snapshot_when(tree, "the parent to converge without the child", |s| {
        s.converged
    })
    .await;
    assert!(snap.find(CHILD).is_none(), "{}", render(&snap));
    let names: Vec<&str> = snap.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["keep"], "{}", render(&snap));
    assert_eq!(world.journal.constructions(CHILD), 1);
    assert_eq!(world.journal.constructions("root/keep"), 1);
    let status = tree.status();
    assert!(status.converged, "{status:?}");
    assert_eq!(status.counts.nodes, 2, "{status:?}");
    assert_eq!(status.counts.restarting, 0, "{status:?}");
    tree.wait_converged(WAIT).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn conformance_permanent_child_is_restarted_after_a_normal_exit() {
    let (world, tree) = end_child(RestartPolicy::Permanent, Exit::Normal).await;
    assert_restarted(&world, &tree).await;
    // It finished cleanly (its stop hook ran) before it was started again.
    let events = world.journal.events();
    assert_eq!(stopped(&before_construction(&events, CHILD, 2)), [CHILD]);
    tree.shutdown(STOP).await;
}

#[tokio::test(start_paused = true)]
async fn conformance_permanent_child_is_not_restarted_after_a_shutdown_exit() {
    let (world, tree) = end_child(RestartPolicy::Permanent, Exit::Shutdown).await;
    assert_not_restarted(&world, &tree).await;
    assert_eq!(world.journal.stopped(), [CHILD]);
    tree.shutdown(STOP).await;
}

#[tokio::test(start_paused = true)]
async fn conformance_permanent_child_is_restarted_after_an_abnormal_exit() {
    let (world, tree) = end_child(RestartPolicy::Permanent, Exit::Abnormal).await;
    assert_restarted(&world, &tree).await;
    tree.shutdown(STOP).await;
}

#[tokio::test(start_paused = true)]
async fn conformance_transient_child_is_not_restarted_after_a_normal_exit() {
    let (world, tree) = end_child(RestartPolicy::Transient, Exit::Normal).await;
    assert_not_restarted(&world, &tree).await;
    // It finished: its stop hook ran.
    assert_eq!(world.journal.stopped(), [CHILD]);
    tree.shutdown(STOP).await;
}

#[tokio::test(start_paused = true)]
async fn conformance_transient_child_is_not_restarted_after_a_shutdown_exit() {
    let (world, tree) = end_child(RestartPolicy::Transient, Exit::Shutdown).await;
    assert_not_restarted(&world, &tree).await;
    assert_eq!(world.journal.stopped(), [CHILD]);
    tree.shutdown(STOP).await;
}

#[tokio::test(start_paused = true)]
async fn conformance_transient_child_is_restarted_after_an_abnormal_exit() {
    let (world, tree) = end_child(RestartPolicy::Transient, Exit::Abnormal).await;
    assert_restarted(&world, &tree).await;
    tree.shutdown(STOP).await;
}

#[tokio::test(start_paused = true)]
async fn conformance_temporary_child_is_not_restarted_after_a_normal_exit() {
    let (world, tree) = end_child(RestartPolicy::Temporary, Exit::Normal).await;
    assert_not_restarted(&world, &tree).await;
    assert_eq!(world.journal.stopped(), [CHILD]);
    tree.shutdown(STOP).await;
}

#[tokio::test(start_paused = true)]
async fn conformance_temporary_child_is_not_restarted_after_a_shutdown_exit() {
    let (world, tree) = end_child(RestartPolicy::Temporary, Exit::Shutdown).await;
    assert_not_restarted(&world, &tree).await;
    assert_eq!(world.journal.stopped(), [CHILD]);
    tree.shutdown(STOP).await;
}

#[tokio::test(start_paused = true)]
async fn conformance_temporary_child_is_not_restarted_after_an_abnormal_exit() {
    let (world, tree) = end_child(RestartPolicy::Temporary, Exit::Abnormal).await;
    assert_not_restarted(&world, &tree).await;
    // It crashed: no stop hook.
    assert!(world.journal.stopped().is_empty());
    tree.shutdown(STOP).await;
}

// ===== 2. strategies ==============================================================

const FOUR: [&str; 4] = ["root/a", "root/b", "root/c", "root/d"];

/// `root ─ {a, b, c, d}` supervised under `strategy`; `b` crashes once.
/// Returns the journal events from the crash until the tree converged again.
async fn crash_b_of_four(strategy: Strategy) -> (ProbeWorld, NodeSnapshot, Vec<Event>) {
    let world = ProbeWorld::default();
    let sup = supervision(
        strategy,
        10,
        Duration::from_secs(10),
        exact_backoff(100, 1000),
    );
    let tree = spawn_converged(
        &world,
        supervisor("root", sup, leaves(&["a", "b", "c", "d"])),
        config(),
    )
    .await;
    let events = world.journal.events();
    assert_eq!(children_of(&constructed(&events), "root"), FOUR);
    let mark = events.len();

    world.arm("root/b", Fault::Crash, 1);
    let snap = snapshot_when(&tree, "b to be restarted and the tree to converge", |s| {
        s.converged && restarts_of(s, "root/b") == Some(1)
    })
    .await;
    run_ticks(&tree, 20).await;
    let events = world.journal.events().split_off(mark);
    tree.shutdown(STOP).await;
    (world, snap, events)
}

#[tokio::test(start_paused = true)]
async fn conformance_one_for_one_restarts_only_the_failed_child() {
    let (_world, snap, events) = crash_b_of_four(Strategy::OneForOne).await;
    assert_eq!(constructed(&events), ["root/b"]);
    assert!(stopped(&events).is_empty(), "{events:?}");
    for (path, restarts) in [("root/a", 0), ("root/b", 1), ("root/c", 0), ("root/d", 0)] {
        assert_eq!(node(&snap, path).restarts, restarts, "{}", render(&snap));
    }
}

#[tokio::test(start_paused = true)]
async fn conformance_one_for_all_restarts_all_children_stopping_in_reverse_and_starting_in_order() {
    let (_world, snap, events) = crash_b_of_four(Strategy::OneForAll).await;
    // The bystanders' stop hooks ran in reverse start order (b had crashed);
    // then all four were constructed again in start order.
    assert_eq!(stopped(&events), ["root/d", "root/c", "root/a"]);
    assert_eq!(constructed(&events), FOUR);
    let last_stop = events
        .iter()
        .rposition(|e| matches!(e, Event::Stopped(_)))
        .unwrap();
    let first_start = events
        .iter()
        .position(|e| matches!(e, Event::Constructed(_)))
        .unwrap();
    assert!(last_stop < first_start, "{events:?}");
    for path in FOUR {
        assert_eq!(node(&snap, path).restarts, 1, "{}", render(&snap));
    }
}

#[tokio::test(start_paused = true)]
async fn conformance_rest_for_one_restarts_the_failed_child_and_those_started_after_it() {
    let (_world, snap, events) = crash_b_of_four(Strategy::RestForOne).await;
    assert_eq!(stopped(&events), ["root/d", "root/c"]);
    assert_eq!(constructed(&events), ["root/b", "root/c", "root/d"]);
    for (path, restarts) in [("root/a", 0), ("root/b", 1), ("root/c", 1), ("root/d", 1)] {
        assert_eq!(node(&snap, path).restarts, restarts, "{}", render(&snap));
    }
}

#[tokio::test(start_paused = true)]
async fn conformance_one_for_all_stops_bystander_subtrees_one_at_a_time_in_reverse_order() {
    let world = ProbeWorld::default();
    let sup = supervision(
        Strategy::OneForAll,
        10,
        Duration::from_secs(10),
        exact_backoff(100, 1000),
    );
    let root = supervisor(
        "root",
        sup,
        vec![
            parent("x", leaves(&["x1", "x2"])),
            parent("y", leaves(&["y1", "y2"])),
            parent("z", leaves(&["z1", "z2"])),
        ],
    );
    let tree = spawn_converged(&world, root, config()).await;
    let mark = world.journal.events().len();

    world.arm("root/x", Fault::Crash, 1);
    snapshot_when(&tree, "x to be restarted and the tree to converge", |s| {
        s.converged && restarts_of(s, "root/x") == Some(1)
    })
    .await;
    let events = world.journal.events().split_off(mark);
    // Each bystander's subtree stopped completely (children first, in
    // reverse start order) before the next bystander began stopping. x
    // crashed: its children went down with it, without stop hooks.
    assert_eq!(
        stopped(&events),
        [
            "root/z/z2",
            "root/z/z1",
            "root/z",
            "root/y/y2",
            "root/y/y1",
            "root/y",
        ],
        "{events:?}"
    );
    let built = constructed(&events);
    assert_eq!(children_of(&built, "root"), ["root/x", "root/y", "root/z"]);
    for p in ["root/x", "root/y", "root/z"] {
        assert_eq!(
            children_of(&built, p),
            [format!("{p}/{}1", &p[5..]), format!("{p}/{}2", &p[5..])]
        );
    }
    // No actor of the old subtrees is left behind.
    assert_eq!(tree.live_nodes(), 10);
    tree.shutdown(STOP).await;
}

// ===== 3. escalation per strategy =================================================

/// `root ─ sup ─ {a, b, c}`, `sup` under `strategy` with at most 2 restarts
/// in 10 s; `b` crashes until healed. `sup` escalates: its children stop in
/// reverse start order, it fails, and `root` restarts it. Returns the events
/// before `sup`'s second construction.
async fn escalate_under(strategy: Strategy) -> Vec<Event> {
    let world = ProbeWorld::default();
    let sup = supervision(strategy, 2, Duration::from_secs(10), exact_backoff(10, 10));
    let root = parent(
        "root",
        vec![supervisor("sup", sup, leaves(&["a", "b", "c"]))],
    );
    let tree = spawn_converged(&world, root, config()).await;

    world.arm("root/sup/b", Fault::Crash, u32::MAX);
    wait_until("root to restart sup", || {
        world.journal.constructions("root/sup") == 2
    })
    .await;
    world.heal("root/sup/b");
    let events = before_construction(&world.journal.events(), "root/sup", 2);

    // The parent saw sup fail and restarted it; everything recovers.
    let snap = snapshot_when(&tree, "sup to be restarted and the tree to converge", |s| {
        s.converged && restarts_of(s, "root/sup").is_some_and(|r| r >= 1)
    })
    .await;
    assert_eq!(node(&snap, "root").restarts, 0, "{}", render(&snap));
    assert!(tree.fatal().is_none());
    tree.shutdown(STOP).await;

    // b failed three times: two restarts allowed, the third escalated.
    let built = constructed(&events);
    assert_eq!(count(&built, "root/sup/b"), 3, "{events:?}");
    // The escalation stopped sup's running children in reverse start order.
    let stops = stopped(&events);
    assert!(stops.ends_with(&["root/sup/c", "root/sup/a"]), "{events:?}");
    events
}

#[tokio::test(start_paused = true)]
async fn conformance_one_for_one_escalates_past_its_intensity() {
    let events = escalate_under(Strategy::OneForOne).await;
    let built = constructed(&events);
    assert_eq!(count(&built, "root/sup/a"), 1);
    assert_eq!(count(&built, "root/sup/c"), 1);
    assert_eq!(stopped(&events), ["root/sup/c", "root/sup/a"]);
}

#[tokio::test(start_paused = true)]
async fn conformance_one_for_all_escalates_past_its_intensity() {
    let events = escalate_under(Strategy::OneForAll).await;
    let built = constructed(&events);
    assert_eq!(count(&built, "root/sup/a"), 3);
    assert_eq!(count(&built, "root/sup/c"), 3);
    // Two group restarts, then the escalation.
    assert_eq!(
        stopped(&events),
        [
            "root/sup/c",
            "root/sup/a",
            "root/sup/c",
            "root/sup/a",
            "root/sup/c",
            "root/sup/a"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn conformance_rest_for_one_escalates_past_its_intensity() {
    let events = escalate_under(Strategy::RestForOne).await;
    let built = constructed(&events);
    assert_eq!(count(&built, "root/sup/a"), 1);
    assert_eq!(count(&built, "root/sup/c"), 3);
    assert_eq!(
        stopped(&events),
        ["root/sup/c", "root/sup/c", "root/sup/c", "root/sup/a"]
    );
}

// ===== 4. spaced-out restarts ===================================================

#[tokio::test(start_paused = true)]
async fn conformance_restarts_spaced_out_in_time_never_reach_the_intensity() {
    let world = ProbeWorld::default();
    let period = Duration::from_secs(10);
    let sup = supervision(Strategy::OneForOne, 3, period, exact_backoff(100, 100));
    let root = parent("root", vec![supervisor("sup", sup, leaves(&["a", "b"]))]);
    let tree = spawn_converged(&world, root, config()).await;

    // Twelve crashes, one every period/2: never more than 3 within 10 s
    // (a window that never forgot would escalate at the 4th).
    let start = Instant::now();
    for k in 1..=12u32 {
        tokio::time::sleep_until(start + period / 2 * k).await;
        world.arm("root/sup/b", Fault::Crash, 1);
        wait_until("b to be restarted", || {
            world.journal.constructions("root/sup/b") == k as usize + 1
        })
        .await;
    }
    let snap = snapshot_when(&tree, "b to run again", |s| {
        s.converged && restarts_of(s, "root/sup/b") == Some(12)
    })
    .await;
    assert_eq!(node(&snap, "root/sup").restarts, 0, "{}", render(&snap));
    assert_eq!(world.journal.constructions("root/sup"), 1);
    assert_eq!(world.journal.constructions("root/sup/a"), 1);
    assert!(tree.fatal().is_none());

    // The same limit does escalate when the crashes come close together.
    world.arm("root/sup/b", Fault::Crash, 4);
    wait_until("sup to escalate", || {
        world.journal.constructions("root/sup") == 2
    })
    .await;
    tree.shutdown(STOP).await;
}

// ===== 5. temporary bystander ===================================================

#[tokio::test(start_paused = true)]
async fn conformance_a_temporary_bystander_is_not_restarted_by_a_group_restart() {
    let world = ProbeWorld::default();
    let sup = supervision(
        Strategy::OneForAll,
        10,
        Duration::from_secs(10),
        exact_backoff(100, 1000),
    );
    let children = vec![
        leaf("a"),
        leaf("t").with_restart(RestartPolicy::Temporary),
        leaf("c"),
    ];
    let tree = spawn_converged(&world, supervisor("root", sup, children), config()).await;

    world.arm("root/a", Fault::Crash, 1);
    let snap = snapshot_when(&tree, "a and c restarted, t gone, converged", |s| {
        s.converged && restarts_of(s, "root/a") == Some(1) && restarts_of(s, "root/c") == Some(1)
    })
    .await;
    assert!(snap.find("root/t").is_none(), "{}", render(&snap));
    run_ticks(&tree, 30).await;
    let snap = tree.inspect().await.unwrap();
    assert!(snap.find("root/t").is_none(), "{}", render(&snap));
    assert!(snap.converged, "{}", render(&snap));
    // t was stopped (its stop hook ran, in reverse start order after c) and
    // never constructed again.
    assert_eq!(world.journal.stopped(), ["root/c", "root/t"]);
    assert_eq!(world.journal.constructions("root/t"), 1);
    assert_eq!(world.journal.constructions("root/a"), 2);
    assert_eq!(world.journal.constructions("root/c"), 2);
    assert_eq!(tree.status().counts.nodes, 3);
    tree.shutdown(STOP).await;
}

// ===== 6. a failure during a group restart =========================================

#[tokio::test(start_paused = true)]
async fn conformance_a_child_failing_during_a_group_restart_is_restarted_with_backoff() {
    let world = ProbeWorld::default();
    let sup = supervision(
        Strategy::OneForAll,
        10,
        Duration::from_secs(10),
        exact_backoff(100, 1000),
    );
    let tree = spawn_converged(
        &world,
        supervisor("root", sup, leaves(&["a", "b", "c"])),
        config(),
    )
    .await;

    // c will fail its next two starts: the group restart after a's crash
    // and the group restart that c's own failure causes.
    world.arm("root/c", Fault::FailStart, 2);
    let t0 = Instant::now();
    world.arm("root/a", Fault::Crash, 1);
    let snap = snapshot_when(&tree, "everything to run again", |s| {
        s.converged && restarts_of(s, "root/c") == Some(3)
    })
    .await;
    // Backoff: 100 ms after a's crash, then c's own attempts 0 and 1:
    // 100 ms and 200 ms.
    assert!(t0.elapsed() >= ms(400), "{:?}", t0.elapsed());
    for path in ["root/a", "root/b", "root/c"] {
        // The first start, a's group restart, and c's two failed starts
        // each restarted the whole group.
        assert_eq!(world.journal.constructions(path), 4, "{path}");
        assert_eq!(node(&snap, path).restarts, 3, "{}", render(&snap));
        assert_eq!(node(&snap, path).state, "running");
    }
    tree.wait_converged(WAIT).await.unwrap();
    tree.shutdown(STOP).await;
}

// ===== 7. nested escalation up to the tree =======================================

#[tokio::test(start_paused = true)]
async fn conformance_nested_supervisors_escalate_level_by_level_until_the_tree_gives_up() {
    let world = ProbeWorld::default();
    let period = Duration::from_secs(60);
    let small = || supervision(Strategy::OneForOne, 1, period, exact_backoff(10, 10));
    let mut config = config();
    config.supervision = small();
    let root = parent(
        "root",
        vec![supervisor(
            "l1",
            small(),
            vec![supervisor("l2", small(), vec![leaf("leaf")])],
        )],
    );
    let tree = spawn_converged(&world, root, config).await;

    world.arm("root/l1/l2/leaf", Fault::Crash, u32::MAX);
    let fatal = tokio::time::timeout(WAIT, tree.wait_fatal())
        .await
        .expect("the tree to give up")
        .unwrap();

    // Each level tolerates one restart: every escalation needs two failures
    // from below, so the failures double at each level down.
    for (path, built) in [
        ("root", 2),
        ("root/l1", 4),
        ("root/l1/l2", 8),
        ("root/l1/l2/leaf", 16),
    ] {
        assert_eq!(world.journal.constructions(path), built, "{path}");
    }
    assert_eq!(fatal.path.as_str(), "root");
    assert_eq!(fatal.restarts, 2);
    assert_eq!(fatal.period_ms, 60_000);
    assert_eq!(fatal.runbook, RUNBOOK);
    let text = fatal.to_string();
    for needle in [
        "`root`",
        "root/l1",
        "root/l1/l2/leaf",
        "configured to crash",
        RUNBOOK,
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    // Every way of asking says the same.
    match tree.wait_converged(WAIT).await {
        Err(TreeError::Fatal(f)) => assert_eq!(f, fatal),
        other => panic!("{other:?}"),
    }
    match tree.inspect().await {
        Err(TreeError::Fatal(f)) => assert_eq!(f, fatal),
        other => panic!("{other:?}"),
    }
    assert_eq!(tree.status().fatal.as_ref(), Some(&fatal));
    // The tree no longer runs anything.
    let before = world.journal.events().len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        constructed(&world.journal.events()[before..]),
        Vec::<&str>::new()
    );
    assert_eq!(tree.live_nodes(), 0);
    tree.shutdown(STOP).await;
}

// ===== 8. counting children while they restart =====================================

#[tokio::test(start_paused = true)]
async fn conformance_a_restarting_child_is_counted_and_shown_with_its_backoff() {
    let world = ProbeWorld::default();
    let mut config = config();
    config.supervision = supervision(
        Strategy::OneForOne,
        10,
        Duration::from_secs(60),
        exact_backoff(2000, 10_000),
    );
    let tree = spawn_converged(&world, parent("root", leaves(&["a", "b"])), config).await;
    assert_eq!(tree.status().counts.nodes, 3);

    world.arm("root/b", Fault::Crash, 1);
    wait_until("b to be restarting", || {
        tree.status().counts.restarting == 1
    })
    .await;
    let failed_at = Instant::now();
    let status = tree.status();
    assert_eq!(status.counts.nodes, 3, "{status:?}");
    assert_eq!(status.counts.restarting, 1, "{status:?}");
    assert!(!status.converged, "{status:?}");

    let snap = snapshot_when(&tree, "root's circuit to open", |s| s.circuit_open).await;
    let b = node(&snap, "root/b");
    assert_eq!(b.state, "restarting", "{}", render(&snap));
    assert_eq!(b.restarts, 1);
    assert!(!b.healthy);
    let info = b.restarting.clone().expect("restarting info");
    assert_eq!(info.attempt, 0);
    let left = 2000 - u64::try_from(failed_at.elapsed().as_millis()).unwrap();
    assert!(
        info.next_try_in_ms <= left && info.next_try_in_ms + 2 >= left,
        "next try in {} ms, expected about {left} ms",
        info.next_try_in_ms
    );
    assert!(
        info.last_failure.contains("configured to crash"),
        "{info:?}"
    );
    assert!(!node(&snap, "root/a").circuit_open);

    // The wait shrinks as time passes.
    tokio::time::sleep(ms(500)).await;
    let snap = tree.inspect().await.unwrap();
    let later = node(&snap, "root/b")
        .restarting
        .clone()
        .expect("still restarting");
    assert!(
        later.next_try_in_ms + 500 <= info.next_try_in_ms + 2
            && later.next_try_in_ms + 500 + 2 >= info.next_try_in_ms,
        "{info:?} then {later:?}"
    );
    assert!(snap.circuit_open);
    assert_eq!(tree.status().counts.restarting, 1);

    // Recovery closes the circuit and clears the count.
    let snap = snapshot_when(&tree, "b to run again", |s| {
        s.converged && is_running(s, "root/b") && !s.circuit_open
    })
    .await;
    assert!(failed_at.elapsed() >= ms(2000));
    assert_eq!(node(&snap, "root/b").restarts, 1);
    assert_eq!(node(&snap, "root/b").restarting, None);
    let status = tree.status();
    assert_eq!(status.counts.restarting, 0, "{status:?}");
    assert_eq!(status.counts.nodes, 3, "{status:?}");

    // A second failure soon after uses the next attempt: 4 s.
    world.arm("root/b", Fault::Crash, 1);
    wait_until("b to be restarting again", || {
        tree.status().counts.restarting == 1
    })
    .await;
    let snap = tree.inspect().await.unwrap();
    let info = node(&snap, "root/b")
        .restarting
        .clone()
        .expect("restarting info");
    assert_eq!(info.attempt, 1);
    assert!((3990..=4000).contains(&info.next_try_in_ms), "{info:?}");
    assert_eq!(node(&snap, "root/b").restarts, 2);
    tree.shutdown(STOP).await;
}

// ===== 9. shutdown during a restart loop ==========================================

#[tokio::test(start_paused = true)]
async fn conformance_shutdown_stops_a_supervisor_stuck_in_a_restart_loop() {
    let world = ProbeWorld::default();
    let sup = supervision(
        Strategy::OneForOne,
        1_000_000,
        Duration::from_secs(10),
        exact_backoff(10, 10),
    );
    let root = parent(
        "root",
        vec![supervisor("sup", sup, leaves(&["ok1", "bad", "ok2"]))],
    );
    world.arm("root/sup/bad", Fault::FailStart, u32::MAX);
    let tree = spawn(&world, root, config()).await;
    wait_until("bad to fail to start many times", || {
        world.journal.constructions("root/sup/bad") >= 50
    })
    .await;
    let snap = snapshot_when(&tree, "ok1 and ok2 to run", |s| {
        is_running(s, "root/sup/ok1") && is_running(s, "root/sup/ok2")
    })
    .await;
    assert_eq!(tree.live_nodes(), 4, "{}", render(&snap));

    let t0 = Instant::now();
    let report = tree.shutdown(STOP).await;
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    assert!(report.all_clean(), "{report:?}");
    let order: Vec<&str> = report.stopped.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(order, ["root/sup/ok2", "root/sup/ok1", "root/sup", "root"]);

    // Nothing is started any more.
    let built = world
        .journal
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Constructed(_)))
        .count();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = world
        .journal
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Constructed(_)))
        .count();
    assert_eq!(built, after);
}

// ===== 10. start order and reverse stop order ======================================

#[tokio::test(start_paused = true)]
async fn conformance_children_start_in_declared_order_and_stop_in_reverse() {
    let world = ProbeWorld::default();
    let sup = supervision(
        Strategy::OneForAll,
        10,
        Duration::from_secs(10),
        exact_backoff(100, 1000),
    );
    let tree = spawn_converged(
        &world,
        supervisor("root", sup, leaves(&["a", "b", "c", "d"])),
        config(),
    )
    .await;
    assert_eq!(
        constructed(&world.journal.events()),
        ["root", "root/a", "root/b", "root/c", "root/d"]
    );

    // A group restart keeps the start order.
    let mark = world.journal.events().len();
    world.arm("root/c", Fault::Crash, 1);
    snapshot_when(&tree, "the group to be restarted", |s| {
        s.converged && restarts_of(s, "root/a") == Some(1)
    })
    .await;
    let events = world.journal.events().split_off(mark);
    assert_eq!(stopped(&events), ["root/d", "root/b", "root/a"]);
    assert_eq!(constructed(&events), FOUR);

    let report = tree.shutdown(STOP).await;
    assert!(report.all_clean(), "{report:?}");
    let order: Vec<&str> = report.stopped.iter().map(|r| r.path.as_str()).collect();
    let expected = ["root/d", "root/c", "root/b", "root/a", "root"];
    assert_eq!(order, expected);
    let events = world.journal.events().split_off(mark);
    assert_eq!(stopped(&events)[3..], expected);
}

#[tokio::test(start_paused = true)]
async fn conformance_a_group_restart_keeps_the_start_order_when_a_bystander_stops_slowly() {
    let world = ProbeWorld::default();
    let sup = supervision(
        Strategy::OneForAll,
        10,
        Duration::from_secs(10),
        exact_backoff(100, 1000),
    );
    let children = vec![
        leaf("a"),
        ProbeSpec::default().with_hanging_stop().named("b"),
        leaf("c"),
        leaf("d"),
    ];
    let mut config = config();
    // b's stop hook hangs: it is killed after 1 s, long after the 100 ms
    // backoff has passed.
    config.stop_hook_timeout = Duration::from_secs(1);
    let tree = spawn_converged(&world, supervisor("root", sup, children), config).await;
    let mark = world.journal.events().len();

    world.arm("root/a", Fault::Crash, 1);
    snapshot_when(&tree, "the group to be restarted", |s| {
        s.converged && restarts_of(s, "root/d") == Some(1)
    })
    .await;
    let events = world.journal.events().split_off(mark);
    // d and c stopped first; b never finished its hook (it was killed).
    assert_eq!(stopped(&events), ["root/d", "root/c"]);
    // a is restarted after its backoff; b, c and d follow in start order
    // once b has stopped, not as soon as their own stops finished.
    assert_eq!(constructed(&events), FOUR);
    tree.shutdown(STOP).await;
}

#[tokio::test(start_paused = true)]
async fn conformance_removed_subtrees_stop_in_reverse_start_order_one_at_a_time() {
    let world = ProbeWorld::default();
    let shape = |names: &[&str]| {
        parent(
            "root",
            names
                .iter()
                .map(|n| parent(n, leaves(&[&format!("{n}1"), &format!("{n}2")])))
                .collect(),
        )
    };
    let tree = spawn_converged(&world, shape(&["p", "q", "r", "s"]), config()).await;

    tree.update_root_spec(shape(&["p"])).unwrap();
    wait_until("q, r and s to stop", || world.journal.stopped().len() == 9).await;
    assert_eq!(
        world.journal.stopped(),
        [
            "root/s/s2",
            "root/s/s1",
            "root/s",
            "root/r/r2",
            "root/r/r1",
            "root/r",
            "root/q/q2",
            "root/q/q1",
            "root/q",
        ]
    );
    let snap = snapshot_when(&tree, "the rest to converge", |s| s.converged).await;
    assert_eq!(snap.len(), 4, "{}", render(&snap));
    tree.shutdown(STOP).await;
}

// ===== 11. backoff timing =======================================================

#[tokio::test(start_paused = true)]
async fn conformance_backoff_doubles_up_to_its_maximum_and_resets_after_a_stable_run() {
    let world = ProbeWorld::default();
    let mut config = config();
    // A tick every 10 ms: the measurement's slack is one tick.
    config.tick_interval = Some(ms(10));
    let reset_after = Duration::from_secs(3);
    config.supervision = supervision(
        Strategy::OneForOne,
        1000,
        Duration::from_secs(60),
        Backoff {
            base: ms(100),
            max: ms(1000),
            jitter: 0.0,
            reset_after,
        },
    );
    let tree = spawn_converged(&world, parent("root", leaves(&["a", "b"])), config).await;

    /// The time from the failure showing in the status (polled every 1 ms)
    /// to the worker being constructed again (polled every 1 ms).
    async fn measure_restart(world: &ProbeWorld, tree: &Tree) -> Duration {
        wait_until("b to be restarting", || {
            tree.status().counts.restarting == 1
        })
        .await;
        let failed = Instant::now();
        let n = world.journal.constructions("root/b");
        wait_until("b to be constructed again", || {
            world.journal.constructions("root/b") > n
        })
        .await;
        failed.elapsed()
    }
    // Slack: the failure may be seen up to one poll (1 ms) late, the
    // restart up to one tick (10 ms) late.
    let within = |measured: Duration, expected: u64| {
        measured + POLL >= ms(expected) && measured <= ms(expected + 10)
    };

    world.arm("root/b", Fault::Crash, u32::MAX);
    let mut measured = Vec::new();
    for _ in 0..6 {
        measured.push(measure_restart(&world, &tree).await);
    }
    world.heal("root/b");
    let expected = [100, 200, 400, 800, 1000, 1000];
    for (m, e) in measured.iter().zip(expected) {
        assert!(
            within(*m, e),
            "measured {measured:?}, expected {expected:?} ms"
        );
    }

    // A stable run of `reset_after` starts the backoff over.
    snapshot_when(&tree, "b to run", |s| s.converged).await;
    tokio::time::sleep(reset_after + ms(500)).await;
    world.arm("root/b", Fault::Crash, 1);
    let m = measure_restart(&world, &tree).await;
    assert!(within(m, 100), "after a stable run: {m:?}");
    tree.shutdown(STOP).await;
}

// ===== 12. failed starts =======================================================

#[tokio::test(start_paused = true)]
async fn conformance_a_failed_start_is_retried_with_backoff_and_then_runs() {
    let world = ProbeWorld::default();
    world.arm("root/a", Fault::FailStart, 3);
    let t0 = Instant::now();
    let tree = spawn_converged(&world, parent("root", leaves(&["a", "b"])), config()).await;
    // Three failed starts, 100 + 200 + 400 ms apart.
    assert!(t0.elapsed() >= ms(700), "{:?}", t0.elapsed());
    assert_eq!(world.journal.constructions("root/a"), 4);
    assert_eq!(world.journal.constructions("root/b"), 1);
    let snap = tree.inspect().await.unwrap();
    assert_eq!(node(&snap, "root/a").restarts, 3);
    assert_eq!(node(&snap, "root/a").state, "running");
    tree.shutdown(STOP).await;
}

#[tokio::test(start_paused = true)]
async fn conformance_failed_starts_count_against_the_restart_intensity() {
    let world = ProbeWorld::default();
    let sup = supervision(
        Strategy::OneForOne,
        2,
        Duration::from_secs(60),
        exact_backoff(10, 10),
    );
    world.arm("root/sup/a", Fault::FailStart, 3);
    let tree = spawn_converged(
        &world,
        parent("root", vec![supervisor("sup", sup, leaves(&["a"]))]),
        config(),
    )
    .await;
    // The third failed start exceeded sup's intensity: sup escalated, root
    // restarted it, and a's fourth start succeeded.
    assert_eq!(world.journal.constructions("root/sup"), 2);
    assert_eq!(world.journal.constructions("root/sup/a"), 4);
    let snap = tree.inspect().await.unwrap();
    assert_eq!(node(&snap, "root/sup").restarts, 1, "{}", render(&snap));
    assert_eq!(node(&snap, "root/sup/a").restarts, 0, "{}", render(&snap));
    tree.shutdown(STOP).await;
}

// ===== 13. NeedsRestart =========================================================

#[tokio::test(start_paused = true)]
async fn conformance_needs_restart_gives_a_fresh_worker_with_the_same_spec() {
    let world = ProbeWorld::default();
    let a = ProbeSpec::default()
        .with_label("v1")
        .with_children(leaves(&["a1", "a2"]))
        .named("a")
        // NeedsRestart is an abnormal exit: even a transient child restarts.
        .with_restart(RestartPolicy::Transient);
    let tree = spawn_converged(&world, parent("root", vec![a]), config()).await;
    assert_eq!(world.journal.derived_labels("root/a"), ["v1"]);

    world.arm("root/a", Fault::RequestRestart, 1);
    let snap = snapshot_when(&tree, "a to be restarted", |s| {
        s.converged && restarts_of(s, "root/a") == Some(1)
    })
    .await;
    assert_eq!(world.journal.constructions("root/a"), 2);
    assert_eq!(world.journal.derived_labels("root/a"), ["v1", "v1"]);
    assert_eq!(node(&snap, "root/a").state, "running");
    // Its children were stopped in order before it went, and came back with
    // it.
    let events = before_construction(&world.journal.events(), "root/a", 2);
    assert_eq!(stopped(&events), ["root/a/a2", "root/a/a1"]);
    assert_eq!(world.journal.constructions("root/a/a1"), 2);
    assert_eq!(world.journal.constructions("root/a/a2"), 2);
    assert_eq!(world.journal.constructions("root"), 1);
    tree.shutdown(STOP).await;
}

// ===== 14. a deep circuit breaker closes ==========================================

#[tokio::test(start_paused = true)]
async fn conformance_a_deep_circuit_breaker_closes_once_the_fault_clears() {
    let world = ProbeWorld::default();
    let mut config = config();
    config.supervision = supervision(
        Strategy::OneForOne,
        10,
        Duration::from_secs(60),
        exact_backoff(300, 300),
    );
    let root = parent(
        "root",
        vec![parent("a", vec![parent("b", leaves(&["c", "d"]))])],
    );
    let tree = spawn_converged(&world, root, config).await;

    world.arm("root/a/b/c", Fault::Crash, 3);
    let snap = snapshot_when(&tree, "b's circuit to open", |s| {
        s.find("root/a/b").is_some_and(|b| b.circuit_open)
    })
    .await;
    // Only the supervisor of the failing child opens its circuit.
    assert!(!node(&snap, "root/a").circuit_open, "{}", render(&snap));
    assert!(!snap.circuit_open, "{}", render(&snap));

    let snap = snapshot_when(&tree, "c to recover and b's circuit to close", |s| {
        s.converged && restarts_of(s, "root/a/b/c") == Some(3) && s.iter().all(|n| !n.circuit_open)
    })
    .await;
    assert!(is_running(&snap, "root/a/b/c"));
    tree.wait_converged(WAIT).await.unwrap();
    // And it stays closed.
    run_ticks(&tree, 20).await;
    let snap = tree.inspect().await.unwrap();
    assert!(
        snap.converged && snap.iter().all(|n| !n.circuit_open),
        "{}",
        render(&snap)
    );
    tree.shutdown(STOP).await;
}

// ===== 15. actions of a restarting node ============================================

#[tokio::test(start_paused = true)]
async fn conformance_the_actions_of_a_crashed_node_are_cancelled() {
    let world = ProbeWorld::default();
    let hang = ProbeSpec::default()
        .with_action(ActionMode::Hang)
        .named("h");
    let tree = spawn(&world, parent("root", vec![hang, leaf("ok")]), config()).await;
    let before = wait_for_stats(&tree, "h's start action to hang", WAIT, |s| {
        s.running == 1 && s.succeeded >= 2
    })
    .await
    .unwrap();
    assert_accounted(&before);
    assert_eq!(before.cancelled, 0);

    let t0 = Instant::now();
    world.arm("root/h", Fault::Crash, 1);
    let after = wait_for_stats(&tree, "h's action to be cancelled", WAIT, |s| {
        s.cancelled > before.cancelled
    })
    .await
    .unwrap();
    assert_accounted(&after);
    assert_eq!(after.cancelled, before.cancelled + 1, "{after:?}");
    // Cancelled, long before it could have timed out (30 s).
    assert_eq!(after.timed_out, 0, "{after:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));

    // The fresh worker tries again, with one action in flight at most.
    wait_until("h to be constructed again", || {
        world.journal.constructions("root/h") == 2
    })
    .await;
    let stats = wait_for_stats(&tree, "the new action to run", WAIT, |s| {
        s.running == 1 && s.enqueued > after.enqueued
    })
    .await
    .unwrap();
    assert_accounted(&stats);
    assert_eq!(world.journal.actions_ended("root/h", "start"), 0);
    tree.shutdown(STOP).await;
}

// ===== 16. a collector that keeps failing =========================================

#[tokio::test(start_paused = true)]
async fn conformance_a_failing_collector_restarts_its_node_and_escalates() {
    let world = ProbeWorld::default();
    let mut config = config();
    config.stale_after = Duration::from_secs(1);
    config.collector_restart_after = Duration::from_secs(2);
    // Slow restarts at root, so that sup is seen waiting.
    config.supervision = supervision(
        Strategy::OneForOne,
        10,
        Duration::from_secs(60),
        exact_backoff(1000, 1000),
    );
    let sup = supervision(
        Strategy::OneForOne,
        2,
        Duration::from_secs(60),
        exact_backoff(500, 500),
    );
    let bad = ProbeSpec::default()
        .with_collect(CollectMode::Fail)
        .named("bad");
    let root = parent("root", vec![supervisor("sup", sup, vec![bad, leaf("ok")])]);
    let t0 = Instant::now();
    let tree = spawn(&world, root, config).await;

    let snap = snapshot_when(&tree, "bad to be restarting", |s| {
        s.find("root/sup/bad")
            .is_some_and(|n| n.state == "restarting")
    })
    .await;
    assert!(t0.elapsed() >= Duration::from_secs(2), "{:?}", t0.elapsed());
    let info = node(&snap, "root/sup/bad").restarting.clone().unwrap();
    assert!(info.last_failure.contains("collector"), "{info:?}");
    assert!(info.last_failure.contains("configured to fail"), "{info:?}");

    // Its third failure exceeds sup's intensity: sup escalates to root.
    let snap = snapshot_when(&tree, "sup to be restarting", |s| {
        s.find("root/sup").is_some_and(|n| n.state == "restarting")
    })
    .await;
    let info = node(&snap, "root/sup").restarting.clone().unwrap();
    assert!(
        info.last_failure.contains("exceeded its restart intensity"),
        "{info:?}"
    );
    assert!(info.last_failure.contains("collector"), "{info:?}");
    assert!(info.last_failure.contains(RUNBOOK), "{info:?}");
    wait_until("root to restart sup", || {
        world.journal.constructions("root/sup") == 2
    })
    .await;
    let events = before_construction(&world.journal.events(), "root/sup", 2);
    assert_eq!(count(&constructed(&events), "root/sup/bad"), 3);
    // The escalation stopped sup's running child.
    assert_eq!(stopped(&events), ["root/sup/ok"]);
    tree.shutdown(STOP).await;
}
