//! Helpers for scenario tests: a fast [`TreeConfig`], waiting for a condition
//! on the inspected tree or the executor counters, and a compact rendering of
//! a snapshot for failure messages.
//!
//! Meant for tokio's paused clock: waiting polls every few (virtual)
//! milliseconds, which costs no real time.

use std::fmt::Write as _;
use std::time::Duration;

use fsm_actors::{ExecutorStats, NodeSnapshot, Tree, TreeConfig};
use fsm_core::{Backoff, ChildSpec, RestartIntensity, Strategy, Supervision};

use crate::ProbeSpec;

/// How often the wait helpers look again.
const POLL: Duration = Duration::from_millis(20);

/// A configuration for scenario tests: a tick every 100 ms, observations time
/// out after 500 ms, a node is stale after 2 s without a good observation.
#[must_use]
pub fn test_config() -> TreeConfig {
    let mut c = TreeConfig::default();
    c.tick_interval = Some(Duration::from_millis(100));
    c.observation_timeout = Duration::from_millis(500);
    c.stale_after = Duration::from_secs(2);
    c
}

/// `config` with a top that tolerates one restart of the root a minute
/// (restarting after 10 ms), and the tree `root ─ leaf` of probes: once
/// `root/leaf` crashes on every tick, the tree gives up within a few ticks.
#[must_use]
pub fn giving_up(mut config: TreeConfig) -> (TreeConfig, ChildSpec) {
    config.supervision = Supervision::new(Strategy::OneForOne)
        .with_intensity(RestartIntensity::new(1, Duration::from_secs(60)))
        .with_backoff(Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(10),
            jitter: 0.0,
            reset_after: Duration::from_secs(60),
        });
    let root = ProbeSpec::default()
        .with_children(vec![ProbeSpec::default().named("leaf")])
        .named("root");
    (config, root)
}

/// A meter provider whose metrics go to an in-memory exporter, for tests
/// that read back what a tree recorded (`provider.force_flush()` first).
#[must_use]
pub fn in_memory_meter() -> (
    opentelemetry_sdk::metrics::SdkMeterProvider,
    opentelemetry_sdk::metrics::InMemoryMetricExporter,
) {
    let exporter = opentelemetry_sdk::metrics::InMemoryMetricExporter::default();
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(opentelemetry_sdk::metrics::PeriodicReader::builder(exporter.clone()).build())
        .build();
    (provider, exporter)
}

/// A condition did not hold within its timeout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("waited {timeout:?} for {what}, in vain; last seen:\n{last}")]
pub struct WaitError {
    /// What was waited for.
    pub what: String,
    /// How long.
    pub timeout: Duration,
    /// The last thing seen (a rendered snapshot, or the counters).
    pub last: String,
}

/// Polls `probe` until it yields a value `pred` accepts, and returns it;
/// `show` renders a rejected value for the error.
async fn wait_until<T, E: std::fmt::Display, Fut>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Fut,
    mut pred: impl FnMut(&T) -> bool,
    show: impl Fn(&T) -> String,
) -> Result<T, WaitError>
where
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(value) if pred(&value) => return Ok(value),
            Ok(value) => show(&value),
            Err(e) => format!("(failed: {e})"),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(WaitError {
                what: what.to_owned(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Inspects the tree until `pred` holds for the root's snapshot, and returns
/// that snapshot.
///
/// # Errors
///
/// [`WaitError`] with the last snapshot seen when `timeout` passes first.
pub async fn wait_for_snapshot<F>(
    tree: &Tree,
    what: &str,
    timeout: Duration,
    pred: F,
) -> Result<NodeSnapshot, WaitError>
where
    F: FnMut(&NodeSnapshot) -> bool,
{
    wait_until(what, timeout, || tree.inspect(), pred, render).await
}

/// Reads the executor counters until `pred` holds for them, and returns
/// them.
///
/// # Errors
///
/// [`WaitError`] with the last counters seen when `timeout` passes first.
pub async fn wait_for_stats<F>(
    tree: &Tree,
    what: &str,
    timeout: Duration,
    pred: F,
) -> Result<ExecutorStats, WaitError>
where
    F: FnMut(&ExecutorStats) -> bool,
{
    wait_until(
        what,
        timeout,
        || tree.executor_stats(),
        pred,
        |s| format!("{s:?}"),
    )
    .await
}

/// One line per node: path, state → desired, health, convergence, action,
/// error.
#[must_use]
pub fn render(snapshot: &NodeSnapshot) -> String {
    let mut out = String::new();
    for n in snapshot.iter() {
        let _ = write!(
            out,
            "{:indent$}{} [{}] {} -> {}",
            "",
            n.path,
            n.worker_type,
            n.state,
            n.desired_state,
            indent = 2 * n.path.depth().saturating_sub(1)
        );
        if !n.healthy {
            out.push_str(" UNHEALTHY");
        }
        if n.stale {
            out.push_str(" STALE");
        }
        if n.converged {
            out.push_str(" converged");
        }
        if let Some(a) = &n.action_in_flight {
            let _ = write!(out, " in-flight={a}");
        }
        if let Some(r) = &n.last_action {
            let _ = write!(out, " last={}:{}", r.action, r.outcome.label());
        }
        if let Some(e) = &n.last_error {
            let _ = write!(out, " error={e:?}");
        }
        out.push('\n');
    }
    out
}
