//! What a node tells others about itself: its status reports to its parent
//! (or, at the top, the tree's published [`TreeStatus`]), the generations
//! it and its subtree have acted on, and its snapshot for `Tree::inspect`.
//!
//! * A node reports after every message, but only what changed (state,
//!   desired state, health, convergence, subtree counts, synced
//!   generation), so a report costs comparisons when nothing did.
//! * A node answers a burst of child reports with one report of its own
//!   (`FlushReport`). While a child's subtree has not reported in full
//!   since it started (*settled*), no flush is scheduled, so a starting
//!   subtree's counts travel up once — or every
//!   `TreeConfig::starting_report_interval` at most.
//! * A node's subtree has acted on a tree generation once the node has
//!   applied (or rejected) its spec of that generation, its children are
//!   exactly the declared ones, and every child's subtree has too.
//!
//! [`TreeStatus`]: crate::snapshot::TreeStatus

use std::time::Duration;

use ractor::ActorRef;
use ractor::rpc::CallResult;
use tokio::time::Instant;

use super::children::ChildRun;
use super::{ChildReport, NodeMsg, NodeState, Problems, Reported, ms};
use crate::snapshot::{NodeSnapshot, RestartingInfo, SubtreeCounts};
use fsm_core::NodePath;
use fsm_core::runtime::known_state;

/// How much earlier than its own inspection deadline a node at depth 1
/// asks its children to answer by (see `NodeState::inspect`).
const INSPECT_MARGIN: Duration = Duration::from_millis(2);

impl NodeState {
    /// Whether to hold back the report child reports call for: while a
    /// child's subtree has not reported in full since it started (see
    /// `Table::all_settled`), for at most `starting_report_interval` since
    /// the last report.
    pub(super) fn hold_report(&self, now: Instant) -> bool {
        !self.children.all_settled()
            && now.saturating_duration_since(self.last_report_at)
                < self.config().starting_report_interval
    }

    /// Changes travel up at once (only changes: `report` sends nothing when
    /// nothing changed), so the tree's status lags by messages, not by
    /// ticks.
    pub(super) fn report_change(&mut self, myself: &ActorRef<NodeMsg>, now: Instant) {
        if !self.shutting_down {
            self.report(myself, now);
        }
    }

    /// Takes the tree generation a tick carries (the top node's is its own
    /// spec generation: the tree's).
    pub(super) fn set_tree_generation(&mut self, from_tick: u64) {
        let generation = if self.is_top() {
            self.cold.generation
        } else {
            from_tick
        };
        if generation != self.tree_generation {
            self.tree_generation = generation;
            if !self.children.is_unallocated() {
                self.children.set_floor(generation);
            }
        }
    }

    /// Records that the node acted on its spec generation, once its
    /// declaration is applied (or rejected, with the problem shown).
    pub(super) fn observe_generation(&mut self) {
        if self.generation_pending
            && (self.applied_children == Some(self.desired_children)
                || self.rejected_children == Some(self.desired_children))
        {
            self.generation_pending = false;
            self.cold.observed_generation = self.cold.generation;
        }
    }

    /// The tree generation this node's whole subtree has acted on: its own
    /// once it has acted on everything it was given and every child's
    /// subtree has too; otherwise what it last reported.
    fn synced_generation(&self) -> u64 {
        if !self.generation_pending && self.children_in_sync() && self.children.none_lagging() {
            self.tree_generation
        } else {
            self.reported.as_ref().map_or(0, |r| r.synced)
        }
    }

    pub(super) fn child_report(&mut self, report: ChildReport) {
        self.children.record_report(report);
    }

    pub(super) fn own_error(&self, now: Instant) -> Option<String> {
        if let Some(e) = self.problems.as_deref().and_then(Problems::first) {
            return Some(e.clone());
        }
        if let Some(age) = self.stale_for(now) {
            return Some(match self.cold.collect_error() {
                Some(e) => format!("stale: no good observation for {age:?}; last: {e}"),
                None => format!("stale: no good observation for {age:?}"),
            });
        }
        None
    }

    /// No configuration error (spec, variables, templates, declaration).
    fn configured(&self) -> bool {
        self.problems.is_none()
    }

    fn is_healthy(&self, now: Instant) -> bool {
        self.configured() && !self.is_stale(now)
    }

    /// The child table matches the declaration and every child runs.
    fn children_in_sync(&self) -> bool {
        self.applied_children == Some(self.desired_children)
            && self.children.all_running()
            && self.children.len() + self.children.completed_count() == self.declared_count
            && self.children.stopping_count() == 0
    }

    fn self_converged_given(&self, healthy: bool) -> bool {
        healthy
            && !self.circuit_open()
            && self.driver.has_observation()
            && self.state_is_desired()
            && self.children_in_sync()
    }

    /// Whether the current state is the desired one; remembered for the
    /// state (by its `&'static str`'s address) and the desired version, so
    /// that a report after every message compares no text.
    fn state_is_desired(&self) -> bool {
        let state = self.driver.state_name();
        let key = (state.as_ptr() as usize, self.desired_version);
        let (address, version, matches) = self.state_match.get();
        if (address, version) == key {
            return matches;
        }
        let matches = state == self.desired_state();
        self.state_match.set((key.0, key.1, matches));
        matches
    }

    fn self_converged(&self, now: Instant) -> bool {
        self.self_converged_given(self.is_healthy(now))
    }

    /// Tells the parent what changed, if anything did. Runs after every
    /// message, so it is cheap when nothing changed: every value is computed
    /// once, and the desired state is compared by version, not by text.
    pub(super) fn report(&mut self, myself: &ActorRef<NodeMsg>, now: Instant) {
        let count = self.children.len();
        if self.recorded_children != Some(count) {
            self.series().children(self.recorded_children, count);
            self.recorded_children = Some(count);
        }
        let stale = self.is_stale(now);
        let healthy = self.configured() && !stale;
        let self_converged = self.self_converged_given(healthy);
        let converged = self_converged && self.children.all_converged();
        let mut subtree = SubtreeCounts {
            nodes: 1,
            converged: u64::from(self_converged),
            unhealthy: u64::from(!healthy),
            restarting: 0,
        };
        subtree.add(self.children.subtree_counts());
        let state = self.driver.state_name();
        let settled = self.children.all_settled();
        let synced = self.synced_generation();
        let unchanged = self.reported.as_ref().is_some_and(|r| {
            r.synced == synced
                && std::ptr::eq(r.state, state)
                && r.desired_version == self.desired_version
                && r.healthy == healthy
                && r.stale == stale
                && r.converged == converged
                && r.subtree == subtree
                && r.settled == settled
        });
        if unchanged && !self.is_top() {
            if self.store_dirty {
                self.store_observed(now);
            }
            return;
        }
        let report = Reported {
            synced,
            state,
            desired_version: self.desired_version,
            healthy,
            stale,
            converged,
            subtree,
            settled,
        };
        self.send_report(report, myself, now);
    }

    /// Sends a report that differs from the last one (to the parent, or,
    /// at the top, to the tree's status). (Out of line: a settled tree
    /// reports nothing, and the code every message runs stays short.)
    #[inline(never)]
    fn send_report(&mut self, report: Reported, myself: &ActorRef<NodeMsg>, now: Instant) {
        if !self.is_top() {
            // The state, health or convergence changed: the observed
            // document may have (see `store`).
            self.store_dirty = true;
        }
        let desired_changed = self
            .reported
            .as_ref()
            .is_none_or(|r| r.desired_version != self.desired_version);
        self.last_report_at = now;
        let Reported {
            synced,
            state,
            healthy,
            stale,
            converged,
            subtree,
            settled,
            ..
        } = report;
        self.reported = Some(report);
        match &self.parent {
            Some(parent) => {
                let _ = parent.cast(NodeMsg::ChildReport(Box::new(ChildReport {
                    from: myself.get_id(),
                    state,
                    desired: desired_changed
                        .then(|| known_state(self.driver.state_names(), self.desired_state())),
                    healthy,
                    stale,
                    converged,
                    subtree,
                    settled,
                    synced,
                })));
            }
            None => self.publish_status(synced),
        }
        if self.store_dirty {
            self.store_observed(now);
        }
    }

    /// The top node is not a node of the user's tree: it publishes the
    /// root's subtree.
    fn publish_status(&self, synced: u64) {
        let counts = self.children.subtree_counts();
        let converged = self.children_in_sync()
            && !self.children.entries().is_empty()
            && self.children.all_converged();
        let ticks = self.ticks;
        let generation = self.cold.generation;
        let root = self.children.statuses().first();
        self.shared.status.send_if_modified(|s| {
            let mut changed = s.ticks != ticks
                || s.counts != counts
                || s.converged != converged
                || s.generation != generation
                || s.observed_generation != synced;
            if let Some(root) = root {
                // Compared first: the top publishes often, the root's own
                // status changes rarely (no allocation unless it did).
                if s.root_state != root.state || s.root_desired != root.desired {
                    s.root_state = root.state.to_string();
                    s.root_desired = root.desired.to_string();
                    changed = true;
                }
                if s.root_healthy != root.healthy || s.root_stale != root.stale {
                    s.root_healthy = root.healthy;
                    s.root_stale = root.stale;
                    changed = true;
                }
            }
            s.ticks = ticks;
            s.counts = counts;
            s.converged = converged;
            s.generation = generation;
            s.observed_generation = synced;
            changed
        });
    }

    fn snapshot_self(&self, now: Instant) -> NodeSnapshot {
        let own_error = self.own_error(now);
        NodeSnapshot {
            path: self.path.clone(),
            name: self.cold.spec.name.clone(),
            worker_type: self.cold.spec.worker_type.clone(),
            state: self.driver.state_name().to_owned(),
            desired_state: self.desired_state().to_owned(),
            healthy: self.is_healthy(now),
            last_error: own_error.or_else(|| self.cold.action_error.clone()),
            converged: self.self_converged(now) && self.children.all_converged(),
            stale: self.is_stale(now),
            state_reason: self.cold.transition_reason.to_string(),
            ticks: self.ticks,
            collect_failures: self.cold.collect_trouble.as_ref().map_or(0, |t| t.failures),
            last_collect_error: self.cold.collect_trouble.as_ref().and_then(|trouble| {
                let error = trouble.error.as_ref()?;
                Some(crate::snapshot::CollectError {
                    error: error.clone(),
                    ago_ms: ms(now.saturating_duration_since(trouble.failed_at)),
                })
            }),
            action_in_flight: self.action.map(|(_, name)| name.to_owned()),
            last_action: self.last_action.as_deref().cloned(),
            restarts: self.cold.restarts,
            generation: self.cold.generation,
            observed_generation: self.cold.observed_generation,
            restarting: None,
            circuit_open: self.cold.circuit.is_open(),
            in_state_for_ms: u64::try_from(
                now.saturating_duration_since(self.cold.state_since)
                    .as_millis(),
            )
            .unwrap_or(u64::MAX),
            location_path: self.cold.inputs.location_path.to_string(),
            restored: self.cold.restored.clone().map(|doc| *doc),
            children: Vec::new(),
        }
    }

    pub(super) fn inspect(&self, deadline: Instant, reply: ractor::RpcReplyPort<NodeSnapshot>) {
        let now = Instant::now();
        let mut own = self.snapshot_self(now);
        enum Source {
            Ask(ActorRef<NodeMsg>),
            Ready(Box<NodeSnapshot>),
        }
        let children: Vec<(NodePath, String, u64, Source)> = self
            .children
            .entries()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let source = match &c.run {
                    ChildRun::Running { actor, .. } => Source::Ask(actor.clone()),
                    ChildRun::Waiting { due, failure } => {
                        let state = if failure.is_some() {
                            "restarting"
                        } else {
                            "starting"
                        };
                        let mut s = NodeSnapshot::placeholder(
                            c.path.clone(),
                            &c.spec.worker_type,
                            state,
                            failure.clone(),
                        );
                        s.desired_state = self.children.desired_of(i).to_owned();
                        s.restarts = c.restarts;
                        s.generation = c.generation;
                        s.restarting = failure.as_ref().map(|f| RestartingInfo {
                            attempt: c.attempt.saturating_sub(1),
                            next_try_in_ms: u64::try_from(
                                due.saturating_duration_since(now).as_millis(),
                            )
                            .unwrap_or(u64::MAX),
                            last_failure: f.clone(),
                        });
                        Source::Ready(Box::new(s))
                    }
                };
                (
                    c.path.clone(),
                    c.spec.worker_type.clone(),
                    c.restarts,
                    source,
                )
            })
            .collect();
        // Children answer a little before the deadline so that this node
        // can still answer by it. The margin shrinks with the square of the
        // depth, so that all of them together (a sum of 1/d^2) stay under
        // three times the first, however deep the tree: a fixed margin per
        // level used up the whole budget some hundreds of levels down.
        let depth = u32::try_from(self.path.depth().max(1)).unwrap_or(u32::MAX);
        let margin = deadline
            .saturating_duration_since(now)
            .min(INSPECT_MARGIN * 4)
            / 4
            / depth.saturating_mul(depth);
        let child_deadline = deadline.checked_sub(margin).unwrap_or(deadline);
        tokio::spawn(async move {
            let calls =
                children
                    .into_iter()
                    .map(|(path, worker_type, restarts, source)| async move {
                        let actor = match source {
                            Source::Ready(snapshot) => return *snapshot,
                            Source::Ask(actor) => actor,
                        };
                        let wait = child_deadline.saturating_duration_since(Instant::now());
                        let missing = |why: &str| {
                            let mut s = NodeSnapshot::placeholder(
                                path.clone(),
                                &worker_type,
                                "unavailable",
                                Some(why.to_owned()),
                            );
                            s.restarts = restarts;
                            s
                        };
                        match actor
                            .call(
                                |reply| NodeMsg::Inspect {
                                    deadline: child_deadline,
                                    reply,
                                },
                                Some(wait),
                            )
                            .await
                        {
                            Ok(CallResult::Success(snapshot)) => snapshot,
                            Ok(CallResult::Timeout) => {
                                missing("did not answer the inspection in time")
                            }
                            _ => missing("not running"),
                        }
                    });
            own.children = futures::future::join_all(calls).await;
            let _ = reply.send(own);
        });
    }
}
