//! The `communicator` worker: logs in, holds the session, and declares its
//! transport children while it has one.

use std::sync::Arc;

use fsm_core::{
    BoxError, ChildSpec, CollectContext, DeriveContext, DesiredState, State, TickContext,
    Transition, Worker, WorkerMetrics, action,
};
use tokio::time::Instant;

use super::client::RelayError;
use super::shared::{Counter, Origin, Shared};
use super::{CommunicatorSpec, CommunicatorStats, PULL, PUSH};

fsm_core::states! {
    /// The communicator's states: `stopped`, `authenticating`, `syncing`,
    /// `degraded`.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum CommunicatorState {
        /// Not syncing; no children.
        Stopped,
        /// Logging in (the action `authenticate`).
        Authenticating,
        /// Holding a session; `pull` and `push` run.
        Syncing,
        /// Logging in fails, or a transport child is degraded.
        Degraded,
    }
}

/// Why the communicator logs in (again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReauthReason {
    /// It has no session.
    NoSession,
    /// The spec's token, relay URL or instance uuid changed.
    SpecChanged,
    /// Pull or push got a 401/403 with the current session.
    Unauthorized,
    /// The JWT is about to expire.
    Expiry,
}

impl ReauthReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::NoSession => "no session",
            Self::SpecChanged => "the token, relay URL or instance uuid changed",
            Self::Unauthorized => "the relay refused the session (401)",
            Self::Expiry => "the session is about to expire",
        }
    }
}

/// What the communicator observes: its session, against its spec.
#[derive(Clone, Debug, Default)]
pub struct CommunicatorObservation {
    /// It holds a session (perhaps one to renew).
    pub has_session: bool,
    /// Why it must log in, if it must.
    pub reauth: Option<ReauthReason>,
    /// The last login failed with this (until a login succeeds).
    pub login_error: Option<RelayError>,
    /// A login may be tried now (no backoff pending).
    pub login_due: bool,
    /// Some transport child is degraded (from the shared state).
    pub transport_degraded: bool,
    /// The counters.
    pub stats: CommunicatorStats,
}

/// The `communicator` worker.
pub(crate) struct Communicator {
    shared: Arc<Shared>,
}

impl Communicator {
    /// The communicator, recording the shared counters through `metrics`
    /// (its children's included).
    pub(crate) fn new(shared: Arc<Shared>, metrics: Arc<dyn WorkerMetrics>) -> Self {
        shared.set_metrics(metrics);
        Self { shared }
    }
}

fn origin(spec: &CommunicatorSpec) -> Origin {
    Origin {
        relay_url: spec.relay_url.clone(),
        auth_token: spec.auth_token.clone(),
        instance_uuid: spec.instance_uuid.clone(),
    }
}

impl Worker for Communicator {
    type Spec = CommunicatorSpec;
    type Observed = CommunicatorObservation;
    type State = CommunicatorState;

    fn initial_state(&self) -> CommunicatorState {
        CommunicatorState::Stopped
    }

    async fn collect(
        &self,
        ctx: &CollectContext<'_, CommunicatorSpec>,
    ) -> Result<CommunicatorObservation, BoxError> {
        let spec = ctx.spec();
        let now = Instant::now();
        let (has_session, reauth, login_error, login_due) = {
            let auth = self.shared.auth();
            let reauth = match (&auth.entry, &auth.origin) {
                (None, _) | (_, None) => Some(ReauthReason::NoSession),
                (Some(_), Some(o))
                    if o.relay_url != spec.relay_url
                        || o.auth_token != spec.auth_token
                        || o.instance_uuid != spec.instance_uuid =>
                {
                    Some(ReauthReason::SpecChanged)
                }
                (Some(_), _) if auth.unauthorized => Some(ReauthReason::Unauthorized),
                _ if auth.refresh_at.is_some_and(|at| now >= at) => Some(ReauthReason::Expiry),
                _ => None,
            };
            (
                auth.entry.is_some(),
                reauth,
                auth.last_error.clone(),
                auth.retry_at.is_none_or(|at| now >= at),
            )
        };
        let transport_degraded = {
            let limit = self.shared.config.degraded_after.max(1);
            self.shared.pull().retry.consecutive_errors >= limit
                || self.shared.push().retry.consecutive_errors >= limit
        };
        Ok(CommunicatorObservation {
            has_session,
            reauth,
            login_error,
            login_due,
            transport_degraded,
            stats: self.shared.stats(),
        })
    }

    fn derive_desired(
        &self,
        spec: &CommunicatorSpec,
        _: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        // The children are declared from state, once a session is held.
        Ok(DesiredState::new(if spec.enabled {
            "syncing"
        } else {
            "stopped"
        }))
    }
}

/// The transport children: running while the communicator should sync.
fn transport_children() -> Vec<ChildSpec> {
    [("pull", PULL), ("push", PUSH)]
        .into_iter()
        .map(|(name, worker_type)| {
            ChildSpec::new(name, worker_type)
                // An empty map: what `TransportSpec {}` decodes from.
                .with_spec(fsm_core::Value::Map(fsm_core::Map::new()))
                .map_state("syncing", "running")
                .map_state("stopped", "stopped")
        })
        .collect()
}

impl CommunicatorState {
    /// Logs in (the action), or waits for the backoff to pass.
    fn authenticate(
        &self,
        s: &TickContext<'_, Communicator>,
        reason: ReauthReason,
    ) -> Transition<CommunicatorState> {
        let obs = s.observed();
        if s.action_in_flight() || !obs.login_due {
            return Transition::stay();
        }
        let worker = s.worker();
        let shared = Arc::clone(&worker.shared);
        let spec = s.spec().clone();
        let login = action("authenticate", move |ctx| async move {
            let client = match shared.client(&spec.relay_url, spec.timeout()) {
                Ok(client) => client,
                Err(e) => {
                    shared.login_failed(&e);
                    return Err(format!("{}: cannot log in to the relay: {e}", ctx.path()).into());
                }
            };
            match client.login(&spec.auth_token).await {
                Ok(session) => {
                    // Counts the login, and whether it answered a 401 (which
                    // may have come while it was under way, for any reason).
                    let answered_401 = shared.logged_in(session, origin(&spec), client);
                    if reason == ReauthReason::Expiry && !answered_401 {
                        shared.count(Counter::ReauthOnExpiry, 1);
                    }
                    tracing::info!(path = %ctx.path(), reason = reason.as_str(), "logged in to the relay");
                    Ok(())
                }
                Err(e) => {
                    if shared.login_failed(&e) == 1 {
                        shared.count(Counter::DegradedEntries, 1);
                    }
                    Err(format!("{}: cannot log in to the relay: {e}", ctx.path()).into())
                }
            }
        })
        .with_timeout(s.spec().timeout().saturating_mul(2));
        let target = if *self == CommunicatorState::Degraded {
            CommunicatorState::Degraded
        } else {
            CommunicatorState::Authenticating
        };
        Transition::to(target)
            .with_action(login)
            .because(reason.as_str())
    }
}

impl State<Communicator> for CommunicatorState {
    fn next(&self, s: &TickContext<'_, Communicator>) -> Transition<CommunicatorState> {
        use CommunicatorState as S;
        let obs = s.observed();
        if s.desired() == "stopped" {
            if *self == S::Stopped || s.action_in_flight() {
                return Transition::stay();
            }
            return Transition::to(S::Stopped)
                .with_children([])
                .because("asked to stop");
        }
        match (self, obs.reauth) {
            (S::Stopped, _) => Transition::to(S::Authenticating).because("asked to sync"),
            // Logged in (or still holding a good session).
            (S::Authenticating | S::Degraded, None) => {
                if s.action_in_flight() {
                    Transition::stay()
                } else if obs.transport_degraded {
                    if *self == S::Degraded {
                        Transition::stay()
                    } else {
                        Transition::to(S::Degraded).because("a transport child is degraded")
                    }
                } else if s.children_from_state().is_empty() {
                    Transition::to(S::Syncing)
                        .with_children(transport_children())
                        .because("logged in")
                } else {
                    Transition::to(S::Syncing).because("session and transport healthy")
                }
            }
            (S::Syncing, None) if obs.transport_degraded => {
                Transition::to(S::Degraded).because("a transport child is degraded")
            }
            (S::Syncing, None) => Transition::stay(),
            // A login failed: degraded, retrying after the backoff. Without
            // a session the transport children go.
            (S::Authenticating, Some(_)) if obs.login_error.is_some() && !s.action_in_flight() => {
                let to = Transition::to(S::Degraded).because("logging in failed");
                if obs.has_session {
                    to
                } else {
                    to.with_children([])
                }
            }
            (S::Degraded, Some(_)) if !obs.has_session && !s.children_from_state().is_empty() => {
                Transition::stay().with_children([])
            }
            (S::Syncing, Some(reason)) => {
                // Log in again in place: the children keep running.
                let t = self.authenticate(s, reason);
                if t.next_state().is_none() {
                    Transition::to(S::Authenticating).because(reason.as_str())
                } else {
                    t
                }
            }
            (S::Authenticating | S::Degraded, Some(reason)) => self.authenticate(s, reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::communicator::CommunicatorConfig;
    use fsm_core::{NodePath, Secret};
    use tokio::sync::mpsc;

    fn worker() -> Communicator {
        let (tx, _rx) = mpsc::channel(4);
        let (_otx, orx) = mpsc::channel(4);
        Communicator::new(
            Arc::new(Shared::new(CommunicatorConfig::default(), tx, orx)),
            Arc::new(fsm_core::NoMetrics),
        )
    }

    fn next(
        state: &CommunicatorState,
        obs: &CommunicatorObservation,
        desired: &str,
        declared: &[ChildSpec],
    ) -> Transition<CommunicatorState> {
        let w = worker();
        let path = NodePath::parse("communicator");
        let spec = CommunicatorSpec::new("http://127.0.0.1:1", Secret::from("t"));
        let ctx =
            TickContext::new(&path, &w, &spec, obs, desired).with_children_from_state(declared);
        state.next(&ctx)
    }

    #[test]
    fn a_login_declares_the_transport_children_and_a_reauth_keeps_them() {
        let logged_in = CommunicatorObservation {
            has_session: true,
            login_due: true,
            ..CommunicatorObservation::default()
        };
        let t = next(
            &CommunicatorState::Authenticating,
            &logged_in,
            "syncing",
            &[],
        );
        assert_eq!(t.next_state(), Some(&CommunicatorState::Syncing));
        let declared = t
            .declared_children()
            .map(<[ChildSpec]>::to_vec)
            .unwrap_or_default();
        let names: Vec<_> = declared.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["pull", "push"]);
        for child in &declared {
            let decoded = child
                .user_spec
                .decode::<crate::communicator::TransportSpec>();
            assert!(decoded.is_ok(), "{}: {decoded:?}", child.name);
        }

        // Expiry while syncing: log in again, children untouched.
        let expiring = CommunicatorObservation {
            reauth: Some(ReauthReason::Expiry),
            ..logged_in.clone()
        };
        let t = next(&CommunicatorState::Syncing, &expiring, "syncing", &declared);
        assert_eq!(t.next_state(), Some(&CommunicatorState::Authenticating));
        assert_eq!(t.action().map(|a| a.name()), Some("authenticate"));
        assert!(t.declared_children().is_none());

        // Asked to stop: the children go.
        let t = next(
            &CommunicatorState::Syncing,
            &logged_in,
            "stopped",
            &declared,
        );
        assert_eq!(t.next_state(), Some(&CommunicatorState::Stopped));
        assert_eq!(t.declared_children().map(<[ChildSpec]>::len), Some(0));
    }

    #[test]
    fn a_failed_login_waits_for_its_backoff_in_degraded() {
        let failed = CommunicatorObservation {
            reauth: Some(ReauthReason::NoSession),
            login_error: Some(RelayError::Server {
                status: 503,
                retry_after: None,
            }),
            login_due: false,
            ..CommunicatorObservation::default()
        };
        let t = next(&CommunicatorState::Authenticating, &failed, "syncing", &[]);
        assert_eq!(t.next_state(), Some(&CommunicatorState::Degraded));
        let t = next(&CommunicatorState::Degraded, &failed, "syncing", &[]);
        assert!(t.next_state().is_none() && t.action().is_none());
        let due = CommunicatorObservation {
            login_due: true,
            ..failed
        };
        let t = next(&CommunicatorState::Degraded, &due, "syncing", &[]);
        assert_eq!(t.action().map(|a| a.name()), Some("authenticate"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_session_is_due_for_renewal_its_margin_before_it_expires() {
        use crate::communicator::client::{RelayClient, Session};
        use std::time::{Duration, SystemTime};

        let w = worker();
        let spec = CommunicatorSpec::new("http://127.0.0.1:1", Secret::from("t"));
        let path = NodePath::parse("communicator");
        let observe = async || {
            let ctx = CollectContext::new(&path, &spec);
            w.collect(&ctx)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .reauth
        };
        assert_eq!(observe().await, Some(ReauthReason::NoSession));
        let client =
            RelayClient::new(&spec.relay_url, spec.timeout()).unwrap_or_else(|e| panic!("{e}"));
        let session = Session {
            uuid: "u".into(),
            name: "n".into(),
            jwt: Secret::from("a.b.c"),
            expires_at: Some(SystemTime::now() + Duration::from_secs(3600)),
        };
        w.shared.logged_in(session, origin(&spec), client);
        assert_eq!(observe().await, None);
        // The margin is 10 min: due at 50 min, not before.
        tokio::time::advance(Duration::from_secs(49 * 60)).await;
        assert_eq!(observe().await, None);
        tokio::time::advance(Duration::from_secs(2 * 60)).await;
        assert_eq!(observe().await, Some(ReauthReason::Expiry));
        // A 401 with this session asks for a login at once.
        let generation = w.shared.session().map_or(0, |e| e.generation);
        w.shared.report_unauthorized(generation);
        assert_eq!(observe().await, Some(ReauthReason::Unauthorized));
        // A changed token asks for one too.
        let changed = CommunicatorSpec::new("http://127.0.0.1:1", Secret::from("other"));
        let ctx = CollectContext::new(&path, &changed);
        let obs = w.collect(&ctx).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(obs.reauth, Some(ReauthReason::SpecChanged));
    }
}
