//! The shape of a tree's traces, read back with the SDK's in-memory span
//! exporter.

// Test helpers outside `#[test]` functions unwrap too: a panic fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fsm_actors::Tree;
use integration::{
    ActionMode, Fault, ProbeSpec, ProbeWorld, probe_registry, probe_spec, small_tree, test_config,
};
use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer};

/// A subscriber for this thread exporting `fsm_actors` spans to memory.
fn tracing_to_memory() -> (
    tracing::subscriber::DefaultGuard,
    InMemorySpanExporter,
    SdkTracerProvider,
) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("test"))
        .with_filter(EnvFilter::new("fsm_actors=info"));
    let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    (guard, exporter, provider)
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn is(span: &SpanData, name: &str, path: &str) -> bool {
    span.name == name && attr(span, "node.path").as_deref() == Some(path)
}

/// One test for the whole file: `tracing` subscribers set per thread do not
/// mix well with callsite interest caching when several run at once.
#[tokio::test(start_paused = true)]
async fn the_trace_shape() {
    let (_guard, exporter, provider) = tracing_to_memory();
    one_root_tick_is_one_trace_with_child_ticks_three_levels_deep(&exporter, &provider).await;
    exporter.reset();
    actions_link_to_their_tick_and_restarts_carry_their_failure(&exporter, &provider).await;
}

async fn one_root_tick_is_one_trace_with_child_ticks_three_levels_deep(
    exporter: &InMemorySpanExporter,
    provider: &SdkTracerProvider,
) {
    let world = ProbeWorld::default();
    let tree = Tree::spawn(small_tree(), probe_registry(&world), test_config())
        .await
        .unwrap();
    tree.wait_converged(Duration::from_secs(30)).await.unwrap();
    // A few more ticks of the converged tree.
    tree.wait_ticks(tree.status().ticks + 3).await.unwrap();
    tree.shutdown(Duration::from_secs(5)).await;
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();

    // Only the runtime's spans are exported, not ractor's internal ones.
    assert!(
        spans.iter().all(|s| s.name.starts_with("fsm.")),
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );

    let roots: Vec<&SpanData> = spans.iter().filter(|s| is(s, "fsm.tick", "root")).collect();
    assert!(
        roots.len() >= 3,
        "one root tick span per tick: {}",
        roots.len()
    );
    let mut complete = 0;
    for root in &roots {
        assert_eq!(
            root.parent_span_id,
            SpanId::INVALID,
            "the root's tick starts its trace"
        );
        let trace: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.span_context.trace_id() == root.span_context.trace_id())
            .collect();
        let child_of = |parent: &SpanData, path: &str| {
            trace
                .iter()
                .find(|s| {
                    is(s, "fsm.tick", path) && s.parent_span_id == parent.span_context.span_id()
                })
                .copied()
        };
        let Some(a) = child_of(root, "root/a") else {
            continue;
        };
        let Some(a1) = child_of(a, "root/a/a1") else {
            continue;
        };
        assert!(child_of(root, "root/b").is_some());
        assert_eq!(attr(a1, "worker.type").as_deref(), Some("probe"));
        assert!(attr(a1, "state.before").is_some() && attr(a1, "state.after").is_some());
        // No tick of another root tick leaks into this trace.
        assert_eq!(trace.iter().filter(|s| s.name == "fsm.tick").count(), 4);
        complete += 1;
    }
    assert!(complete >= 1, "no root tick reached all four nodes");
    // A reconcile span with its counts, under the root's first tick.
    let reconcile = spans
        .iter()
        .find(|s| is(s, "fsm.reconcile", "root"))
        .expect("the root reconciled its children");
    assert_eq!(attr(reconcile, "spawned").as_deref(), Some("2"));
    assert!(spans.iter().any(|s| is(s, "fsm.child.spawn", "root/a/a1")));
    assert!(spans.iter().any(|s| is(s, "fsm.collect", "root/a")));
    assert!(
        spans
            .iter()
            .any(|s| is(s, "fsm.child.stop", "root/a") || is(s, "fsm.child.stop", "root/b"))
    );
}

async fn actions_link_to_their_tick_and_restarts_carry_their_failure(
    exporter: &InMemorySpanExporter,
    provider: &SdkTracerProvider,
) {
    let world = ProbeWorld::default();
    let spec = probe_spec(
        "root",
        vec![
            probe_spec("a", vec![]),
            ProbeSpec::default()
                .with_action(ActionMode::Fail)
                .named("bad"),
        ],
    );
    let tree = Tree::spawn(spec, probe_registry(&world), test_config())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    world.arm("root/a", Fault::Crash, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();

    let action = spans
        .iter()
        .find(|s| is(s, "fsm.action", "root/a"))
        .expect("root/a ran an action");
    assert_eq!(
        action.parent_span_id,
        SpanId::INVALID,
        "an action starts its own trace"
    );
    assert_eq!(attr(action, "outcome").as_deref(), Some("succeeded"));
    let link = action
        .links
        .first()
        .expect("linked to the tick that asked for it");
    let origin = spans
        .iter()
        .find(|s| s.span_context.span_id() == link.span_context.span_id())
        .expect("the linked span was exported");
    assert!(is(origin, "fsm.tick", "root/a"), "{origin:?}");

    let failed = spans
        .iter()
        .find(|s| is(s, "fsm.action", "root/bad"))
        .expect("root/bad ran an action");
    assert_eq!(attr(failed, "outcome").as_deref(), Some("failed"));
    assert!(matches!(
        failed.status,
        opentelemetry::trace::Status::Error { .. }
    ));

    let restart = spans
        .iter()
        .find(|s| is(s, "fsm.child.restart", "root/a"))
        .expect("root/a was restarted");
    assert!(
        attr(restart, "failure")
            .unwrap()
            .contains("configured to crash")
    );
    assert_eq!(attr(restart, "parent.path").as_deref(), Some("root"));
    let link = restart
        .links
        .first()
        .expect("linked to the parent's last tick");
    assert!(
        spans
            .iter()
            .any(|s| s.span_context.span_id() == link.span_context.span_id()
                && is(s, "fsm.tick", "root"))
    );
    tree.shutdown(Duration::from_secs(5)).await;
}
