//! Every type in a public signature or field of the runtime can be named by
//! an application, from the crate root.

use std::time::Duration;

use fsm_actors::{FatalError, NodeSnapshot, RestartingInfo, TreeConfig, TreeError, TreeStatus};
use fsm_core::NodePath;

/// The restart a snapshot reports: a function an application can only
/// write if it can name the field's type.
fn waiting_restart(node: &NodeSnapshot) -> Option<&RestartingInfo> {
    node.restarting.as_ref()
}

/// Likewise for the reason a tree gave up.
fn gave_up(status: &TreeStatus) -> Option<&FatalError> {
    status.fatal.as_ref()
}

#[test]
fn the_restart_and_fatal_types_of_snapshots_are_named_from_the_crate_root() {
    let restarting = RestartingInfo {
        attempt: 2,
        next_try_in_ms: 400,
        last_failure: "collect panicked".into(),
    };
    let mut node = NodeSnapshot::from_json(
        r#"{"path":"plant/line-1","name":"line-1","worker_type":"line","state":"running",
            "desired_state":"running","healthy":true,"last_error":null,"converged":true,
            "stale":false,"action_in_flight":null,"last_action":null,"restarts":1,
            "restarting":null,"circuit_open":false,"location_path":"","children":[]}"#,
    )
    .unwrap();
    assert_eq!(waiting_restart(&node), None);
    node.restarting = Some(restarting.clone());
    let back = NodeSnapshot::from_json(&node.to_json().unwrap()).unwrap();
    assert_eq!(waiting_restart(&back), Some(&restarting));

    let fatal = FatalError {
        path: NodePath::parse("plant"),
        restarts: 11,
        period_ms: 10_000,
        last_failure: "derive panicked".into(),
        advice: "fix the root's spec".into(),
        runbook: "docs/runbook.md".into(),
    };
    let error = TreeError::Fatal(fatal.clone());
    assert!(
        error.to_string().contains("`plant` failed 11 times"),
        "{error}"
    );
    let mut status = TreeStatus::default();
    assert_eq!(gave_up(&status), None);
    status.fatal = Some(fatal.clone());
    let json = serde_json::to_string(&status).unwrap();
    let back: TreeStatus = serde_json::from_str(&json).unwrap();
    assert_eq!(gave_up(&back), Some(&fatal));
}

#[test]
fn a_meter_made_with_the_re_exported_opentelemetry_goes_into_the_config() {
    let meter = fsm_actors::opentelemetry::global::meter("public-api-test");
    let config = TreeConfig::default()
        .with_meter(Some(meter))
        .with_inspect_timeout(Duration::from_secs(1));
    assert!(config.meter.is_some());
    assert_eq!(config.validate(), Ok(()));
}
