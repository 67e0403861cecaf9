//! The transport children `pull` and `push`: one HTTP call at a time, as an
//! action, with the session the communicator holds.

use std::sync::Arc;

use fsm_core::{
    Action, BoxError, CollectContext, DeriveContext, DesiredState, State, TickContext, Transition,
    Worker, action,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;

use super::client::{ErrorClass, RelayError};
use super::shared::{Counter, Pending, Shared};

/// The spec of `pull` and `push`: nothing (what they need comes from the
/// communicator's shared state).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSpec {}

/// What `pull` and `push` observe.
#[derive(Clone, Debug, Default)]
pub struct TransportObservation {
    /// The communicator holds a session.
    pub has_session: bool,
    /// Calls that failed in a row.
    pub consecutive_errors: u32,
    /// The last failure's class, until a call succeeds.
    pub last_error: Option<ErrorClass>,
    /// A call may be made now (no backoff pending, and for `pull` room in
    /// the inbound channel; for `push` something to send).
    pub ready: bool,
    /// `pull`: paused for backpressure.
    pub paused: bool,
    /// Messages waiting (`pull`: for the inbound channel; `push`: to be
    /// acknowledged).
    pub pending: usize,
}

fsm_core::states! {
    /// The states of `pull`: `stopped`, `running`, `degraded`.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum PullState {
        /// Not pulling.
        Stopped,
        /// Pulling.
        Running,
        /// Pulling fails repeatedly; retrying with backoff.
        Degraded,
    }
}

fsm_core::states! {
    /// The states of `push`: `stopped`, `running`, `degraded`.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum PushState {
        /// Not pushing.
        Stopped,
        /// Pushing.
        Running,
        /// Pushing fails repeatedly; retrying with backoff.
        Degraded,
    }
}

/// The `pull` worker.
pub(crate) struct Pull {
    shared: Arc<Shared>,
}

impl Pull {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Hands buffered pulled messages to the inbound channel while it has
    /// room; returns how many are still buffered.
    fn deliver(&self) -> usize {
        let mut pull = self.shared.pull();
        let mut delivered = 0;
        while let Some(message) = pull.buffer.pop_front() {
            // Counted before the application can see it.
            self.shared.count_ahead(Counter::Delivered);
            match self.shared.inbound.try_send(message) {
                Ok(()) => delivered += 1,
                Err(TrySendError::Full(message)) => {
                    self.shared.uncount(Counter::Delivered);
                    pull.buffer.push_front(message);
                    break;
                }
                Err(TrySendError::Closed(_)) => {
                    self.shared.uncount(Counter::Delivered);
                    // Nobody receives any more: nothing to deliver to.
                    pull.buffer.clear();
                    break;
                }
            }
        }
        let left = pull.buffer.len();
        drop(pull);
        self.shared.record(Counter::Delivered, delivered);
        left
    }
}

/// The `push` worker.
pub(crate) struct Push {
    shared: Arc<Shared>,
}

impl Push {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Moves what the application queued into the pending buffer, dropping
    /// (and counting) the oldest when full; returns the pending count.
    fn take_outbound(&self) -> usize {
        let max = self.shared.config.max_pending.max(1);
        let mut push = self.shared.push();
        let (mut taken, mut dropped) = (0, 0);
        while let Ok(message) = push.outbound.try_recv() {
            taken += 1;
            push.pending.push_back(Pending {
                message,
                sent: false,
                may_have_arrived: false,
            });
            if push.pending.len() > max {
                // The oldest not being sent right now (those keep their
                // place at the front until their answer).
                let oldest = push.in_flight.min(push.pending.len() - 1);
                push.pending.remove(oldest);
                dropped += 1;
            }
        }
        // Counted under the lock (see `Shared::stats`).
        self.shared.count(Counter::Pushed, taken);
        self.shared.count(Counter::DroppedFull, dropped);
        push.pending.len()
    }
}

impl Worker for Pull {
    type Spec = TransportSpec;
    type Observed = TransportObservation;
    type State = PullState;

    fn initial_state(&self) -> PullState {
        PullState::Stopped
    }

    async fn collect(
        &self,
        ctx: &CollectContext<'_, TransportSpec>,
    ) -> Result<TransportObservation, BoxError> {
        let pending = self.deliver();
        let config = &self.shared.config;
        let room = self.shared.inbound.capacity();
        let has_session = self.shared.auth().entry.is_some();
        let mut pull = self.shared.pull();
        // Hysteresis: pause below the low mark, resume at the high one.
        if pull.paused && room >= config.inbound_high_water.min(config.inbound_capacity) {
            pull.paused = false;
        } else if !pull.paused && room < config.inbound_low_water {
            pull.paused = true;
        }
        let ready = ctx.desired() != "stopped"
            && has_session
            && !pull.paused
            && pending == 0
            && pull.retry.due(Instant::now());
        Ok(TransportObservation {
            has_session,
            consecutive_errors: pull.retry.consecutive_errors,
            last_error: pull.retry.last_error.as_ref().map(RelayError::class),
            ready,
            paused: pull.paused,
            pending,
        })
    }

    fn derive_desired(
        &self,
        _: &TransportSpec,
        _: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        Ok(DesiredState::new("running"))
    }
}

impl Worker for Push {
    type Spec = TransportSpec;
    type Observed = TransportObservation;
    type State = PushState;

    fn initial_state(&self) -> PushState {
        PushState::Stopped
    }

    async fn collect(
        &self,
        ctx: &CollectContext<'_, TransportSpec>,
    ) -> Result<TransportObservation, BoxError> {
        let pending = self.take_outbound();
        let has_session = self.shared.auth().entry.is_some();
        let push = self.shared.push();
        let ready = ctx.desired() != "stopped"
            && has_session
            && pending > 0
            && push.retry.due(Instant::now());
        Ok(TransportObservation {
            has_session,
            consecutive_errors: push.retry.consecutive_errors,
            last_error: push.retry.last_error.as_ref().map(RelayError::class),
            ready,
            paused: false,
            pending,
        })
    }

    fn derive_desired(
        &self,
        _: &TransportSpec,
        _: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        Ok(DesiredState::new("running"))
    }
}

/// One pull: the messages go to the buffer, then to the inbound channel.
async fn pull_once(shared: Arc<Shared>) {
    let Some(entry) = shared.session() else {
        return;
    };
    let result = entry.client.pull(&entry.session).await;
    match result {
        Ok(messages) => {
            // Counted before the messages can be delivered (never fewer
            // pulled than delivered).
            shared.count(Counter::Pulled, messages.len() as u64);
            let mut pull = shared.pull();
            pull.buffer.extend(messages);
            pull.retry.succeeded();
        }
        Err(error) => {
            if error.class() == ErrorClass::InvalidToken {
                shared.report_unauthorized(entry.generation);
            }
            tracing::debug!(error = %error, "pull failed");
            let degraded = shared.pull().retry.failed(&error, &shared.config);
            if degraded {
                shared.count(Counter::DegradedEntries, 1);
            }
        }
    }
}

/// One push of the oldest pending messages (one alone after a rejected
/// batch, to find the message the relay refuses).
async fn push_once(shared: Arc<Shared>) {
    let Some(entry) = shared.session() else {
        return;
    };
    let (batch, retried) = {
        let mut push = shared.push();
        let n = if push.isolate > 0 {
            push.isolate -= 1;
            1
        } else {
            shared.config.max_batch.max(1)
        };
        let batch: Vec<_> = push
            .pending
            .iter()
            .take(n)
            .map(|p| p.message.clone())
            .collect();
        let retried = push.pending.iter().take(n).filter(|p| p.sent).count() as u64;
        push.in_flight = batch.len();
        (batch, retried)
    };
    if batch.is_empty() {
        return;
    }
    shared.count(Counter::Retried, retried);
    let n = batch.len();
    let result = entry.client.push(&entry.session, &batch).await;
    shared.push().in_flight = 0;
    match result {
        Ok(()) => {
            // Counted under the push lock, as the messages leave the
            // pending buffer: the stats never see them in neither or both.
            let mut push = shared.push();
            push.retry.succeeded();
            let acked = n.min(push.pending.len());
            let duplicates = push
                .pending
                .drain(..acked)
                .filter(|p| p.may_have_arrived)
                .count() as u64;
            shared.count(Counter::Acknowledged, acked as u64);
            shared.count(Counter::DuplicatesSent, duplicates);
        }
        Err(error) if error.class() == ErrorClass::Rejected => {
            let mut push = shared.push();
            if n == 1 {
                // The relay refuses this message for good.
                push.pending.pop_front();
                shared.count(Counter::DroppedRejected, 1);
                drop(push);
                tracing::warn!(error = %error, "the relay rejected a message; dropped");
            } else {
                push.isolate = n;
            }
        }
        Err(error) => {
            if error.class() == ErrorClass::InvalidToken {
                shared.report_unauthorized(entry.generation);
            }
            tracing::debug!(error = %error, "push failed");
            let arrived = error.class().may_have_arrived();
            let mut push = shared.push();
            for p in push.pending.iter_mut().take(n) {
                p.sent = true;
                p.may_have_arrived |= arrived;
            }
            let degraded = push.retry.failed(&error, &shared.config);
            drop(push);
            if degraded {
                shared.count(Counter::DegradedEntries, 1);
            }
        }
    }
}

/// The state both transport children follow: `running` while calls
/// succeed, `degraded` after `degraded_after` failures in a row; one call
/// (the action `name`) whenever one may be made.
fn transport_next<S: Clone + PartialEq, A: Action>(
    current: &S,
    desired: &str,
    obs: &TransportObservation,
    in_flight: bool,
    degraded_after: u32,
    states: [S; 3],
    call: impl FnOnce() -> A,
) -> Transition<S> {
    let [stopped, running, degraded] = states;
    if desired == "stopped" {
        return if *current == stopped || in_flight {
            Transition::stay()
        } else {
            Transition::to(stopped).because("asked to stop")
        };
    }
    let target = if obs.consecutive_errors >= degraded_after.max(1) {
        degraded
    } else {
        running
    };
    let t = if target == *current {
        Transition::stay()
    } else {
        Transition::to(target).because(if obs.consecutive_errors > 0 {
            "calls to the relay fail"
        } else {
            "calls to the relay succeed"
        })
    };
    if obs.ready && !in_flight {
        t.with_action(call())
    } else {
        t
    }
}

impl State<Pull> for PullState {
    fn next(&self, s: &TickContext<'_, Pull>) -> Transition<PullState> {
        let w = s.worker();
        transport_next(
            self,
            s.desired(),
            s.observed(),
            s.action_in_flight(),
            w.shared.config.degraded_after,
            [PullState::Stopped, PullState::Running, PullState::Degraded],
            || {
                let shared = Arc::clone(&w.shared);
                // A failure is recorded in the shared state (the child's
                // observation and state), not as a failed action: the
                // runtime's action backoff would stack on the protocol's.
                action("pull", move |_| async move {
                    pull_once(shared).await;
                    Ok(())
                })
            },
        )
    }
}

impl State<Push> for PushState {
    fn next(&self, s: &TickContext<'_, Push>) -> Transition<PushState> {
        let w = s.worker();
        transport_next(
            self,
            s.desired(),
            s.observed(),
            s.action_in_flight(),
            w.shared.config.degraded_after,
            [PushState::Stopped, PushState::Running, PushState::Degraded],
            || {
                let shared = Arc::clone(&w.shared);
                // A failure is recorded in the shared state (the child's
                // observation and state), not as a failed action: the
                // runtime's action backoff would stack on the protocol's.
                action("push", move |_| async move {
                    push_once(shared).await;
                    Ok(())
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::communicator::CommunicatorConfig;
    use fsm_core::NodePath;
    use tokio::sync::mpsc;

    fn message(content: &str) -> crate::protocol::UmhMessage {
        crate::protocol::UmhMessage {
            umh_instance: String::new(),
            content: content.to_owned(),
            email: "ops@example.com".to_owned(),
            trace_id: None,
        }
    }

    type Ends = (
        Arc<Shared>,
        mpsc::Receiver<crate::protocol::UmhMessage>,
        mpsc::Sender<crate::protocol::UmhMessage>,
    );

    fn shared(config: CommunicatorConfig) -> Ends {
        let (itx, irx) = mpsc::channel(config.inbound_capacity);
        let (otx, orx) = mpsc::channel(config.outbound_capacity);
        (Arc::new(Shared::new(config, itx, orx)), irx, otx)
    }

    async fn observe<W: Worker<Spec = TransportSpec, Observed = TransportObservation>>(
        worker: &W,
    ) -> TransportObservation {
        let path = NodePath::parse("communicator/x");
        let spec = TransportSpec::default();
        let ctx = CollectContext::new(&path, &spec).with_states("running", "running");
        worker.collect(&ctx).await.unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn pulling_pauses_while_the_inbound_channel_is_nearly_full_and_resumes_once_it_drains() {
        let (shared, mut inbound, _outbound) = shared(CommunicatorConfig {
            inbound_capacity: 10,
            inbound_low_water: 3,
            inbound_high_water: 6,
            ..CommunicatorConfig::default()
        });
        let pull = Pull::new(Arc::clone(&shared));
        // Twelve pulled messages: ten fit, two wait, pulling pauses.
        shared
            .pull()
            .buffer
            .extend((0..12).map(|i| message(&format!("m-{i}"))));
        let obs = observe(&pull).await;
        assert!(obs.paused && !obs.ready);
        assert_eq!(obs.pending, 2);
        // The application takes five: the two waiting go in, three free.
        for _ in 0..5 {
            assert!(inbound.recv().await.is_some());
        }
        let obs = observe(&pull).await;
        assert_eq!(obs.pending, 0);
        assert!(obs.paused, "three free slots: still below the high mark");
        for _ in 0..3 {
            assert!(inbound.recv().await.is_some());
        }
        let obs = observe(&pull).await;
        assert!(!obs.paused, "six free slots: pulling resumes");
        // Every message delivered once, in order.
        let stats = shared.stats();
        assert_eq!(stats.delivered, 12);
        let mut rest = Vec::new();
        while let Ok(m) = inbound.try_recv() {
            rest.push(m.content);
        }
        let expected: Vec<_> = (8..12).map(|i| format!("m-{i}")).collect();
        assert_eq!(rest, expected);
    }

    #[tokio::test]
    async fn a_full_pending_buffer_drops_the_oldest_messages_and_counts_them() {
        let (shared, _inbound, outbound) = shared(CommunicatorConfig {
            max_pending: 3,
            ..CommunicatorConfig::default()
        });
        let push = Push::new(Arc::clone(&shared));
        for i in 0..5 {
            outbound
                .try_send(message(&format!("m-{i}")))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let obs = observe(&push).await;
        assert_eq!(obs.pending, 3);
        assert!(!obs.ready, "no session yet: nothing is sent");
        let kept: Vec<_> = shared
            .push()
            .pending
            .iter()
            .map(|p| p.message.content.clone())
            .collect();
        assert_eq!(kept, ["m-2", "m-3", "m-4"]);
        let stats = shared.stats();
        assert_eq!((stats.pushed, stats.dropped_full), (5, 2));
        assert_eq!(stats.pending_outbound, 3);
    }

    #[tokio::test]
    async fn messages_being_sent_keep_their_place_when_the_pending_buffer_overflows() {
        let (shared, _inbound, outbound) = shared(CommunicatorConfig {
            max_pending: 3,
            ..CommunicatorConfig::default()
        });
        let push = Push::new(Arc::clone(&shared));
        for i in 0..3 {
            outbound
                .try_send(message(&format!("m-{i}")))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        observe(&push).await;
        // The two oldest are on their way to the relay.
        shared.push().in_flight = 2;
        outbound
            .try_send(message("m-3"))
            .unwrap_or_else(|e| panic!("{e}"));
        observe(&push).await;
        let kept: Vec<_> = shared
            .push()
            .pending
            .iter()
            .map(|p| p.message.content.clone())
            .collect();
        assert_eq!(kept, ["m-0", "m-1", "m-3"]);
        assert_eq!(shared.stats().dropped_full, 1);
    }

    #[test]
    fn a_transport_child_is_degraded_after_repeated_failures_and_calls_whenever_ready() {
        let states = || [PullState::Stopped, PullState::Running, PullState::Degraded];
        let call = || action("pull", |_| async { Ok(()) });
        let failing = TransportObservation {
            consecutive_errors: 3,
            ready: true,
            ..TransportObservation::default()
        };
        let t = transport_next(
            &PullState::Running,
            "running",
            &failing,
            false,
            3,
            states(),
            call,
        );
        assert_eq!(t.next_state(), Some(&PullState::Degraded));
        assert_eq!(t.action().map(|a| a.name()), Some("pull"));
        let waiting = TransportObservation {
            ready: false,
            ..failing
        };
        let t = transport_next(
            &PullState::Degraded,
            "running",
            &waiting,
            false,
            3,
            states(),
            call,
        );
        assert!(t.next_state().is_none() && t.action().is_none());
        let healthy = TransportObservation {
            ready: true,
            ..TransportObservation::default()
        };
        let t = transport_next(
            &PullState::Degraded,
            "running",
            &healthy,
            true,
            3,
            states(),
            call,
        );
        assert_eq!(t.next_state(), Some(&PullState::Running));
        assert!(t.action().is_none(), "one call at a time");
        let t = transport_next(
            &PullState::Running,
            "stopped",
            &healthy,
            false,
            3,
            states(),
            call,
        );
        assert_eq!(t.next_state(), Some(&PullState::Stopped));
    }
}
