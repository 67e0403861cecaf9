//! The auth token, its bearer and the session's JWT never appear in the
//! logs (at `trace`, spans included), the snapshot or its errors, while the
//! communicator syncs through a relay faulting a fifth of its requests.
//! (Its own test binary: it installs the global subscriber.)

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fsm_actors::{Tree, TreeConfig};
use fsm_core::{ChildSpec, Secret, WorkerRegistry};
use fsm_examples::communicator::{self, CommunicatorConfig, CommunicatorHandle, CommunicatorSpec};
use fsm_examples::protocol::{UmhMessage, bearer};
use fsm_examples::relay::{Fault, RandomFaults, Relay, RelayConfig, Target};
use tracing_subscriber::fmt::format::FmtSpan;

const TOKEN: &str = "very-secret-instance-token";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_the_spans_or_the_snapshot() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::FULL)
        .with_writer(move || writer.clone())
        .try_init()
        .unwrap_or_else(|e| panic!("{e}"));

    let relay = Relay::start(RelayConfig {
        pull_batch: 10,
        ..RelayConfig::new(TOKEN, "instance-uuid")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let n = 300;
    relay.queue_for_instance((0..n).map(|i| message(format!("in-{i}"))));
    let mut random = RandomFaults::new(0.2, 11);
    random.mix.retain(|(f, _)| !matches!(f, Fault::Slow(_)));
    relay.set_random_faults(Some(random));
    // And one of each that touches a session for sure.
    relay.inject_on(Target::Pull, Fault::Unauthorized);
    relay.inject_on(Target::Push, Fault::ResponseLost);
    relay.inject_on(Target::Login, Fault::ServerError);

    let config = CommunicatorConfig {
        delays: CommunicatorConfig::default().delays.scaled_down(1000),
        // Many small requests: more of them faulted.
        max_batch: 10,
        ..CommunicatorConfig::default()
    };
    let mut registry = WorkerRegistry::new();
    let mut channels = communicator::register(&mut registry, CommunicatorHandle::new(config))
        .unwrap_or_else(|e| panic!("{e}"));
    let spec = CommunicatorSpec {
        timeout_ms: 1_000,
        ..CommunicatorSpec::new(relay.url(), Secret::from(TOKEN))
    };
    let root = ChildSpec::new("communicator", communicator::COMMUNICATOR)
        .with_typed_spec(&spec)
        .unwrap_or_else(|e| panic!("{e}"));
    let tree = Tree::spawn(
        root,
        registry,
        TreeConfig::default().with_tick_interval(Some(Duration::from_millis(5))),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..n {
        channels
            .outbound
            .send(message(format!("msg-{i}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while channels.stats().acknowledged < n as u64 {
        while channels.inbound.try_recv().is_ok() {}
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            channels.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let snapshot = tree
        .handle()
        .inspect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let json = snapshot.to_json().unwrap_or_default();
    let report = tree.shutdown(Duration::from_secs(5)).await;
    let stats = relay.shutdown().await;
    assert!(stats.faults.total() >= 3, "the relay faulted: {stats:?}");

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap_or_else(PoisonError::into_inner))
        .into_owned();
    assert!(
        logs.contains("logged in to the relay"),
        "the capture holds the communicator's logs"
    );
    let outputs = [
        ("logs", logs),
        ("snapshot", json),
        ("shutdown report", format!("{report:?}")),
        ("stats", format!("{:?}", channels.stats())),
    ];
    // A JWT's header is base64url JSON: it starts with `eyJ`.
    for secret in [TOKEN.to_owned(), bearer(TOKEN), "eyJ".to_owned()] {
        for (what, text) in &outputs {
            assert!(!text.contains(&secret), "{what} holds a secret");
        }
    }
}

fn message(content: String) -> UmhMessage {
    UmhMessage {
        umh_instance: String::new(),
        content,
        email: "ops@example.com".to_owned(),
        trace_id: None,
    }
}
