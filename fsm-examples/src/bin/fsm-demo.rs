//! `fsm-demo`: runs a simulated plant as a tree of supervised workers,
//! changes its spec halfway through the run, and prints the final tree.
//!
//! ```text
//! cargo run -p fsm-examples --bin fsm-demo                     # embedded spec, readable tree
//! cargo run -p fsm-examples --bin fsm-demo -- --ticks 20 --json
//! cargo run -p fsm-examples --bin fsm-demo -- --print-spec > my.json
//! cargo run -p fsm-examples --bin fsm-demo -- --spec my.json --static
//! cargo run -p fsm-examples --bin fsm-demo -- --ticks 60 --chaos 0.05  # crash nodes, watch them recover
//! cargo run -p fsm-examples --bin fsm-demo -- --trace-out trace.jsonl   # then: fsm-trace trace.jsonl
//! cargo run -p fsm-examples --bin fsm-demo -- --ticks 2000 --metrics-addr 127.0.0.1:9464
//! cargo run -p fsm-examples --bin fsm-demo -- --store plant.store     # run again: it restores
//! ```
//!
//! Logs go to stderr (`RUST_LOG=info` shows every state transition); the
//! tree goes to stdout. The exit status is non-zero when the run failed or
//! the final tree has nodes that are unhealthy or not in their desired
//! state; stderr then names them.

// A command-line program prints its output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fsm_actors::store::{SqliteStore, TreeStore};
use fsm_actors::telemetry::{Telemetry, TelemetryGuard};
use fsm_core::ChildSpec;
use fsm_examples::demo::{
    DemoOptions, EMBEDDED_SPEC, embedded_root_spec, render_tree, run_demo_with, unsettled_nodes,
};

/// Run a simulated plant as a tree of supervised state machines.
#[derive(Parser, Debug)]
#[command(name = "fsm-demo", version)]
struct Args {
    /// Root ticks to run before shutting down.
    #[arg(long, default_value_t = 40)]
    ticks: u64,
    /// Milliseconds between root ticks.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    tick_ms: u64,
    /// Print the final snapshot as JSON instead of a readable tree.
    #[arg(long)]
    json: bool,
    /// Read the root spec (JSON) from this file instead of the embedded one
    /// (it runs as written: no change halfway).
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
    /// Print the embedded root spec as JSON and exit.
    #[arg(long)]
    print_spec: bool,
    /// Do not change the embedded root spec halfway through the run.
    #[arg(long = "static")]
    static_spec: bool,
    /// Make every node panic with this probability per tick during the
    /// first half of the run (fault injection), then stop.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    chaos: f64,
    /// Write every span to FILE, one JSON object per line (read it with
    /// `fsm-trace FILE`).
    #[arg(long, value_name = "FILE")]
    trace_out: Option<PathBuf>,
    /// Serve http://ADDR/metrics (Prometheus), /healthz, /readyz and /tree
    /// while the demo runs (e.g. 127.0.0.1:9464; use more --ticks to keep
    /// it up).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Export traces and metrics over OTLP/HTTP to ENDPOINT
    /// (e.g. http://localhost:4318).
    #[arg(long, value_name = "ENDPOINT")]
    otlp: Option<String>,
    /// Keep the tree in this SQLite file (created if missing). When the
    /// file holds a tree, that tree is restored instead of the embedded
    /// (or --spec) one, and runs as restored: no change halfway.
    #[arg(long, value_name = "FILE")]
    store: Option<PathBuf>,
}

fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number: {e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability between 0 and 1"))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut telemetry = Telemetry::new("fsm-demo");
    if let Some(path) = &args.trace_out {
        telemetry = telemetry.json_file(path);
    }
    if let Some(addr) = args.metrics_addr {
        telemetry = telemetry.prometheus(addr);
    }
    if let Some(endpoint) = &args.otlp {
        telemetry = telemetry.otlp(endpoint);
    }
    let telemetry = match telemetry.install() {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("fsm-demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = telemetry.metrics_addr() {
        eprintln!("fsm-demo: serving metrics on http://{addr}/metrics");
        eprintln!("fsm-demo: and /healthz, /readyz and /tree on http://{addr}");
    }
    if args.print_spec {
        print!("{EMBEDDED_SPEC}");
        return ExitCode::SUCCESS;
    }
    if args.chaos > 0.0 {
        fsm_actors::quiet_injected_faults();
    }
    let code = match run(&args, &telemetry) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fsm-demo: {e}");
            ExitCode::FAILURE
        }
    };
    // Flushes the span file and the exporters.
    drop(telemetry);
    code
}

fn load_root(path: Option<&PathBuf>) -> Result<ChildSpec, String> {
    match path {
        None => embedded_root_spec().map_err(|e| format!("the embedded spec is malformed: {e}")),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            serde_json::from_str(&text).map_err(|e| {
                format!(
                    "{} is not a root spec: {e} (expected {{\"name\", \"worker_type\", \"user_spec\"}}; see --print-spec)",
                    path.display()
                )
            })
        }
    }
}

fn run(args: &Args, telemetry: &TelemetryGuard) -> Result<(), String> {
    let store = match &args.store {
        Some(path) => {
            Some(TreeStore::new(SqliteStore::open(path).map_err(|e| {
                format!("cannot use {} as a store: {e}", path.display())
            })?))
        }
        None => None,
    };
    let options = DemoOptions {
        store,
        root: load_root(args.spec.as_ref())?,
        ticks: args.ticks,
        tick: Duration::from_millis(args.tick_ms),
        // A spec of one's own runs as written; the halfway change is the
        // embedded demo's.
        change_halfway: !args.static_spec && args.spec.is_none(),
        chaos: args.chaos,
    };
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
    let run = runtime
        .block_on(run_demo_with(&options, |tree| telemetry.serve_tree(tree)))
        .map_err(|e| match &args.store {
            Some(path) => format!("{e} (store {})", path.display()),
            None => e.to_string(),
        })?;
    if let (Some(info), Some(path)) = (&run.restored, &args.store) {
        let when = info.saved_at_ms.map_or_else(
            || "an unknown time".to_owned(),
            |ms| httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(ms)),
        );
        eprintln!(
            "fsm-demo: restored {} nodes from {} (last written {when}, generation {}, {} interrupted actions); no change halfway",
            info.nodes,
            path.display(),
            info.generation,
            info.interrupted,
        );
    }
    if args.json {
        let json = run.snapshot.to_json_pretty().map_err(|e| e.to_string())?;
        println!("{json}");
    } else {
        print!("{}", render_tree(&run.snapshot));
        let nodes = run.snapshot.len();
        let settled = run
            .snapshot
            .iter()
            .filter(|n| n.healthy && n.state == n.desired_state)
            .count();
        let forced = run.shutdown.forced().count();
        let restarts = run.restarts;
        println!(
            "\n{nodes} nodes, {settled} healthy in their desired state after {} ticks{}; {restarts} restarts; shutdown: {} clean, {forced} forced",
            args.ticks,
            if run.changed {
                " (spec changed halfway)"
            } else {
                ""
            },
            run.shutdown.stopped.len() - forced,
        );
    }
    let unsettled = unsettled_nodes(&run.snapshot);
    if !unsettled.is_empty() {
        return Err(format!(
            "the tree did not converge: {} of {} nodes are not healthy in their desired state after {} ticks:\n  {}",
            unsettled.len(),
            run.snapshot.len(),
            args.ticks,
            unsettled.join("\n  ")
        ));
    }
    Ok(())
}
