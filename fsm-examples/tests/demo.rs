//! The demo's behaviour on the paused clock, and its command line.

// Test helpers outside `#[test]` functions unwrap too: a panic fails the test.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use fsm_examples::demo::{DemoOptions, embedded_root_spec, run_demo};

fn options(ticks: u64, change_halfway: bool) -> DemoOptions {
    DemoOptions {
        root: embedded_root_spec().unwrap(),
        ticks,
        tick: Duration::from_millis(50),
        change_halfway,
        chaos: 0.0,
        store: None,
    }
}

#[tokio::test(start_paused = true)]
async fn twenty_ticks_with_the_change_converge_every_node() {
    let run = run_demo(&options(20, true)).await.unwrap();
    assert!(run.changed);
    let snap = &run.snapshot;
    assert!(snap.height() >= 3, "{snap:#?}");
    for node in snap.iter() {
        assert!(node.healthy, "{}: {:?}", node.path, node.last_error);
        assert_eq!(node.state, node.desired_state, "{}", node.path);
    }
    // The change happened: line-2 is gone, line-3 is there, the first
    // bridge reads one more tag.
    assert!(snap.find("plant/line-2").is_none());
    assert!(snap.find("plant/line-3/press/read-flow").is_some());
    assert!(run.shutdown.all_clean(), "{:?}", run.shutdown);
    assert_eq!(run.shutdown.stopped.len(), snap.len());
}

#[tokio::test(start_paused = true)]
async fn static_runs_keep_the_embedded_tree() {
    let run = run_demo(&options(20, false)).await.unwrap();
    assert!(!run.changed);
    assert!(
        run.snapshot
            .find("plant/line-2/filler/write-flow")
            .is_some()
    );
    assert!(run.snapshot.find("plant/line-3").is_none());
    assert!(run.snapshot.iter().all(|n| n.state == n.desired_state));
}

#[test]
fn print_spec_prints_a_root_spec_that_spec_accepts() {
    let out = Command::new(env!("CARGO_BIN_EXE_fsm-demo"))
        .arg("--print-spec")
        .output()
        .unwrap();
    assert!(out.status.success());
    let spec: fsm_core::ChildSpec = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(spec, embedded_root_spec().unwrap());
}

#[test]
fn a_malformed_spec_file_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("fsm-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.json");
    // The demo must fail on `contents`, saying `expected`.
    let fails_with = |contents: &str, expected: &str| {
        std::fs::write(&file, contents).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_fsm-demo"))
            .arg("--spec")
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{err}");
    };
    fails_with("{\"name\": 3}", "is not a root spec");
    fails_with(
        r#"{"name": "plant", "worker_type": "factory"}"#,
        "unknown worker type `factory`",
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(start_paused = true)]
async fn chaos_in_the_first_half_is_recovered_from_by_the_end() {
    fsm_actors::quiet_injected_faults();
    let mut opts = options(60, true);
    opts.chaos = 0.05;
    let run = run_demo(&opts).await.unwrap();
    let restarts: u64 = run.snapshot.iter().map(|n| n.restarts).sum();
    assert!(restarts > 0, "no fault was injected");
    for node in run.snapshot.iter() {
        assert!(node.healthy, "{}: {:?}", node.path, node.last_error);
        assert_eq!(node.state, node.desired_state, "{}", node.path);
        assert!(node.converged, "{}", node.path);
    }
}

#[tokio::test(start_paused = true)]
async fn an_undefined_variable_deep_in_the_spec_fails_exactly_the_node_that_reads_it() {
    let text = fsm_examples::demo::EMBEDDED_SPEC.replacen("{{ SUBNET }}.11", "{{ SUBNETT }}.11", 1);
    let mut opts = options(20, false);
    opts.root = serde_json::from_str(&text).unwrap();
    let run = run_demo(&opts).await.unwrap();
    let snap = &run.snapshot;
    let bad = snap.find("plant/line-1/oven").unwrap();
    assert!(!bad.healthy);
    let error = bad.last_error.as_deref().unwrap();
    assert!(
        error.contains("`SUBNETT`") && error.contains("plant/line-1/oven"),
        "{error}"
    );
    assert_eq!(bad.location_path, "acme.plant-a.packaging.line-1.oven");
    assert!(bad.children.is_empty(), "it never derived its children");
    for node in snap.iter() {
        let depends_on_it = "plant/line-1/oven".starts_with(node.path.as_str());
        if depends_on_it {
            assert!(!node.converged, "{}", node.path);
            assert_eq!(
                node.healthy,
                node.path.as_str() != "plant/line-1/oven",
                "{}",
                node.path
            );
        } else {
            assert!(
                node.healthy && node.converged,
                "{}: {:?}",
                node.path,
                node.last_error
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn every_node_has_a_location_and_bridges_have_at_least_four_levels() {
    let run = run_demo(&options(20, true)).await.unwrap();
    for node in run.snapshot.iter() {
        assert!(!node.location_path.is_empty(), "{}", node.path);
        if node.path.depth() == 3 {
            assert!(
                node.location_path.split('.').count() >= 4,
                "{}",
                node.location_path
            );
        }
    }
}

/// Counts the events whose message is `restart scheduled`.
#[derive(Clone, Default)]
struct RestartEvents(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RestartEvents {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" && format!("{value:?}") == "restart scheduled" {
                    self.0 = true;
                }
            }
        }
        let mut message = Message(false);
        event.record(&mut message);
        if message.0 {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_restart_count_matches_the_restarts_the_log_reports() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let events = RestartEvents::default();
    let subscriber = tracing_subscriber::registry().with(events.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    fsm_actors::quiet_injected_faults();
    let mut chaotic = options(40, true);
    chaotic.chaos = 0.05;
    let run = run_demo(&chaotic).await.unwrap();
    let logged = events.0.load(std::sync::atomic::Ordering::Relaxed);
    assert!(logged > 0, "the chaos caused no restart");
    assert_eq!(run.restarts, logged);
    let in_final_tree: u64 = run.snapshot.iter().map(|n| n.restarts).sum();
    assert!(in_final_tree <= run.restarts);
}

/// Runs the demo on the embedded spec with `{{ SUBNET }}.11` misspelt (the
/// oven of line 1 can never derive its children), stdout and stderr piped.
fn run_unconvergeable(extra: &[&str]) -> std::process::Output {
    // Tests run in parallel: each call gets a folder of its own.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "fsm-demo-unconvergeable-{}-{call}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("spec.json");
    let text = fsm_examples::demo::EMBEDDED_SPEC.replacen("{{ SUBNET }}.11", "{{ SUBNETT }}.11", 1);
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fsm-demo"))
        .args(["--ticks", "10", "--tick-ms", "10", "--spec"])
        .arg(&file)
        .args(extra)
        // Logs of every level, so that colour would show if there were any.
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    out
}

#[test]
fn a_spec_that_cannot_converge_makes_the_demo_fail_and_name_the_node() {
    let out = run_unconvergeable(&[]);
    assert!(!out.status.success(), "it exited successfully");
    let err = String::from_utf8_lossy(&out.stderr);
    let verdict = err
        .lines()
        .skip_while(|l| !l.starts_with("fsm-demo: the tree did not converge"))
        .collect::<Vec<_>>();
    assert!(!verdict.is_empty(), "no verdict on stderr:\n{err}");
    assert!(
        verdict
            .iter()
            .any(|l| l.contains("plant/line-1/oven:") && l.contains("`SUBNETT`")),
        "{err}"
    );
    // The tree itself is still printed.
    assert!(String::from_utf8_lossy(&out.stdout).contains("UNHEALTHY"));
}

#[test]
fn piped_output_carries_no_colour_codes() {
    for extra in [&[][..], &["--json"][..]] {
        let out = run_unconvergeable(extra);
        for (which, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let text = String::from_utf8_lossy(bytes);
            assert!(!text.is_empty(), "{which} is empty");
            assert!(!text.contains("\x1b["), "{which} has colour codes:\n{text}");
        }
    }
}

#[test]
fn the_readme_shows_what_the_demo_prints() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("prints the final tree:\n\n```text\n")
        .map(|i| i + "prints the final tree:\n\n```text\n".len())
        .expect("the README's sample block");
    let end = start + readme[start..].find("```\n").unwrap();
    let sample = &readme[start..end];
    let out = Command::new(env!("CARGO_BIN_EXE_fsm-demo"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(sample, printed, "update the README's sample block");
}
