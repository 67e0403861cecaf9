//! What crosses the boundary between a proxy and a host: one message type,
//! [`HostMsg`], whose payloads are JSON envelopes ([`Request`], [`Reply`])
//! with the specs inside encoded by the workspace codec
//! ([`fsm_core::codec`]).
//!
//! ractor's cluster layer serialises a message by hand-written
//! [`ractor::Message`] methods; keeping the wire type to two byte-carrying
//! variants keeps that code small, and the envelopes are ordinary serde
//! types that evolve with `#[serde(default)]`.

use ractor::RpcReplyPort;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use serde::{Deserialize, Serialize};

use fsm_core::store::Change;

use super::mirror::MirrorDelta;
use crate::snapshot::{NodeSnapshot, StopRecord, SubtreeCounts};

/// A message to a host actor.
pub enum HostMsg {
    /// A one-way request (a tick).
    Cast(Vec<u8>),
    /// A request that expects an answer (JSON, like the request).
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// Local only, from the host's own timer: stop the subtrees whose lease
    /// has expired.
    Reap,
}

impl std::fmt::Debug for HostMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cast(b) => write!(f, "Cast({} bytes)", b.len()),
            Self::Call(b, _) => write!(f, "Call({} bytes)", b.len()),
            Self::Reap => f.write_str("Reap"),
        }
    }
}

const CAST: &str = "cast";
const CALL: &str = "call";

impl ractor::Message for HostMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            Self::Cast(args) => Ok(SerializedMessage::Cast {
                variant: CAST.to_owned(),
                args,
                metadata: None,
            }),
            Self::Call(args, reply) => Ok(SerializedMessage::Call {
                variant: CALL.to_owned(),
                args,
                reply,
                metadata: None,
            }),
            // Never sent to another node.
            Self::Reap => Err(BoxedDowncastErr),
        }
    }

    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match bytes {
            SerializedMessage::Cast { variant, args, .. } if variant == CAST => {
                Ok(Self::Cast(args))
            }
            SerializedMessage::Call {
                variant,
                args,
                reply,
                ..
            } if variant == CALL => Ok(Self::Call(args, reply)),
            _ => Err(BoxedDowncastErr),
        }
    }
}

/// A request from a proxy (or the host's owner) to a host.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Run a subtree from `spec` (codec bytes) under a lease held by
    /// `epoch`; a later epoch replaces a running copy, an earlier one is
    /// refused.
    Place {
        key: String,
        epoch: u64,
        spec: Vec<u8>,
        lease_ms: u64,
        /// What the subtree recorded of its nodes where it ran before, to
        /// restore it from (see `mirror`).
        #[serde(default)]
        restore: Vec<Change>,
    },
    /// Renew the lease and answer with the subtree's status and what it
    /// recorded since the last renewal (`whole`: all it holds).
    Renew {
        key: String,
        epoch: u64,
        #[serde(default)]
        whole: bool,
    },
    /// Tick the subtree once (a cast; no answer). `trace`: the W3C
    /// `traceparent` of the parent's tick span, when ticks are traced.
    Tick {
        key: String,
        epoch: u64,
        #[serde(default)]
        trace: Option<String>,
    },
    /// The subtree's root spec changed (codec bytes).
    Update {
        key: String,
        epoch: u64,
        spec: Vec<u8>,
    },
    /// Stop the subtree in order and answer with its stop records.
    Stop {
        key: String,
        epoch: u64,
        timeout_ms: u64,
    },
    /// Answer with the subtree's snapshot.
    Inspect { key: String, epoch: u64 },
    /// Answer with what this host runs.
    List,
}

/// A host's answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// Done; for `Update`, the subtree's new tree generation.
    Done(u64),
    Status(RemoteStatus, MirrorDelta),
    /// Refused: why (a stale epoch, an unknown subtree, a spec that does not
    /// decode or spawn).
    Refused(String),
    Stopped(Vec<StopRecord>),
    Snapshot(Box<NodeSnapshot>),
    Hosted(Vec<HostedSubtree>),
}

/// A placed subtree's status, as its host's tree publishes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RemoteStatus {
    pub(crate) state: String,
    pub(crate) desired: String,
    pub(crate) healthy: bool,
    pub(crate) stale: bool,
    pub(crate) converged: bool,
    pub(crate) counts: SubtreeCounts,
    pub(crate) generation: u64,
    pub(crate) observed_generation: u64,
    /// The root has reported at least once.
    pub(crate) reported: bool,
}

/// One subtree a host runs (see [`Host::hosted`](super::Host::hosted)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HostedSubtree {
    /// The placed child: its owner node and path (`a:plant/line-1`).
    pub key: String,
    /// The epoch of the lease it runs under.
    pub epoch: u64,
    /// Its root node's name.
    pub root: String,
    /// Node actors alive in it now (every worker instance).
    pub live_nodes: u64,
    /// Whether it has converged.
    pub converged: bool,
    /// Of its nodes, those restored from what they recorded where the
    /// subtree ran before (0 for a first placement).
    pub restored_nodes: u64,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain types to JSON cannot fail (string keys, no
    // non-finite floats in what is sent).
    serde_json::to_vec(value).unwrap_or_default()
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("undecodable cluster message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::Message as _;

    #[test]
    fn a_host_message_survives_its_wire_form() {
        let bytes = encode(&Request::Renew {
            key: "a:plant/line-1".into(),
            epoch: 7,
            whole: false,
        });
        let wire = HostMsg::Cast(bytes.clone()).serialize().unwrap();
        match HostMsg::deserialize(wire).unwrap() {
            HostMsg::Cast(back) => assert_eq!(back, bytes),
            other => panic!("{other:?}"),
        }
        match decode::<Request>(&bytes).unwrap() {
            Request::Renew { key, epoch, .. } => {
                assert_eq!((key.as_str(), epoch), ("a:plant/line-1", 7))
            }
            other => panic!("{other:?}"),
        }
        assert!(HostMsg::Reap.serialize().is_err());
        assert!(decode::<Request>(b"{").unwrap_err().contains("undecodable"));
    }
}
