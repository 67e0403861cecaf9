//! What the communicator and its children share: the session, the
//! channels' worker-side ends, the transport state and the counters.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fsm_core::{Secret, WorkerMetrics};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::CommunicatorConfig;
use super::client::{RelayClient, RelayError, Session};
use crate::protocol::UmhMessage;

/// The communicator's counters, as the application reads them (also
/// recorded as metrics `fsmv2_communicator_<name>`, through the
/// communicator's own metrics handle, whichever worker counts them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommunicatorStats {
    /// Messages taken from the outbound channel.
    pub pushed: u64,
    /// Messages the relay acknowledged (a push answered 2xx).
    pub acknowledged: u64,
    /// Messages sent again after a failed push.
    pub retried: u64,
    /// Acknowledged messages an earlier, failed push may have delivered
    /// already (the relay may hold them twice).
    pub duplicates_sent: u64,
    /// Messages dropped because the pending buffer was full (the oldest).
    pub dropped_full: u64,
    /// Messages the relay rejected for good, dropped.
    pub dropped_rejected: u64,
    /// Messages received in pull answers.
    pub pulled: u64,
    /// Pulled messages handed to the inbound channel.
    pub delivered: u64,
    /// Successful logins.
    pub logins: u64,
    /// 401/403 answers pull and push got with a session (the relay refused
    /// it). Each is either the first for its session, which asks for a
    /// re-login (then counted in `reauth_on_401` once that login succeeds),
    /// or is counted in `unauthorized_collapsed`: so, once no re-login is
    /// due, `unauthorized = reauth_on_401 + unauthorized_collapsed`.
    pub unauthorized: u64,
    /// 401/403 answers that asked for no re-login of their own: their
    /// session had one due already (pull and push both refused, or one
    /// refused again before the new login), or had been replaced or
    /// dropped since the request was sent.
    pub unauthorized_collapsed: u64,
    /// Logins that replaced a session pull or push got a 401/403 with
    /// (whatever else made them due: a login that renews an expiring
    /// session and answers a 401 too counts here, not in
    /// `reauth_on_expiry`). A refused or failed login in between does not
    /// change that: the login that finally succeeds counts.
    pub reauth_on_401: u64,
    /// Logins because the JWT was about to expire (that answered no 401).
    pub reauth_on_expiry: u64,
    /// Times the communicator or a transport child turned degraded.
    pub degraded_entries: u64,
    /// Messages waiting to be pushed now (not a counter).
    pub pending_outbound: u64,
    /// Pulled messages waiting for room in the inbound channel now (not a
    /// counter).
    pub pending_inbound: u64,
}

/// One counter of [`CommunicatorStats`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Counter {
    Pushed,
    Acknowledged,
    Retried,
    DuplicatesSent,
    DroppedFull,
    DroppedRejected,
    Pulled,
    Delivered,
    Logins,
    Unauthorized,
    UnauthorizedCollapsed,
    ReauthOn401,
    ReauthOnExpiry,
    DegradedEntries,
}

const COUNTERS: usize = 14;

impl Counter {
    fn metric(self) -> &'static str {
        match self {
            Self::Pushed => "pushed",
            Self::Acknowledged => "acknowledged",
            Self::Retried => "retried",
            Self::DuplicatesSent => "duplicates_sent",
            Self::DroppedFull => "dropped_full",
            Self::DroppedRejected => "dropped_rejected",
            Self::Pulled => "pulled",
            Self::Delivered => "delivered",
            Self::Logins => "logins",
            Self::Unauthorized => "unauthorized",
            Self::UnauthorizedCollapsed => "unauthorized_collapsed",
            Self::ReauthOn401 => "reauth_on_401",
            Self::ReauthOnExpiry => "reauth_on_expiry",
            Self::DegradedEntries => "degraded_entries",
        }
    }
}

/// The relay, the auth token, the uuid a session was made for: a change of
/// any logs in again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) relay_url: String,
    pub(crate) auth_token: Secret,
    pub(crate) instance_uuid: Option<String>,
}

/// The current session and what it was made with.
#[derive(Clone, Debug)]
pub(crate) struct SessionEntry {
    pub(crate) session: Arc<Session>,
    pub(crate) client: RelayClient,
    /// Counts logins; a child's 401 names the generation it saw.
    pub(crate) generation: u64,
}

/// The login side.
#[derive(Debug, Default)]
pub(crate) struct AuthState {
    pub(crate) entry: Option<SessionEntry>,
    pub(crate) origin: Option<Origin>,
    pub(crate) refresh_at: Option<Instant>,
    /// A child got a 401 with the session of the current generation (or,
    /// once a refused login dropped it, with the last one): the next login
    /// that succeeds answers it.
    pub(crate) unauthorized: bool,
    pub(crate) generation: u64,
    /// The client for the current URL and timeout.
    pub(crate) client: Option<(String, Duration, RelayClient)>,
    /// Failed logins in a row.
    pub(crate) attempt: u32,
    pub(crate) retry_at: Option<Instant>,
    pub(crate) last_error: Option<RelayError>,
}

/// A message waiting to be pushed.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    pub(crate) message: UmhMessage,
    /// Sent before, in a push that failed.
    pub(crate) sent: bool,
    /// A failed push that held it may have reached the relay.
    pub(crate) may_have_arrived: bool,
}

/// One transport child's retry state.
#[derive(Debug, Default)]
pub(crate) struct Retry {
    pub(crate) consecutive_errors: u32,
    pub(crate) retry_at: Option<Instant>,
    pub(crate) last_error: Option<RelayError>,
}

/// The pull side.
#[derive(Debug, Default)]
pub(crate) struct PullSide {
    pub(crate) retry: Retry,
    /// Pulled, not yet in the inbound channel.
    pub(crate) buffer: VecDeque<UmhMessage>,
    pub(crate) paused: bool,
}

/// The push side.
#[derive(Debug)]
pub(crate) struct PushSide {
    pub(crate) retry: Retry,
    pub(crate) pending: VecDeque<Pending>,
    pub(crate) outbound: mpsc::Receiver<UmhMessage>,
    /// Send one message at a time for this many sends (after a batch was
    /// rejected, to find the message the relay refuses).
    pub(crate) isolate: usize,
    /// The oldest this many pending messages are being sent now: they stay
    /// at the front until the answer comes.
    pub(crate) in_flight: usize,
}

/// Everything the three workers of one communicator share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: CommunicatorConfig,
    counters: [AtomicU64; COUNTERS],
    pub(crate) inbound: mpsc::Sender<UmhMessage>,
    /// The communicator's metrics handle: `pull` and `push` record through
    /// it too, so that every counter is `fsmv2_communicator_<name>` with
    /// the communicator's labels.
    metrics: Mutex<Arc<dyn WorkerMetrics>>,
    auth: Mutex<AuthState>,
    pull: Mutex<PullSide>,
    push: Mutex<PushSide>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(
        config: CommunicatorConfig,
        inbound: mpsc::Sender<UmhMessage>,
        outbound: mpsc::Receiver<UmhMessage>,
    ) -> Self {
        Self {
            config,
            counters: Default::default(),
            inbound,
            metrics: Mutex::new(Arc::new(fsm_core::NoMetrics)),
            auth: Mutex::default(),
            pull: Mutex::default(),
            push: Mutex::new(PushSide {
                retry: Retry::default(),
                pending: VecDeque::new(),
                outbound,
                isolate: 0,
                in_flight: 0,
            }),
        }
    }

    pub(crate) fn auth(&self) -> MutexGuard<'_, AuthState> {
        lock(&self.auth)
    }

    pub(crate) fn pull(&self) -> MutexGuard<'_, PullSide> {
        lock(&self.pull)
    }

    pub(crate) fn push(&self) -> MutexGuard<'_, PushSide> {
        lock(&self.push)
    }

    /// Records the counters' metrics through `metrics` from now on (the
    /// communicator's handle, set as the communicator is built).
    pub(crate) fn set_metrics(&self, metrics: Arc<dyn WorkerMetrics>) {
        *lock(&self.metrics) = metrics;
    }

    /// Adds `n` to `counter`, and to its metric.
    pub(crate) fn count(&self, counter: Counter, n: u64) {
        if n == 0 {
            return;
        }
        self.counters[counter as usize].fetch_add(n, Ordering::Relaxed);
        self.record(counter, n);
    }

    /// Adds one to `counter` ahead of the event it counts (so a reader that
    /// sees the event never reads the counter without it); the metric is
    /// recorded by [`record`](Self::record) once the event happened.
    pub(crate) fn count_ahead(&self, counter: Counter) {
        self.counters[counter as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes back a [`count_ahead`](Self::count_ahead) whose event did not
    /// happen.
    pub(crate) fn uncount(&self, counter: Counter) {
        self.counters[counter as usize].fetch_sub(1, Ordering::Relaxed);
    }

    /// Records `n` events of `counter` counted ahead in its metric.
    pub(crate) fn record(&self, counter: Counter, n: u64) {
        if n > 0 {
            let metrics = Arc::clone(&lock(&self.metrics));
            metrics.counter_add(counter.metric(), n);
        }
    }

    /// The current session, if any.
    pub(crate) fn session(&self) -> Option<SessionEntry> {
        self.auth().entry.clone()
    }

    /// Records that a child's call with the session of `generation` was
    /// refused (401/403), and counts it: the first such answer for the
    /// current session asks for a re-login (returns true); any other is
    /// collapsed into the one already due, or into the login that replaced
    /// or dropped that session since the call was sent.
    pub(crate) fn report_unauthorized(&self, generation: u64) -> bool {
        let mut auth = self.auth();
        let first = auth.generation == generation && !auth.unauthorized;
        if first {
            auth.unauthorized = true;
        }
        // Counted under the lock, so that a reading never sees the answer
        // in neither or both.
        self.count(Counter::Unauthorized, 1);
        if !first {
            self.count(Counter::UnauthorizedCollapsed, 1);
        }
        first
    }

    /// The client for `url` with `timeout`, made once per change of either.
    pub(crate) fn client(&self, url: &str, timeout: Duration) -> Result<RelayClient, RelayError> {
        let mut auth = self.auth();
        if let Some((u, t, client)) = &auth.client
            && u == url
            && *t == timeout
        {
            return Ok(client.clone());
        }
        let client = RelayClient::new(url, timeout)?;
        auth.client = Some((url.to_owned(), timeout, client.clone()));
        Ok(client)
    }

    /// Stores a new session made with `origin` and `client`, and counts
    /// the login: returns whether it answered a 401 (see
    /// [`CommunicatorStats::reauth_on_401`]).
    pub(crate) fn logged_in(&self, session: Session, origin: Origin, client: RelayClient) -> bool {
        let now = Instant::now();
        let mut auth = self.auth();
        auth.generation += 1;
        let answered_401 = std::mem::take(&mut auth.unauthorized);
        // Under the lock, with the flag (see `report_unauthorized`).
        self.count(Counter::Logins, 1);
        if answered_401 {
            self.count(Counter::ReauthOn401, 1);
        }
        // When to log in again: `exp` less the margin, on the tokio clock
        // (so paused-clock tests can drive it).
        auth.refresh_at = session.expires_at.map(|exp| {
            let left = exp
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            // A token that lives shorter than the margin is renewed
            // halfway, not at once (which would log in on every tick).
            let wait = if left > self.config.refresh_margin {
                left - self.config.refresh_margin
            } else {
                left / 2
            };
            now + wait
        });
        auth.entry = Some(SessionEntry {
            session: Arc::new(session),
            client,
            generation: auth.generation,
        });
        auth.origin = Some(origin);
        auth.attempt = 0;
        auth.retry_at = None;
        auth.last_error = None;
        answered_401
    }

    /// Records a failed login.
    pub(crate) fn login_failed(&self, error: &RelayError) -> u32 {
        let now = Instant::now();
        let mut auth = self.auth();
        let wait = error.delay(auth.attempt, &self.config.delays);
        auth.retry_at = Some(now + wait);
        auth.attempt = auth.attempt.saturating_add(1);
        auth.last_error = Some(error.clone());
        if matches!(
            error.class(),
            super::ErrorClass::InvalidToken | super::ErrorClass::InstanceDeleted
        ) {
            // The relay refuses this instance: no session any more.
            auth.entry = None;
            auth.origin = None;
            auth.refresh_at = None;
        }
        auth.attempt
    }

    /// The counters now.
    pub(crate) fn stats(&self) -> CommunicatorStats {
        let c = |counter: Counter| self.counters[counter as usize].load(Ordering::Relaxed);
        // Each side's counters change under its lock: read them under it,
        // so that their sums hold in every reading.
        let push = self.push();
        let (pushed, acknowledged, dropped_full, dropped_rejected) = (
            c(Counter::Pushed),
            c(Counter::Acknowledged),
            c(Counter::DroppedFull),
            c(Counter::DroppedRejected),
        );
        let pending_outbound = push.pending.len() as u64;
        drop(push);
        let pull = self.pull();
        let (pulled, delivered) = (c(Counter::Pulled), c(Counter::Delivered));
        let pending_inbound = pull.buffer.len() as u64;
        drop(pull);
        let auth = self.auth();
        let (logins, unauthorized, unauthorized_collapsed, reauth_on_401) = (
            c(Counter::Logins),
            c(Counter::Unauthorized),
            c(Counter::UnauthorizedCollapsed),
            c(Counter::ReauthOn401),
        );
        drop(auth);
        CommunicatorStats {
            pushed,
            acknowledged,
            retried: c(Counter::Retried),
            duplicates_sent: c(Counter::DuplicatesSent),
            dropped_full,
            dropped_rejected,
            pulled,
            delivered,
            logins,
            unauthorized,
            unauthorized_collapsed,
            reauth_on_401,
            reauth_on_expiry: c(Counter::ReauthOnExpiry),
            degraded_entries: c(Counter::DegradedEntries),
            pending_outbound,
            pending_inbound,
        }
    }
}

impl Retry {
    /// Records a failed call: when to try again, and whether this failure
    /// made the child degraded (exactly at `degraded_after`).
    pub(crate) fn failed(&mut self, error: &RelayError, config: &CommunicatorConfig) -> bool {
        let wait = error.delay(self.consecutive_errors, &config.delays);
        self.retry_at = Some(Instant::now() + wait);
        self.consecutive_errors = self.consecutive_errors.saturating_add(1);
        self.last_error = Some(error.clone());
        self.consecutive_errors == config.degraded_after.max(1)
    }

    /// Records a successful call.
    pub(crate) fn succeeded(&mut self) {
        self.consecutive_errors = 0;
        self.retry_at = None;
        self.last_error = None;
    }

    /// Whether a call may be made at `now`.
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        let (tx, _rx) = mpsc::channel(1);
        let (_otx, orx) = mpsc::channel(1);
        Shared::new(CommunicatorConfig::default(), tx, orx)
    }

    fn log_in(shared: &Shared) -> bool {
        let client = RelayClient::new("http://127.0.0.1:1", Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("{e}"));
        let session = Session {
            uuid: "u".into(),
            name: "n".into(),
            jwt: Secret::from("a.b.c"),
            expires_at: None,
        };
        let origin = Origin {
            relay_url: "http://127.0.0.1:1".into(),
            auth_token: Secret::from("t"),
            instance_uuid: None,
        };
        shared.logged_in(session, origin, client)
    }

    #[test]
    fn every_401_asks_for_one_relogin_per_session_or_is_counted_as_collapsed() {
        let shared = shared();
        assert!(!log_in(&shared), "a first login answers no 401");
        let first = shared.auth().generation;
        // Pull and push refused with one session: one re-login.
        assert!(shared.report_unauthorized(first));
        assert!(!shared.report_unauthorized(first));
        // The re-login is refused (the session goes), then succeeds: that
        // login answers the 401.
        shared.login_failed(&RelayError::InvalidToken {
            status: 401,
            retry_after: None,
        });
        assert!(!shared.report_unauthorized(first), "still due");
        assert!(log_in(&shared));
        // A late 401 for the replaced session asks for nothing.
        assert!(!shared.report_unauthorized(first));
        assert!(!log_in(&shared), "no 401 with the second session");
        let stats = shared.stats();
        assert_eq!(
            (
                stats.logins,
                stats.unauthorized,
                stats.reauth_on_401,
                stats.unauthorized_collapsed
            ),
            (3, 4, 1, 3)
        );
        assert_eq!(
            stats.unauthorized,
            stats.reauth_on_401 + stats.unauthorized_collapsed
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_call_waits_its_class_delay_and_retry_after_overrides_it() {
        let config = CommunicatorConfig::default();
        let mut retry = Retry::default();
        let server = RelayError::Server {
            status: 503,
            retry_after: None,
        };
        let step = |d| async move { tokio::time::advance(d).await };
        assert!(!retry.failed(&server, &config));
        assert!(!retry.due(Instant::now()));
        step(Duration::from_millis(999)).await;
        assert!(!retry.due(Instant::now()), "1 s after the first failure");
        step(Duration::from_millis(1)).await;
        assert!(retry.due(Instant::now()));
        assert!(!retry.failed(&server, &config));
        step(Duration::from_millis(1999)).await;
        assert!(!retry.due(Instant::now()), "2 s after the second");
        step(Duration::from_millis(1)).await;
        assert!(retry.due(Instant::now()));
        // The third failure in a row makes the child degraded; its
        // Retry-After of 7 s wins over the 4 s of the table.
        let limited = RelayError::Server {
            status: 503,
            retry_after: Some(Duration::from_secs(7)),
        };
        assert!(retry.failed(&limited, &config));
        step(Duration::from_millis(6999)).await;
        assert!(!retry.due(Instant::now()));
        step(Duration::from_millis(1)).await;
        assert!(retry.due(Instant::now()));
        retry.succeeded();
        assert_eq!(retry.consecutive_errors, 0);
        assert!(retry.due(Instant::now()));
    }
}
