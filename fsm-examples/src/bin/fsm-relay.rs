//! `fsm-relay`: a local management relay for the demo and for testing a
//! communicator by hand (see `docs/relay.md`).
//!
//! ```text
//! cargo run -p fsm-examples --bin fsm-relay -- --listen 127.0.0.1:8080 \
//!     --auth-token TOKEN --instance-uuid UUID --queue 100 --fault-rate 0.2 --seed 7
//! ```
//!
//! Prints `listening on ADDR` on stdout once it serves, and its counters as
//! one line of JSON when it stops (after `--max-requests`, `--lifetime-s`
//! or Ctrl-C). Logs go to stderr (`RUST_LOG=debug` shows each request and
//! fault); no token, bearer or JWT is ever logged.

// A command-line program prints its output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fsm_examples::protocol::UmhMessage;
use fsm_examples::relay::{
    Fault, Faults, RandomFaults, Relay, RelayConfig, RelayError, Target, check_listen_address,
};

/// Serve a local management relay with fault injection.
#[derive(Parser, Debug)]
#[command(name = "fsm-relay", version)]
struct Args {
    /// The address to listen on (port 0: the OS picks). Loopback only,
    /// unless --public.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Allow a listen address other than loopback. The relay is a test
    /// double: one shared secret, no TLS, and fault injection; reachable
    /// from elsewhere, it hands its queue to anyone who can reach it.
    #[arg(long)]
    public: bool,
    /// The instance's auth token (logins must carry its double SHA3 hash).
    #[arg(long)]
    auth_token: String,
    /// The instance's uuid.
    #[arg(long)]
    instance_uuid: String,
    /// The instance's name, as the login answers it.
    #[arg(long, default_value = "fsm-relay-instance")]
    instance_name: String,
    /// Answer logins with 404, as for a deleted instance.
    #[arg(long)]
    deleted: bool,
    /// Queue N messages (contents msg-0, msg-1, ...) for the instance to
    /// pull.
    #[arg(long, value_name = "N", default_value_t = 0)]
    queue: u64,
    /// The most messages one pull hands out.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Fault each request with this probability (0 to 1).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    fault_rate: f64,
    /// The seed of the random faults.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// The random faults' kinds and weights, e.g. `reset=2,unavailable=1`
    /// (default: every kind once). Kinds: unauthorized, rate-limited,
    /// rate-limited-bare, server-error, unavailable, proxy-challenge,
    /// slow, reset, response-lost.
    #[arg(long, value_name = "MIX")]
    fault_mix: Option<String>,
    /// Inject this fault once, into the next pull or push (repeatable, in
    /// order; kinds as for --fault-mix).
    #[arg(long, value_name = "KIND")]
    fault: Vec<String>,
    /// How long a `slow` fault delays its answer.
    #[arg(long, value_name = "MS", default_value_t = 35_000)]
    slow_ms: u64,
    /// How long a session token is valid (its `exp`).
    #[arg(long, value_name = "S", default_value_t = 23 * 3600)]
    token_lifetime_s: u64,
    /// Session tokens expire after this many pulls and pushes each.
    #[arg(long, value_name = "N")]
    token_max_requests: Option<u64>,
    /// Stop after answering this many requests.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_requests: u64,
    /// Stop this many seconds after starting.
    #[arg(long, value_name = "S", default_value_t = 3600)]
    lifetime_s: u64,
}

fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number: {e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability (0 to 1)"))
    }
}

/// The relay's configuration from the arguments, refusing a listen address
/// other than loopback without `--public`.
fn config(args: &Args) -> Result<RelayConfig, RelayError> {
    check_listen_address(args.listen, args.public)?;
    let slow = Duration::from_millis(args.slow_ms);
    let random = if args.fault_rate > 0.0 {
        let mut random = RandomFaults::new(args.fault_rate, args.seed);
        random.mix = match &args.fault_mix {
            Some(mix) => RandomFaults::parse_mix(mix, slow)?,
            None => RandomFaults::default_mix(slow),
        };
        Some(random)
    } else {
        None
    };
    let scheduled = args
        .fault
        .iter()
        .map(|name| Ok((Target::Api, Fault::from_name(name, slow)?)))
        .collect::<Result<Vec<_>, RelayError>>()?;
    let mut config = RelayConfig::new(args.auth_token.clone(), args.instance_uuid.clone());
    config.listen = args.listen;
    config.allow_public = args.public;
    config.instance_name = args.instance_name.clone();
    config.deleted = args.deleted;
    config.pull_batch = args.batch;
    config.token_lifetime = Duration::from_secs(args.token_lifetime_s);
    config.max_requests = Some(args.max_requests);
    config.lifetime = Some(Duration::from_secs(args.lifetime_s));
    config.faults = Faults {
        token_max_requests: args.token_max_requests,
        scheduled,
        random,
    };
    Ok(config)
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match config(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("fsm-relay: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fsm-relay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config, &args))
}

async fn run(config: RelayConfig, args: &Args) -> ExitCode {
    let uuid = config.instance_uuid.clone();
    let relay = match Relay::start(config).await {
        Ok(relay) => relay,
        Err(e) => {
            eprintln!("fsm-relay: {e}");
            return ExitCode::FAILURE;
        }
    };
    relay.queue_for_instance((0..args.queue).map(|i| UmhMessage {
        umh_instance: uuid.clone(),
        content: format!("msg-{i}"),
        email: "fsm-relay@localhost".to_owned(),
        trace_id: None,
    }));
    println!("listening on {}", relay.addr());
    // Whoever reads the address (a script) must see it now.
    let _ = std::io::stdout().flush();
    tokio::select! {
        reason = relay.stopped() => tracing::info!(?reason, "relay stopped by itself"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
    }
    let stats = relay.shutdown().await;
    match serde_json::to_string(&stats) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("fsm-relay: cannot print the stats: {e}"),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["fsm-relay", "--auth-token", "t", "--instance-uuid", "u"];
        argv.extend_from_slice(extra);
        Args::parse_from(argv)
    }

    #[test]
    fn a_non_loopback_listen_address_is_refused_without_public() {
        let refused = config(&args(&["--listen", "0.0.0.0:8080"]));
        assert!(matches!(refused, Err(RelayError::NotLoopback(_))));
        let allowed = config(&args(&["--listen", "0.0.0.0:8080", "--public"]));
        assert!(allowed.is_ok_and(|config| config.allow_public));
        assert!(config(&args(&["--listen", "127.0.0.1:0"])).is_ok());
    }

    #[test]
    fn fault_flags_become_the_relays_faults() {
        let config = config(&args(&[
            "--fault-rate",
            "0.2",
            "--seed",
            "7",
            "--fault-mix",
            "reset=1",
            "--fault",
            "unavailable",
            "--token-max-requests",
            "3",
        ]));
        let faults = config.map(|config| config.faults).ok();
        assert_eq!(
            faults,
            Some(Faults {
                token_max_requests: Some(3),
                scheduled: vec![(Target::Api, Fault::ServiceUnavailable)],
                random: Some(RandomFaults {
                    rate: 0.2,
                    seed: 7,
                    mix: vec![(Fault::Reset, 1)],
                }),
            })
        );
        assert!(config_err(&["--fault", "nonsense"]));
    }

    fn config_err(extra: &[&str]) -> bool {
        config(&args(extra)).is_err()
    }
}
