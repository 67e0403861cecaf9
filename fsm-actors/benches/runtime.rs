//! The runtime's hot paths, through the public API only:
//!
//! * `tick/supervisor_100_children`: one root tick of a supervisor with 100
//!   children (`tick_interval: None`; the harness ticks and waits until all
//!   101 nodes have run their state machine on it);
//! * `executor/enqueue_to_start`: from the state machine returning an action
//!   (the instant is taken in `next`) to the action's `execute` starting;
//! * `restart/panic_to_running`: from a worker panicking in `next` to its
//!   replacement running (its first `collect`), under `Backoff::none()`;
//! * `telemetry/{off,logs_only,json_file}`: the tick of `tick/` on a
//!   single-threaded runtime: with no subscriber; with the log layer at
//!   `warn` installed globally, as `Telemetry::install` does without an
//!   exporter (spans are not recorded); and with the OpenTelemetry layer at
//!   `fsm_actors=info` exporting every span (per node and tick: a tick and
//!   a collect span) to a JSON-lines file through a batch processor. Run
//!   the whole bench binary for these: `logs_only` installs a global
//!   subscriber, which the groups before it must not have.
//!
//! ```sh
//! cargo bench -p fsm-actors --bench runtime
//! ```

// A bench fails by panicking, like a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use fsm_actors::{Tree, TreeConfig};
use fsm_core::{
    Action, ActionContext, Backoff, BoxError, ChildSpec, CollectContext, DeriveContext,
    DesiredState, RestartIntensity, State, Supervision, TickContext, Transition, Value, Worker,
    WorkerRegistry,
};
use serde::Deserialize;
use tokio::runtime::Runtime;
use tokio::sync::{Notify, mpsc};

/// The panic message of a requested crash, kept out of the output.
const CRASH: &str = "bench: crash on request";

/// What the bench and its workers share.
struct Probe {
    /// State machine steps, and a waiter for a target count.
    steps: AtomicU64,
    target: AtomicU64,
    reached: Notify,
    /// Set by the bench: the next step emits a `Stamp` action.
    fire: AtomicBool,
    /// Set by the bench: the next step of the victim panics.
    crash: AtomicBool,
    /// When the victim panicked.
    crashed_at: Mutex<Option<Instant>>,
    /// Enqueue → start latencies.
    started: mpsc::UnboundedSender<Duration>,
    /// Panic → replacement running latencies.
    restarted: mpsc::UnboundedSender<Duration>,
}

impl Probe {
    fn step(&self) {
        let now = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
        if now == self.target.load(Ordering::SeqCst) {
            self.reached.notify_one();
        }
    }

    async fn wait_steps(&self, target: u64) {
        self.target.store(target, Ordering::SeqCst);
        while self.steps.load(Ordering::SeqCst) < target {
            self.reached.notified().await;
        }
    }
}

#[derive(Deserialize)]
struct BenchSpec {
    children: u32,
    victim: bool,
}

fn spec(name: &str, children: u32, victim: bool) -> ChildSpec {
    ChildSpec::new(name, "bench").with_spec(Value::map([
        ("children", Value::from(children)),
        ("victim", Value::from(victim)),
    ]))
}

struct BenchWorker {
    probe: Arc<Probe>,
    /// Until the first collect of this incarnation.
    fresh: AtomicBool,
}

#[derive(Clone, Debug)]
struct Running;

/// Records how long it took from `next` to `execute`.
struct Stamp {
    emitted: Instant,
    probe: Arc<Probe>,
}

impl Action for Stamp {
    async fn execute(&self, _ctx: &ActionContext) -> Result<(), BoxError> {
        let _ = self.probe.started.send(self.emitted.elapsed());
        Ok(())
    }
}

impl Worker for BenchWorker {
    type Spec = BenchSpec;
    type Observed = ();
    type State = Running;

    fn initial_state(&self) -> Running {
        Running
    }

    async fn collect(&self, _ctx: &CollectContext<'_, BenchSpec>) -> Result<(), BoxError> {
        if self.fresh.swap(false, Ordering::SeqCst) {
            let crashed = self.probe.crashed_at.lock().unwrap().take();
            if let Some(at) = crashed {
                let _ = self.probe.restarted.send(at.elapsed());
            }
        }
        Ok(())
    }

    fn derive_desired(
        &self,
        spec: &BenchSpec,
        _ctx: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        let children = (0..spec.children).map(|i| spec_for_child(i, spec.victim));
        Ok(DesiredState::new("running").with_children(children))
    }
}

/// A parent marked `victim` has one child that panics on request.
fn spec_for_child(i: u32, parent_marks_victim: bool) -> ChildSpec {
    spec(&format!("c{i}"), 0, parent_marks_victim)
}

impl fsm_core::StateNames for Running {
    const NAMES: &'static [&'static str] = &["running"];

    fn name(&self) -> &'static str {
        "running"
    }
}

impl State<BenchWorker> for Running {
    fn next(&self, s: &TickContext<'_, BenchWorker>) -> Transition<Running> {
        let probe = &s.worker().probe;
        probe.step();
        let is_leaf = s.spec().children == 0;
        if is_leaf && s.spec().victim && probe.crash.swap(false, Ordering::SeqCst) {
            *probe.crashed_at.lock().unwrap() = Some(Instant::now());
            panic!("{CRASH}");
        }
        if !s.action_in_flight() && probe.fire.swap(false, Ordering::SeqCst) {
            return Transition::stay().with_action(Stamp {
                emitted: Instant::now(),
                probe: Arc::clone(probe),
            });
        }
        Transition::stay()
    }
}

struct Bench {
    runtime: Runtime,
    probe: Arc<Probe>,
    started: mpsc::UnboundedReceiver<Duration>,
    restarted: mpsc::UnboundedReceiver<Duration>,
}

impl Bench {
    fn new() -> Self {
        Self::on(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        )
    }

    /// On one thread, so that a thread-scoped subscriber sees every actor.
    fn single_threaded() -> Self {
        Self::on(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        )
    }

    fn on(runtime: Runtime) -> Self {
        let (started_tx, started) = mpsc::unbounded_channel();
        let (restarted_tx, restarted) = mpsc::unbounded_channel();
        let probe = Arc::new(Probe {
            steps: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            reached: Notify::new(),
            fire: AtomicBool::new(false),
            crash: AtomicBool::new(false),
            crashed_at: Mutex::new(None),
            started: started_tx,
            restarted: restarted_tx,
        });
        Self {
            runtime,
            probe,
            started,
            restarted,
        }
    }

    fn registry(&self) -> WorkerRegistry {
        let mut registry = WorkerRegistry::new();
        let probe = Arc::clone(&self.probe);
        registry
            .register("bench", move |_| BenchWorker {
                probe: Arc::clone(&probe),
                fresh: AtomicBool::new(true),
            })
            .unwrap();
        registry
    }

    /// A converged tree of `root`, ticked by hand, restarting at once.
    fn tree(&self, root: ChildSpec) -> Tree {
        let mut config = TreeConfig::default();
        config.tick_interval = None;
        config.supervision = Supervision::default()
            .with_backoff(Backoff::none())
            .with_intensity(RestartIntensity::new(u32::MAX, Duration::from_millis(1)));
        self.runtime.block_on(async {
            let tree = Tree::spawn(root, self.registry(), config).await.unwrap();
            // Tick until converged (one tick spawns the tree; a few more make
            // sure every node has stepped).
            for _ in 0..3 {
                tree.tick().unwrap();
                tree.wait_converged(Duration::from_secs(10)).await.unwrap();
            }
            tree
        })
    }

    /// Ticks once and waits until `nodes` state machine steps have run.
    async fn tick_round(&self, tree: &Tree, nodes: u64) {
        let target = self.probe.steps.load(Ordering::SeqCst) + nodes;
        tree.tick().unwrap();
        self.probe.wait_steps(target).await;
    }

    /// How long `rounds` tick rounds of `nodes` nodes take.
    fn time_tick_rounds(&self, tree: &Tree, nodes: u64, rounds: u64) -> Duration {
        self.runtime.block_on(async {
            let start = Instant::now();
            for _ in 0..rounds {
                self.tick_round(tree, nodes).await;
            }
            start.elapsed()
        })
    }

    fn shutdown(&self, tree: Tree) {
        self.runtime.block_on(async {
            let report = tree.shutdown(Duration::from_secs(10)).await;
            assert!(report.all_clean());
        });
    }
}

fn tick(c: &mut Criterion) {
    let bench = Bench::new();
    let tree = bench.tree(spec("sup", 100, false));
    // Let the converging ticks finish everywhere.
    bench.runtime.block_on(bench.tick_round(&tree, 101));
    let mut group = c.benchmark_group("tick");
    group.bench_function("supervisor_100_children", |b| {
        b.iter_custom(|iters| bench.time_tick_rounds(&tree, 101, iters));
    });
    group.finish();
    bench.shutdown(tree);
}

fn executor(c: &mut Criterion) {
    let mut bench = Bench::new();
    let tree = bench.tree(spec("solo", 0, false));
    let mut group = c.benchmark_group("executor");
    group.bench_function("enqueue_to_start", |b| {
        b.iter_custom(|iters| {
            let Bench {
                runtime,
                probe,
                started,
                ..
            } = &mut bench;
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    probe.fire.store(true, Ordering::SeqCst);
                    // The step takes it once the last action's outcome is in.
                    while probe.fire.load(Ordering::SeqCst) {
                        let target = probe.steps.load(Ordering::SeqCst) + 1;
                        tree.tick().unwrap();
                        probe.wait_steps(target).await;
                    }
                    total += started.recv().await.unwrap();
                }
                total
            })
        });
    });
    group.finish();
    bench.shutdown(tree);
}

fn restart(c: &mut Criterion) {
    // Requested crashes stay out of the output; anything else still shows.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        if message != Some(CRASH) {
            default_hook(info);
        }
    }));
    let mut bench = Bench::new();
    let tree = bench.tree(spec("sup", 1, true));
    let mut group = c.benchmark_group("restart");
    group.sample_size(20);
    group.bench_function("panic_to_running", |b| {
        b.iter_custom(|iters| {
            let Bench {
                runtime,
                probe,
                restarted,
                ..
            } = &mut bench;
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    probe.crash.store(true, Ordering::SeqCst);
                    // The victim panics on its next step (once its
                    // replacement from the last round has an observation).
                    while probe.crash.load(Ordering::SeqCst) {
                        let target = probe.steps.load(Ordering::SeqCst) + 1;
                        tree.tick().unwrap();
                        let _ = tokio::time::timeout(
                            Duration::from_millis(1),
                            probe.wait_steps(target),
                        )
                        .await;
                    }
                    total += restarted.recv().await.unwrap();
                }
                total
            })
        });
    });
    group.finish();
    bench.shutdown(tree);
}

fn telemetry(c: &mut Criterion) {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _};

    let dir = std::env::temp_dir().join(format!("fsm-bench-telemetry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exporter =
        fsm_actors::telemetry::JsonLinesExporter::create(dir.join("spans.jsonl")).unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(
            opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter).build(),
        )
        .build();
    let mut group = c.benchmark_group("telemetry");
    for name in ["off", "logs_only", "json_file"] {
        // `off` runs before any subscriber exists. `logs_only` is installed
        // globally, as `Telemetry::install` does. `json_file` is scoped to
        // this thread, over the global one. Each is created only when its
        // turn comes: a live subscriber that wants a span makes tracing ask
        // every other one about it too.
        let _scoped = match name {
            "logs_only" => {
                let logs = tracing_subscriber::registry().with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::sink)
                        .with_filter(EnvFilter::new("warn")),
                );
                tracing::subscriber::set_global_default(logs).unwrap();
                None
            }
            "json_file" => {
                let spans = tracing_subscriber::registry().with(
                    tracing_opentelemetry::layer()
                        .with_tracer(provider.tracer("bench"))
                        .with_filter(EnvFilter::new("fsm_actors=info")),
                );
                Some(tracing::subscriber::set_default(spans))
            }
            _ => None,
        };
        let bench = Bench::single_threaded();
        let tree = bench.tree(spec("sup", 100, false));
        bench.runtime.block_on(bench.tick_round(&tree, 101));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| bench.time_tick_rounds(&tree, 101, iters));
        });
        bench.shutdown(tree);
    }
    group.finish();
    let _ = provider.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, tick, executor, restart, telemetry);
criterion_main!(benches);
