//! An action its earlier process never finished shows in the trace of its
//! node's first tick after the tree is restored. (A file of its own: a
//! tracing subscriber is set per thread.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fsm_actors::Tree;
use fsm_core::NodePath;
use fsm_core::store::{ActionRecord, Change, MemoryStore, Store};
use integration::{ProbeSpec, ProbeWorld, probe_registry, test_config};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(start_paused = true)]
async fn an_interrupted_action_is_in_the_trace_of_its_node_s_first_tick() {
    let world = ProbeWorld::default();
    let store: Arc<Mutex<MemoryStore>> = Arc::default();
    let spec = ProbeSpec::default().named("root");
    let config = || test_config().with_store(Arc::clone(&store));
    let first = Tree::spawn(spec.clone(), probe_registry(&world), config())
        .await
        .unwrap();
    first.wait_converged(WAIT).await.unwrap();
    let _ = first.shutdown(WAIT).await;
    // As a killed process leaves it: an action started, without an outcome.
    store
        .lock()
        .unwrap()
        .write(&[Change::Action(ActionRecord::started(
            NodePath::parse("root"),
            "start",
            999,
            1_764_000_000_000,
        ))])
        .unwrap();

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("test"))
        .with_filter(EnvFilter::new("fsm_actors=info"));
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let second = Tree::spawn(spec, probe_registry(&world), config())
        .await
        .unwrap();
    second.wait_converged(WAIT).await.unwrap();
    let _ = second.shutdown(WAIT).await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let mut ticks: Vec<_> = spans
        .iter()
        .filter(|s| {
            s.name == "fsm.tick"
                && s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "node.path" && kv.value.to_string() == "root")
        })
        .collect();
    ticks.sort_by_key(|s| s.start_time);
    let interrupted = |s: &&&opentelemetry_sdk::trace::SpanData| {
        s.events.iter().any(|e| {
            e.name.contains("action interrupted")
                && e.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "outcome" && kv.value.to_string() == "interrupted")
        })
    };
    let first_tick = ticks.first().expect("the root ticked");
    assert!(
        interrupted(&first_tick),
        "the root's first tick does not show the interrupted action: {:?}",
        first_tick.events
    );
    assert_eq!(
        ticks.iter().filter(interrupted).count(),
        1,
        "shown in one tick only"
    );
}
