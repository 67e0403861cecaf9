//! `fsm-soak`: the demo plant at thousands of workers, run for a long time
//! with faults injected all along and traces and metrics exported, printing
//! a sample of what would grow with a leak (memory, file descriptors,
//! metric series, tasks) as a CSV line every interval, then how each moved
//! after the warm-up.
//!
//! ```text
//! cargo run --release -p fsm-examples --bin fsm-soak                       # an hour, 10,000 workers
//! cargo run --release -p fsm-examples --bin fsm-soak -- --minutes 5 --warmup-minutes 1 --workers 2000
//! ```
//!
//! Traces and metrics go over OTLP/HTTP to a sink of its own on 127.0.0.1
//! (it counts what it receives), and metrics are served for Prometheus on
//! 127.0.0.1 too, where the soak counts the series. The exit status is
//! non-zero when a measure grew by more than `--tolerance` after the
//! warm-up, or the tree failed.

// A command-line program prints its output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use fsm_actors::telemetry::Telemetry;
use fsm_examples::soak::{Sample, SoakOptions, flatness, otlp_sink, run_soak};

/// Counts the heap in use, so that the soak can tell memory the runtime
/// holds from pages the allocator keeps. Under it, mimalloc: a tree churns
/// small allocations across worker threads for hours, and glibc's malloc
/// keeps what is freed in per-thread arenas (resident memory drifted +6.5 %
/// over an hour with a flat tree), where mimalloc hands free pages back.
#[global_allocator]
static HEAP: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

fn heap_in_use() -> u64 {
    u64::try_from(HEAP.allocated()).unwrap_or(u64::MAX)
}

/// Soak the demo plant: thousands of workers, faults all along, telemetry
/// exported; print the curve.
#[derive(Parser, Debug)]
#[command(name = "fsm-soak", version)]
struct Args {
    /// Workers in the tree, about.
    #[arg(long, default_value_t = 10_000)]
    workers: usize,
    /// Minutes to run once the tree converged.
    #[arg(long, default_value_t = 60.0)]
    minutes: f64,
    /// Minutes of warm-up, left out of the flatness check.
    #[arg(long, default_value_t = 5.0)]
    warmup_minutes: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10.0)]
    sample_secs: f64,
    /// Milliseconds between root ticks.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    tick_ms: u64,
    /// Probability per tick that a node panics.
    #[arg(long, default_value_t = 0.000_1)]
    chaos: f64,
    /// Nodes killed from outside per sample interval.
    #[arg(long, default_value_t = 1)]
    kills: u32,
    /// How much a measure may grow after the warm-up (0.05: 5 %).
    #[arg(long, default_value_t = 0.05)]
    tolerance: f64,
}

fn seconds(value: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|e| format!("--{what}: {e}"))
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("fsm-soak: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<bool, String> {
    let duration = seconds(args.minutes * 60.0, "minutes")?;
    let warmup = seconds(args.warmup_minutes * 60.0, "warmup-minutes")?;
    let sample_every = seconds(args.sample_secs, "sample-secs")?;
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
    // The sink outlives the run by a minute, for the exporters' last flush.
    let (sink, received) = runtime
        .block_on(otlp_sink(duration + Duration::from_secs(900), u64::MAX))
        .map_err(|e| format!("cannot bind the OTLP sink on 127.0.0.1: {e}"))?;
    let telemetry = Telemetry::new("fsm-soak")
        .otlp(format!("http://{sink}"))
        .prometheus(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .install()
        .map_err(|e| e.to_string())?;
    fsm_actors::quiet_injected_faults();
    let options = SoakOptions {
        workers: args.workers,
        duration,
        warmup,
        sample_every,
        tick: Duration::from_millis(args.tick_ms),
        chaos: args.chaos,
        kills_per_sample: args.kills,
        metrics_url: telemetry
            .metrics_addr()
            .map(|addr| format!("http://{addr}/metrics")),
        heap_in_use: Some(heap_in_use),
        ..SoakOptions::default()
    };
    println!("{}", Sample::CSV_HEADER);
    let run = runtime
        .block_on(run_soak(&options, |sample| println!("{}", sample.csv())))
        .map_err(|e| e.to_string())?;
    drop(telemetry);
    eprintln!(
        "fsm-soak: {} workers, converged in {:.1} s; {} restarts, {} kills; {} OTLP requests received; shutdown {}",
        run.workers,
        run.converged_in.as_secs_f64(),
        run.samples.last().map_or(0, |s| s.restarts),
        run.samples.last().map_or(0, |s| s.kills),
        received.load(Ordering::Relaxed),
        if run.shutdown.all_clean() {
            "clean"
        } else {
            "not clean"
        },
    );
    // Which nodes, and how: a shutdown that is not clean must say why.
    for record in run
        .shutdown
        .stopped
        .iter()
        .filter(|r| r.outcome != fsm_actors::StopOutcome::Clean)
    {
        eprintln!(
            "fsm-soak: {} did not stop cleanly: {:?}",
            record.path, record.outcome
        );
    }
    let mut flat = true;
    for f in flatness(&run.samples, warmup) {
        let ok = f.is_flat(args.tolerance);
        flat &= ok;
        eprintln!(
            "fsm-soak: {:<14} first {:>14.0}  last {:>14.0}  peak {:>14.0}  drift {:>+6.2} %  {}",
            f.measure,
            f.first,
            f.last,
            f.peak,
            f.drift() * 100.0,
            if ok { "flat" } else { "GREW" },
        );
    }
    Ok(flat && run.shutdown.all_clean())
}
