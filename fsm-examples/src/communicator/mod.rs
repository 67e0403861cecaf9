//! The Communicator: connects an instance to its management relay over
//! HTTP (see [`protocol`](crate::protocol)), as a small tree of workers.
//!
//! ```text
//! communicator ──▶ pull   (declared from state, only while authenticated)
//!              └─▶ push
//! ```
//!
//! * `communicator` (states `stopped`, `authenticating`, `syncing`,
//!   `degraded`) logs in with its action `authenticate`, and declares its
//!   transport children `pull` and `push` from its state machine
//!   ([`Transition::with_children`](fsm_core::Transition::with_children))
//!   once it holds a session. It logs in again before the JWT expires (its
//!   `exp` less [`CommunicatorConfig::refresh_margin`]), when a child got a
//!   401, and when the spec's token, relay URL or instance uuid changes —
//!   in place, without restarting its children.
//! * `pull` and `push` (states `stopped`, `running`, `degraded`) each run one
//!   HTTP call at a time as an action (`pull`, `push`) on the tree's
//!   executor, and back off per error class ([`client::delay`]).
//!
//! The application talks to it through [`CommunicatorChannels`]: a bounded
//! receiver of pulled messages and a bounded sender of messages to push,
//! plus the counters ([`CommunicatorStats`]). The session (the JWT) is
//! shared between the three workers through the [`CommunicatorHandle`]
//! given at registration, never through specs, snapshots or logs; the
//! auth token is a [`Secret`] in the spec.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use fsm_core::{ChildSpec, Secret, WorkerRegistry};
//! use fsm_examples::communicator::{self, CommunicatorConfig, CommunicatorHandle, CommunicatorSpec};
//!
//! let mut registry = WorkerRegistry::new();
//! let mut channels = communicator::register(&mut registry, CommunicatorHandle::new(CommunicatorConfig::default()))?;
//! let spec = CommunicatorSpec::new("http://127.0.0.1:8080", Secret::from("token"));
//! let root = ChildSpec::new("communicator", communicator::COMMUNICATOR).with_typed_spec(&spec)?;
//! let tree = fsm_actors::Tree::spawn(root, registry, fsm_actors::TreeConfig::default()).await?;
//! channels.outbound.send(fsm_examples::protocol::UmhMessage {
//!     umh_instance: String::new(),
//!     content: "hello".into(),
//!     email: "ops@example.com".into(),
//!     trace_id: None,
//! }).await?;
//! let pulled = channels.inbound.recv().await;
//! # let _ = (tree, pulled); Ok(()) }
//! ```

pub mod client;
mod shared;
mod transport;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use fsm_core::{RegistryError, Secret, WorkerRegistry};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::protocol::UmhMessage;
pub use client::{Delays, ErrorClass, RelayClient, RelayError, Session};
pub use shared::CommunicatorStats;
use shared::Shared;
pub use transport::{PullState, PushState, TransportObservation, TransportSpec};
pub use worker::{CommunicatorObservation, CommunicatorState, ReauthReason};

/// The communicator's worker type.
pub const COMMUNICATOR: &str = "communicator";
/// The pull child's worker type.
pub const PULL: &str = "communicator_pull";
/// The push child's worker type.
pub const PUSH: &str = "communicator_push";

/// The communicator's spec: where the relay is and how to log in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommunicatorSpec {
    /// The relay's base URL (`http://host:port`; `https://` needs the `tls`
    /// feature).
    pub relay_url: String,
    /// The instance's auth token: stored with the spec, printed
    /// `<redacted>`.
    pub auth_token: Secret,
    /// The instance's uuid, if the application knows it; a change logs in
    /// again.
    #[serde(default)]
    pub instance_uuid: Option<String>,
    /// Each HTTP request's timeout, in milliseconds. Default: 30 s.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Whether to sync (`syncing`) or not (`stopped`). Default: true.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_enabled() -> bool {
    true
}

impl CommunicatorSpec {
    /// A spec that syncs with the relay at `relay_url`, logging in with
    /// `auth_token`, with the default timeout.
    #[must_use]
    pub fn new(relay_url: impl Into<String>, auth_token: Secret) -> Self {
        Self {
            relay_url: relay_url.into(),
            auth_token,
            instance_uuid: None,
            timeout_ms: default_timeout_ms(),
            enabled: true,
        }
    }

    /// The request timeout.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}

/// How the communicator behaves; the defaults are the protocol's.
#[derive(Clone, Debug, PartialEq)]
pub struct CommunicatorConfig {
    /// The waits after each class of error.
    pub delays: Delays,
    /// Log in again this long before the JWT expires. Default: 10 min.
    pub refresh_margin: Duration,
    /// Room for pulled messages the application has not received yet.
    /// Default: 1000.
    pub inbound_capacity: usize,
    /// Room for messages the application hands over to push. Default: 1000.
    pub outbound_capacity: usize,
    /// Pulling pauses while fewer than this many inbound slots are free.
    /// Default: 50.
    pub inbound_low_water: usize,
    /// ... and resumes once this many are free again. Default: 100.
    pub inbound_high_water: usize,
    /// At most this many messages wait to be pushed (taken from the
    /// outbound channel, not yet acknowledged); the oldest is dropped and
    /// counted when full. Default: 1000.
    pub max_pending: usize,
    /// At most this many messages per push request. Default: 1000.
    pub max_batch: usize,
    /// A transport child is `degraded` after this many consecutive errors.
    /// Default: 3.
    pub degraded_after: u32,
}

impl Default for CommunicatorConfig {
    fn default() -> Self {
        Self {
            delays: Delays::default(),
            refresh_margin: Duration::from_secs(600),
            inbound_capacity: 1000,
            outbound_capacity: 1000,
            inbound_low_water: 50,
            inbound_high_water: 100,
            max_pending: 1000,
            max_batch: 1000,
            degraded_after: 3,
        }
    }
}

/// The state one communicator shares with its children: the session, the
/// channels' worker-side ends, the counters. Made by the application,
/// handed to [`register`]. One communicator node per handle.
#[derive(Debug)]
pub struct CommunicatorHandle {
    shared: Arc<Shared>,
    inbound: mpsc::Receiver<UmhMessage>,
    outbound: mpsc::Sender<UmhMessage>,
}

impl CommunicatorHandle {
    /// A handle with the channels `config` sizes.
    #[must_use]
    pub fn new(config: CommunicatorConfig) -> Self {
        let (inbound_tx, inbound) = mpsc::channel(config.inbound_capacity.max(1));
        let (outbound, outbound_rx) = mpsc::channel(config.outbound_capacity.max(1));
        Self {
            shared: Arc::new(Shared::new(config, inbound_tx, outbound_rx)),
            inbound,
            outbound,
        }
    }
}

/// The application's side of a communicator.
#[derive(Debug)]
pub struct CommunicatorChannels {
    /// Pulled messages, each delivered once, in the relay's order.
    pub inbound: mpsc::Receiver<UmhMessage>,
    /// Messages to push (`umhInstance` is set to the session's uuid).
    pub outbound: mpsc::Sender<UmhMessage>,
    stats: CommunicatorStatsReader,
}

impl CommunicatorChannels {
    /// The communicator's counters now.
    #[must_use]
    pub fn stats(&self) -> CommunicatorStats {
        self.stats.read()
    }

    /// A reader of the counters that outlives the channels.
    #[must_use]
    pub fn stats_reader(&self) -> CommunicatorStatsReader {
        self.stats.clone()
    }
}

/// Reads a communicator's counters from anywhere.
#[derive(Clone, Debug)]
pub struct CommunicatorStatsReader {
    shared: Arc<Shared>,
}

impl CommunicatorStatsReader {
    /// The counters now.
    #[must_use]
    pub fn read(&self) -> CommunicatorStats {
        self.shared.stats()
    }
}

/// Registers the worker types [`COMMUNICATOR`], [`PULL`] and [`PUSH`], all
/// sharing `handle`, and returns the application's side.
///
/// # Errors
///
/// When one of the types is registered already.
pub fn register(
    registry: &mut WorkerRegistry,
    handle: CommunicatorHandle,
) -> Result<CommunicatorChannels, RegistryError> {
    let CommunicatorHandle {
        shared,
        inbound,
        outbound,
    } = handle;
    let s = Arc::clone(&shared);
    registry.register(COMMUNICATOR, move |init| {
        worker::Communicator::new(Arc::clone(&s), init.metrics())
    })?;
    let s = Arc::clone(&shared);
    // `pull` and `push` count through the communicator's metrics handle.
    registry.register(PULL, move |_| transport::Pull::new(Arc::clone(&s)))?;
    let s = Arc::clone(&shared);
    registry.register(PUSH, move |_| transport::Push::new(Arc::clone(&s)))?;
    Ok(CommunicatorChannels {
        inbound,
        outbound,
        stats: CommunicatorStatsReader { shared },
    })
}
