//! What a node hands the tree's store actor (see `crate::persist`), only
//! when the tree has a store and only when something changed:
//!
//! * when it starts: its identity and its desired document (its spec as
//!   declared, and the spec's generation);
//! * when its spec changes: its desired document;
//! * after a message that changed its state, health, last error or last
//!   action (the same comparison that decides whether it reports to its
//!   parent, plus a mark set where actions and problems change): its
//!   observed document, if it differs from the one last handed over (its
//!   observation time aside);
//! * its actions: started (the action runs once the record is written),
//!   and ended (recorded by whoever delivers the outcome, see
//!   [`RecordedSink`]).
//!
//! A parent hands over the removal of a child it no longer declares (which
//! removes the child's subtree). Without a store, a node pays one `bool`
//! test per report for all this.

use fsm_core::store::{
    ActionRecord, Change, DesiredDocument, LastAction, NodeIdentity, ObservedDocument,
    StoredOutcome,
};
use fsm_core::{ActionReport, NodePath};
use ractor::{ActorId, ActorRef};
use tokio::time::Instant;

use super::{NodeMsg, NodeState};
use crate::executor::{ActionDone, OutcomeSink};
use crate::persist::StoreLink;

/// Where an action's outcome goes when the tree has a store: its record,
/// with the outcome, to the store, then the outcome to the node. Whoever
/// delivers the outcome (the executor, or the message that never reached
/// it) records it, even once the node is gone: every outcome the executor
/// counts is stored.
#[derive(Clone)]
pub(crate) struct RecordedSink {
    node: ActorRef<NodeMsg>,
    store: StoreLink,
    /// The action's started record.
    pub(super) record: ActionRecord,
}

impl OutcomeSink for RecordedSink {
    fn owner(&self) -> ActorId {
        self.node.get_id()
    }

    fn deliver(&self, done: ActionDone) {
        self.store.send(Change::Action(
            self.record.clone().finished(done.report.outcome.clone()),
        ));
        self.node.deliver(done);
    }
}

/// Now, in unix milliseconds (what a store keeps: it must mean the same in
/// the next process).
pub(crate) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl NodeState {
    /// Hands over the node's identity and desired document (at start).
    pub(super) fn store_started(&mut self) {
        let Some(store) = self.shared.store.as_ref().filter(|_| !self.is_top()) else {
            return;
        };
        store.send(Change::Identity(NodeIdentity::new(
            self.path.clone(),
            self.cold.spec.worker_type.clone(),
        )));
        self.store_desired();
        self.store_dirty = true;
    }

    /// Hands over the node's desired document (at start, and when its spec
    /// or its generation changed).
    pub(super) fn store_desired(&mut self) {
        let Some(store) = self.shared.store.as_ref().filter(|_| !self.is_top()) else {
            return;
        };
        let key = (self.cold.spec_hash, self.cold.generation);
        if self.cold.stored_desired == Some(key) {
            return;
        }
        self.cold.stored_desired = Some(key);
        store.send(Change::Desired(
            self.path.clone(),
            DesiredDocument {
                spec: (*self.cold.spec).clone(),
                generation: self.cold.generation,
            },
        ));
    }

    /// Hands over the node's observed document if it changed since the
    /// last one (its observation time aside). Clears the mark.
    pub(super) fn store_observed(&mut self, now: Instant) {
        self.store_dirty = false;
        let Some(store) = self.shared.store.as_ref().filter(|_| !self.is_top()) else {
            return;
        };
        let doc = ObservedDocument {
            state: self.driver.state_name().to_owned(),
            observed_at_ms: self.driver.has_observation().then(|| {
                let since = self.freshness_limits().observed_since(
                    self.collector.quiet_until.map(Instant::into_std),
                    self.cold.started.into_std(),
                );
                let age = now.into_std().saturating_duration_since(since);
                unix_ms_now().saturating_sub(super::ms(age))
            }),
            restarts: u32::try_from(self.cold.restarts).unwrap_or(u32::MAX),
            backoff_attempt: self.cold.attempt,
            last_error: self
                .own_error(now)
                .or_else(|| self.cold.action_error.clone()),
            last_action: match (&self.action, self.last_action.as_deref()) {
                (Some((_, name)), _) => Some(LastAction {
                    action: (*name).to_owned(),
                    outcome: None,
                }),
                (None, Some(report)) => Some(LastAction {
                    action: report.action.clone(),
                    outcome: Some(StoredOutcome::from(report.outcome.clone())),
                }),
                (None, None) => None,
            },
        };
        let same = self.cold.stored_observed.as_deref().is_some_and(|old| {
            old.state == doc.state
                && old.restarts == doc.restarts
                && old.backoff_attempt == doc.backoff_attempt
                && old.last_error == doc.last_error
                && old.last_action == doc.last_action
                && old.observed_at_ms.is_some() == doc.observed_at_ms.is_some()
        });
        if same {
            return;
        }
        store.send(Change::Observed(self.path.clone(), doc.clone()));
        self.cold.stored_observed = Some(Box::new(doc));
    }

    /// The started record of an action about to be handed over, and the
    /// sink its outcome will go through (to the store, then the node);
    /// `None` without a store.
    pub(super) fn store_action_record(
        &self,
        id: u64,
        name: &str,
        myself: &ActorRef<NodeMsg>,
    ) -> Option<(StoreLink, RecordedSink)> {
        let store = self.shared.store.as_ref()?;
        let record = ActionRecord::started(self.path.clone(), name, id, unix_ms_now());
        Some((
            store.clone(),
            RecordedSink {
                node: myself.clone(),
                store: store.clone(),
                record,
            },
        ))
    }

    /// The node is about to stop: hands over its last observed document
    /// (its action in flight, if any, being cancelled).
    pub(super) fn store_stopping(&mut self, now: Instant) {
        if self.shared.store.is_none() {
            return;
        }
        // Its action in flight is cancelled now (its record gets the
        // outcome from the executor).
        if let Some((_, name)) = self.action.take() {
            self.last_action = Some(Box::new(ActionReport {
                action: name.to_owned(),
                outcome: fsm_core::ActionOutcome::Cancelled,
            }));
        }
        self.store_observed(now);
    }

    /// Hands over the removal of a child (and its subtree) that is no
    /// longer declared.
    pub(super) fn store_removed(&self, child: &NodePath) {
        if let Some(store) = &self.shared.store {
            store.send(Change::Remove(child.clone()));
        }
    }
}
