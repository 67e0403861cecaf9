//! `fsm-communicator`: runs a tree with the communicator against a relay,
//! pushes N messages, waits for them to be acknowledged and for M pulled
//! ones, shuts down in order and prints a report.
//!
//! ```text
//! cargo run -p fsm-examples --bin fsm-communicator -- --relay http://127.0.0.1:8080 \
//!     --auth-token TOKEN --push 10000 --expect-pull 10000 [--timeout-s 120] [--json]
//! ```
//!
//! Exit status: 0 when all N were acknowledged and M pulled within the
//! timeout; 1 when not (the report says how far it got); 2 on bad
//! arguments or a tree that cannot start. The auth token is never printed.

// A command-line program prints its output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use fsm_actors::{Tree, TreeConfig};
use fsm_core::{ChildSpec, Secret, WorkerRegistry};
use fsm_examples::communicator::{
    self, CommunicatorConfig, CommunicatorHandle, CommunicatorSpec, CommunicatorStats,
};
use fsm_examples::protocol::UmhMessage;
use serde::Serialize;
use tracing::Level;
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Run the communicator against a relay: push, pull, report.
#[derive(Parser, Debug)]
#[command(name = "fsm-communicator", version)]
struct Args {
    /// The relay's base URL.
    #[arg(long)]
    relay: String,
    /// The instance's auth token (never printed).
    #[arg(long)]
    auth_token: String,
    /// Messages to push (`msg-0` … `msg-{N-1}`).
    #[arg(long, default_value_t = 0)]
    push: u64,
    /// Pulled messages to wait for.
    #[arg(long, default_value_t = 0)]
    expect_pull: u64,
    /// The longest the run may take, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Every protocol delay (429, 5xx, network, ...) divided by this: 1 is
    /// the protocol's own; a local relay with faults is quicker with 1000.
    #[arg(long, default_value_t = 1)]
    delay_divisor: u32,
    /// One request's timeout, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    request_timeout_ms: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// What the run did.
#[derive(Debug, Serialize)]
struct Report {
    pushed: u64,
    acknowledged: u64,
    duplicates: u64,
    dropped: u64,
    pulled: u64,
    logins: u64,
    unauthorized: u64,
    unauthorized_collapsed: u64,
    reauth_on_401: u64,
    degraded_entries: u64,
    /// The communicator's states, in the order they were first seen.
    states_visited: Vec<String>,
    complete: bool,
}

fn report(stats: &CommunicatorStats, states: Vec<String>, args: &Args) -> Report {
    Report {
        pushed: stats.pushed,
        acknowledged: stats.acknowledged,
        duplicates: stats.duplicates_sent,
        dropped: stats.dropped_full + stats.dropped_rejected,
        pulled: stats.delivered,
        logins: stats.logins,
        unauthorized: stats.unauthorized,
        unauthorized_collapsed: stats.unauthorized_collapsed,
        reauth_on_401: stats.reauth_on_401,
        degraded_entries: stats.degraded_entries,
        states_visited: states,
        complete: stats.acknowledged >= args.push && stats.delivered >= args.expect_pull,
    }
}

/// The tree's root: the communicator.
const ROOT: &str = "communicator";

/// The communicator's states in the order they were first entered, from
/// the runtime's `state transition` events (every transition, however
/// short; sampling the tree would miss a state left within the sample).
#[derive(Clone, Default)]
struct StateTrail(Arc<Mutex<Vec<String>>>);

impl StateTrail {
    fn states(&self) -> Vec<String> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl<S: tracing::Subscriber> Layer<S> for StateTrail {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = TransitionFields::default();
        event.record(&mut fields);
        if !fields.is_transition || fields.path != ROOT {
            return;
        }
        let Ok(mut states) = self.0.lock() else {
            return;
        };
        for state in [fields.from, fields.to] {
            if !state.is_empty() && !states.contains(&state) {
                states.push(state);
            }
        }
    }
}

/// The fields of a `state transition` event.
#[derive(Default)]
struct TransitionFields {
    is_transition: bool,
    path: String,
    from: String,
    to: String,
}

impl Visit for TransitionFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "from" => value.clone_into(&mut self.from),
            "to" => value.clone_into(&mut self.to),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.is_transition = format!("{value:?}") == "state transition",
            "node.path" => self.path = format!("{value:?}"),
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Logs on stderr, `RUST_LOG` to filter (default: warnings); no level
    // shows the auth token or the session's JWT.
    let logs = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let trail = StateTrail::default();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_filter(logs),
        )
        .with(
            trail
                .clone()
                .with_filter(Targets::new().with_target("fsm_actors", Level::INFO)),
        )
        .init();
    let n = usize::try_from(args.push).unwrap_or(usize::MAX);
    let capacity = n.max(1000);
    let config = CommunicatorConfig {
        delays: CommunicatorConfig::default()
            .delays
            .scaled_down(args.delay_divisor),
        inbound_capacity: capacity,
        outbound_capacity: capacity,
        max_pending: capacity,
        ..CommunicatorConfig::default()
    };
    let mut registry = WorkerRegistry::new();
    let mut channels = match communicator::register(&mut registry, CommunicatorHandle::new(config))
    {
        Ok(channels) => channels,
        Err(e) => {
            eprintln!("fsm-communicator: {e}");
            return ExitCode::from(2);
        }
    };
    let spec = CommunicatorSpec {
        timeout_ms: args.request_timeout_ms,
        ..CommunicatorSpec::new(args.relay.clone(), Secret::from(args.auth_token.as_str()))
    };
    let root = match ChildSpec::new(ROOT, communicator::COMMUNICATOR).with_typed_spec(&spec) {
        Ok(root) => root,
        Err(e) => {
            eprintln!("fsm-communicator: {e}");
            return ExitCode::from(2);
        }
    };
    let tree_config = TreeConfig::default()
        .with_tick_interval(Some(Duration::from_millis(10)))
        // An action waits at most one request.
        .with_executor(
            fsm_actors::ExecutorConfig::default()
                .with_default_timeout(spec.timeout() + Duration::from_secs(1)),
        );
    let tree = match Tree::spawn(root, registry, tree_config).await {
        Ok(tree) => tree,
        Err(e) => {
            eprintln!("fsm-communicator: the tree did not start: {e}");
            return ExitCode::from(2);
        }
    };

    for i in 0..args.push {
        let message = UmhMessage {
            umh_instance: String::new(),
            content: format!("msg-{i}"),
            email: "fsm-communicator@localhost".to_owned(),
            trace_id: None,
        };
        if channels.outbound.send(message).await.is_err() {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_s);
    loop {
        while channels.inbound.try_recv().is_ok() {}
        let stats = channels.stats();
        if (stats.acknowledged >= args.push && stats.delivered >= args.expect_pull)
            || tokio::time::Instant::now() >= deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shutdown = tree.shutdown(Duration::from_secs(10)).await;
    let report = report(&channels.stats(), trail.states(), &args);
    if args.json {
        match serde_json::to_string(&report) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("fsm-communicator: {e}"),
        }
    } else {
        println!(
            "pushed {}  acknowledged {}  duplicates {}  dropped {}  pulled {}",
            report.pushed, report.acknowledged, report.duplicates, report.dropped, report.pulled
        );
        println!(
            "logins {}  unauthorized {} (collapsed {})  reauth_on_401 {}  degraded_entries {}  states {}",
            report.logins,
            report.unauthorized,
            report.unauthorized_collapsed,
            report.reauth_on_401,
            report.degraded_entries,
            report.states_visited.join(" → ")
        );
    }
    if !shutdown.all_clean() {
        eprintln!("fsm-communicator: the shutdown was not clean");
    }
    if report.complete {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "fsm-communicator: incomplete after {} s: {} of {} acknowledged, {} of {} pulled",
            args.timeout_s, report.acknowledged, args.push, report.pulled, args.expect_pull
        );
        ExitCode::from(1)
    }
}
