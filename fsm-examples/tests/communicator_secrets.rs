//! The auth token, its bearer and the session's JWT never appear in the
//! logs (at `trace`, spans included), the span file, the snapshot, the
//! HTTP endpoint's `/tree` and `/metrics`, or the errors, while the
//! communicator syncs through a relay faulting a fifth of its requests.
//! (Its own test binary: it installs the global subscriber.)

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fsm_actors::opentelemetry::metrics::MeterProvider as _;
use fsm_actors::opentelemetry::trace::TracerProvider as _;
use fsm_actors::telemetry::JsonLinesExporter;
use fsm_actors::telemetry::http::HttpServer;
use fsm_actors::telemetry::prometheus::PrometheusExporter;
use fsm_actors::{Tree, TreeConfig};
use fsm_core::{ChildSpec, Secret, WorkerRegistry};
use fsm_examples::communicator::{self, CommunicatorConfig, CommunicatorHandle, CommunicatorSpec};
use fsm_examples::protocol::{UmhMessage, bearer};
use fsm_examples::relay::{Fault, RandomFaults, Relay, RelayConfig, Target};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

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

/// GET `path` from the HTTP endpoint at `addr`: its body.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let answer = reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert!(
        answer.status().is_success(),
        "GET {path}: {}",
        answer.status()
    );
    answer
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_the_span_file_the_snapshot_or_the_http_endpoint() {
    // Every span, at every level, to a JSON-lines file as the framework
    // writes it, and every event and span to the captured log.
    let span_file = std::env::temp_dir().join(format!(
        "fsm-communicator-secrets-{}.jsonl",
        std::process::id()
    ));
    let spans = JsonLinesExporter::create(&span_file).unwrap_or_else(|e| panic!("{e}"));
    let tracer_provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(spans).build())
        .build();
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_span_events(FmtSpan::FULL)
                .with_writer(move || writer.clone()),
        )
        .with(tracing_opentelemetry::layer().with_tracer(tracer_provider.tracer("secrets-test")))
        .with(tracing_subscriber::filter::LevelFilter::TRACE)
        .try_init()
        .unwrap_or_else(|e| panic!("{e}"));
    // The HTTP endpoint on a port of its own: `/tree` and `/metrics`.
    let exporter = PrometheusExporter::new();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let http = HttpServer::builder()
        .metrics(meter_provider.clone(), exporter)
        .bind(([127, 0, 0, 1], 0).into())
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
        TreeConfig::default()
            .with_tick_interval(Some(Duration::from_millis(5)))
            .with_meter(Some(meter_provider.meter("fsmv2"))),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    http.serve_tree(&tree);
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
    let served_tree = get(http.local_addr(), "/tree").await;
    assert!(
        served_tree.contains("communicator/push"),
        "/tree serves the tree: {served_tree}"
    );
    let served_metrics = get(http.local_addr(), "/metrics").await;
    assert!(
        served_metrics.contains("fsmv2_communicator_logins"),
        "/metrics serves the communicator's: {served_metrics}"
    );
    let report = tree.shutdown(Duration::from_secs(5)).await;
    let stats = relay.shutdown().await;
    assert!(stats.faults.total() >= 3, "the relay faulted: {stats:?}");
    drop(http);
    tracer_provider.shutdown().unwrap_or_else(|e| panic!("{e}"));
    let span_lines = std::fs::read_to_string(&span_file).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(&span_file).ok();
    // The file holds the communicator's spans, its logins among them, and
    // the events inside them.
    assert!(
        span_lines
            .lines()
            .any(|l| l.contains(r#""action":"authenticate""#)),
        "the span file holds the logins"
    );
    assert!(
        span_lines.contains("logged in to the relay") && span_lines.contains("pull failed"),
        "the span file holds the events in the spans, at info and debug"
    );

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap_or_else(PoisonError::into_inner))
        .into_owned();
    assert!(
        logs.contains("logged in to the relay"),
        "the capture holds the communicator's logs"
    );
    let outputs = [
        ("logs", logs),
        ("span file", span_lines),
        ("/tree", served_tree),
        ("/metrics", served_metrics),
        ("snapshot", json),
        ("shutdown report", format!("{report:?}")),
        ("stats", format!("{:?}", channels.stats())),
    ];
    // A JWT's header is base64url JSON: it starts with `eyJ`.
    for secret in [TOKEN.to_owned(), bearer(TOKEN), "eyJ".to_owned()] {
        for (what, text) in &outputs {
            let at = text.find(&secret);
            let around =
                at.and_then(|at| text.get(at.saturating_sub(200)..(at + 200).min(text.len())));
            assert!(at.is_none(), "{what} holds a secret: {around:?}");
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
