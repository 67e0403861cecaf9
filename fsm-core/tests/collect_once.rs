//! A collect's code before its first `.await` runs exactly once per
//! observation, whether the collect is ready at once or has to wait.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use fsm_core::{
    BoxError, ChildSpec, CollectContext, DeriveContext, DesiredState, NodePath, State, TickContext,
    Transition, Worker, WorkerRegistry, runtime::CollectStart,
};

/// Pending on its first poll, ready on the next.
struct PendingOnce(bool);

impl Future for PendingOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// Counts the requests it "sends" before waiting for an answer.
struct Chatty {
    requests: Arc<AtomicUsize>,
    answer_later: Arc<AtomicBool>,
}

#[derive(Clone, Debug)]
struct Idle;

impl Worker for Chatty {
    type Spec = ();
    type Observed = usize;
    type State = Idle;

    fn initial_state(&self) -> Idle {
        Idle
    }

    async fn collect(&self, _ctx: &CollectContext<'_, ()>) -> Result<usize, BoxError> {
        // The request goes out here, before the first await.
        let sent = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if self.answer_later.load(Ordering::SeqCst) {
            PendingOnce(false).await;
        }
        Ok(sent)
    }

    fn derive_desired(&self, _: &(), _: &DeriveContext<'_>) -> Result<DesiredState, BoxError> {
        Ok(DesiredState::new("idle"))
    }
}

impl fsm_core::StateNames for Idle {
    const NAMES: &'static [&'static str] = &["idle"];

    fn name(&self) -> &'static str {
        "idle"
    }
}

impl State<Chatty> for Idle {
    fn next(&self, _: &TickContext<'_, Chatty>) -> Transition<Idle> {
        Transition::stay()
    }
}

#[test]
fn a_collect_that_starts_waiting_after_ready_ones_sends_its_request_once() {
    let requests = Arc::new(AtomicUsize::new(0));
    let answer_later = Arc::new(AtomicBool::new(false));
    let mut registry = WorkerRegistry::new();
    let (r, a) = (Arc::clone(&requests), Arc::clone(&answer_later));
    registry
        .register("chatty", move |_| Chatty {
            requests: Arc::clone(&r),
            answer_later: Arc::clone(&a),
        })
        .unwrap();
    let path = NodePath::parse("c");
    let mut driver = registry
        .create(&path, &ChildSpec::new("c", "chatty"))
        .unwrap();

    // Ready at once, twice: one request each.
    for expected in 1..=2 {
        assert!(matches!(
            driver.start_collect(&path, "idle", 0),
            CollectStart::Done(Ok(()))
        ));
        assert_eq!(requests.load(Ordering::SeqCst), expected);
    }

    // Now the answer takes a while: still one request for one observation.
    answer_later.store(true, Ordering::SeqCst);
    let CollectStart::Pending(pending) = driver.start_collect(&path, "idle", 0) else {
        panic!("the collect waits");
    };
    let observation = futures::executor::block_on(pending).unwrap();
    assert!(driver.set_observation(observation));
    assert_eq!(requests.load(Ordering::SeqCst), 3);

    // And once more, waiting again.
    let CollectStart::Pending(pending) = driver.start_collect(&path, "idle", 0) else {
        panic!("the collect waits");
    };
    futures::executor::block_on(pending).unwrap();
    assert_eq!(requests.load(Ordering::SeqCst), 4);
}
