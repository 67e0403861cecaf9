//! `fsm-communicator` against `fsm-relay` with a fifth of the requests
//! faulted: every message acknowledged, every expected one pulled, exit 0,
//! and the token never printed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use fsm_examples::protocol::UmhMessage;
use fsm_examples::relay::{Fault, RandomFaults, Relay, RelayConfig};

const TOKEN: &str = "cli-secret-token-4711";
const UUID: &str = "0b6f3f1e-cli";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_communicator_binary_moves_every_message_through_a_faulty_relay_and_exits_0() {
    let n = 300;
    let relay = Relay::start(RelayConfig {
        pull_batch: 50,
        ..RelayConfig::new(TOKEN, UUID)
    })
    .await
    .unwrap();
    relay.queue_for_instance((0..n).map(|i| UmhMessage {
        umh_instance: UUID.to_owned(),
        content: format!("in-{i}"),
        email: "ops@example.com".to_owned(),
        trace_id: None,
    }));
    relay.set_random_faults(Some(RandomFaults {
        rate: 0.2,
        seed: 11,
        // Every kind but a pull answer lost after dequeue: that loss is the
        // protocol's, and would make `--expect-pull` unreachable.
        mix: RandomFaults::default_mix(Duration::from_millis(600))
            .into_iter()
            .filter(|(fault, _)| *fault != Fault::ResponseLost)
            .collect(),
    }));
    let url = relay.url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_fsm-communicator"))
            .args(["--relay", &url, "--auth-token", TOKEN])
            .args(["--push", &n.to_string(), "--expect-pull", &n.to_string()])
            .args(["--delay-divisor", "1000", "--request-timeout-ms", "300"])
            .args(["--timeout-s", "60", "--json"])
            .env("RUST_LOG", "trace")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["acknowledged"], n);
    assert_eq!(report["pulled"], n);
    assert_eq!(report["dropped"], 0);
    assert_eq!(report["complete"], true);
    let visited = report["states_visited"].as_array().unwrap();
    // Every state entered, however briefly, in order: from `stopped`
    // through `authenticating` to `syncing` (and `degraded` if a fault
    // lasted).
    assert_eq!(
        visited[..3],
        ["stopped", "authenticating", "syncing"],
        "{report}"
    );
    let received: BTreeSet<String> = relay.received().into_iter().map(|m| m.content).collect();
    let expected: BTreeSet<String> = (0..n).map(|i| format!("msg-{i}")).collect();
    assert_eq!(received, expected);
    let stats = relay.shutdown().await;
    assert!(stats.faults.total() > 0, "{stats:?}");
    // At `trace`, the runtime and the communicator log every step.
    assert!(stderr.lines().count() > 100, "{stderr}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains(TOKEN), "the auth token was printed");
        assert!(!text.contains(&fsm_examples::protocol::bearer(TOKEN)));
        // A JWT's header is base64url JSON: it starts `eyJ`.
        assert!(!text.contains("eyJ"), "a JWT was printed");
    }
}
