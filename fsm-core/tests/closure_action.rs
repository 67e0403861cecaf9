//! An action from a closure behaves as an action type does: named, with its
//! own timeout if it sets one, and run afresh every time it is asked for.
//! Its closure is an `FnOnce`: it moves what it captured into its future.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fsm_core::{ActionContext, BoxedAction, NodePath, action};
use tokio_util::sync::CancellationToken;

#[test]
fn a_closure_action_runs_its_closure_each_time_with_the_actions_context() {
    let runs = Arc::new(AtomicUsize::new(0));
    let make = || {
        let runs = Arc::clone(&runs);
        action("count", move |ctx: ActionContext| async move {
            assert_eq!(ctx.path().as_str(), "plant/pump");
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .with_timeout(Duration::from_secs(3))
    };
    for expected in 1..=2 {
        let boxed = BoxedAction::new(make());
        assert_eq!(boxed.name(), "count");
        assert_eq!(boxed.timeout(), Some(Duration::from_secs(3)));
        let ctx = ActionContext::new(NodePath::parse("plant/pump"), CancellationToken::new());
        futures::executor::block_on(boxed.run(ctx)).unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), expected);
    }
}

#[test]
fn a_closure_action_reports_its_error_and_has_no_timeout_unless_given_one() {
    let failing = BoxedAction::new(action("fail", |_ctx| async { Err("no power".into()) }));
    assert_eq!(failing.timeout(), None);
    let ctx = ActionContext::new(NodePath::parse("p"), CancellationToken::new());
    let err = futures::executor::block_on(failing.run(ctx)).unwrap_err();
    assert_eq!(err.to_string(), "no power");
}

#[test]
fn a_closure_action_moves_what_it_captured_and_refuses_a_second_run() {
    use fsm_core::Action;
    // Not `Clone`: only an `FnOnce` closure can move it into its future.
    let owned = String::from("valve-7");
    let act = action("open", move |_ctx| async move {
        assert_eq!(owned, "valve-7");
        Ok(())
    });
    let ctx = ActionContext::new(NodePath::parse("p"), CancellationToken::new());
    futures::executor::block_on(act.execute(&ctx)).unwrap();
    let again = futures::executor::block_on(act.execute(&ctx)).unwrap_err();
    assert!(again.to_string().contains("run a second time"), "{again}");
}
