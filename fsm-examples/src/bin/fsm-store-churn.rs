//! `fsm-store-churn`: runs the demo plant on a store and changes its spec
//! again and again, saying on stdout which phase it is in — a process for
//! the crash test (`fsm-examples/tests/crash.rs`) to kill at random moments
//! and to start again on the same store.
//!
//! ```text
//! cargo run -p fsm-examples --bin fsm-store-churn -- --store churn.store --changes 5
//! ```
//!
//! Each change replaces the plant's extra line `extra-N` by `extra-N+1` (a
//! subtree removed, one added) and adds a tag to the first bridge (a leaf
//! reconfigured: its `start` action runs again). `N` is read from the
//! running tree, so a restored tree goes on from the change it was at.
//!
//! Phases, one line each, as they begin:
//!
//! ```text
//! phase spawning
//! phase spawned restored=NODES interrupted=ACTIONS
//! phase converged lines=line-1,line-2,extra-3
//! phase change 4
//! phase changed 4
//! phase shutdown
//! phase done
//! ```
//!
//! The exit status is non-zero when the tree did not converge or the store
//! could not be used.

// A command-line program prints its output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fsm_actors::store::{SqliteStore, TreeStore};
use fsm_actors::{NodeSnapshot, Tree};
use fsm_core::{ChildSpec, Value};
use fsm_examples::demo::{demo_config, embedded_root_spec};
use fsm_examples::sim::SimIo;
use fsm_examples::workers::{BridgeSpec, LineSpec, PlantSpec, registry};

/// Run the demo plant on a store, changing its spec again and again.
#[derive(Parser, Debug)]
#[command(name = "fsm-store-churn", version)]
struct Args {
    /// The SQLite store (created if missing; restored if it holds a tree).
    #[arg(long, value_name = "FILE")]
    store: PathBuf,
    /// Spec changes to make before shutting down.
    #[arg(long, default_value_t = 4)]
    changes: u32,
    /// Milliseconds between root ticks.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    tick_ms: u64,
    /// Seconds to wait for the tree to converge, each time.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
}

fn phase(what: &str) {
    let mut out = std::io::stdout().lock();
    // A line at a time, at once: the crash test reads them as they come.
    let _ = writeln!(out, "phase {what}");
    let _ = out.flush();
}

/// The number of the plant's extra line (`extra-N`) in `snapshot`, 0 if
/// none.
fn extra_number(snapshot: &NodeSnapshot) -> u64 {
    plant_lines(snapshot)
        .iter()
        .filter_map(|name| name.strip_prefix("extra-")?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// The names of the plant's lines, in start order.
fn plant_lines(snapshot: &NodeSnapshot) -> Vec<String> {
    snapshot
        .find("plant")
        .map(|plant| plant.children.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
}

/// The embedded plant with its extra line `extra-n` and `n` tags added to
/// its first bridge.
fn churned_spec(n: u64) -> Result<ChildSpec, String> {
    let root = embedded_root_spec().map_err(|e| e.to_string())?;
    let mut plant: PlantSpec = root.user_spec.decode().map_err(|e| e.to_string())?;
    let mut extra = plant.lines.first().ok_or("the plant has no line")?.clone();
    extra.name = format!("extra-{n}");
    extra.location.insert("line".to_owned(), extra.name.clone());
    extra.variables.insert(
        "SUBNET".to_owned(),
        Value::from(format!("10.1.{}", n % 250)),
    );
    let line = plant.lines.first_mut().ok_or("the plant has no line")?;
    let mut line_spec: LineSpec = line.user_spec.decode().map_err(|e| e.to_string())?;
    let bridge = line_spec
        .bridges
        .first_mut()
        .ok_or("the first line has no bridge")?;
    let mut bridge_spec: BridgeSpec = bridge.user_spec.decode().map_err(|e| e.to_string())?;
    bridge_spec.read.push(format!("change-{n}"));
    bridge.user_spec = Value::from_serialize(&bridge_spec).map_err(|e| e.to_string())?;
    line.user_spec = Value::from_serialize(&line_spec).map_err(|e| e.to_string())?;
    plant.lines.push(extra);
    let mut changed = root;
    changed.user_spec = Value::from_serialize(&plant).map_err(|e| e.to_string())?;
    Ok(changed)
}

async fn run(args: &Args) -> Result<(), String> {
    let store = SqliteStore::open(&args.store)
        .map_err(|e| format!("cannot use {} as a store: {e}", args.store.display()))?;
    let mut config = demo_config(Duration::from_millis(args.tick_ms));
    config.store = Some(TreeStore::new(store));
    let io = SimIo::default();
    let timeout = Duration::from_secs(args.timeout_s);
    phase("spawning");
    let root = churned_spec(0)?;
    let tree = Tree::spawn(root, registry(&io).map_err(|e| e.to_string())?, config)
        .await
        .map_err(|e| e.to_string())?;
    let restored = tree.restored();
    phase(&format!(
        "spawned restored={} interrupted={}",
        restored.as_ref().map_or(0, |r| r.nodes),
        restored.as_ref().map_or(0, |r| r.interrupted),
    ));
    tree.wait_converged(timeout)
        .await
        .map_err(|e| e.to_string())?;
    let snapshot = tree.inspect().await.map_err(|e| e.to_string())?;
    phase(&format!(
        "converged lines={}",
        plant_lines(&snapshot).join(",")
    ));
    let mut n = extra_number(&snapshot);
    for _ in 0..args.changes {
        n += 1;
        phase(&format!("change {n}"));
        let generation = tree
            .update_root_spec(churned_spec(n)?)
            .map_err(|e| e.to_string())?;
        tree.wait_generation(generation, timeout)
            .await
            .map_err(|e| e.to_string())?;
        tree.wait_converged(timeout)
            .await
            .map_err(|e| e.to_string())?;
        phase(&format!("changed {n}"));
    }
    phase("shutdown");
    let report = tree.shutdown(timeout).await;
    if report.forced().count() > 0 {
        return Err(format!(
            "{} nodes did not stop in time",
            report.forced().count()
        ));
    }
    phase("done");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Logs to stderr (`RUST_LOG=info` shows every transition).
    let telemetry = match fsm_actors::telemetry::Telemetry::new("fsm-store-churn").install() {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("fsm-store-churn: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fsm-store-churn: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fsm-store-churn: {e} (store {})", args.store.display());
            ExitCode::FAILURE
        }
    };
    drop(telemetry);
    code
}
