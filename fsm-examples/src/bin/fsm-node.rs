//! `fsm-node`: one node of a cluster. It runs a host (a `ractor_cluster`
//! node server with a cookie, joined to its peers) that runs the subtrees
//! other nodes place on it; with `--root`, it also runs a tree of the demo's
//! workers from that spec file, whose placed children run on other nodes.
//!
//! ```text
//! fsm-node --name b --listen 127.0.0.1:4002 --cookie s3cret
//! fsm-node --name c --listen 127.0.0.1:4003 --cookie s3cret
//! fsm-node --name a --listen 127.0.0.1:4001 --cookie s3cret \
//!     --peer 127.0.0.1:4002 --peer 127.0.0.1:4003 --root cluster-plant.json
//! fsm-node --print-spec > cluster-plant.json   # the demo plant, lines on b and c
//! ```
//!
//! The root spec file is read again when it changes (a changed placement
//! moves a subtree). `--status-file` keeps a JSON summary of the node up
//! to date (what it hosts, the root tree's status); see `docs/cluster.md`.

// A command-line program prints its output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;
use fsm_actors::cluster::{ClusterTiming, Host, HostConfig, HostError};
use fsm_actors::telemetry::Telemetry;
use fsm_actors::{Tree, TreeConfig};
use fsm_core::{ChildSpec, Placement};
use fsm_examples::demo::{demo_config, embedded_root_spec};
use fsm_examples::sim::SimIo;
use fsm_examples::workers::{PlantSpec, registry};

/// Run one node of an fsmv2 cluster.
#[derive(Parser, Debug)]
#[command(name = "fsm-node", version)]
struct Args {
    /// The node's name, unique in the cluster.
    #[arg(long, required_unless_present = "print_spec")]
    name: Option<String>,
    /// Where the node listens for its peers (e.g. 127.0.0.1:4001).
    #[arg(long, required_unless_present = "print_spec")]
    listen: Option<SocketAddr>,
    /// The secret every node of the cluster shares.
    #[arg(long, required_unless_present = "print_spec")]
    cookie: Option<String>,
    /// A peer to join (repeatable).
    #[arg(long = "peer", value_name = "ADDR")]
    peers: Vec<SocketAddr>,
    /// The node's labels, comma-separated (for placements by label).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Run a tree from this root spec (JSON); read again when it changes.
    #[arg(long, value_name = "FILE")]
    root: Option<PathBuf>,
    /// Milliseconds between root ticks.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    tick_ms: u64,
    /// Stop by itself after this many seconds.
    #[arg(long, value_name = "SECS")]
    run_for: Option<f64>,
    /// Keep a JSON summary of the node in this file.
    #[arg(long, value_name = "FILE")]
    status_file: Option<PathBuf>,
    /// Milliseconds between lease renewals.
    #[arg(long, default_value_t = 200)]
    heartbeat_ms: u64,
    /// Milliseconds without an answer before a node counts as lost.
    #[arg(long, default_value_t = 1000)]
    detection_ms: u64,
    /// Milliseconds a renewal keeps a placed subtree running.
    #[arg(long, default_value_t = 700)]
    lease_ms: u64,
    /// Seconds to keep trying to reach each peer.
    #[arg(long, default_value_t = 10.0)]
    connect_for: f64,
    /// Write every span to FILE, one JSON object per line. A tick forwarded
    /// to another node continues its trace there: `cat a.jsonl b.jsonl |
    /// fsm-trace -` shows one tree of spans across the processes.
    #[arg(long, value_name = "FILE")]
    trace_out: Option<PathBuf>,
    /// Print the demo plant with its lines placed on nodes b and c, and exit.
    #[arg(long)]
    print_spec: bool,
}

/// The demo plant, its first line placed on node `b`, the others on `c`.
fn cluster_plant() -> Result<ChildSpec, String> {
    let mut root = embedded_root_spec().map_err(|e| e.to_string())?;
    let mut plant: PlantSpec = root.user_spec.decode().map_err(|e| e.to_string())?;
    for (i, line) in plant.lines.iter_mut().enumerate() {
        line.placement = Some(Placement::node(if i == 0 { "b" } else { "c" }));
    }
    root.user_spec = fsm_core::Value::from_serialize(&plant).map_err(|e| e.to_string())?;
    Ok(root)
}

fn read_spec(path: &Path) -> Result<(ChildSpec, Option<SystemTime>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spec = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((spec, modified))
}

async fn connect(host: &Host, peer: SocketAddr, for_: Duration) -> Result<(), HostError> {
    let until = tokio::time::Instant::now() + for_;
    loop {
        match host.connect(peer).await {
            Ok(()) => return Ok(()),
            // Not listening yet: it may be starting.
            Err(HostError::Connect { .. }) if tokio::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn write_status(path: &Path, host: &Host, tree: Option<&Tree>) {
    let hosted = host.hosted().await.unwrap_or_default();
    let root = tree.map(|t| {
        let s = t.status();
        serde_json::json!({
            "converged": s.converged,
            "generation": s.generation,
            "observed_generation": s.observed_generation,
            "nodes": s.counts.nodes,
            "ticks": s.ticks,
            "restarts": t.restarts(),
        })
    });
    let status = serde_json::json!({
        "name": host.name(),
        "live_nodes": host.live_nodes(),
        "hosted": hosted,
        "root": root,
    });
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, status.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let (Some(name), Some(listen), Some(cookie)) = (args.name, args.listen, args.cookie) else {
        return Err("--name, --listen and --cookie are required".to_owned());
    };
    let tick = Duration::from_millis(args.tick_ms);
    let io = SimIo::default();
    let registry = registry(&io).map_err(|e| e.to_string())?;
    let timing = ClusterTiming::new(
        Duration::from_millis(args.heartbeat_ms),
        Duration::from_millis(args.detection_ms),
        Duration::from_millis(args.lease_ms),
    );
    let config = HostConfig::new(name.clone(), listen, cookie)
        .with_labels(args.labels)
        .with_timing(timing);
    let host = Host::start(config, registry.clone(), demo_config(tick))
        .await
        .map_err(|e| e.to_string())?;
    let connect_for = Duration::from_secs_f64(args.connect_for.max(0.0));
    for peer in &args.peers {
        connect(&host, *peer, connect_for)
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut root = None;
    if let Some(path) = &args.root {
        let (spec, modified) = read_spec(path)?;
        let mut config: TreeConfig = demo_config(tick);
        config.cluster = Some(host.link());
        let tree = Tree::spawn(spec, registry, config)
            .await
            .map_err(|e| e.to_string())?;
        root = Some((tree, path.clone(), modified));
    }
    println!("fsm-node {name} ready on {listen}");
    let started = tokio::time::Instant::now();
    let run_for = args.run_for.map(|s| Duration::from_secs_f64(s.max(0.0)));
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        if run_for.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if let Some((tree, path, seen)) = &mut root {
            let modified = std::fs::metadata(&*path).and_then(|m| m.modified()).ok();
            if modified != *seen {
                match read_spec(path) {
                    Ok((spec, modified)) => {
                        *seen = modified;
                        tracing::info!(file = %path.display(), "root spec changed: applying it");
                        if let Err(e) = tree.update_root_spec(spec) {
                            tracing::error!(error = %e, "the changed root spec was refused");
                        }
                    }
                    // Half-written: read it again on the next round.
                    Err(e) => tracing::debug!(error = %e, "root spec not readable yet"),
                }
            }
        }
        if let Some(path) = &args.status_file {
            write_status(path, &host, root.as_ref().map(|(t, _, _)| t)).await;
        }
    }
    if let Some((tree, _, _)) = root {
        tree.shutdown(Duration::from_secs(5)).await;
    }
    host.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_spec {
        return match cluster_plant()
            .and_then(|s| serde_json::to_string_pretty(&s).map_err(|e| e.to_string()))
        {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fsm-node: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut telemetry = Telemetry::new(format!(
        "fsm-node-{}",
        args.name.as_deref().unwrap_or_default()
    ));
    if std::env::var_os("RUST_LOG").is_none() {
        telemetry = telemetry.log_filter("info,ractor_cluster=warn");
    }
    if let Some(path) = &args.trace_out {
        telemetry = telemetry.json_file(path);
    }
    let telemetry = match telemetry.install() {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("fsm-node: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fsm-node: {e}");
            ExitCode::from(2)
        }
    };
    // Flushes the span file.
    drop(telemetry);
    code
}
