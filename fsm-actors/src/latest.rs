//! A typed read of one node's latest observation, with its freshness, for
//! the application around the tree ([`TreeHandle::observation`]).
//!
//! The request travels through the tree as a message, parent to child by
//! name, to the node that owns the observation; that node clones it (only
//! then) and answers. Nodes keep nothing new for it: the driver already
//! holds the latest observation.
//!
//! [`TreeHandle::observation`]: crate::TreeHandle::observation

use std::any::{Any, TypeId};
use std::time::Duration;

use fsm_core::NodePath;
use fsm_core::freshness::Freshness;
use ractor::RpcReplyPort;

/// A node's latest observation as it stands when read, with how old it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LatestObservation<T> {
    /// The last good observation is no older than the node's stale
    /// threshold.
    Fresh {
        /// The observation.
        value: T,
        /// How long ago it was made.
        age: Duration,
    },
    /// The last good observation is older than the node's stale threshold
    /// (its collects have been failing or hanging since): the node is
    /// stale, and this is the last it saw.
    Stale {
        /// The observation.
        value: T,
        /// How long ago it was made.
        age: Duration,
    },
    /// The node has made no good observation yet (in this incarnation: a
    /// restarted node starts without one).
    NeverObserved,
}

impl<T> LatestObservation<T> {
    /// The observation, if there is one, fresh or stale.
    #[must_use]
    pub fn value(&self) -> Option<&T> {
        match self {
            Self::Fresh { value, .. } | Self::Stale { value, .. } => Some(value),
            Self::NeverObserved => None,
        }
    }

    /// The observation, if there is one, fresh or stale.
    #[must_use]
    pub fn into_value(self) -> Option<T> {
        match self {
            Self::Fresh { value, .. } | Self::Stale { value, .. } => Some(value),
            Self::NeverObserved => None,
        }
    }

    /// How fresh it is, without the value.
    #[must_use]
    pub fn freshness(&self) -> Freshness {
        match self {
            Self::Fresh { age, .. } => Freshness::Fresh { age: *age },
            Self::Stale { age, .. } => Freshness::Stale { age: *age },
            Self::NeverObserved => Freshness::NeverObserved,
        }
    }

    /// Puts a value and its freshness together.
    pub(crate) fn from_parts(value: Option<T>, freshness: Freshness) -> Self {
        match (value, freshness) {
            (Some(value), Freshness::Fresh { age }) => Self::Fresh { value, age },
            (Some(value), Freshness::Stale { age }) => Self::Stale { value, age },
            _ => Self::NeverObserved,
        }
    }
}

/// Clones the observation if it is of the asked type.
pub(crate) type ReadFn =
    Box<dyn FnOnce(&(dyn Any + Send + Sync)) -> Option<Box<dyn Any + Send>> + Send>;

/// A request for one node's latest observation, on its way down the tree.
pub(crate) struct ObservationRequest {
    /// The node asked for.
    pub(crate) path: NodePath,
    /// The asked type.
    pub(crate) asked: TypeId,
    pub(crate) read: ReadFn,
    pub(crate) reply: RpcReplyPort<ObservationReply>,
}

/// The node's answer.
pub(crate) enum ObservationReply {
    NoSuchNode,
    /// The node's observations are of this other type.
    WrongType {
        observed: &'static str,
    },
    Found {
        value: Option<Box<dyn Any + Send>>,
        freshness: Freshness,
    },
}
