//! The fsmv2-rs runtime: a tree of supervised state machines on ractor.
//!
//! Hand [`Tree::spawn`] a root [`ChildSpec`](fsm_core::ChildSpec), a
//! [`WorkerRegistry`](fsm_core::WorkerRegistry) and a [`TreeConfig`]; the
//! tree spawns one actor per node, keeps every node converging on its
//! desired state, and runs actions on a pooled executor.
//!
//! ```text
//!  Tree handle ── tick timer ──▶ top ──▶ root ──▶ line-1 ──▶ bridge-a ──▶ connection
//!      │                          │        │                     └──────▶ read-flow
//!      │ inspect / update /       │        └──▶ line-2 ...
//!      │ shutdown                 │
//!      ▼                          ▼ actions (messages)
//!   TreeStatus (watch)         Executor (pooled, one per tree)
//! ```
//!
//! Guarantees users rely on:
//!
//! * parents and children share no memory: specs, mapped states, ticks and
//!   reports travel as messages;
//! * children start in declaration order and stop in reverse start order,
//!   each subtree completely before the next sibling;
//! * a tick never waits for an observation or an action;
//! * every enqueued action ends in exactly one outcome;
//! * an invalid declaration changes nothing and is reported on the node.
//!
//! See `docs/architecture.md` for the tick and the messages.

#![forbid(unsafe_code)]
#![warn(unnameable_types)]

#[cfg(feature = "cluster")]
pub mod cluster;
mod config;
mod deadline;
mod error;
mod executor;
#[cfg(feature = "fault-injection")]
mod faults;
mod latest;
mod node;
mod persist;
mod runbook;
mod snapshot;
mod snapshot_json;
pub mod store;
pub mod telemetry;
mod tree;

pub use config::{ConfigError, ExecutorConfig, TreeConfig};
pub use error::TreeError;
#[cfg(feature = "fault-injection")]
pub use faults::quiet_injected_faults;
pub use latest::LatestObservation;
pub use snapshot::{
    CollectError, ExecutorStats, FatalError, NodeSnapshot, RestartingInfo, RestoreInfo,
    ShutdownReport, StopOutcome, StopRecord, StoreStats, SubtreeCounts, TreeStatus,
};
pub use tree::{Tree, TreeHandle};

/// The OpenTelemetry API this crate is built against. A
/// [`TreeConfig::meter`] must come from this very version of
/// `opentelemetry` (a meter of another version is another type); making it
/// through this re-export makes sure it does.
pub use opentelemetry;

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
