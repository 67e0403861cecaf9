//! Applying the desired children: validate the declaration the node's
//! derivation produced, plan the change against the child table
//! ([`fsm_core::plan_children`], pure), and carry it out — stop removed
//! children (in reverse start order, each subtree in order, off the node's
//! loop), send `UpdateSpec` to changed ones, replace those whose worker type
//! changed, add new ones and start what is due. Then, on every tick, send
//! each child its mapped desired state and inherited context when they
//! changed.
//!
//! The declaration is the derived children followed by those the worker
//! declared from its state (`Transition::with_children`), if it ever did
//! (see [`FromState`]); a node that never did reconciles its derived
//! children exactly as before, without copying them.
//!
//! An invalid declaration changes nothing: the running children keep
//! running, and the problem is shown on the node until the declaration
//! changes. Children that ended for good under their restart policy stay
//! ended while their declaration is unchanged.

use std::sync::Arc;

use fsm_core::from_state::{self, StateChildren};
use fsm_core::{
    ChildSpec, PlanStep, SpecHash, runtime::decode_children_hashed, runtime::plan_children_hashed,
};
use ractor::{ActorProcessingErr, ActorRef};
use tokio::time::Instant;
use tracing::Instrument;

use super::children::ChildEntry;
use super::{NodeMsg, NodeState, Problem};

/// The children a worker declared from its state, and the derived
/// declaration they are combined with. Only a node whose worker ever
/// declared children from state has one: it keeps its derived children
/// here (instead of handing them to the reconcile that follows their
/// derivation), since either source changing means reconciling both.
pub(crate) struct FromState {
    pub(super) state: StateChildren,
    /// The last good derived children, and their hashes.
    pub(super) derived: Vec<ChildSpec>,
    pub(super) derived_hashes: Vec<SpecHash>,
}

impl FromState {
    /// How many children the two sources declare.
    pub(super) fn len(&self) -> usize {
        self.derived.len() + self.state.len()
    }

    /// The hash of the union (see [`from_state::combined_hash`]).
    pub(super) fn combined_hash(&self) -> SpecHash {
        from_state::combined_hash(&self.derived_hashes, Some(&self.state))
    }
}

impl NodeState {
    /// A transition declared the children it wants from its state
    /// (replacing the ones before). Hashed here, once; the next tick
    /// reconciles if the combined declaration changed.
    pub(super) fn declare_from_state(&mut self, specs: Vec<ChildSpec>) {
        let state = StateChildren::new(specs);
        if let Some(from_state) = self.cold.from_state.as_deref_mut() {
            if from_state.state.hash() == state.hash() {
                return;
            }
            from_state.state = state;
        } else {
            let (derived, derived_hashes) = self.derived_declaration();
            self.cold.from_state = Some(Box::new(FromState {
                state,
                derived,
                derived_hashes,
            }));
            self.has_state_children = true;
        }
        if let Some(from_state) = self.cold.from_state.as_deref() {
            self.desired_children = from_state.combined_hash();
            self.declared_count = from_state.len();
        }
    }

    /// The derived children, the first time the worker declares some from
    /// state. Usually at hand (none, or not yet reconciled); otherwise the
    /// reconcile has handed them to the child table, and the spec is
    /// derived again to get them (once in the node's life), or, should
    /// that fail now, taken from the table.
    fn derived_declaration(&mut self) -> (Vec<ChildSpec>, Vec<SpecHash>) {
        if self.declared_count == 0 {
            return (Vec::new(), Vec::new());
        }
        if self.cold.declared.len() == self.declared_count {
            let declared = std::mem::take(&mut self.cold.declared);
            let mut hashes = std::mem::take(&mut self.cold.child_hashes);
            if hashes.len() != declared.len() {
                hashes = declared.iter().map(ChildSpec::hash).collect();
            }
            return (declared, hashes);
        }
        let declared = match self.derive_again() {
            Ok(desired) => desired.children,
            Err(e) => {
                tracing::warn!(node.path = %self.path, error = %e, "could not derive again; combining the children from state with the running ones");
                self.children
                    .entries()
                    .iter()
                    .map(|c| ChildSpec::clone(&c.spec))
                    .collect()
            }
        };
        let hashes = declared.iter().map(ChildSpec::hash).collect();
        (declared, hashes)
    }

    pub(super) async fn reconcile(
        &mut self,
        myself: &ActorRef<NodeMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let declared_hash = self.desired_children;
        if self.applied_children == Some(declared_hash) {
            // Back on the applied declaration (a rejected change was
            // reverted): whatever was rejected in between no longer applies.
            self.set_problem(Problem::Declaration, None);
            self.rejected_children = None;
            return Ok(());
        }
        if self.rejected_children == Some(declared_hash) {
            return Ok(());
        }
        let (declared, hashes) = match self.cold.from_state.as_deref() {
            None => {
                let declared = std::mem::take(&mut self.cold.declared);
                let mut hashes = std::mem::take(&mut self.cold.child_hashes);
                if hashes.len() != declared.len() {
                    // Kept beside the declaration by `derive`; recomputed
                    // rather than trusted should the two ever disagree.
                    hashes = declared.iter().map(ChildSpec::hash).collect();
                }
                (declared, hashes)
            }
            Some(f) => {
                match from_state::combine(&self.path, &f.derived, &f.derived_hashes, &f.state) {
                    Ok(union) => union,
                    Err(e) => {
                        tracing::warn!(node.path = %self.path, error = %e, "invalid children declaration; running children left as they are");
                        self.set_problem(Problem::Declaration, Some(e.to_string()));
                        self.rejected_children = Some(declared_hash);
                        return Ok(());
                    }
                }
            }
        };
        let result = decode_children_hashed(
            &self.path,
            &declared,
            &hashes,
            &self.children.planned(),
            &self.shared.registry,
        );
        let mut decoded = match result {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::warn!(node.path = %self.path, error = %e, "invalid children declaration; running children left as they are");
                self.set_problem(Problem::Declaration, Some(e.to_string()));
                self.rejected_children = Some(declared_hash);
                return Ok(());
            }
        };
        self.set_problem(Problem::Declaration, None);
        self.rejected_children = None;
        self.children.retain_completed(&declared, &hashes);
        // Children that ended for good stay ended while their declaration
        // is unchanged. (Rare: only then is the declaration copied.)
        let filtered: Option<(Vec<ChildSpec>, Vec<SpecHash>)> =
            (self.children.completed_count() > 0).then(|| {
                declared
                    .iter()
                    .zip(&hashes)
                    .filter(|(c, h)| !self.children.is_completed(&c.name, **h))
                    .map(|(c, h)| (c.clone(), *h))
                    .unzip()
            });
        if filtered.is_some() {
            // Indices no longer match; the children decode their own specs.
            decoded.clear();
        }
        let (wanted, wanted_hashes) = filtered.unwrap_or((declared, hashes));
        let plan = plan_children_hashed(&self.children.planned(), &wanted, &wanted_hashes);
        // Each declaration is used by one step at most: moved, not copied.
        let mut wanted: Vec<Option<ChildSpec>> = wanted.into_iter().map(Some).collect();
        let started = std::time::Instant::now();
        let span = if plan.is_empty() || self.is_top() {
            tracing::Span::none()
        } else {
            let counts = plan.counts();
            tracing::debug!(
                node.path = %self.path,
                spawned = counts.spawned, updated = counts.updated,
                replaced = counts.replaced, stopped = counts.stopped,
                "reconciling children"
            );
            tracing::info_span!(
                target: "fsm_actors",
                "fsm.reconcile",
                node.path = %self.path,
                worker.type = %self.cold.spec.worker_type,
                spawned = counts.spawned,
                updated = counts.updated,
                replaced = counts.replaced,
                stopped = counts.stopped,
            )
        };
        let did_work = !plan.is_empty();
        let spawns = plan.counts().spawned;
        if spawns > 0 {
            self.children.reserve(spawns);
        }
        // A table allocated just now learns the generation too.
        self.children.set_floor(self.tree_generation);
        let now = Instant::now();
        for step in plan.steps {
            match step {
                PlanStep::Stop { name } => {
                    if let Some(i) = self.children.index_of(&name) {
                        let entry = self.children.remove_at(i);
                        self.store_removed(&entry.path);
                        if let Some(actor) = entry.actor() {
                            let worker_type = entry.spec.worker_type.clone();
                            self.stop_child(
                                &entry.path,
                                &name,
                                &worker_type,
                                actor.clone(),
                                myself,
                            );
                        }
                    }
                }
                PlanStep::Update { index } => {
                    let Some(spec) = wanted.get_mut(index).and_then(Option::take) else {
                        continue;
                    };
                    let hash = wanted_hashes[index];
                    let decoded = decoded.get_mut(index).and_then(Option::take);
                    if let Some(i) = self.children.index_of(&spec.name) {
                        self.children.update(i, |child| {
                            tracing::debug!(node.path = %child.path, "sending changed spec");
                            child.spec = Arc::new(spec);
                            child.hash = hash;
                            child.generation += 1;
                            if let Some(actor) = child.actor() {
                                let _ = actor.cast(NodeMsg::UpdateSpec {
                                    spec: Arc::clone(&child.spec),
                                    hash,
                                    generation: child.generation,
                                    decoded,
                                });
                            }
                        });
                    }
                }
                PlanStep::Replace { index } => {
                    let Some(spec) = wanted.get_mut(index).and_then(Option::take) else {
                        continue;
                    };
                    let spec = Arc::new(spec);
                    tracing::info!(
                        node.path = %self.path.child(&spec.name),
                        worker_type = %spec.worker_type,
                        "worker type changed; replacing the child"
                    );
                    if let Some(i) = self.children.index_of(&spec.name) {
                        let old_type = self.children.entries()[i].spec.worker_type.clone();
                        let old = self.children.set_waiting(i, now, None);
                        let decoded = decoded.get_mut(index).and_then(Option::take);
                        self.children.update(i, |child| {
                            child.spec = Arc::clone(&spec);
                            child.hash = wanted_hashes[index];
                            child.generation += 1;
                            child.attempt = 0;
                            child.decoded = decoded;
                        });
                        if let Some(actor) = old {
                            let path = self.path.child(&spec.name);
                            self.stop_child(&path, &spec.name, &old_type, actor, myself);
                        }
                    }
                }
                PlanStep::Spawn { index } => {
                    let Some(spec) = wanted.get_mut(index).and_then(Option::take) else {
                        continue;
                    };
                    let spec = Arc::new(spec);
                    let path = self.path.child(&spec.name);
                    let hash = wanted_hashes[index];
                    let restarts = self
                        .shared
                        .restored
                        .as_ref()
                        .and_then(|r| r.restarts(&path));
                    let mut entry = ChildEntry::new(path, spec, hash, now);
                    if let Some((restarts, attempt)) = restarts {
                        // Carried over from the process the tree was
                        // restored from: its count, and its backoff where
                        // it was.
                        entry.restarts = restarts;
                        entry.attempt = attempt;
                    }
                    entry.decoded = decoded.get_mut(index).and_then(Option::take);
                    self.children.push(entry);
                }
            }
        }
        self.applied_children = Some(declared_hash);
        let result = self.start_due_children(myself).instrument(span).await;
        if did_work {
            let attrs = &self.metric_attr();
            self.shared
                .metrics
                .reconcile_duration
                .record(started.elapsed().as_secs_f64(), attrs);
        }
        result
    }

    /// Sends each child its mapped desired state and the variables and
    /// location it inherits, when they changed.
    pub(super) fn map_states(&mut self) {
        if self.children.entries().is_empty() {
            return;
        }
        // Nothing to send unless the desired state, the children or the
        // context changed since the last time.
        let key = (
            self.desired_version,
            self.children.version(),
            self.children_context().hash,
        );
        if self.cold.mapped_for == Some(key) {
            return;
        }
        self.cold.mapped_for = Some(key);
        let desired = self.parent_state.as_deref().unwrap_or(&self.desired_state);
        let context = Arc::clone(self.children_context());
        self.children.for_each_mapped(|child| {
            let mapped = child.spec.mapped_state(desired);
            if mapped != child.sent_parent_state.as_deref() {
                let mapped = mapped.map(str::to_owned);
                if let Some(actor) = child.actor() {
                    let _ = actor.cast(NodeMsg::ParentState(mapped.clone()));
                }
                child.sent_parent_state = mapped;
            }
            if child.sent_context != context.hash {
                if let Some(actor) = child.actor() {
                    let _ = actor.cast(NodeMsg::ParentContext(Arc::clone(&context)));
                }
                child.sent_context = context.hash;
            }
        });
    }
}
