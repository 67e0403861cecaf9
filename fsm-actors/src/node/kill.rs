//! Fault injection: killing one node from outside
//! (`TreeHandle::kill_node`), as a crashing dependency would stop its actor.
//! The request is routed from the top down, parent to child by name, like a
//! read of an observation.

use fsm_core::NodePath;
use ractor::ActorRef;

use super::{NodeMsg, NodeState};

impl NodeState {
    /// Kills this node if `path` names it, or passes the request on to the
    /// running child on the path; a path no running node has is ignored.
    pub(super) fn kill(&self, path: &NodePath, myself: &ActorRef<NodeMsg>) {
        if *path == self.path && !self.is_top() {
            myself.kill();
            return;
        }
        let below = self.path.is_top() || path.as_str().starts_with(self.path.as_str());
        let next = path
            .segments()
            .nth(self.path.depth())
            .filter(|_| below)
            .and_then(|name| self.children.index_of(name))
            .and_then(|i| self.children.entries()[i].actor());
        if let Some(actor) = next {
            let _ = actor.cast(NodeMsg::Kill(path.clone()));
        }
    }
}
