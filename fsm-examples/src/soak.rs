//! The soak: the demo plant, scaled to thousands of workers, run for a long
//! time with faults injected all along and telemetry exported, sampling
//! what would grow if something leaked. `fsm-soak` runs it and prints the
//! curve; see docs/reliability.md, "Soak".
//!
//! Each sample holds the process's resident memory, its open file
//! descriptors, the metric series the Prometheus endpoint serves, the
//! runtime's live tasks and the tree's live nodes. [`flatness`] compares
//! the samples after the warm-up: the mean of the last tenth against the
//! mean of the first tenth.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fsm_actors::{ShutdownReport, Tree, TreeConfig, TreeError};
use fsm_core::runtime::SplitMix64;
use fsm_core::{ChildSpec, RegistryError, Value};

use crate::demo::demo_config;
use crate::sim::SimIo;
use crate::workers::{BridgeSpec, LineSpec, PlantSpec, registry};

/// How a soak goes.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// Workers in the tree, about (the plant is built of whole lines of
    /// 25 bridges, 101 workers each).
    pub workers: usize,
    /// How long the tree runs.
    pub duration: Duration,
    /// Samples before this are the warm-up, left out of [`flatness`].
    pub warmup: Duration,
    /// Time between samples.
    pub sample_every: Duration,
    /// Time between root ticks.
    pub tick: Duration,
    /// Every node panics with this probability per tick, all along.
    pub chaos: f64,
    /// Nodes killed from outside (as a crashing dependency would) per
    /// sample interval.
    pub kills_per_sample: u32,
    /// The Prometheus endpoint to count metric series on
    /// (`http://127.0.0.1:PORT/metrics`), if one is served.
    pub metrics_url: Option<String>,
    /// Seed of the choice of nodes to kill.
    pub seed: u64,
    /// The heap in use, in bytes, if the program counts it (with a
    /// counting global allocator): unlike resident memory, it goes down
    /// when memory is freed, so it tells growth from the allocator keeping
    /// pages.
    pub heap_in_use: Option<fn() -> u64>,
}

impl Default for SoakOptions {
    /// An hour at 10,000 workers: a sample every 10 s after a 5-minute
    /// warm-up, a tick every 100 ms, one node in ten thousand panicking per
    /// tick and one killed per sample.
    fn default() -> Self {
        Self {
            workers: 10_000,
            duration: Duration::from_secs(3600),
            warmup: Duration::from_secs(300),
            sample_every: Duration::from_secs(10),
            tick: Duration::from_millis(100),
            chaos: 0.000_1,
            kills_per_sample: 1,
            metrics_url: None,
            seed: 0x50a4,
            heap_in_use: None,
        }
    }
}

/// What a soak saw at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Time since the tree converged.
    pub elapsed: Duration,
    /// The process's resident memory, in bytes (0 where `/proc` is
    /// missing).
    pub rss_bytes: u64,
    /// The heap in use, in bytes (0 unless [`SoakOptions::heap_in_use`]
    /// counts it).
    pub heap_bytes: u64,
    /// The process's open file descriptors (0 where `/proc` is missing).
    pub open_fds: u64,
    /// Metric series the Prometheus endpoint serves (0 without one).
    pub metric_series: u64,
    /// The tokio runtime's live tasks.
    pub tasks: u64,
    /// The tree's live nodes.
    pub live_nodes: u64,
    /// Restarts so far.
    pub restarts: u64,
    /// Nodes killed from outside so far.
    pub kills: u64,
}

impl Sample {
    /// The CSV header of [`Sample::csv`].
    pub const CSV_HEADER: &'static str =
        "elapsed_s,rss_bytes,heap_bytes,open_fds,metric_series,tasks,live_nodes,restarts,kills";

    /// The sample as a CSV line (no newline).
    #[must_use]
    pub fn csv(&self) -> String {
        format!(
            "{:.1},{},{},{},{},{},{},{},{}",
            self.elapsed.as_secs_f64(),
            self.rss_bytes,
            self.heap_bytes,
            self.open_fds,
            self.metric_series,
            self.tasks,
            self.live_nodes,
            self.restarts,
            self.kills
        )
    }
}

/// How one measure moved after the warm-up.
#[derive(Clone, Debug, PartialEq)]
pub struct Flatness {
    /// Which measure (`rss_bytes`, `heap_bytes`, `open_fds`,
    /// `metric_series`, `tasks`).
    pub measure: &'static str,
    /// Mean of the first tenth of the samples after the warm-up.
    pub first: f64,
    /// Mean of the last tenth.
    pub last: f64,
    /// The highest sample after the warm-up.
    pub peak: f64,
}

impl Flatness {
    /// `(last - first) / first`: how much the measure grew (negative:
    /// shrank); 0 when `first` is 0.
    #[must_use]
    pub fn drift(&self) -> f64 {
        if self.first == 0.0 {
            0.0
        } else {
            (self.last - self.first) / self.first
        }
    }

    /// Whether the measure grew by at most `tolerance` (0.05 for 5 %).
    #[must_use]
    pub fn is_flat(&self, tolerance: f64) -> bool {
        self.drift() <= tolerance
    }
}

/// A measure of a sample, by name.
type Measure = (&'static str, fn(&Sample) -> u64);

/// How the measures that would grow with a leak moved after `warmup`:
/// none when fewer than two samples follow it.
#[must_use]
pub fn flatness(samples: &[Sample], warmup: Duration) -> Vec<Flatness> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.elapsed >= warmup).collect();
    if after.len() < 2 {
        return Vec::new();
    }
    let tenth = (after.len() / 10).max(1);
    let measures: [Measure; 5] = [
        ("rss_bytes", |s| s.rss_bytes),
        ("heap_bytes", |s| s.heap_bytes),
        ("open_fds", |s| s.open_fds),
        ("metric_series", |s| s.metric_series),
        ("tasks", |s| s.tasks),
    ];
    measures
        .iter()
        .map(|&(measure, get)| {
            #[allow(clippy::cast_precision_loss)] // counts far below 2^52
            let mean = |part: &[&Sample]| {
                part.iter().map(|s| get(s) as f64).sum::<f64>() / part.len() as f64
            };
            #[allow(clippy::cast_precision_loss)]
            let peak = after.iter().map(|s| get(s) as f64).fold(0.0, f64::max);
            Flatness {
                measure,
                first: mean(&after[..tenth]),
                last: mean(&after[after.len() - tenth..]),
                peak,
            }
        })
        .collect()
}

/// The demo plant with about `workers` workers: lines of 25 bridges, each
/// bridge a connection, a read flow and a write flow (101 workers a line),
/// plus the plant and its historian.
#[must_use]
pub fn plant_spec(workers: usize) -> ChildSpec {
    const BRIDGES: usize = 25;
    let lines = (workers / (1 + 4 * BRIDGES)).max(1);
    let line = |l: usize| {
        let bridges = (0..BRIDGES)
            .map(|b| {
                let spec = BridgeSpec {
                    host: format!("{{{{ SUBNET }}}}.{}", 10 + b),
                    port: 502,
                    protocol: "modbus".to_owned(),
                    read: vec!["temperature".to_owned(), "pressure".to_owned()],
                    write: vec!["setpoint".to_owned()],
                };
                let mut child = ChildSpec::new(format!("bridge-{b}"), "bridge");
                child.user_spec = Value::from_serialize(&spec).unwrap_or_default();
                child
                    .location
                    .insert("work_cell".to_owned(), format!("cell-{b}"));
                child
            })
            .collect();
        let mut child = ChildSpec::new(format!("line-{l}"), "line");
        child.user_spec = Value::from_serialize(&LineSpec { bridges }).unwrap_or_default();
        child
            .location
            .insert("line".to_owned(), format!("line-{l}"));
        child.variables.insert(
            "SUBNET".to_owned(),
            Value::from(format!("10.{}.{}", l / 256, l % 256)),
        );
        child
    };
    let mut root = ChildSpec::new("plant", "plant");
    root.user_spec = Value::from_serialize(&PlantSpec {
        lines: (0..lines).map(line).collect(),
    })
    .unwrap_or_default();
    root.location
        .insert("enterprise".to_owned(), "acme".to_owned());
    root.location.insert("site".to_owned(), "soak".to_owned());
    root.variables.insert(
        "BROKER".to_owned(),
        Value::from("tcp://broker.soak.local:1883"),
    );
    root
}

/// The demo's configuration with the observation deadlines of a large
/// tree: at 10,000 workers on a busy machine, a collect can wait seconds for
/// its turn while the tree spawns, which the demo's deadlines (a few ticks)
/// would take for a hung collector and restart, over and over.
#[must_use]
pub fn soak_config(tick: Duration) -> TreeConfig {
    let mut config = demo_config(tick);
    config.observation_timeout = config.observation_timeout.max(Duration::from_secs(2));
    config.stale_after = config.stale_after.max(Duration::from_secs(10));
    config.collector_restart_after = config.collector_restart_after.max(Duration::from_secs(30));
    config
}

/// What a soak ends with.
#[derive(Debug)]
pub struct SoakRun {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// Workers in the tree once converged.
    pub workers: u64,
    /// How long the tree took to converge at the start.
    pub converged_in: Duration,
    /// How the shutdown went.
    pub shutdown: ShutdownReport,
}

/// A soak failed.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    /// The registry could not be built.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The tree refused the spec or stopped answering.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// Runs a soak: spawns the plant, waits until it converged, then injects
/// faults and samples until `duration` has passed, calling `on_sample`
/// with each sample as it is taken; then stops the faults, lets the tree
/// settle (whole, converged, no restart for a few ticks) and shuts it down.
///
/// # Errors
///
/// [`SoakError::Tree`] when the tree refuses the spec, gives up, or stops
/// answering.
pub async fn run_soak(
    options: &SoakOptions,
    mut on_sample: impl FnMut(&Sample),
) -> Result<SoakRun, SoakError> {
    let io = SimIo::default();
    let started = tokio::time::Instant::now();
    let tree = Tree::spawn(
        plant_spec(options.workers),
        registry(&io)?,
        soak_config(options.tick),
    )
    .await?;
    tree.wait_converged(Duration::from_secs(300)).await?;
    let converged_in = started.elapsed();
    let snapshot = tree.inspect().await?;
    let paths: Vec<String> = snapshot
        .iter()
        .skip(1)
        .map(|n| n.path.to_string())
        .collect();
    let workers = snapshot.len() as u64;
    drop(snapshot);

    let scraper = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok();
    let kills = Arc::new(AtomicU64::new(0));
    let mut rng = SplitMix64::new(options.seed);
    let mut samples = Vec::new();
    let begun = tokio::time::Instant::now();
    let mut every = tokio::time::interval(options.sample_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tree.inject_faults(options.chaos);
    loop {
        every.tick().await;
        let elapsed = begun.elapsed();
        let sample = Sample {
            elapsed,
            rss_bytes: rss_bytes(),
            heap_bytes: options.heap_in_use.map_or(0, |heap| heap()),
            open_fds: open_fds(),
            metric_series: match (&scraper, &options.metrics_url) {
                (Some(client), Some(url)) => metric_series(client, url).await,
                _ => 0,
            },
            tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks() as u64,
            live_nodes: tree.live_nodes(),
            restarts: tree.restarts(),
            kills: kills.load(Ordering::Relaxed),
        };
        on_sample(&sample);
        samples.push(sample);
        if elapsed >= options.duration {
            break;
        }
        for _ in 0..options.kills_per_sample {
            if paths.is_empty() {
                break;
            }
            let pick = usize::try_from(rng.next_u64() % paths.len() as u64).unwrap_or(0);
            // A node whose parent is restarting is not there to kill: the
            // kill is simply not counted.
            if tree.kill_node(&paths[pick]).is_ok() {
                kills.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    tree.inject_faults(0.0);
    settle(&tree, workers, options.tick).await;
    let shutdown = tree.shutdown(Duration::from_secs(10)).await;
    Ok(SoakRun {
        samples,
        workers,
        converged_in,
        shutdown,
    })
}

/// How many ticks in a row the tree must stay whole, converged and free of
/// restarts before the soak shuts it down (see `settle`).
const SETTLE_TICKS: u32 = 5;

/// The longest the soak waits for the tree to settle before it shuts it
/// down anyway (the shutdown report then says what was still recovering).
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// Waits, once the faults have stopped, until the tree has stayed whole
/// (`workers` nodes alive), converged and free of restarts for
/// `SETTLE_TICKS` ticks, or `SETTLE_LIMIT` has passed. A fault injected
/// just before the faults stopped (a panic in a tick under way, a kill on
/// its way down the tree) would otherwise land during the shutdown, whose
/// report then rightly lists the subtree it killed as not stopped cleanly:
/// the soak's own timing, not the shutdown's.
async fn settle(tree: &Tree, workers: u64, tick: Duration) {
    let tick = tick.max(Duration::from_millis(1));
    let quiet_for = tick.saturating_mul(SETTLE_TICKS);
    let begun = tokio::time::Instant::now();
    let mut quiet_since = begun;
    let mut restarts = tree.restarts();
    while begun.elapsed() < SETTLE_LIMIT {
        tokio::time::sleep(tick).await;
        let now = tree.restarts();
        let whole = tree.status().converged && tree.live_nodes() == workers && now == restarts;
        if !whole {
            restarts = now;
            quiet_since = tokio::time::Instant::now();
        } else if quiet_since.elapsed() >= quiet_for {
            return;
        }
    }
}

/// The process's resident memory, from `/proc/self/status`.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// The process's open file descriptors, from `/proc/self/fd`.
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64)
}

/// The series (sample lines) the Prometheus endpoint at `url` serves; 0
/// when it does not answer.
async fn metric_series(client: &reqwest::Client, url: &str) -> u64 {
    let Ok(response) = client.get(url).send().await else {
        return 0;
    };
    let Ok(text) = response.text().await else {
        return 0;
    };
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count() as u64
}

/// A sink for OTLP/HTTP exports on 127.0.0.1, so that a soak exports its
/// traces and metrics for real without a collector: it answers every
/// request with an empty success and counts them. It stops by itself after
/// `lifetime` or `max_requests` requests.
///
/// # Errors
///
/// The listener could not be bound.
pub async fn otlp_sink(
    lifetime: Duration,
    max_requests: u64,
) -> std::io::Result<(SocketAddr, Arc<AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let requests = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&requests);
    let done = Arc::new(tokio::sync::Notify::new());
    let stop = Arc::clone(&done);
    let app = axum::Router::new().fallback(move |_body: axum::body::Bytes| {
        let counted = Arc::clone(&counted);
        let stop = Arc::clone(&stop);
        async move {
            if counted.fetch_add(1, Ordering::Relaxed) + 1 >= max_requests {
                stop.notify_one();
            }
            axum::http::StatusCode::OK
        }
    });
    tokio::spawn(async move {
        let shutdown = async move {
            tokio::select! {
                () = tokio::time::sleep(lifetime) => {}
                () = done.notified() => {}
            }
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "the OTLP sink stopped");
        }
    });
    Ok((addr, requests))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: u64, rss: u64) -> Sample {
        Sample {
            elapsed: Duration::from_secs(at),
            rss_bytes: rss,
            open_fds: 20,
            metric_series: 300,
            tasks: 1000,
            ..Sample::default()
        }
    }

    #[test]
    fn flatness_compares_the_first_and_last_tenth_after_the_warm_up() {
        // Warm-up growth (0..10 s) is left out; then 100 flat, then 110.
        let mut samples: Vec<Sample> = (0..10).map(|t| sample(t, t * 10)).collect();
        samples.extend((10..60).map(|t| sample(t, 100)));
        samples.extend((60..110).map(|t| sample(t, 110)));
        let f = flatness(&samples, Duration::from_secs(10));
        let rss = f.iter().find(|f| f.measure == "rss_bytes").unwrap();
        assert_eq!((rss.first, rss.last, rss.peak), (100.0, 110.0, 110.0));
        assert!((rss.drift() - 0.10).abs() < 1e-9);
        assert!(!rss.is_flat(0.05));
        let fds = f.iter().find(|f| f.measure == "open_fds").unwrap();
        assert!(fds.is_flat(0.05));
        assert_eq!(fds.drift(), 0.0);
    }

    #[test]
    fn flatness_needs_two_samples_after_the_warm_up() {
        let samples = vec![sample(0, 1), sample(5, 1), sample(11, 1)];
        assert!(flatness(&samples, Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn the_soak_plant_has_about_the_workers_asked_for() {
        let root = plant_spec(10_000);
        let plant: PlantSpec = root.user_spec.decode().unwrap();
        // 99 lines of 101 workers, the plant and its historian.
        assert_eq!(plant.lines.len(), 99);
        let line: LineSpec = plant.lines[0].user_spec.decode().unwrap();
        assert_eq!(line.bridges.len(), 25);
        let bridge: BridgeSpec = line.bridges[3].user_spec.decode().unwrap();
        assert_eq!(bridge.host, "{{ SUBNET }}.13");
    }

    #[test]
    fn a_sample_is_one_csv_line_under_its_header() {
        let line = sample(12, 4096).csv();
        assert_eq!(line, "12.0,4096,0,20,300,1000,0,0,0");
        assert_eq!(
            line.split(',').count(),
            Sample::CSV_HEADER.split(',').count()
        );
    }
}
