//! `scale`: how fsmv2-rs behaves with many workers, next to the same tree
//! of bare ractor actors, in one run.
//!
//! ```sh
//! cargo run --release -p integration --bin scale -- --workers 10000 --depth 4 [--json] [--ticks 200]
//! cargo run --release -p integration --bin scale -- --workers 10000 --store /tmp/scale.store  # and what a store costs
//! ```
//!
//! # The tree
//!
//! `--workers N` nodes in `--depth D` levels with an even fan-out `f`, the
//! smallest with `1 + f + … + f^(D-1) ≥ N`; every level is full but the
//! last, which holds the rest spread evenly over the level above
//! ([`Shape`]). Every node runs the trivial [`ScaleWorker`](integration::scale::ScaleWorker):
//! its spec is nine numbers (its level, index, the shape and a change
//! generation) from which it derives its children's specs, its collect
//! returns at once, and it starts in its desired state, so it converges as
//! soon as it has an observation. No actions run while it spawns.
//!
//! # Ticks
//!
//! The trees run with `tick_interval: None`: the harness sends every root
//! tick itself, as fast as the tree processes them, so no figure is padded
//! by a timer. The top node counts a tick when *it* handles one; to know a
//! tick has reached the whole tree, every worker's state machine step (one
//! per node per tick, after the node has forwarded the tick to its
//! children) increments a shared counter, which wakes the harness when it
//! reaches `N ×` the ticks sent. The bare actors count their tick at the
//! same point with the same counter, so both sides pay the same for it.
//!
//! # Each side in a process of its own
//!
//! Every run starts this program once per side (`--phase baseline`,
//! `--phase tree`), each in a fresh process, alternating which side goes
//! first from run to run; neither side allocates among the other's freed
//! memory or runs on CPUs the other has warmed. Just before a side spawns
//! its tree, every CPU is kept busy for `--warm-cpu-ms` (a virtual CPU
//! waking from idle runs slower for a while, which would penalise whichever
//! spawn came first). Then:
//!
//! 1. **Baseline** (bare ractor): each actor `spawn_linked`s its children
//!    once started, forwards `Tick`s and counts them.
//!    `baseline_spawn_ms`: from spawning the root until all `N` actors have
//!    run their `post_start` (`baseline_spawn_cpu_ms`: the process CPU time
//!    it took): an actor's own task has run then, as a node's has once it
//!    converged. Then
//!    `--warmup` ticks, the resident memory
//!    (`baseline_rss_bytes_per_worker`: `VmRSS` now minus before spawning,
//!    over `N`), the measured ticks (`baseline_tick_cpu_us_per_worker`, as
//!    below) and the stop (`baseline_shutdown_ms`, until every actor's state
//!    is dropped).
//! 2. **fsmv2 tree**: `spawn_ms` from `Tree::spawn` until the tree status
//!    says converged with `N` nodes converged (`spawn_cpu_ms`: the process
//!    CPU time it took). The harness sends one tick, which spawns the
//!    whole tree (a parent starts its children, each of which ticks once as
//!    it starts); nodes converge on their first observation. Another tick
//!    is sent only if neither the status nor the count of workers
//!    constructed has changed for a second (`spawn_ticks` counts the ticks;
//!    1 means no waiting is included). Then `--warmup` ticks, the resident memory
//!    (`rss_bytes_per_worker`, as for the baseline, so after convergence),
//!    and the measured ticks: `tick_cpu_us_per_worker` is the process's CPU
//!    time (user + system of all threads, from `/proc/self/stat`, in clock
//!    ticks of 10 ms) over the measured ticks, per tick, over `N`. At least
//!    `--ticks` ticks are measured, more until they took `--min-cpu-ms` of
//!    CPU (`ticks_measured`), so that the 10 ms resolution costs under 1 %.
//!    Then the **change**: a new root spec gives a new generation to every
//!    `--change-every`-th deepest-level node (1 %) and to their ancestors
//!    (which pass it down); every other spec stays the same. Each changed
//!    leaf goes to `applying` (not converged) and back to `running` once its
//!    collect observes the generation, counting itself.
//!    `change_converge_ms` runs from `update_root_spec` until all of them
//!    have counted themselves *and* the tree status says converged, checked
//!    after every tick round (`change_ticks` rounds, so the figure has the
//!    granularity of a round); `change_seen_unconverged` says that the
//!    status was seen unconverged in between, and `change_nodes_updated`
//!    how many nodes derived again. Last, `shutdown_ms` for
//!    `Tree::shutdown`, whose report must list `N` nodes, all clean.
//! 3. **Actions** (in the fsmv2 side's process, after its tree has
//!    stopped): a separate tree of `--action-workers` workers (a root and
//!    its children) whose state machine issues a no-op action on every tick
//!    when none of its own is in flight, until `--actions` have been issued;
//!    tick rounds run back to back until all have run. `actions_per_sec`:
//!    actions that succeeded (from `Tree::executor_stats`) per second of
//!    wall time, with `executor.concurrency` = `--concurrency` and a queue
//!    that cannot overflow (one action per node at most is in flight).
//!
//! 4. **The store** (`--store PATH`, in the fsmv2 side's process, after
//!    its tree has stopped and before the actions): the same tree, the
//!    same run shape, on a `SqliteStore` at `PATH` (removed first, with its
//!    `-wal` and `-shm` files: a fresh file every run).
//!    `store_spawn_ms`: from `Tree::spawn` until converged, as `spawn_ms`;
//!    then the harness waits until the store has written the spawn (its
//!    backlog empty, no batch for 200 ms). The ticks are measured against
//!    a **reference** tree without a store spawned beside it in the same
//!    process: after the warm-up ticks of both, the two are ticked in
//!    [`STORE_TICK_BLOCKS`] blocks each, alternating A B B A A B B A, each
//!    block a share of `--ticks` and `--min-cpu-ms`:
//!    `store_tick_cpu_us_per_worker` with the store,
//!    `store_ref_tick_cpu_us_per_worker` without, and `store_tick_ratio`.
//!    Whichever of the two trees is spawned first ticks 4–10 % slower than
//!    the other, store or not: every other run spawns the reference first
//!    (use an even `--runs`, so that the median mixes both orders).
//!    (Compared with `tick_cpu_us_per_worker` instead, measured first in
//!    the process, the tree on the store measured 18–29 % more; the
//!    reference, measured second like it, shows much of that too, between
//!    a third and nearly all of it: that part came from the order of the
//!    run, not from the store.)
//!    `store_steady_batches` / `store_steady_changes` count what the store
//!    committed during the measured ticks, which must be 0 (a tree in
//!    which nothing changes writes nothing). Then the same 1 % change,
//!    watched by a thread of its own (the runtime's are busy ticking) that
//!    polls the store's and the workers' counters every [`WATCH_EVERY`]:
//!    from `update_root_spec`, `store_change_durable_ms` until the first
//!    batch is committed, which holds the new root spec (the store was
//!    quiet, and the tree hands the root spec to it before the top node
//!    hears of the change; a restore derives the whole desired tree from
//!    it), `store_change_derived_ms` until the last node derived its new
//!    spec, `store_change_applied_ms` until the last changed leaf applied
//!    it, `store_change_converge_ms` as `change_converge_ms`, and
//!    `store_change_commit_ms` until the last batch the change brought was
//!    committed (the nodes' documents: desired, then observed as the
//!    leaves go `applying` and back to `running`), once the tree has
//!    converged and the backlog has stayed empty for 200 ms
//!    (`store_change_batches` / `store_change_changes`: what it wrote;
//!    `store_change_batch_ms` / `store_change_batch_changes`: when each
//!    batch was committed, and the changes by then).
//!    Then the root spec goes back to the first one (so that the tree
//!    restored is the one spawned) and, after a shutdown,
//!    `store_restore_ms`: a tree spawned on the filled store (which
//!    restores it) until converged with `N` nodes, as `spawn_ms`
//!    (`store_restore_ticks` as `spawn_ticks`), next to `spawn_ms` and
//!    `store_spawn_ms`.
//!    The file is removed at the end.
//!
//! The ratios are ours over bare ractor, each run's from its two sides.
//! `--phase baseline` or `--phase tree` runs one side only (the other
//! side's fields are `null`); with `--runs 1` it runs in the process
//! itself, which is what profilers need.
//!
//! The tree configuration differs from the default only where a large tree
//! needs it: no timer, and staleness and collector-restart thresholds far
//! above any spawn time (a node ticked once while 100,000 others start must
//! not go stale before its next tick).

// A command-line tool: printing its results (stdout) and its errors
// (stderr) is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use fsm_actors::{StoreStats, Tree, TreeConfig, TreeError, TreeHandle};
use integration::scale::bare::BareTree;
use integration::scale::{
    Counter, ScaleWorld, Shape, process_cpu, resident_bytes, root_spec, scale_registry,
};
use serde::{Deserialize, Serialize};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Without progress (a status change, a worker constructed) for this long
/// while spawning, tick again. (One tick normally suffices: it spawns the
/// whole tree, and nodes converge on their first observation. A busy
/// runtime can go well over 100 ms without a status change while spawning,
/// so the stall must be long; an extra tick shows in `spawn_ticks`.)
const SPAWN_STALL: Duration = Duration::from_secs(1);

/// The tick measurement on a store alternates this many blocks of each
/// side (with the store, without), each a share of the ticks and CPU time.
const STORE_TICK_BLOCKS: u64 = 4;

/// How often the change on a store is watched.
const WATCH_EVERY: Duration = Duration::from_micros(250);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// Both sides, each in a process of its own.
    All,
    /// The bare ractor baseline only.
    Baseline,
    /// The fsmv2 tree and the actions only.
    Tree,
}

impl Phase {
    fn flag(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Baseline => "baseline",
            Self::Tree => "tree",
        }
    }
}

/// Measures a tree of trivial workers against the same tree of bare ractor
/// actors.
#[derive(Debug, Parser)]
#[command(name = "scale", version, args_override_self = true)]
struct Args {
    /// Runs; in each, every side runs in a fresh process of its own (the
    /// side that goes first alternates from run to run). Every figure is
    /// the median over the runs (ratios: the median of each run's ratio,
    /// its two sides measured back to back). A virtual machine's speed can
    /// drift by a third between runs: one run alone is a sample, not a
    /// figure.
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// Nodes in the tree.
    #[arg(long, default_value_t = 1000)]
    workers: u64,
    /// Levels of the tree (the root is one).
    #[arg(long, default_value_t = 4)]
    depth: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Root ticks measured (after the warm-up), at least; more while the
    /// CPU time they took is below --min-cpu-ms.
    #[arg(long, default_value_t = 200)]
    ticks: u64,
    /// The least CPU time, in milliseconds, a tick measurement runs for (the
    /// CPU clock has a 10 ms resolution).
    #[arg(long, default_value_t = 2000)]
    min_cpu_ms: u64,
    /// The most ticks a tick measurement runs.
    #[arg(long, default_value_t = 100_000)]
    max_ticks: u64,
    /// Root ticks sent after convergence, before measuring.
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Milliseconds every CPU is kept busy just before a side spawns its
    /// tree, so that the spawn is not measured on CPUs waking from idle
    /// (on a virtual machine that alone can add half). 0: no warm-up.
    #[arg(long, default_value_t = 1000)]
    warm_cpu_ms: u64,
    /// The change touches every this many deepest-level nodes (100: 1 %).
    #[arg(long, default_value_t = 100)]
    change_every: u32,
    /// Workers of the action tree.
    #[arg(long, default_value_t = 1000)]
    action_workers: u64,
    /// No-op actions to run through the executor.
    #[arg(long, default_value_t = 200_000)]
    actions: u64,
    /// The executor's concurrency in the action tree.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Which side to run.
    #[arg(long, value_enum, default_value_t = Phase::All)]
    phase: Phase,
    /// The longest any single wait may take, in seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// Record the tree's metrics on an OpenTelemetry SDK meter provider
    /// (exported to memory once a minute), as a deployment that exports
    /// metrics does; without it they go to the global no-op provider.
    #[arg(long)]
    metrics: bool,
    /// Run the fsmv2 tree a second time on a SQLite store at PATH (a fresh
    /// file each run: an existing one is removed) and report what the
    /// store costs (see "The store" above).
    #[arg(long, value_name = "PATH")]
    store: Option<std::path::PathBuf>,
    /// With `--store`, spawn the reference tree before the one on the
    /// store (set on every other run: whichever tree of a process is
    /// spawned first ticks slower, 4–10 % here).
    #[arg(long, hide = true)]
    store_reference_first: bool,
}

/// The JSON object printed under `--json`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Report {
    /// How many runs the figures are the median of.
    runs: u32,
    /// How each run was made.
    method: String,
    workers: u64,
    depth: u32,
    fanout: u64,
    level_sizes: Vec<u64>,
    cpus: usize,
    warmup_ticks: u64,
    tick_method: String,
    cpu_clock: String,

    spawn_ms: Option<f64>,
    /// Process CPU time during the spawn (10 ms resolution).
    spawn_cpu_ms: Option<f64>,
    spawn_ticks: Option<u64>,
    ticks_measured: Option<u64>,
    tick_cpu_us_per_worker: Option<f64>,
    tick_wall_ms: Option<f64>,
    change_converge_ms: Option<f64>,
    change_leaves: Option<u64>,
    change_nodes_updated: Option<u64>,
    change_ticks: Option<u64>,
    change_seen_unconverged: Option<bool>,
    shutdown_ms: Option<f64>,
    rss_bytes_per_worker: Option<f64>,
    actions_per_sec: Option<f64>,
    action_workers: Option<u64>,
    action_concurrency: Option<usize>,
    actions_succeeded: Option<u64>,
    actions_rejected: Option<u64>,

    store_spawn_ms: Option<f64>,
    store_tick_cpu_us_per_worker: Option<f64>,
    store_ticks_measured: Option<u64>,
    /// The same tree without a store, in the same process, ticked in
    /// blocks alternating with the one on the store.
    store_ref_tick_cpu_us_per_worker: Option<f64>,
    store_ref_ticks_measured: Option<u64>,
    /// `store_tick_cpu_us_per_worker` over `store_ref_tick_cpu_us_per_worker`.
    store_tick_ratio: Option<f64>,
    store_steady_batches: Option<u64>,
    store_steady_changes: Option<u64>,
    store_change_converge_ms: Option<f64>,
    /// Until the new root spec was committed.
    store_change_durable_ms: Option<f64>,
    /// Until the last batch the change brought was committed.
    store_change_commit_ms: Option<f64>,
    /// Until the last node derived its new spec.
    store_change_derived_ms: Option<f64>,
    /// Until the last changed leaf applied its generation.
    store_change_applied_ms: Option<f64>,
    /// When each batch the change brought was committed.
    store_change_batch_ms: Option<Vec<f64>>,
    /// The changes committed by then.
    store_change_batch_changes: Option<Vec<u64>>,
    store_change_batches: Option<u64>,
    store_change_changes: Option<u64>,
    store_restore_ms: Option<f64>,
    store_restore_ticks: Option<u64>,

    baseline_spawn_ms: Option<f64>,
    baseline_spawn_cpu_ms: Option<f64>,
    baseline_ticks_measured: Option<u64>,
    baseline_tick_cpu_us_per_worker: Option<f64>,
    baseline_tick_wall_ms: Option<f64>,
    baseline_rss_bytes_per_worker: Option<f64>,
    baseline_shutdown_ms: Option<f64>,

    spawn_ratio: Option<f64>,
    tick_ratio: Option<f64>,
    rss_ratio: Option<f64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match scale(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale: {e}");
            ExitCode::FAILURE
        }
    }
}

fn scale(args: &Args) -> Res<()> {
    let shape = Shape::new(args.workers, args.depth)?;
    if args.ticks == 0 {
        return Err("--ticks must be at least 1".into());
    }
    let report = match (args.runs, args.phase) {
        (0, _) => return Err("--runs must be at least 1".into()),
        // One side, once: in this process.
        (1, Phase::Baseline | Phase::Tree) => measure(args, &shape)?,
        (runs, phase) => median_of_runs(runs, phase, args.warm_cpu_ms)?,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// Runs this program `runs` times per side with `--runs 1 --json --phase
/// <side>`, each time in a fresh process (so that no side inherits the
/// other's heap or runs on CPUs the other has warmed), merges each run's
/// two sides into one report with its ratios, and takes the median of every
/// figure. The side that goes first alternates, so that a drift of the
/// machine's speed does not always favour the same side.
fn median_of_runs(runs: u32, phase: Phase, warm_cpu_ms: u64) -> Res<Report> {
    let exe = std::env::current_exe()?;
    let mut reports = Vec::new();
    for run in 1..=runs {
        let sides: &[Phase] = match phase {
            Phase::All if run % 2 == 1 => &[Phase::Baseline, Phase::Tree],
            Phase::All => &[Phase::Tree, Phase::Baseline],
            Phase::Baseline => &[Phase::Baseline],
            Phase::Tree => &[Phase::Tree],
        };
        let mut merged = serde_json::Value::Null;
        for side in sides {
            eprintln!("scale: run {run} of {runs}, {}", side.flag());
            let mut command = std::process::Command::new(&exe);
            command.args(std::env::args_os().skip(1)).args([
                "--runs",
                "1",
                "--json",
                "--phase",
                side.flag(),
            ]);
            if run % 2 == 0 {
                command.arg("--store-reference-first");
            }
            let out = command.stderr(std::process::Stdio::inherit()).output()?;
            if !out.status.success() {
                return Err(format!(
                    "run {run} of {runs} ({}) failed ({})",
                    side.flag(),
                    out.status
                )
                .into());
            }
            merge_side(
                &mut merged,
                serde_json::from_slice::<serde_json::Value>(&out.stdout)?,
            );
        }
        let mut report: Report = serde_json::from_value(merged)?;
        report.set_ratios();
        reports.push(serde_json::to_value(report)?);
    }
    let mut median = median_fields(&reports);
    if let Some(fields) = median.as_object_mut() {
        fields.insert("runs".to_owned(), runs.into());
        fields.insert("method".to_owned(), method(phase, warm_cpu_ms).into());
    }
    Ok(serde_json::from_value(median)?)
}

/// How the figures were taken, for the report.
fn method(phase: Phase, warm_cpu_ms: u64) -> String {
    let sides = match phase {
        Phase::All => "each side in a fresh process of its own, alternating which goes first",
        Phase::Baseline | Phase::Tree => "one side, in a fresh process",
    };
    if warm_cpu_ms == 0 {
        format!("{sides}; CPUs not warmed")
    } else {
        format!("{sides}; CPUs kept busy for {warm_cpu_ms} ms before each spawn")
    }
}

/// One side's report into a run's: its figures fill what the other side
/// left empty (`null`).
fn merge_side(run: &mut serde_json::Value, side: serde_json::Value) {
    use serde_json::Value;
    match (run, side) {
        (Value::Object(run), Value::Object(side)) => {
            for (key, value) in side {
                match run.get_mut(&key) {
                    Some(slot) if slot.is_null() => *slot = value,
                    Some(_) => {}
                    None => {
                        run.insert(key, value);
                    }
                }
            }
        }
        (run, side) => *run = side,
    }
}

/// Field by field: the median of numbers present in every run (the lower
/// of the middle two for an even count, so that counts stay whole), the
/// conjunction of booleans, and anything else from the first run.
fn median_fields(reports: &[serde_json::Value]) -> serde_json::Value {
    use serde_json::Value;
    let Some(Value::Object(first)) = reports.first() else {
        return Value::Null;
    };
    let mut out = first.clone();
    for (key, value) in &mut out {
        let all: Vec<&Value> = reports.iter().filter_map(|r| r.get(key)).collect();
        if all.len() != reports.len() {
            continue;
        }
        if all.iter().all(|v| v.is_number()) {
            let mut numbers: Vec<&Value> = all;
            numbers.sort_by(|a, b| {
                let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
                a.total_cmp(&b)
            });
            *value = numbers[(numbers.len() - 1) / 2].clone();
        } else if all.iter().all(|v| v.is_boolean()) {
            *value = Value::Bool(all.iter().all(|v| v.as_bool() == Some(true)));
        }
    }
    Value::Object(out)
}

/// One run, in this process.
fn measure(args: &Args, shape: &Shape) -> Res<Report> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus)
        .enable_all()
        .build()?;
    let mut report = Report {
        runs: 1,
        method: method(args.phase, args.warm_cpu_ms),
        workers: shape.workers(),
        depth: shape.depth(),
        fanout: shape.fanout(),
        level_sizes: shape.level_sizes().to_vec(),
        cpus,
        warmup_ticks: args.warmup,
        tick_method: "manual: tree.tick() (tick_interval None), the next only once every node has stepped on the previous one".to_owned(),
        cpu_clock: "/proc/self/stat utime+stime, USER_HZ=100".to_owned(),
        ..Report::default()
    };
    runtime.block_on(run(args, shape, &mut report))?;
    Ok(report)
}

impl Report {
    /// The ratios, ours over bare ractor, where both sides are present.
    fn set_ratios(&mut self) {
        self.spawn_ratio = ratio(self.spawn_ms, self.baseline_spawn_ms);
        self.tick_ratio = ratio(
            self.tick_cpu_us_per_worker,
            self.baseline_tick_cpu_us_per_worker,
        );
        self.rss_ratio = ratio(
            self.rss_bytes_per_worker,
            self.baseline_rss_bytes_per_worker,
        );
    }
}

/// Keeps every CPU busy for `ms` milliseconds. A virtual CPU that has been
/// idle runs slower for a while (the host has descheduled or clocked it
/// down): without this, whichever side spawns first in a process would be
/// measured on cold CPUs.
fn warm_cpus(ms: u64, cpus: usize) {
    let until = Instant::now() + Duration::from_millis(ms);
    std::thread::scope(|scope| {
        for _ in 0..cpus {
            scope.spawn(|| {
                let mut spins = 0_u64;
                while Instant::now() < until {
                    spins = std::hint::black_box(spins.wrapping_add(1));
                }
            });
        }
    });
}

/// One side, in this process.
async fn run(args: &Args, shape: &Shape, report: &mut Report) -> Res<()> {
    let timeout = Duration::from_secs(args.timeout_secs);
    match args.phase {
        Phase::Baseline => baseline(args, shape, report, timeout).await,
        Phase::Tree => {
            // Kept for the side's whole run: dropping it stops the metrics.
            let _provider = args.metrics.then(|| {
                let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
                    .with_reader(
                        opentelemetry_sdk::metrics::PeriodicReader::builder(
                            opentelemetry_sdk::metrics::InMemoryMetricExporter::default(),
                        )
                        .build(),
                    )
                    .build();
                opentelemetry::global::set_meter_provider(provider.clone());
                provider
            });
            ours(args, shape, report, timeout).await?;
            if let Some(path) = &args.store {
                stored(args, shape, report, timeout, path).await?;
            }
            actions(args, report, timeout).await
        }
        Phase::All => Err("both sides run in processes of their own".into()),
    }
}

/// The baseline: the same tree as bare ractor actors.
async fn baseline(args: &Args, shape: &Shape, report: &mut Report, timeout: Duration) -> Res<()> {
    let n = shape.workers();
    let rss0 = resident_bytes()?;
    warm_cpus(args.warm_cpu_ms, report.cpus);
    let cpu0 = process_cpu()?;
    let started = Instant::now();
    let bare = BareTree::spawn(shape).await?;
    within(
        "the bare actors to start",
        timeout,
        bare.world().started.wait_for(n),
    )
    .await?;
    report.baseline_spawn_ms = Some(ms(started.elapsed()));
    report.baseline_spawn_cpu_ms = Some((process_cpu()? - cpu0) * 1e3);

    let world = Arc::clone(bare.world());
    let mut rounds = TickRounds::new(&world.ticks, n);
    for _ in 0..args.warmup {
        bare.tick()?;
        rounds.next(timeout).await?;
    }
    let rss1 = resident_bytes()?;
    report.baseline_rss_bytes_per_worker = Some(per(signed(rss1) - signed(rss0), n));

    let mut clock = Clock::start()?;
    while let Some(more) = clock.more_ticks(args)? {
        for _ in 0..more {
            bare.tick()?;
            rounds.next(timeout).await?;
        }
    }
    let (cpu, wall, ticks) = clock.stop()?;
    report.baseline_ticks_measured = Some(ticks);
    report.baseline_tick_cpu_us_per_worker = Some(cpu * 1e6 / per_tick(ticks, n));
    report.baseline_tick_wall_ms = Some(wall * 1e3 / as_f64(ticks));

    let started = Instant::now();
    bare.stop(timeout).await?;
    within("the bare actors' states to be dropped", timeout, async {
        while world.alive.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await?;
    report.baseline_shutdown_ms = Some(ms(started.elapsed()));
    Ok(())
}

/// The fsmv2 tree.
async fn ours(args: &Args, shape: &Shape, report: &mut Report, timeout: Duration) -> Res<()> {
    let n = shape.workers();
    let world = Arc::new(ScaleWorld::new(shape.clone(), args.change_every, false)?);
    let rss0 = resident_bytes()?;
    warm_cpus(args.warm_cpu_ms, report.cpus);

    let cpu0 = process_cpu()?;
    let started = Instant::now();
    let tree = Tree::spawn(root_spec(0), scale_registry(&world)?, config(args, n)).await?;
    let spawn_ticks = converge(&tree, &world, n, timeout).await?;
    report.spawn_ms = Some(ms(started.elapsed()));
    report.spawn_cpu_ms = Some((process_cpu()? - cpu0) * 1e3);
    report.spawn_ticks = Some(spawn_ticks);

    let mut rounds = TickRounds::new(&world.ticks, n);
    for _ in 0..args.warmup {
        tree.tick()?;
        rounds.next(timeout).await?;
    }
    let rss1 = resident_bytes()?;
    report.rss_bytes_per_worker = Some(per(signed(rss1) - signed(rss0), n));
    // Ticks sent while spawning may still be finishing on some nodes: let
    // them, then count from here.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut rounds = TickRounds::new(&world.ticks, n);

    let mut clock = Clock::start()?;
    while let Some(more) = clock.more_ticks(args)? {
        for _ in 0..more {
            tree.tick()?;
            rounds.next(timeout).await?;
        }
    }
    let (cpu, wall, ticks) = clock.stop()?;
    report.ticks_measured = Some(ticks);
    report.tick_cpu_us_per_worker = Some(cpu * 1e6 / per_tick(ticks, n));
    report.tick_wall_ms = Some(wall * 1e3 / as_f64(ticks));

    // The change.
    let expected = shape.selected_leaves(u64::from(args.change_every));
    let applied0 = world.applied.load(Ordering::Relaxed);
    let derived0 = world.derived.load(Ordering::Relaxed);
    let mut seen_unconverged = false;
    let mut change_ticks = 0;
    let started = Instant::now();
    tree.update_root_spec(root_spec(1))?;
    loop {
        tree.tick()?;
        rounds.next(timeout).await?;
        change_ticks += 1;
        let status = tree.status();
        let applied = world.applied.load(Ordering::Relaxed) - applied0;
        let all_converged = status.converged && status.counts.all_converged();
        if !all_converged {
            seen_unconverged = true;
        }
        if applied >= expected && all_converged && status.counts.nodes == n {
            break;
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "the change did not converge within {timeout:?}: {applied} of {expected} leaves applied it; {status:?}"
            )
            .into());
        }
    }
    report.change_converge_ms = Some(ms(started.elapsed()));
    report.change_leaves = Some(expected);
    report.change_ticks = Some(change_ticks);
    report.change_seen_unconverged = Some(seen_unconverged);
    report.change_nodes_updated = Some(world.derived.load(Ordering::Relaxed) - derived0);

    let started = Instant::now();
    let stopped = tree.shutdown(timeout).await;
    report.shutdown_ms = Some(ms(started.elapsed()));
    let records = u64::try_from(stopped.stopped.len())?;
    if records != n {
        return Err(format!("the shutdown report lists {records} nodes, not {n}").into());
    }
    if !stopped.all_clean() {
        return Err(format!(
            "{} nodes were killed during the shutdown",
            stopped.forced().count()
        )
        .into());
    }
    Ok(())
}

/// The fsmv2 tree again, the same run shape, on a SQLite store at `path`
/// (a fresh file): what the store costs while spawning, ticking and
/// changing, and how long a restore takes.
async fn stored(
    args: &Args,
    shape: &Shape,
    report: &mut Report,
    timeout: Duration,
    path: &std::path::Path,
) -> Res<()> {
    let n = shape.workers();
    remove_store(path)?;
    let world = Arc::new(ScaleWorld::new(shape.clone(), args.change_every, false)?);
    let store_config = || -> Res<TreeConfig> {
        Ok(config(args, n).with_store(fsm_actors::store::SqliteStore::open(path)?))
    };
    // The reference: the same tree without a store, spawned beside it in
    // this process. The two are ticked in alternating blocks, so that both
    // are measured on the same heap, caches and machine speed; which is
    // spawned first alternates between runs, since the first ticks slower.
    let ref_world = Arc::new(ScaleWorld::new(shape.clone(), args.change_every, false)?);
    let spawn_reference = || async {
        let reference =
            Tree::spawn(root_spec(0), scale_registry(&ref_world)?, config(args, n)).await?;
        converge(&reference, &ref_world, n, timeout).await?;
        Res::Ok(reference)
    };
    let early = match args.store_reference_first {
        true => Some(spawn_reference().await?),
        false => None,
    };
    warm_cpus(args.warm_cpu_ms, report.cpus);
    let started = Instant::now();
    let tree = Tree::spawn(root_spec(0), scale_registry(&world)?, store_config()?).await?;
    converge(&tree, &world, n, timeout).await?;
    report.store_spawn_ms = Some(ms(started.elapsed()));
    let handle = tree.handle();
    store_quiet(&handle, timeout).await?;
    let reference = match early {
        Some(reference) => reference,
        None => spawn_reference().await?,
    };
    let mut rounds = TickRounds::new(&world.ticks, n);
    let mut ref_rounds = TickRounds::new(&ref_world.ticks, n);
    for _ in 0..args.warmup {
        tree.tick()?;
        rounds.next(timeout).await?;
        reference.tick()?;
        ref_rounds.next(timeout).await?;
    }
    // Let the warm-up's ticks finish everywhere, and their writes (none
    // are expected), then count from here.
    store_quiet(&handle, timeout).await?;
    let mut rounds = TickRounds::new(&world.ticks, n);
    let mut ref_rounds = TickRounds::new(&ref_world.ticks, n);
    let before = store_stats(&handle)?;
    // (CPU seconds, ticks) of each side.
    let mut with = (0.0, 0);
    let mut without = (0.0, 0);
    for block in 0..2 * STORE_TICK_BLOCKS {
        // A B B A A B B A: each side goes first as often as the other.
        let (t, r, sum) = if matches!(block % 4, 0 | 3) {
            (&tree, &mut rounds, &mut with)
        } else {
            (&reference, &mut ref_rounds, &mut without)
        };
        let mut clock = Clock::start()?;
        while let Some(more) = clock.more_ticks_within(
            args.ticks.div_ceil(STORE_TICK_BLOCKS),
            args.min_cpu_ms.div_ceil(STORE_TICK_BLOCKS),
            args.max_ticks,
        )? {
            for _ in 0..more {
                t.tick()?;
                r.next(timeout).await?;
            }
        }
        let (cpu, _, ticks) = clock.stop()?;
        sum.0 += cpu;
        sum.1 += ticks;
    }
    let after = store_stats(&handle)?;
    let stopped = reference.shutdown(timeout).await;
    if !stopped.all_clean() {
        return Err("the reference tree did not stop cleanly".into());
    }
    report.store_ticks_measured = Some(with.1);
    report.store_tick_cpu_us_per_worker = Some(with.0 * 1e6 / per_tick(with.1, n));
    report.store_ref_ticks_measured = Some(without.1);
    report.store_ref_tick_cpu_us_per_worker = Some(without.0 * 1e6 / per_tick(without.1, n));
    report.store_tick_ratio = ratio(
        report.store_tick_cpu_us_per_worker,
        report.store_ref_tick_cpu_us_per_worker,
    );
    report.store_steady_batches = Some(after.batches - before.batches);
    report.store_steady_changes = Some(after.changes - before.changes);

    // The change, and when the store has committed it. A thread of its own
    // watches the store's counters and the workers' (the runtime's threads
    // are busy with the tree's ticks).
    let expected = shape.selected_leaves(u64::from(args.change_every));
    let applied0 = world.applied.load(Ordering::Relaxed);
    let done = Arc::new(AtomicBool::new(false));
    let watcher = ChangeWatcher::start(&handle, &world, applied0 + expected, &done)?;
    let started = Instant::now();
    tree.update_root_spec(root_spec(1))?;
    apply_change(&tree, &world, &mut rounds, applied0 + expected, timeout).await?;
    report.store_change_converge_ms = Some(ms(started.elapsed()));
    store_quiet(&handle, timeout).await?;
    done.store(true, Ordering::Relaxed);
    let seen = watcher
        .join()
        .map_err(|_| "the thread watching the store panicked")?;
    let since = |at: Option<Instant>| at.map(|at| ms(at.saturating_duration_since(started)));
    // The first batch after the change holds the new root spec: the store
    // was quiet, and the tree hands the root spec to it before the top
    // node hears of the change.
    report.store_change_durable_ms = since(seen.batches.first().map(|b| b.0));
    report.store_change_commit_ms = since(seen.batches.last().map(|b| b.0));
    report.store_change_derived_ms = since(seen.derived);
    report.store_change_applied_ms = since(seen.applied);
    report.store_change_batch_ms = Some(
        seen.batches
            .iter()
            .map(|(at, _)| ms(at.saturating_duration_since(started)))
            .collect(),
    );
    report.store_change_batch_changes = Some(
        seen.batches
            .iter()
            .map(|(_, c)| c - after.changes)
            .collect(),
    );
    let changed = store_stats(&handle)?;
    report.store_change_batches = Some(changed.batches - after.batches);
    report.store_change_changes = Some(changed.changes - after.changes);
    // Back to the first root spec, so that the restore below spawns the
    // same tree as the spawns it is compared with.
    let applied1 = world.applied.load(Ordering::Relaxed);
    tree.update_root_spec(root_spec(0))?;
    apply_change(&tree, &world, &mut rounds, applied1 + expected, timeout).await?;
    store_quiet(&handle, timeout).await?;
    let stopped = tree.shutdown(timeout).await;
    if !stopped.all_clean() {
        return Err("the tree on the store did not stop cleanly".into());
    }

    // The restore: a tree spawned on the filled store, until converged.
    let world = Arc::new(ScaleWorld::new(shape.clone(), args.change_every, false)?);
    warm_cpus(args.warm_cpu_ms, report.cpus);
    let started = Instant::now();
    let tree = Tree::spawn(root_spec(0), scale_registry(&world)?, store_config()?).await?;
    report.store_restore_ticks = Some(converge(&tree, &world, n, timeout).await?);
    report.store_restore_ms = Some(ms(started.elapsed()));
    let restored = tree.restored().map_or(0, |r| r.nodes);
    let _ = tree.shutdown(timeout).await;
    remove_store(path)?;
    // Every node but the top one (which has no records of its own).
    if restored + 1 < n {
        return Err(format!("the restore found {restored} nodes, not the {n} stored").into());
    }
    Ok(())
}

/// Sends tick rounds until the world has counted `applied` leaves that
/// applied their generation and the tree status says converged.
async fn apply_change(
    tree: &Tree,
    world: &ScaleWorld,
    rounds: &mut TickRounds<'_>,
    applied: u64,
    timeout: Duration,
) -> Res<()> {
    let n = world.shape.workers();
    let started = Instant::now();
    loop {
        tree.tick()?;
        rounds.next(timeout).await?;
        let status = tree.status();
        if world.applied.load(Ordering::Relaxed) >= applied
            && status.converged
            && status.counts.all_converged()
            && status.counts.nodes == n
        {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "the change did not converge on the store within {timeout:?}: {} of {applied} leaves applied; {status:?}",
                world.applied.load(Ordering::Relaxed)
            )
            .into());
        }
    }
}

/// Removes a store file and its `-wal` and `-shm` companions, if any.
fn remove_store(path: &std::path::Path) -> Res<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {}: {e}", path.display()).into()),
        }
    }
    Ok(())
}

fn store_stats(tree: &TreeHandle) -> Res<StoreStats> {
    tree.store_stats()
        .ok_or_else(|| "the tree has no store".into())
}

/// Waits until the store's backlog is empty and no batch was committed for
/// 200 ms.
async fn store_quiet(tree: &TreeHandle, timeout: Duration) -> Res<()> {
    let started = Instant::now();
    let mut last = store_stats(tree)?.batches;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let stats = store_stats(tree)?;
        if let Some(e) = &stats.last_error {
            return Err(format!("the store fails: {e}").into());
        }
        if stats.batches != last || stats.backlog > 0 {
            last = stats.batches;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_millis(200) {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(format!("the store did not go quiet within {timeout:?}: {stats:?}").into());
        }
    }
}

/// What [`ChangeWatcher`] saw while a change was applied.
#[derive(Default)]
struct ChangeSeen {
    /// When the store's committed batch count grew, with the count of
    /// changes committed so far.
    batches: Vec<(Instant, u64)>,
    /// When the count of derivations last grew (the last node that derived
    /// its new spec).
    derived: Option<Instant>,
    /// When the last changed leaf applied its generation.
    applied: Option<Instant>,
}

/// A thread that polls, every [`WATCH_EVERY`] until told to stop, the
/// store's counters and the workers' while a change is applied.
struct ChangeWatcher;

impl ChangeWatcher {
    fn start(
        tree: &TreeHandle,
        world: &Arc<ScaleWorld>,
        applied: u64,
        done: &Arc<AtomicBool>,
    ) -> Res<std::thread::JoinHandle<ChangeSeen>> {
        let (tree, world, done) = (tree.clone(), Arc::clone(world), Arc::clone(done));
        // Read before the change.
        let mut batches = store_stats(&tree)?.batches;
        let mut derived = world.derived.load(Ordering::Relaxed);
        Ok(std::thread::spawn(move || {
            let mut seen = ChangeSeen::default();
            while !done.load(Ordering::Relaxed) {
                let now = Instant::now();
                if let Some(stats) = tree.store_stats()
                    && stats.batches != batches
                {
                    batches = stats.batches;
                    seen.batches.push((now, stats.changes));
                }
                let d = world.derived.load(Ordering::Relaxed);
                if d != derived {
                    derived = d;
                    seen.derived = Some(now);
                }
                if seen.applied.is_none() && world.applied.load(Ordering::Relaxed) >= applied {
                    seen.applied = Some(now);
                }
                std::thread::sleep(WATCH_EVERY);
            }
            seen
        }))
    }
}

/// No-op actions through the executor, after the fsmv2 tree.
async fn actions(args: &Args, report: &mut Report, timeout: Duration) -> Res<()> {
    let shape = Shape::new(args.action_workers.max(2), 2)?;
    let n = shape.workers();
    let world = Arc::new(ScaleWorld::new(shape, 1, true)?);
    let mut config = config(args, n);
    config.executor.concurrency = args.concurrency;
    // One action per node at most is in flight: the queue never overflows.
    config.executor.queue_capacity = usize::try_from(n)? + 16;
    let tree = Tree::spawn(root_spec(0), scale_registry(&world)?, config).await?;
    converge(&tree, &world, n, timeout).await?;
    let mut rounds = TickRounds::new(&world.ticks, n);
    let stats0 = tree.executor_stats().await?;
    world.action_budget.store(args.actions, Ordering::Relaxed);
    let started = Instant::now();
    while world.actions_done.load(Ordering::Relaxed) < args.actions {
        tree.tick()?;
        rounds.next(timeout).await?;
        if started.elapsed() > timeout {
            return Err(format!(
                "only {} of {} actions ran within {timeout:?}",
                world.actions_done.load(Ordering::Relaxed),
                args.actions
            )
            .into());
        }
    }
    let elapsed = started.elapsed();
    let stats = tree.executor_stats().await?;
    let succeeded = stats.succeeded - stats0.succeeded;
    report.actions_per_sec = Some(as_f64(succeeded) / elapsed.as_secs_f64());
    report.action_workers = Some(n);
    report.action_concurrency = Some(args.concurrency);
    report.actions_succeeded = Some(succeeded);
    report.actions_rejected = Some(stats.rejected - stats0.rejected);
    let stopped = tree.shutdown(timeout).await;
    if u64::try_from(stopped.stopped.len())? != n {
        return Err("the action tree did not stop completely".into());
    }
    Ok(())
}

/// The harness's tree configuration: no timer, and observation thresholds
/// far above any spawn time, so that a slow spawn of a large tree never
/// marks early nodes stale or restarts their collectors.
fn config(args: &Args, n: u64) -> TreeConfig {
    let mut config = TreeConfig::default();
    config.tick_interval = None;
    config.stale_after = Duration::from_secs(args.timeout_secs.max(60) * 2);
    config.collector_restart_after = config.stale_after * 2;
    config.stop_timeout = Duration::from_secs(args.timeout_secs);
    config.inspect_timeout = Duration::from_secs(args.timeout_secs);
    config.executor.queue_capacity = usize::try_from(n)
        .unwrap_or(usize::MAX)
        .max(config.executor.queue_capacity);
    config
}

/// Ticks the tree until its status says converged with `n` nodes: one tick
/// spawns the whole tree, level by level; another is sent only when neither
/// the status nor the count of workers constructed (`world`) has changed
/// for [`SPAWN_STALL`]. (While 100,000 nodes start, the status can go
/// unread for a second behind the queued actors; workers still being
/// constructed is progress all the same.) Returns the ticks sent.
async fn converge(tree: &Tree, world: &ScaleWorld, n: u64, timeout: Duration) -> Res<u64> {
    let started = Instant::now();
    tree.tick()?;
    let mut ticks = 1;
    let mut last = tree.status();
    let mut last_constructed = world.constructed.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    loop {
        // Returns as soon as the status says converged; the timeout only
        // paces the stall check.
        match tree.wait_converged(Duration::from_millis(100)).await {
            Ok(()) => {
                let status = tree.status();
                if status.counts.nodes == n && status.counts.all_converged() {
                    return Ok(ticks);
                }
            }
            Err(TreeError::NotConverged { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let status = tree.status();
        let constructed = world.constructed.load(Ordering::Relaxed);
        if status != last || constructed != last_constructed {
            last = status;
            last_constructed = constructed;
            last_change = Instant::now();
        } else if last_change.elapsed() >= SPAWN_STALL {
            tree.tick()?;
            ticks += 1;
            last_change = Instant::now();
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "the tree did not converge within {timeout:?} ({ticks} ticks sent): {:?}",
                tree.status()
            )
            .into());
        }
    }
}

/// Waits for tick rounds: the `k`-th call returns once `counter` has counted
/// `n × k` more steps than when the rounds began.
struct TickRounds<'a> {
    counter: &'a Counter,
    base: u64,
    n: u64,
    rounds: u64,
}

impl<'a> TickRounds<'a> {
    fn new(counter: &'a Counter, n: u64) -> Self {
        Self {
            counter,
            base: counter.get(),
            n,
            rounds: 0,
        }
    }

    async fn next(&mut self, timeout: Duration) -> Res<()> {
        self.rounds += 1;
        let target = self.base + self.n * self.rounds;
        within(
            "a tick to reach every node",
            timeout,
            self.counter.wait_for(target),
        )
        .await
        .map_err(|e| {
            format!(
                "{e} (round {}, {} of {target} steps)",
                self.rounds,
                self.counter.get()
            )
            .into()
        })
    }
}

/// The process's CPU time and the wall time over a run of ticks.
struct Clock {
    cpu: f64,
    wall: Instant,
    ticks: u64,
}

impl Clock {
    fn start() -> Res<Self> {
        Ok(Self {
            cpu: process_cpu()?,
            wall: Instant::now(),
            ticks: 0,
        })
    }

    /// How many more ticks to run: `--ticks` first, then, while the CPU time
    /// is below `--min-cpu-ms`, as many as the rate so far says it takes
    /// (plus a fifth). Reads `/proc` once per call, not once per tick.
    fn more_ticks(&mut self, args: &Args) -> Res<Option<u64>> {
        self.more_ticks_within(args.ticks, args.min_cpu_ms, args.max_ticks)
    }

    /// As [`more_ticks`](Self::more_ticks), with `ticks` at least and
    /// `min_cpu_ms` of CPU time (`max_ticks` at most).
    fn more_ticks_within(
        &mut self,
        ticks: u64,
        min_cpu_ms: u64,
        max_ticks: u64,
    ) -> Res<Option<u64>> {
        let more = if self.ticks == 0 {
            ticks.max(1)
        } else {
            let cpu = process_cpu()? - self.cpu;
            let min = as_f64(min_cpu_ms) / 1e3;
            if cpu >= min || self.ticks >= max_ticks {
                return Ok(None);
            }
            // 10 ms clock: with no tick counted yet, double.
            let per_tick = cpu / as_f64(self.ticks);
            let wanted = if per_tick > 0.0 {
                ((min - cpu) / per_tick * 1.2).ceil()
            } else {
                as_f64(self.ticks)
            };
            to_u64(wanted).clamp(1, max_ticks - self.ticks)
        };
        self.ticks += more;
        Ok(Some(more))
    }

    /// CPU seconds, wall seconds and ticks since the start.
    fn stop(self) -> Res<(f64, f64, u64)> {
        let wall = self.wall.elapsed().as_secs_f64();
        Ok((process_cpu()? - self.cpu, wall, self.ticks))
    }
}

async fn within<T>(what: &str, timeout: Duration, fut: impl Future<Output = T>) -> Res<T> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("timed out after {timeout:?} waiting for {what}").into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[allow(clippy::cast_precision_loss)] // counts stay far below 2^52
fn as_f64(v: u64) -> f64 {
    v as f64
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a positive, rounded tick count
fn to_u64(v: f64) -> u64 {
    v as u64
}

fn signed(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[allow(clippy::cast_precision_loss)] // byte counts stay far below 2^52
fn per(bytes: i64, n: u64) -> f64 {
    bytes as f64 / as_f64(n)
}

fn per_tick(ticks: u64, n: u64) -> f64 {
    as_f64(ticks) * as_f64(n)
}

fn ratio(ours: Option<f64>, bare: Option<f64>) -> Option<f64> {
    match (ours, bare) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn print_table(r: &Report) {
    let levels: Vec<String> = r.level_sizes.iter().map(u64::to_string).collect();
    println!(
        "scale: {} workers, depth {}, fan-out {} (levels {}), {} CPUs",
        r.workers,
        r.depth,
        r.fanout,
        levels.join(" / "),
        r.cpus
    );
    let count = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |t| t.to_string());
    println!(
        "ticks: sent by hand (tick_interval None), each once the previous one has reached every node; {} warm-up, {} measured (bare: {})",
        r.warmup_ticks,
        count(r.ticks_measured),
        count(r.baseline_ticks_measured),
    );
    println!("CPU: {}", r.cpu_clock);
    println!("method: {}", r.method);
    if r.runs > 1 {
        println!(
            "figures: the median of {} runs (ratios: the median of each run's ratio)",
            r.runs
        );
    }
    println!();
    let f = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
    };
    let row = |label: &str, ours: String, bare: String, ratio: String| {
        println!("{label:<32} {ours:>14} {bare:>14} {ratio:>8}");
    };
    row("", "fsmv2".into(), "bare ractor".into(), "ratio".into());
    row(
        "spawn (ms)",
        f(r.spawn_ms, 1),
        f(r.baseline_spawn_ms, 1),
        f(r.spawn_ratio, 2),
    );
    row(
        "spawn, CPU (ms)",
        f(r.spawn_cpu_ms, 0),
        f(r.baseline_spawn_cpu_ms, 0),
        String::new(),
    );
    row(
        "tick CPU per worker (µs)",
        f(r.tick_cpu_us_per_worker, 2),
        f(r.baseline_tick_cpu_us_per_worker, 2),
        f(r.tick_ratio, 2),
    );
    row(
        "tick round, wall (ms)",
        f(r.tick_wall_ms, 2),
        f(r.baseline_tick_wall_ms, 2),
        String::new(),
    );
    row(
        "RSS per worker (bytes)",
        f(r.rss_bytes_per_worker, 0),
        f(r.baseline_rss_bytes_per_worker, 0),
        f(r.rss_ratio, 2),
    );
    println!();
    if let Some(ticks) = r.spawn_ticks {
        println!("spawn took {ticks} tick(s)");
    }
    if let (Some(ms), Some(leaves), Some(ticks), Some(updated)) = (
        r.change_converge_ms,
        r.change_leaves,
        r.change_ticks,
        r.change_nodes_updated,
    ) {
        println!(
            "change -> converged: {ms:.1} ms ({leaves} leaves changed, {updated} nodes re-derived, {ticks} tick rounds; unconverged seen in between: {})",
            r.change_seen_unconverged.unwrap_or(false)
        );
    }
    if let Some(ms) = r.shutdown_ms {
        println!("shutdown: {ms:.1} ms");
    }
    if let (Some(rate), Some(workers), Some(concurrency), Some(done)) = (
        r.actions_per_sec,
        r.action_workers,
        r.action_concurrency,
        r.actions_succeeded,
    ) {
        println!(
            "actions: {rate:.0} per second ({done} no-op actions, {workers} workers, executor concurrency {concurrency}, {} rejected)",
            r.actions_rejected.unwrap_or(0)
        );
    }
    if let Some(ms) = r.baseline_shutdown_ms {
        println!("bare ractor stop: {ms:.1} ms");
    }
    if let (Some(spawn), Some(tick), Some(restore)) = (
        r.store_spawn_ms,
        r.store_tick_cpu_us_per_worker,
        r.store_restore_ms,
    ) {
        println!();
        println!(
            "store (SQLite): spawn {spawn:.1} ms (without: {}), restore {restore:.1} ms ({} tick(s))",
            f(r.spawn_ms, 1),
            count(r.store_restore_ticks),
        );
        println!(
            "store: tick CPU per worker {tick:.2} µs, {} ticks (without, alternating in the same process: {} µs, {} ticks; ratio {}); written while ticking: {} batches, {} changes",
            count(r.store_ticks_measured),
            f(r.store_ref_tick_cpu_us_per_worker, 2),
            count(r.store_ref_ticks_measured),
            f(r.store_tick_ratio, 3),
            count(r.store_steady_batches),
            count(r.store_steady_changes),
        );
        println!(
            "store: change -> root spec committed {} ms, nodes derived {} ms, leaves applied {} ms, converged {} ms, all committed {} ms ({} batches, {} changes)",
            f(r.store_change_durable_ms, 1),
            f(r.store_change_derived_ms, 1),
            f(r.store_change_applied_ms, 1),
            f(r.store_change_converge_ms, 1),
            f(r.store_change_commit_ms, 1),
            count(r.store_change_batches),
            count(r.store_change_changes),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Report, median_fields, merge_side};

    #[test]
    fn medians_are_taken_field_by_field() {
        let runs = [
            json!({"spawn_ms": 30.0, "ticks": 5, "seen": true, "how": "a", "only_first": 1}),
            json!({"spawn_ms": 10.0, "ticks": 7, "seen": false, "how": "b"}),
            json!({"spawn_ms": 20.0, "ticks": 6, "seen": true, "how": "c"}),
        ];
        let m = median_fields(&runs);
        assert_eq!(m["spawn_ms"], json!(20.0));
        assert_eq!(m["ticks"], json!(6));
        // Every run must have seen it.
        assert_eq!(m["seen"], json!(false));
        // Not a number or a flag: the first run's.
        assert_eq!(m["how"], json!("a"));
        // Missing from some runs: left as the first run has it.
        assert_eq!(m["only_first"], json!(1));
    }

    #[test]
    fn an_even_count_takes_the_lower_middle_so_counts_stay_whole() {
        let runs = [
            json!({"n": 4}),
            json!({"n": 1}),
            json!({"n": 3}),
            json!({"n": 2}),
        ];
        assert_eq!(median_fields(&runs)["n"], json!(2));
    }

    #[test]
    fn a_run_merges_its_two_sides_and_takes_its_ratios_from_them() {
        let tree = json!({"workers": 10, "spawn_ms": 6.0, "baseline_spawn_ms": null,
            "tick_cpu_us_per_worker": 1.5, "baseline_tick_cpu_us_per_worker": null});
        let bare = json!({"workers": 10, "spawn_ms": null, "baseline_spawn_ms": 3.0,
            "tick_cpu_us_per_worker": null, "baseline_tick_cpu_us_per_worker": 0.5});
        let mut run = serde_json::Value::Null;
        merge_side(&mut run, bare);
        merge_side(&mut run, tree);
        assert_eq!(run["spawn_ms"], json!(6.0));
        assert_eq!(run["baseline_spawn_ms"], json!(3.0));
        let mut report: Report = serde_json::from_value(run).unwrap();
        report.set_ratios();
        assert_eq!(report.spawn_ratio, Some(2.0));
        assert_eq!(report.tick_ratio, Some(3.0));
        // A side that did not measure memory leaves that ratio empty.
        assert_eq!(report.rss_ratio, None);
    }

    #[test]
    fn null_figures_stay_null() {
        let runs = [json!({"x": null}), json!({"x": null})];
        assert_eq!(median_fields(&runs)["x"], json!(null));
        assert_eq!(median_fields(&[]), json!(null));
    }
}
