//! A collect's code before its first `.await` runs exactly once per
//! observation, whether the collect is ready at once or has to wait; and it
//! sees the desired state it was started with.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
    /// The desired state each collect's context named.
    desired: Arc<Mutex<Vec<String>>>,
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

    async fn collect(&self, ctx: &CollectContext<'_, ()>) -> Result<usize, BoxError> {
        self.desired.lock().unwrap().push(ctx.desired().to_owned());
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

/// A driver of a `Chatty` worker, with the worker's counters.
struct Fixture {
    driver: Box<dyn fsm_core::runtime::NodeDriver>,
    path: NodePath,
    requests: Arc<AtomicUsize>,
    answer_later: Arc<AtomicBool>,
    desired: Arc<Mutex<Vec<String>>>,
}

fn chatty() -> Fixture {
    let requests = Arc::new(AtomicUsize::new(0));
    let answer_later = Arc::new(AtomicBool::new(false));
    let desired = Arc::new(Mutex::new(Vec::new()));
    let mut registry = WorkerRegistry::new();
    let (r, a, d) = (
        Arc::clone(&requests),
        Arc::clone(&answer_later),
        Arc::clone(&desired),
    );
    registry
        .register("chatty", move |_| Chatty {
            requests: Arc::clone(&r),
            answer_later: Arc::clone(&a),
            desired: Arc::clone(&d),
        })
        .unwrap();
    let path = NodePath::parse("c");
    let driver = registry
        .create(&path, &ChildSpec::new("c", "chatty"))
        .unwrap();
    Fixture {
        driver,
        path,
        requests,
        answer_later,
        desired,
    }
}

#[test]
fn a_collect_that_starts_waiting_after_ready_ones_sends_its_request_once() {
    let Fixture {
        mut driver,
        path,
        requests,
        answer_later,
        ..
    } = chatty();

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

#[test]
fn a_collect_sees_the_desired_state_it_was_started_with_known_to_the_worker_or_not() {
    let Fixture {
        mut driver,
        path,
        desired,
        ..
    } = chatty();
    // A name the worker does not know is still passed on as it is (the
    // node shows it as a problem; the collect is not the place to fail).
    for (version, name) in [(0, "idle"), (1, "elsewhere"), (2, "idle")] {
        assert!(matches!(
            driver.start_collect(&path, name, version),
            CollectStart::Done(Ok(()))
        ));
    }
    assert_eq!(*desired.lock().unwrap(), ["idle", "elsewhere", "idle"]);
}
