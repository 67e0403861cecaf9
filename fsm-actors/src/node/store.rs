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
//!   and ended.
//!
//! A parent hands over the removal of a child it no longer declares (which
//! removes the child's subtree). Without a store, a node pays one `bool`
//! test per report for all this.

use fsm_core::store::{
    ActionRecord, Change, DesiredDocument, LastAction, NodeIdentity, ObservedDocument,
    StoredOutcome,
};
use fsm_core::{ActionReport, NodePath};
use tokio::time::Instant;

use super::NodeState;
use crate::executor::Pending;

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

    /// Hands an action to the store actor to run once its started record is
    /// written; gives the action back when the tree has no store.
    pub(super) fn store_action_started(
        &mut self,
        id: u64,
        name: &str,
        action: Pending,
    ) -> Option<Pending> {
        let Some(store) = &self.shared.store else {
            return Some(action);
        };
        let started_at_ms = unix_ms_now();
        self.cold.action_started_ms = started_at_ms;
        store.action_started(
            ActionRecord::started(self.path.clone(), name, id, started_at_ms),
            action,
        );
        self.store_dirty = true;
        None
    }

    /// Hands over how an action ended.
    pub(super) fn store_action_ended(&mut self, id: u64, report: &ActionReport) {
        let Some(store) = &self.shared.store else {
            return;
        };
        store.send(Change::Action(
            ActionRecord::started(
                self.path.clone(),
                report.action.clone(),
                id,
                self.cold.action_started_ms,
            )
            .finished(report.outcome.clone()),
        ));
        self.store_dirty = true;
    }

    /// The node is about to stop: hands over the outcome of its action in
    /// flight, which is being cancelled (the node will not hear it), and
    /// its last observed document.
    pub(super) fn store_stopping(&mut self, now: Instant) {
        if self.shared.store.is_none() {
            return;
        }
        if let Some((id, name)) = self.action.take() {
            let report = ActionReport {
                action: name.to_owned(),
                outcome: fsm_core::ActionOutcome::Cancelled,
            };
            self.store_action_ended(id, &report);
            self.last_action = Some(Box::new(report));
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
