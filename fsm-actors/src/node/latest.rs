//! Answering a typed read of a node's latest observation
//! (`TreeHandle::observation`): the request is routed from the top down,
//! parent to child by name, and the node it names clones its observation
//! (only then) and answers with its freshness. Nothing is kept per tick
//! for it.

use fsm_core::freshness::Freshness;
use tokio::time::Instant;

use super::{NodeMsg, NodeState};
use crate::latest::{ObservationReply, ObservationRequest};

impl NodeState {
    /// Answers the request, or passes it on to the child on its path.
    pub(super) fn read_observation(&self, request: Box<ObservationRequest>, now: Instant) {
        if request.path == self.path && !self.is_top() {
            self.answer_observation(*request, now);
            return;
        }
        // The name of the next node on the way: the one at this node's depth.
        let depth = self.path.depth();
        let below = self.path.is_top() || request.path.as_str().starts_with(self.path.as_str());
        let next = request
            .path
            .segments()
            .nth(depth)
            .filter(|_| below)
            .and_then(|name| self.children.index_of(name))
            .map(|i| &self.children.entries()[i]);
        match next {
            Some(child) => match child.actor() {
                Some(actor) => {
                    if let Err(ractor::MessagingErr::SendErr(NodeMsg::ReadObservation(r))) =
                        actor.cast(NodeMsg::ReadObservation(request))
                    {
                        // Gone meanwhile: as if not running.
                        let _ = r.reply.send(ObservationReply::Found {
                            value: None,
                            freshness: Freshness::NeverObserved,
                        });
                    }
                }
                // Declared, waiting to start or restart: nothing observed.
                None => {
                    let _ = request.reply.send(ObservationReply::Found {
                        value: None,
                        freshness: Freshness::NeverObserved,
                    });
                }
            },
            None => {
                let _ = request.reply.send(ObservationReply::NoSuchNode);
            }
        }
    }

    fn answer_observation(&self, request: ObservationRequest, now: Instant) {
        let ObservationRequest {
            asked, read, reply, ..
        } = request;
        match self.driver.observed_type() {
            Some((observed, _)) if observed == asked => {}
            other => {
                let observed = other.map_or("an unknown type", |(_, name)| name);
                let _ = reply.send(ObservationReply::WrongType { observed });
                return;
            }
        }
        let observation = (self.collector.observed_seq > 0)
            .then(|| self.driver.latest_observation())
            .flatten();
        let Some(observation) = observation else {
            let _ = reply.send(ObservationReply::Found {
                value: None,
                freshness: Freshness::NeverObserved,
            });
            return;
        };
        let limits = self.freshness_limits();
        let quiet_until = self.collector.quiet_until.map(Instant::into_std);
        let at = limits.observed_since(quiet_until, self.cold.started.into_std());
        let freshness = Freshness::of(Some(at), now.into_std(), limits.stale_after);
        let _ = reply.send(ObservationReply::Found {
            value: read(observation),
            freshness,
        });
    }
}
