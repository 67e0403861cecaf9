//! `fsm-relay`: a local management relay for the demo and the tests. It
//! speaks the [`protocol`](crate::protocol) exactly, checks the login's
//! bearer and the session token on every call, and injects faults on
//! demand, so a client can be tested against every answer a real relay (or
//! the proxies in front of it) gives.
//!
//! ```no_run
//! use fsm_examples::protocol::UmhMessage;
//! use fsm_examples::relay::{Fault, Relay, RelayConfig};
//!
//! # async fn run() -> Result<(), fsm_examples::relay::RelayError> {
//! let relay = Relay::start(RelayConfig::new("secret", "instance-1")).await?;
//! let base_url = relay.url(); // http://127.0.0.1:<port the OS picked>
//! relay.queue_for_instance([UmhMessage {
//!     umh_instance: "instance-1".to_owned(),
//!     content: "hello".to_owned(),
//!     email: "a@example.com".to_owned(),
//!     trace_id: None,
//! }]);
//! relay.inject(Fault::ServiceUnavailable); // the next pull or push gets 503
//! // ... run a client against `base_url` ...
//! let stats = relay.shutdown().await;
//! assert_eq!(stats.duplicates_received, 0);
//! # Ok(())
//! # }
//! ```
//!
//! What it answers:
//!
//! * `POST /v2/instance/login`: 401 unless `Authorization: Bearer` carries
//!   [`bearer`]`(auth_token)`; 404 while the instance is
//!   [deleted](RelayHandle::set_deleted); else 200 with a [`LoginResponse`]
//!   and a JWT (HS256-shaped, `sub` the uuid, `exp` now plus the token
//!   lifetime) in the `token` cookie.
//! * `GET /v2/instance/pull`: 401 for a token that is unknown, expired
//!   (its `exp`, or its [request budget](Faults::token_max_requests)) or
//!   [revoked](RelayHandle::revoke_tokens); 204 while the queue is empty;
//!   else 200 with up to [`RelayConfig::pull_batch`] messages, removed from
//!   the queue.
//! * `POST /v2/instance/push`: 401 as for pull; 400 for a body that is not
//!   [`Messages`]; else 200, each message recorded in arrival order and a
//!   content received before counted as a duplicate.
//!
//! Faults ([`Fault`]) come first, before the relay looks at the request,
//! as they would from a proxy in front of it: scheduled one-shot faults
//! ([`RelayHandle::inject`]), then random ones ([`RandomFaults`], seeded).
//!
//! The relay runs on the tokio runtime that starts it (so a test on a
//! paused clock drives its delays and its lifetime), serves HTTP/1 on
//! loopback unless told otherwise, and stops by itself after
//! [`RelayConfig::max_requests`] requests or [`RelayConfig::lifetime`],
//! when [`RelayHandle::shutdown`] is called, or when its handle is dropped.
//! It never logs the auth token, the bearer or a JWT.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use sha3::{Digest, Sha3_256};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::protocol::{
    LOGIN_PATH, LoginResponse, Messages, PULL_PATH, PUSH_PATH, TOKEN_COOKIE, UmhMessage, bearer,
};

/// What the relay serves and how long: see [`Relay::start`].
#[derive(Clone)]
pub struct RelayConfig {
    /// Where to listen (default `127.0.0.1:0`: loopback, a port the OS
    /// picks; [`RelayHandle::addr`] tells which).
    pub listen: SocketAddr,
    /// Serve on an address other than loopback (default false: the relay
    /// is a test double with one shared secret, no TLS and fault
    /// injection; reachable from elsewhere, it hands its queue to anyone).
    pub allow_public: bool,
    /// The instance's auth token; logins must carry [`bearer`] of it.
    pub auth_token: String,
    /// The instance's uuid (the JWT's `sub`, the login's `uuid`).
    pub instance_uuid: String,
    /// The instance's name, as the login answers it.
    pub instance_name: String,
    /// Answer logins with 404, as for an instance deleted in the console.
    pub deleted: bool,
    /// How long a session token is valid (its `exp`; default 23 h).
    pub token_lifetime: Duration,
    /// The most messages one pull hands out (default 10, at least 1).
    pub pull_batch: usize,
    /// Stop after answering this many requests (default 100,000).
    pub max_requests: Option<u64>,
    /// Stop this long after starting (default one hour).
    pub lifetime: Option<Duration>,
    /// How long stopping waits for answers in progress before it cuts
    /// their connections (default 1 s).
    pub shutdown_grace: Duration,
    /// The faults to inject from the start.
    pub faults: Faults,
}

impl RelayConfig {
    /// A relay for one instance, with the defaults of each field.
    #[must_use]
    pub fn new(auth_token: impl Into<String>, instance_uuid: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_public: false,
            auth_token: auth_token.into(),
            instance_uuid: instance_uuid.into(),
            instance_name: "fsm-relay-instance".to_owned(),
            deleted: false,
            token_lifetime: Duration::from_secs(23 * 3600),
            pull_batch: 10,
            max_requests: Some(100_000),
            lifetime: Some(Duration::from_secs(3600)),
            shutdown_grace: Duration::from_secs(1),
            faults: Faults::default(),
        }
    }
}

impl fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConfig")
            .field("listen", &self.listen)
            .field("allow_public", &self.allow_public)
            .field("auth_token", &"<redacted>")
            .field("instance_uuid", &self.instance_uuid)
            .field("instance_name", &self.instance_name)
            .field("deleted", &self.deleted)
            .field("token_lifetime", &self.token_lifetime)
            .field("pull_batch", &self.pull_batch)
            .field("max_requests", &self.max_requests)
            .field("lifetime", &self.lifetime)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("faults", &self.faults)
            .finish()
    }
}

/// One injected fault: what the relay answers instead of (or on top of)
/// its normal answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// 401, the token left valid (as a token the server revoked for a
    /// moment, or a proxy that lost the session).
    Unauthorized,
    /// 429, with `Retry-After: <seconds>` when given.
    RateLimited {
        /// The `Retry-After` header's seconds; `None` sends no header.
        retry_after_s: Option<u64>,
    },
    /// 500.
    ServerError,
    /// 503.
    ServiceUnavailable,
    /// 429 with a CDN challenge page (HTML, "Just a moment...",
    /// `cf-mitigated: challenge`), as a proxy in front of the relay sends.
    ProxyChallenge,
    /// Answer normally, after this delay (make it longer than the client's
    /// timeout to test the timeout). The request is processed only after
    /// the delay, so a client that gave up does not lose a pull.
    Slow(Duration),
    /// Do not process the request; answer 200 with a `Content-Length` and
    /// cut the connection after half the body.
    Reset,
    /// Process the request (a pull removes its messages from the queue, a
    /// push is recorded, a login issues a token), then cut the connection
    /// after half the answer: the client never sees it. Counted in
    /// [`RelayStats::pull_responses_lost`] and
    /// [`RelayStats::messages_lost`].
    ResponseLost,
}

impl Fault {
    /// The fault's kind.
    #[must_use]
    pub fn kind(&self) -> FaultKind {
        match self {
            Self::Unauthorized => FaultKind::Unauthorized,
            Self::RateLimited { .. } => FaultKind::RateLimited,
            Self::ServerError => FaultKind::ServerError,
            Self::ServiceUnavailable => FaultKind::ServiceUnavailable,
            Self::ProxyChallenge => FaultKind::ProxyChallenge,
            Self::Slow(_) => FaultKind::Slow,
            Self::Reset => FaultKind::Reset,
            Self::ResponseLost => FaultKind::ResponseLost,
        }
    }

    /// The fault a command-line name stands for: `unauthorized`,
    /// `rate-limited` (with `Retry-After: 1`), `rate-limited-bare` (without),
    /// `server-error`, `unavailable`, `proxy-challenge`, `slow` (by `slow`),
    /// `reset` or `response-lost`.
    ///
    /// # Errors
    ///
    /// [`RelayError::UnknownFault`] for any other name.
    pub fn from_name(name: &str, slow: Duration) -> Result<Self, RelayError> {
        Ok(match name {
            "unauthorized" => Self::Unauthorized,
            "rate-limited" => Self::RateLimited {
                retry_after_s: Some(1),
            },
            "rate-limited-bare" => Self::RateLimited {
                retry_after_s: None,
            },
            "server-error" => Self::ServerError,
            "unavailable" => Self::ServiceUnavailable,
            "proxy-challenge" => Self::ProxyChallenge,
            "slow" => Self::Slow(slow),
            "reset" => Self::Reset,
            "response-lost" => Self::ResponseLost,
            other => return Err(RelayError::UnknownFault(other.to_owned())),
        })
    }
}

/// The kinds of [`Fault`], as [`FaultCounts`] counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// [`Fault::Unauthorized`].
    Unauthorized,
    /// [`Fault::RateLimited`], with or without `Retry-After`.
    RateLimited,
    /// [`Fault::ServerError`].
    ServerError,
    /// [`Fault::ServiceUnavailable`].
    ServiceUnavailable,
    /// [`Fault::ProxyChallenge`].
    ProxyChallenge,
    /// [`Fault::Slow`].
    Slow,
    /// [`Fault::Reset`].
    Reset,
    /// [`Fault::ResponseLost`].
    ResponseLost,
}

/// Which requests a scheduled fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The next request, whatever it is.
    Any,
    /// The next login.
    Login,
    /// The next pull.
    Pull,
    /// The next push.
    Push,
    /// The next pull or push (not a login).
    Api,
}

impl Target {
    fn matches(self, route: Route) -> bool {
        match self {
            Self::Any => true,
            Self::Login => route == Route::Login,
            Self::Pull => route == Route::Pull,
            Self::Push => route == Route::Push,
            Self::Api => route != Route::Login,
        }
    }
}

/// Faults each request is drawn for: with probability `rate`, one of the
/// `mix`, by weight. Seeded, so a run can be repeated.
#[derive(Clone, Debug, PartialEq)]
pub struct RandomFaults {
    /// The chance (0 to 1) that a request is faulted.
    pub rate: f64,
    /// The random generator's seed.
    pub seed: u64,
    /// The faults to draw from, each with a weight.
    pub mix: Vec<(Fault, u32)>,
}

impl RandomFaults {
    /// Faults at `rate`, seeded with `seed`, drawn from every kind with
    /// equal weight ([`RandomFaults::default_mix`]).
    #[must_use]
    pub fn new(rate: f64, seed: u64) -> Self {
        Self {
            rate,
            seed,
            mix: Self::default_mix(Duration::from_secs(35)),
        }
    }

    /// Every fault once, weight 1 each: 429 with and without
    /// `Retry-After: 1`, `slow` delayed by `slow`.
    #[must_use]
    pub fn default_mix(slow: Duration) -> Vec<(Fault, u32)> {
        vec![
            (Fault::Unauthorized, 1),
            (
                Fault::RateLimited {
                    retry_after_s: Some(1),
                },
                1,
            ),
            (
                Fault::RateLimited {
                    retry_after_s: None,
                },
                1,
            ),
            (Fault::ServerError, 1),
            (Fault::ServiceUnavailable, 1),
            (Fault::ProxyChallenge, 1),
            (Fault::Slow(slow), 1),
            (Fault::Reset, 1),
            (Fault::ResponseLost, 1),
        ]
    }

    /// Reads a mix written `name=weight,name=weight` with the names of
    /// [`Fault::from_name`].
    ///
    /// # Errors
    ///
    /// [`RelayError::UnknownFault`] for an unknown name,
    /// [`RelayError::BadFaultMix`] for an entry that is not `name=weight`.
    pub fn parse_mix(text: &str, slow: Duration) -> Result<Vec<(Fault, u32)>, RelayError> {
        text.split(',')
            .filter(|entry| !entry.trim().is_empty())
            .map(|entry| {
                let (name, weight) = entry
                    .split_once('=')
                    .ok_or_else(|| RelayError::BadFaultMix(entry.to_owned()))?;
                let weight = u32::from_str(weight.trim())
                    .map_err(|_| RelayError::BadFaultMix(entry.to_owned()))?;
                Ok((Fault::from_name(name.trim(), slow)?, weight))
            })
            .collect()
    }
}

/// The faults a relay injects; set in [`RelayConfig::faults`], changed at
/// run time through the [`RelayHandle`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Each session token expires after this many pulls and pushes (the
    /// next one gets 401); `None`: only its `exp` ends it.
    pub token_max_requests: Option<u64>,
    /// One-shot faults, each applied once, in order, to the next request
    /// its target matches.
    pub scheduled: Vec<(Target, Fault)>,
    /// Faults drawn at random for the requests no scheduled fault takes.
    pub random: Option<RandomFaults>,
}

/// How many faults of each kind the relay injected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    /// [`Fault::Unauthorized`].
    pub unauthorized: u64,
    /// [`Fault::RateLimited`].
    pub rate_limited: u64,
    /// [`Fault::ServerError`].
    pub server_error: u64,
    /// [`Fault::ServiceUnavailable`].
    pub service_unavailable: u64,
    /// [`Fault::ProxyChallenge`].
    pub proxy_challenge: u64,
    /// [`Fault::Slow`].
    pub slow: u64,
    /// [`Fault::Reset`].
    pub reset: u64,
    /// [`Fault::ResponseLost`].
    pub response_lost: u64,
}

impl FaultCounts {
    /// How many faults of `kind` were injected.
    #[must_use]
    pub fn get(&self, kind: FaultKind) -> u64 {
        match kind {
            FaultKind::Unauthorized => self.unauthorized,
            FaultKind::RateLimited => self.rate_limited,
            FaultKind::ServerError => self.server_error,
            FaultKind::ServiceUnavailable => self.service_unavailable,
            FaultKind::ProxyChallenge => self.proxy_challenge,
            FaultKind::Slow => self.slow,
            FaultKind::Reset => self.reset,
            FaultKind::ResponseLost => self.response_lost,
        }
    }

    /// All faults injected.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.unauthorized
            + self.rate_limited
            + self.server_error
            + self.service_unavailable
            + self.proxy_challenge
            + self.slow
            + self.reset
            + self.response_lost
    }

    fn count(&mut self, kind: FaultKind) {
        let counter = match kind {
            FaultKind::Unauthorized => &mut self.unauthorized,
            FaultKind::RateLimited => &mut self.rate_limited,
            FaultKind::ServerError => &mut self.server_error,
            FaultKind::ServiceUnavailable => &mut self.service_unavailable,
            FaultKind::ProxyChallenge => &mut self.proxy_challenge,
            FaultKind::Slow => &mut self.slow,
            FaultKind::Reset => &mut self.reset,
            FaultKind::ResponseLost => &mut self.response_lost,
        };
        *counter += 1;
    }
}

/// What the relay has seen and done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RelayStats {
    /// Requests received, whatever their answer.
    pub requests: u64,
    /// Logins that issued a token.
    pub logins: u64,
    /// Logins refused: wrong or missing bearer (401) or deleted instance
    /// (404).
    pub logins_refused: u64,
    /// Pulls and pushes refused for an unknown, expired or revoked token
    /// (401; injected 401s are counted in [`FaultCounts::unauthorized`]).
    pub unauthorized: u64,
    /// Tokens that expired (by `exp` or request budget) when used.
    pub tokens_expired: u64,
    /// Pulls processed (answered 200 or 204, or lost after dequeue).
    pub pulls: u64,
    /// Pushes processed (their messages recorded).
    pub pushes: u64,
    /// Pushes refused with 400 (a body that is not [`Messages`]).
    pub pushes_malformed: u64,
    /// Messages handed out in pull answers the relay sent whole.
    pub messages_handed_out: u64,
    /// Pull answers removed from the queue and then lost
    /// ([`Fault::ResponseLost`]).
    pub pull_responses_lost: u64,
    /// Messages in those lost answers: gone from the queue, never seen by
    /// the client.
    pub messages_lost: u64,
    /// Messages received by push, duplicates included.
    pub messages_received: u64,
    /// Messages received whose content had been received before.
    pub duplicates_received: u64,
    /// Requests answered 503 because the relay was stopping.
    pub refused_stopping: u64,
    /// Faults injected, by kind.
    pub faults: FaultCounts,
    /// Of [`faults`](Self::faults), those injected into logins (the rest
    /// went to pulls and pushes).
    pub faults_on_login: FaultCounts,
}

/// Why a relay stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// [`RelayHandle::shutdown`] was called or the handle dropped.
    Shutdown,
    /// It answered [`RelayConfig::max_requests`] requests.
    MaxRequests,
    /// [`RelayConfig::lifetime`] passed.
    Lifetime,
}

/// Why a relay could not start, or a fault name it does not know.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The listen address is not loopback and `allow_public` is off.
    #[error(
        "the relay refuses to listen on {0}: it is not a loopback address; \
         use 127.0.0.1 (or pass --public / set allow_public if it must be reached from elsewhere)"
    )]
    NotLoopback(SocketAddr),
    /// The listen address could not be bound.
    #[error("the relay cannot listen on {addr}: {source}; pick another address or port 0")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A fault name that is none of [`Fault::from_name`]'s.
    #[error(
        "unknown fault {0:?}: use unauthorized, rate-limited, rate-limited-bare, server-error, \
         unavailable, proxy-challenge, slow, reset or response-lost"
    )]
    UnknownFault(String),
    /// A fault mix entry that is not `name=weight`.
    #[error("fault mix entry {0:?} is not name=weight (e.g. reset=2)")]
    BadFaultMix(String),
}

/// Refuses `addr` unless it is loopback or `allow_public` is set: the relay
/// is a test double (one shared secret, no TLS, fault injection), not a
/// service to expose.
///
/// # Errors
///
/// [`RelayError::NotLoopback`].
pub fn check_listen_address(addr: SocketAddr, allow_public: bool) -> Result<(), RelayError> {
    if allow_public || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(RelayError::NotLoopback(addr))
    }
}

/// The relay's entry point.
#[derive(Debug)]
pub struct Relay;

impl Relay {
    /// Binds [`RelayConfig::listen`] and serves on the current tokio
    /// runtime until stopped (see the [module](self) documentation).
    ///
    /// # Errors
    ///
    /// [`RelayError::NotLoopback`] for a non-loopback address without
    /// `allow_public`, [`RelayError::Bind`] when it cannot be bound.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn start(config: RelayConfig) -> Result<RelayHandle, RelayError> {
        check_listen_address(config.listen, config.allow_public)?;
        let bind_error = |source| RelayError::Bind {
            addr: config.listen,
            source,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let random = config
            .faults
            .random
            .clone()
            .map(|random| (SplitMix64(random.seed), random));
        let (phase, _) = watch::channel(Phase::Running);
        let shared = Arc::new(Shared {
            bearer: bearer(&config.auth_token),
            uuid: config.instance_uuid.clone(),
            name: config.instance_name.clone(),
            token_lifetime: config.token_lifetime,
            pull_batch: config.pull_batch.max(1),
            max_requests: config.max_requests,
            phase,
            state: Mutex::new(RelayState {
                deleted: config.deleted,
                token_max_requests: config.faults.token_max_requests,
                scheduled: config.faults.scheduled.iter().cloned().collect(),
                random,
                ..RelayState::default()
            }),
        });
        tracing::info!(%addr, uuid = %shared.uuid, "relay listening");
        let task = tokio::spawn(serve(
            listener,
            Arc::clone(&shared),
            config.lifetime,
            config.shutdown_grace,
        ));
        Ok(RelayHandle {
            addr,
            shared,
            task: Some(task),
        })
    }
}

/// A running relay. Dropping it stops the relay (its task ends on its own
/// shortly after); [`RelayHandle::shutdown`] stops it and waits.
#[derive(Debug)]
#[must_use = "dropping the handle stops the relay"]
pub struct RelayHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RelayHandle {
    /// The address the relay listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The relay's base URL, `http://<addr>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues `messages` for the instance to pull, after those queued
    /// before.
    pub fn queue_for_instance(&self, messages: impl IntoIterator<Item = UmhMessage>) {
        self.shared.lock().queue.extend(messages);
    }

    /// How many messages wait to be pulled.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Every message pushed so far, in arrival order, duplicates included.
    #[must_use]
    pub fn received(&self) -> Vec<UmhMessage> {
        self.shared.lock().received.clone()
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> RelayStats {
        self.shared.lock().stats.clone()
    }

    /// Injects `fault` once, into the next pull or push.
    pub fn inject(&self, fault: Fault) {
        self.inject_on(Target::Api, fault);
    }

    /// Injects `fault` once, into the next request `target` matches (after
    /// the faults scheduled before).
    pub fn inject_on(&self, target: Target, fault: Fault) {
        self.shared.lock().scheduled.push_back((target, fault));
    }

    /// Replaces the random faults (`None`: none); the generator restarts
    /// from the seed.
    pub fn set_random_faults(&self, random: Option<RandomFaults>) {
        self.shared.lock().random = random.map(|random| (SplitMix64(random.seed), random));
    }

    /// Session tokens expire after this many pulls and pushes each, from
    /// now on (counting the requests they already made).
    pub fn set_token_max_requests(&self, max: Option<u64>) {
        self.shared.lock().token_max_requests = max;
    }

    /// Answers logins with 404 (`true`) or normally (`false`).
    pub fn set_deleted(&self, deleted: bool) {
        self.shared.lock().deleted = deleted;
    }

    /// Revokes every session token issued so far: their next use gets 401.
    pub fn revoke_tokens(&self) {
        self.shared.lock().tokens.clear();
    }

    /// Whether the relay still serves (false once it started stopping).
    #[must_use]
    pub fn is_running(&self) -> bool {
        matches!(*self.shared.phase.borrow(), Phase::Running)
    }

    /// Waits until the relay has stopped, by itself or otherwise, and says
    /// why.
    pub async fn stopped(&self) -> StopReason {
        let mut phase = self.shared.phase.subscribe();
        let stopped = phase
            .wait_for(|phase| matches!(phase, Phase::Stopped(_)))
            .await
            .map(|phase| phase.reason());
        // The sender lives in `shared`, which this handle holds: it cannot
        // close while we wait.
        stopped.ok().flatten().unwrap_or(StopReason::Shutdown)
    }

    /// Stops the relay: no new connections, answers in progress get
    /// [`RelayConfig::shutdown_grace`] to finish, then every connection is
    /// closed. Returns the final counters.
    pub async fn shutdown(mut self) -> RelayStats {
        self.shared.stop(StopReason::Shutdown);
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "the relay's task ended abnormally");
        }
        self.stats()
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.shared.stop(StopReason::Shutdown);
    }
}

/// The relay's life: running, stopping (for a reason), stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    Stopping(StopReason),
    Stopped(StopReason),
}

impl Phase {
    fn reason(self) -> Option<StopReason> {
        match self {
            Self::Running => None,
            Self::Stopping(reason) | Self::Stopped(reason) => Some(reason),
        }
    }
}

/// A call of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Login,
    Pull,
    Push,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Pull => "pull",
            Self::Push => "push",
        }
    }
}

/// What the handlers share with the handle.
struct Shared {
    bearer: String,
    uuid: String,
    name: String,
    token_lifetime: Duration,
    pull_batch: usize,
    max_requests: Option<u64>,
    phase: watch::Sender<Phase>,
    state: Mutex<RelayState>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("uuid", &self.uuid)
            .field("phase", &*self.phase.borrow())
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, RelayState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts stopping, unless already stopping.
    fn stop(&self, reason: StopReason) {
        self.phase.send_if_modified(|phase| {
            if *phase == Phase::Running {
                *phase = Phase::Stopping(reason);
                true
            } else {
                false
            }
        });
    }
}

/// The relay's mutable state, behind one lock (no lock is held across an
/// await).
#[derive(Default)]
struct RelayState {
    queue: VecDeque<UmhMessage>,
    received: Vec<UmhMessage>,
    seen: HashSet<String>,
    tokens: HashMap<String, Session>,
    issued: u64,
    deleted: bool,
    token_max_requests: Option<u64>,
    scheduled: VecDeque<(Target, Fault)>,
    random: Option<(SplitMix64, RandomFaults)>,
    stats: RelayStats,
}

impl RelayState {
    /// The fault for the next request on `route`: the first scheduled one
    /// that matches, else a random draw.
    fn next_fault(&mut self, route: Route) -> Option<Fault> {
        if let Some(i) = self
            .scheduled
            .iter()
            .position(|(target, _)| target.matches(route))
        {
            return self.scheduled.remove(i).map(|(_, fault)| fault);
        }
        let (rng, random) = self.random.as_mut()?;
        if rng.next_f64() >= random.rate {
            return None;
        }
        let total: u64 = random.mix.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        let mut pick = rng.next_u64() % total;
        for (fault, weight) in &random.mix {
            if pick < u64::from(*weight) {
                return Some(fault.clone());
            }
            pick -= u64::from(*weight);
        }
        None
    }

    /// Checks the session token of a pull or push and counts the request
    /// against its budget.
    fn authenticate(&mut self, headers: &HeaderMap) -> bool {
        let Some(token) = session_token(headers) else {
            self.stats.unauthorized += 1;
            return false;
        };
        let budget = self.token_max_requests;
        let Some(session) = self.tokens.get_mut(token) else {
            self.stats.unauthorized += 1;
            return false;
        };
        let expired = Instant::now() >= session.expires_at
            || budget.is_some_and(|max| session.requests >= max);
        if expired {
            self.tokens.remove(token);
            self.stats.tokens_expired += 1;
            self.stats.unauthorized += 1;
            return false;
        }
        session.requests += 1;
        true
    }
}

/// One issued session token.
struct Session {
    expires_at: Instant,
    requests: u64,
}

/// A small seeded generator (splitmix64): reproducible fault draws without
/// a dependency.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        // 53 random bits, the mantissa's width: exact in an f64.
        #[allow(clippy::cast_precision_loss)]
        let bits = (self.next_u64() >> 11) as f64;
        bits / (1u64 << 53) as f64
    }
}

/// Accepts connections until the relay stops, then lets answers in
/// progress finish within `grace` and closes the rest.
async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    lifetime: Option<Duration>,
    grace: Duration,
) {
    let router = Router::new()
        .route(LOGIN_PATH, post(login))
        .route(PULL_PATH, get(pull))
        .route(PUSH_PATH, post(push))
        .with_state(Arc::clone(&shared));
    let mut phase = shared.phase.subscribe();
    let deadline = lifetime.map(|lifetime| Instant::now() + lifetime);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::trace!(%peer, "relay connection");
                    let service = TowerToHyperService::new(router.clone());
                    let mut phase = shared.phase.subscribe();
                    connections.spawn(async move {
                        let connection = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service);
                        tokio::pin!(connection);
                        tokio::select! {
                            _ = connection.as_mut() => {}
                            () = stopping(&mut phase) => {
                                // Finish the answer in progress, then close.
                                connection.as_mut().graceful_shutdown();
                                let _ = connection.await;
                            }
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "the relay could not accept a connection"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stopping(&mut phase) => break,
            () = sleep_until(deadline) => shared.stop(StopReason::Lifetime),
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = connections.len(),
            "the relay closes connections still answering"
        );
        connections.shutdown().await;
    }
    let reason = shared
        .phase
        .borrow()
        .reason()
        .unwrap_or(StopReason::Shutdown);
    let stats = shared.lock().stats.clone();
    tracing::info!(
        ?reason,
        requests = stats.requests,
        faults = stats.faults.total(),
        "relay stopped"
    );
    shared.phase.send_replace(Phase::Stopped(reason));
}

/// Resolves once the relay is no longer running.
async fn stopping(phase: &mut watch::Receiver<Phase>) {
    // An error means the sender is gone: the relay is gone too.
    let _ = phase.wait_for(|phase| *phase != Phase::Running).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn login(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    handle(&shared, Route::Login, &headers, &Bytes::new()).await
}

async fn pull(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    handle(&shared, Route::Pull, &headers, &Bytes::new()).await
}

async fn push(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&shared, Route::Push, &headers, &body).await
}

/// A normal answer, before it is sent or lost.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    /// Messages taken off the queue for this answer.
    handed_out: u64,
}

impl Answer {
    fn status(status: StatusCode, body: &str) -> Self {
        let mut headers = HeaderMap::new();
        if !body.is_empty() {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        Self {
            status,
            headers,
            body: body.as_bytes().to_vec(),
            handed_out: 0,
        }
    }

    fn json(status: StatusCode, body: Vec<u8>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Self {
            status,
            headers,
            body,
            handed_out: 0,
        }
    }

    fn into_response(self) -> Response {
        let mut response = if self.body.is_empty() {
            self.status.into_response()
        } else {
            (self.status, self.body).into_response()
        };
        response.headers_mut().extend(self.headers);
        response
    }
}

async fn handle(shared: &Shared, route: Route, headers: &HeaderMap, body: &Bytes) -> Response {
    let fault = {
        let mut state = shared.lock();
        state.stats.requests += 1;
        let n = state.stats.requests;
        if *shared.phase.borrow() != Phase::Running
            || shared.max_requests.is_some_and(|max| n > max)
        {
            state.stats.refused_stopping += 1;
            drop(state);
            tracing::debug!(route = route.name(), "relay stopping: refused");
            let mut response =
                Answer::status(StatusCode::SERVICE_UNAVAILABLE, "relay stopping").into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
        if shared.max_requests == Some(n) {
            // The last request: connections finish this answer, then close.
            shared.stop(StopReason::MaxRequests);
        }
        let fault = state.next_fault(route);
        if let Some(fault) = &fault {
            state.stats.faults.count(fault.kind());
            if route == Route::Login {
                state.stats.faults_on_login.count(fault.kind());
            }
        }
        fault
    };
    if let Some(fault) = &fault {
        tracing::debug!(route = route.name(), ?fault, "relay injects a fault");
    }
    match fault {
        None => {
            let answer = answer(shared, route, headers, body);
            finish(shared, route, answer, false)
        }
        Some(Fault::Slow(delay)) => {
            // Dropped here (no processing) when the client gives up first.
            tokio::time::sleep(delay).await;
            let answer = answer(shared, route, headers, body);
            finish(shared, route, answer, false)
        }
        Some(Fault::ResponseLost) => {
            let answer = answer(shared, route, headers, body);
            finish(shared, route, answer, true)
        }
        Some(Fault::Reset) => cut(FILLER.to_vec()),
        Some(Fault::Unauthorized) => {
            Answer::status(StatusCode::UNAUTHORIZED, "token expired").into_response()
        }
        Some(Fault::RateLimited { retry_after_s }) => {
            let mut answer = Answer::status(StatusCode::TOO_MANY_REQUESTS, "rate limited");
            if let Some(seconds) = retry_after_s {
                answer
                    .headers
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            answer.into_response()
        }
        Some(Fault::ServerError) => {
            Answer::status(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
        Some(Fault::ServiceUnavailable) => {
            Answer::status(StatusCode::SERVICE_UNAVAILABLE, "unavailable").into_response()
        }
        Some(Fault::ProxyChallenge) => {
            let mut answer = Answer::status(StatusCode::TOO_MANY_REQUESTS, CHALLENGE_PAGE);
            answer.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=UTF-8"),
            );
            answer
                .headers
                .insert(header::SERVER, HeaderValue::from_static("cloudflare"));
            answer
                .headers
                .insert("cf-mitigated", HeaderValue::from_static("challenge"));
            answer.into_response()
        }
    }
}

/// Counts the messages of a pull answer as handed out or lost, and sends
/// the answer whole or cut.
fn finish(shared: &Shared, route: Route, answer: Answer, lost: bool) -> Response {
    {
        let mut state = shared.lock();
        if lost {
            if route == Route::Pull && answer.status.is_success() {
                state.stats.pull_responses_lost += 1;
                state.stats.messages_lost += answer.handed_out;
            }
        } else {
            state.stats.messages_handed_out += answer.handed_out;
        }
    }
    tracing::debug!(
        route = route.name(),
        status = answer.status.as_u16(),
        lost,
        "relay answers"
    );
    if lost {
        // An empty answer (a 204) has nothing to cut: cut a filler.
        let body = if answer.body.len() < 2 {
            FILLER.to_vec()
        } else {
            answer.body
        };
        cut(body)
    } else {
        answer.into_response()
    }
}

/// The normal answer to a request.
fn answer(shared: &Shared, route: Route, headers: &HeaderMap, body: &Bytes) -> Answer {
    let mut state = shared.lock();
    match route {
        Route::Login => {
            if login_bearer(headers).is_none_or(|given| given != shared.bearer) {
                state.stats.logins_refused += 1;
                return Answer::status(StatusCode::UNAUTHORIZED, "invalid auth token");
            }
            if state.deleted {
                state.stats.logins_refused += 1;
                return Answer::status(StatusCode::NOT_FOUND, "instance not found");
            }
            state.issued += 1;
            let (jwt, expires_at) = issue_jwt(shared, state.issued);
            let mut answer = Answer::json(
                StatusCode::OK,
                serde_json::to_vec(&LoginResponse {
                    uuid: shared.uuid.clone(),
                    name: shared.name.clone(),
                })
                .unwrap_or_default(),
            );
            if let Ok(cookie) =
                HeaderValue::from_str(&format!("{TOKEN_COOKIE}={jwt}; Path=/; HttpOnly"))
            {
                answer.headers.insert(header::SET_COOKIE, cookie);
            }
            state.tokens.insert(
                jwt,
                Session {
                    expires_at,
                    requests: 0,
                },
            );
            state.stats.logins += 1;
            answer
        }
        Route::Pull => {
            if !state.authenticate(headers) {
                return Answer::status(StatusCode::UNAUTHORIZED, "invalid token");
            }
            state.stats.pulls += 1;
            let n = shared.pull_batch.min(state.queue.len());
            if n == 0 {
                return Answer::status(StatusCode::NO_CONTENT, "");
            }
            let messages = Messages {
                messages: state.queue.drain(..n).collect(),
            };
            let mut answer = Answer::json(
                StatusCode::OK,
                serde_json::to_vec(&messages).unwrap_or_default(),
            );
            answer.handed_out = n as u64;
            answer
        }
        Route::Push => {
            if !state.authenticate(headers) {
                return Answer::status(StatusCode::UNAUTHORIZED, "invalid token");
            }
            let Ok(messages) = serde_json::from_slice::<Messages>(body) else {
                state.stats.pushes_malformed += 1;
                return Answer::status(StatusCode::BAD_REQUEST, "body is not UMHMessages");
            };
            state.stats.pushes += 1;
            for message in messages.messages {
                state.stats.messages_received += 1;
                if !state.seen.insert(message.content.clone()) {
                    state.stats.duplicates_received += 1;
                }
                state.received.push(message);
            }
            Answer::status(StatusCode::OK, "")
        }
    }
}

/// The value of `Authorization: Bearer <value>`.
fn login_bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The `token` cookie of a request.
fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == TOKEN_COOKIE).then_some(value)
        })
}

/// A new session token (numbered `serial`) and when it expires on the
/// relay's clock.
fn issue_jwt(shared: &Shared, serial: u64) -> (String, Instant) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let exp = now.saturating_add(shared.token_lifetime.as_secs());
    let header = base64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = serde_json::json!({
        "sub": shared.uuid,
        "iat": now,
        "exp": exp,
        "jti": serial.to_string(),
    });
    let payload = base64url(payload.to_string().as_bytes());
    let signing_input = format!("{header}.{payload}");
    let mut mac = Sha3_256::new();
    mac.update(shared.bearer.as_bytes());
    mac.update(signing_input.as_bytes());
    let signature = base64url(&mac.finalize());
    (
        format!("{signing_input}.{signature}"),
        Instant::now() + shared.token_lifetime,
    )
}

/// Base64url without padding (RFC 4648 §5), as JWTs use it.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            let index = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

/// A body to cut when the real answer has none.
const FILLER: &[u8] =
    br#"{"UMHMessages":[{"umhInstance":"","content":"cut by fsm-relay","email":""}]}"#;

/// A 200 that announces `body` whole and sends half of it, then fails the
/// body: hyper closes the connection, the client sees a broken answer.
fn cut(body: Vec<u8>) -> Response {
    let len = body.len();
    let half = Bytes::from(body).slice(..len / 2);
    let chunks = futures::stream::unfold(Some(half), |half| async move {
        match half {
            Some(half) => Some((Ok(half), None)),
            None => {
                // Pending once: hyper writes the headers and the half body
                // before it sees the error and drops the connection.
                tokio::task::yield_now().await;
                let error = std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "fsm-relay cuts this answer (fault injection)",
                );
                Some((Err(error), None))
            }
        }
    });
    let mut response = Response::new(Body::from_stream(chunks));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A CDN challenge page, as a proxy in front of a relay answers a client it
/// suspects.
const CHALLENGE_PAGE: &str = "<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title>\
<meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\">\
<meta name=\"robots\" content=\"noindex,nofollow\"></head><body>\
<div class=\"main-wrapper\" role=\"main\"><div class=\"main-content\">\
<h1>Checking your browser before accessing the site.</h1>\
<p>This process is automatic. Your browser will redirect to your requested content shortly.</p>\
<noscript>Enable JavaScript and cookies to continue</noscript>\
</div></div><div class=\"footer\">Performance &amp; security by Cloudflare</div></body></html>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_the_rfc_4648_test_vectors_without_padding() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64url(input), expected);
        }
        // The url-safe alphabet: 0xfb 0xff encode to - and _, not + and /.
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn a_non_loopback_listen_address_is_refused_unless_public() {
        let public: SocketAddr = "0.0.0.0:8080"
            .parse()
            .unwrap_or(SocketAddr::from(([0; 4], 0)));
        assert!(matches!(
            check_listen_address(public, false),
            Err(RelayError::NotLoopback(_))
        ));
        assert!(check_listen_address(public, true).is_ok());
        for loopback in ["127.0.0.1:0", "127.1.2.3:8080", "[::1]:8080"] {
            let addr: SocketAddr = loopback.parse().unwrap_or(public);
            assert!(check_listen_address(addr, false).is_ok(), "{loopback}");
        }
        let lan: SocketAddr = "192.0.2.1:8080".parse().unwrap_or(public);
        assert!(check_listen_address(lan, false).is_err());
    }

    #[test]
    fn a_configs_debug_form_redacts_the_auth_token() {
        let shown = format!("{:?}", RelayConfig::new("s3cr3t-token", "u-1"));
        assert!(!shown.contains("s3cr3t-token"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("u-1"),
            "{shown}"
        );
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; token=abc.def.ghi; b=2"),
        );
        assert_eq!(session_token(&headers), Some("abc.def.ghi"));
        headers.insert(header::COOKIE, HeaderValue::from_static("tokens=x"));
        assert_eq!(session_token(&headers), None);
    }

    #[test]
    fn random_faults_repeat_with_the_seed_and_follow_the_rate() {
        let draw = |seed| {
            let mut state = RelayState {
                random: Some((SplitMix64(seed), RandomFaults::new(0.2, seed))),
                ..RelayState::default()
            };
            (0..1000)
                .map(|_| state.next_fault(Route::Pull))
                .collect::<Vec<_>>()
        };
        let first = draw(7);
        assert_eq!(first, draw(7));
        assert_ne!(first, draw(8));
        let faulted = first.iter().filter(|f| f.is_some()).count();
        assert!((150..250).contains(&faulted), "{faulted} of 1000 at 0.2");
        let kinds: HashSet<FaultKind> = first.iter().flatten().map(Fault::kind).collect();
        assert_eq!(kinds.len(), 8, "every kind of the default mix is drawn");
    }

    #[test]
    fn scheduled_faults_go_to_the_next_request_their_target_matches() {
        let mut state = RelayState::default();
        state
            .scheduled
            .push_back((Target::Push, Fault::ServerError));
        state.scheduled.push_back((Target::Api, Fault::Reset));
        assert_eq!(state.next_fault(Route::Login), None);
        assert_eq!(state.next_fault(Route::Pull), Some(Fault::Reset));
        assert_eq!(state.next_fault(Route::Push), Some(Fault::ServerError));
        assert_eq!(state.next_fault(Route::Push), None);
    }

    #[test]
    fn a_fault_mix_is_read_from_names_and_weights() {
        let slow = Duration::from_secs(3);
        let mix = RandomFaults::parse_mix("reset=2, slow=1", slow);
        assert_eq!(
            mix.ok(),
            Some(vec![(Fault::Reset, 2), (Fault::Slow(slow), 1)])
        );
        assert!(matches!(
            RandomFaults::parse_mix("boom=1", slow),
            Err(RelayError::UnknownFault(_))
        ));
        assert!(matches!(
            RandomFaults::parse_mix("reset", slow),
            Err(RelayError::BadFaultMix(_))
        ));
    }
}
