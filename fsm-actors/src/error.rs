//! Errors of the tree handle.

use std::time::Duration;

use fsm_core::{DeclarationProblem, SpecError};

use crate::config::ConfigError;
use crate::snapshot::{FatalError, SubtreeCounts};

/// An operation on a [`Tree`](crate::Tree) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// The configuration cannot work.
    #[error("invalid tree configuration: {0}")]
    Config(#[from] ConfigError),
    /// The root spec is invalid; nothing was spawned or changed.
    #[error("invalid root spec: {0}")]
    InvalidRootSpec(#[source] DeclarationProblem),
    /// The tree's actors could not be started.
    #[error("could not start the tree: {0}")]
    Spawn(String),
    /// The tree's store could not be read when the tree was spawned (it
    /// names the store, or the node whose record is unreadable, and what
    /// to do); nothing was spawned.
    #[error("could not restore the tree: {0}")]
    Store(#[source] fsm_core::store::StoreError),
    /// The tree gave up: its root failed more often than its restart
    /// intensity allows.
    #[error(transparent)]
    Fatal(FatalError),
    /// The root worker could not be constructed (its constructor failed or
    /// panicked); nothing was spawned.
    #[error("could not construct the root worker: {0}")]
    RootConstructor(#[source] SpecError),
    /// The tree is no longer running: its owner shut it down or dropped it
    /// (every [`TreeHandle`](crate::TreeHandle) then answers this), or its
    /// top actor died.
    #[error("the tree is not running; spawn a new one")]
    NotRunning,
    /// A node did not answer in time.
    #[error("{what} did not answer within {timeout:?}")]
    Timeout {
        /// What was asked.
        what: &'static str,
        /// How long was waited.
        timeout: Duration,
    },
    /// No node has this path (now): none was declared there, or it was
    /// removed.
    #[error("no node has the path `{path}`; inspect() lists the nodes")]
    NoSuchNode {
        /// The path asked for.
        path: String,
    },
    /// A typed read asked for another type than the node's worker observes.
    #[error(
        "node `{path}` observes `{observed}`, not `{asked}`; read it as its worker's `Observed` type"
    )]
    ObservationType {
        /// The node.
        path: String,
        /// The type asked for.
        asked: &'static str,
        /// The worker's `Observed` type.
        observed: &'static str,
    },
    /// The tree did not converge in time.
    #[error("the tree did not converge within {timeout:?}: {} of {} nodes converged, {} unhealthy; inspect() shows which", counts.converged, counts.nodes, counts.unhealthy)]
    NotConverged {
        /// How long was waited.
        timeout: Duration,
        /// The counts when the wait gave up.
        counts: SubtreeCounts,
    },
}

impl From<SpecError> for TreeError {
    fn from(e: SpecError) -> Self {
        Self::InvalidRootSpec(DeclarationProblem::Spec(e))
    }
}
