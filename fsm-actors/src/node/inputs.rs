//! What a node derives its desired state from, and how: its spec, the
//! variables and location it inherits from its parent, and the tree's
//! globals.
//!
//! When any of them changes (by hash, never by deep comparison), the node:
//!
//! 1. checks its own variable names and merges its location into the
//!    inherited one;
//! 2. builds its variables: the inherited `user` variables overlaid with its
//!    spec's, the tree's `global` ones, and its `internal` metadata;
//! 3. decodes its spec into the worker's typed spec, rendering the templates
//!    the typed spec reads (data kept as a `Value`, such as the specs of
//!    children, is rendered by the node it is meant for);
//! 4. derives its desired state with those variables and location.
//!
//! The tree's globals can change at runtime (`TreeHandle::update_globals`):
//! they travel down the tree as a message, and a node applies them again
//! only if it depends on them — its spec has templates, or its last
//! derivation read its variables. Even then it derives again only if
//! what its templates rendered changed (by hash), or its derivation reads
//! variables.
//!
//! A problem in steps 1–3 is a configuration error: the node keeps its last
//! good spec and desired state, is unhealthy with the error, and tries again
//! when an input changes. Its children inherit the new variables and
//! location by a `ParentContext` message, and derive again only if that
//! changes their own inputs.

use std::sync::Arc;

use fsm_core::{
    ChildSpec, DeriveContext, Map, NodePath, SpecError, SpecHash, Value, runtime::StableHasher,
};
use fsm_templates::{InternalVars, Location, SpecRenderer, VariableBundle};
use ractor::{ActorId, ActorProcessingErr};

use super::{NodeState, Problem};

/// What a node passes down to its children: its `user` variables and its
/// location.
#[derive(Debug)]
pub(crate) struct ParentContext {
    pub(crate) user: Map,
    pub(crate) location: Location,
    /// `location` as a dotted path.
    pub(crate) location_path: Arc<str>,
    pub(crate) hash: SpecHash,
}

impl Default for ParentContext {
    /// Nothing inherited (what the root's parent passes).
    fn default() -> Self {
        Self::new(Map::new(), Location::default())
    }
}

impl ParentContext {
    pub(crate) fn new(user: Map, location: Location) -> Self {
        let location_path: Arc<str> = Arc::from(location.path());
        let mut h = StableHasher::new();
        Value::stable_hash_map(&user, &mut h);
        h.write_str(&location_path);
        Self {
            user,
            location,
            location_path,
            hash: SpecHash::from_u128(h.finish()),
        }
    }
}

/// The tree's global variables, as a node last received them.
#[derive(Debug)]
pub(crate) struct Globals {
    pub(crate) map: Map,
    pub(crate) hash: SpecHash,
    /// The tree generation that set them (0: at spawn); a node never takes
    /// older ones than it has.
    pub(crate) generation: u64,
}

impl Globals {
    pub(crate) fn new(map: Map, generation: u64) -> Self {
        let mut h = StableHasher::new();
        Value::stable_hash_map(&map, &mut h);
        Self {
            map,
            hash: SpecHash::from_u128(h.finish()),
            generation,
        }
    }
}

/// A renderer that hashes what it renders (field and result), so that a
/// node can tell whether new variables change anything it reads.
struct HashingRenderer<'a> {
    inner: &'a dyn fsm_core::TemplateRenderer,
    hash: std::cell::RefCell<StableHasher>,
}

impl fsm_core::TemplateRenderer for HashingRenderer<'_> {
    fn render(&self, template: &str, field: &str) -> Result<Value, String> {
        let rendered = self.inner.render(template, field)?;
        let mut h = self.hash.borrow_mut();
        h.write_str(field);
        rendered.stable_hash(&mut h);
        Ok(rendered)
    }
}

/// A node's derivation inputs and what it made of them.
pub(crate) struct Inputs {
    /// Inherited from the parent.
    pub(crate) context: Arc<ParentContext>,
    /// Passed on to the children.
    pub(crate) own: Arc<ParentContext>,
    pub(crate) location_path: Arc<str>,
    /// What the `internal` variables are made of (made only when a
    /// template or a derivation reads them).
    pub(crate) incarnation: Incarnation,
    /// The effective inputs (spec, own variables, location) last applied
    /// successfully.
    pub(crate) applied: Option<SpecHash>,
    /// The effective inputs last tried (successfully or not).
    pub(crate) attempted: Option<SpecHash>,
    /// The last derivation read the node's variables.
    pub(crate) reads_variables: bool,
    /// What the last derivation was made from: the spec, the node's own
    /// context, and the hash of what its templates rendered (`None`: no
    /// templates).
    pub(crate) derived_from: Option<(SpecHash, SpecHash, Option<SpecHash>)>,
}

impl Inputs {
    pub(crate) fn new(context: Arc<ParentContext>, incarnation: Incarnation) -> Self {
        Self {
            // Until the node adds its own, its children inherit what it does.
            own: Arc::clone(&context),
            location_path: Arc::clone(&context.location_path),
            context,
            incarnation,
            applied: None,
            attempted: None,
            reads_variables: false,
            derived_from: None,
        }
    }
}

impl NodeState {
    /// Applies the inputs if they changed. Only what the node itself sees
    /// counts: a parent's variable that this node overrides, or a change
    /// that leaves its location the same, does not make it derive again.
    pub(super) fn apply_inputs(&mut self) -> Result<(), ActorProcessingErr> {
        let seen = (self.cold.spec_hash, self.cold.context_hash);
        if self.cold.inputs_seen == Some(seen) {
            return Ok(());
        }
        self.cold.inputs_seen = Some(seen);
        let (own, hash) = match self.effective_inputs() {
            Ok(effective) => effective,
            Err(why) => {
                self.cold.inputs.attempted = None;
                return self.configuration_error(why);
            }
        };
        if self.cold.inputs.applied == Some(hash) {
            // Back on the applied inputs: a failed change in between no
            // longer applies.
            self.set_problem(Problem::Input, None);
            self.cold.inputs.attempted = Some(hash);
            return Ok(());
        }
        if self.cold.inputs.attempted == Some(hash) {
            return Ok(());
        }
        self.cold.inputs.attempted = Some(hash);
        let own_hash = own.hash;
        match self.install_spec(own) {
            Err(why) => self.configuration_error(why),
            Ok(rendered) => {
                self.cold.inputs.applied = Some(hash);
                self.set_problem(Problem::Input, None);
                self.installed = true;
                let from = Some((self.cold.spec_hash, own_hash, rendered));
                if self.cold.inputs.derived_from == from && !self.cold.inputs.reads_variables {
                    // Only the globals changed, and nothing this node
                    // rendered or derived from: the derivation stands.
                    return Ok(());
                }
                self.cold.inputs.derived_from = from;
                self.derive()
            }
        }
    }

    /// Whether the tree's globals can change what this node derives: its
    /// spec has templates, or its last derivation read its variables.
    fn depends_on_globals(&self) -> bool {
        self.cold.inputs.reads_variables || self.cold.spec.user_spec.has_templates()
    }

    /// New globals from the parent (or, at the top, the tree's handle):
    /// kept for the node and its future children, passed on to the running
    /// children, and applied if the node depends on them.
    pub(super) fn update_globals(
        &mut self,
        globals: Arc<Globals>,
    ) -> Result<(), ActorProcessingErr> {
        let current = &self.cold.globals;
        if globals.generation < current.generation || globals.hash == current.hash {
            return Ok(());
        }
        self.cold.globals = Arc::clone(&globals);
        for child in self.children.entries() {
            if let Some(actor) = child.actor() {
                let _ = actor.cast(super::NodeMsg::Globals(Arc::clone(&globals)));
            }
        }
        if self.depends_on_globals() {
            self.cold.inputs_seen = None;
            self.apply_inputs()?;
        }
        Ok(())
    }

    fn configuration_error(&mut self, why: String) -> Result<(), ActorProcessingErr> {
        tracing::warn!(node.path = %self.path, error = %why, "configuration error; keeping the last good spec and desired state");
        self.set_problem(Problem::Input, Some(why));
        Ok(())
    }

    /// Steps 1 and 2: the node's own variables and location (the inherited
    /// ones, shared, when its spec adds none), and the hash of them together
    /// with the spec's.
    fn effective_inputs(&self) -> Result<(Arc<ParentContext>, SpecHash), String> {
        let path = &self.path;
        let spec = &self.cold.spec;
        let inherited = &self.cold.inputs.context;
        let own = if spec.variables.is_empty() && spec.location.is_empty() {
            Arc::clone(inherited)
        } else {
            VariableBundle::validate(&spec.variables, path).map_err(|e| e.to_string())?;
            let location = inherited
                .location
                .extend(&spec.location, path)
                .map_err(|e| e.to_string())?;
            let mut user = inherited.user.clone();
            user.overlay(&spec.variables);
            Arc::new(ParentContext::new(user, location))
        };
        let mut h = StableHasher::new();
        h.write_u128(self.cold.spec_hash.as_u128());
        h.write_u128(own.hash.as_u128());
        if self.depends_on_globals() {
            h.write_u128(self.cold.globals.hash.as_u128());
        }
        Ok((own, SpecHash::from_u128(h.finish())))
    }

    /// Step 3: the decoded spec, its templates rendered. The variables are
    /// built only if the spec has templates (and, for the derivation, only
    /// if the worker reads them). Returns the hash of what the templates
    /// rendered, if there were any.
    fn install_spec(&mut self, own: Arc<ParentContext>) -> Result<Option<SpecHash>, String> {
        // The location is known even if the spec does not render.
        self.cold.inputs.location_path = Arc::clone(&own.location_path);
        let spec_hash = self.cold.spec_hash;
        // Decoded by the parent from this very spec (and only then): nothing
        // to decode.
        let from_parent = self
            .cold
            .decoded
            .take()
            .filter(|(hash, _)| *hash == spec_hash)
            .is_some_and(|(_, decoded)| self.driver.set_decoded_spec(decoded).is_ok());
        let spec = &self.cold.spec.user_spec;
        let mut rendered = None;
        let installed = if from_parent {
            Ok(())
        } else if spec.has_templates() {
            let internal = self
                .cold
                .inputs
                .internal_vars(&self.path, &self.cold.worker_type);
            let variables =
                VariableBundle::flatten_parts(&own.user, &self.cold.globals.map, &internal);
            let renderer = SpecRenderer::new(&self.shared.templates, &variables, &self.path);
            let hashing = HashingRenderer {
                inner: &renderer,
                hash: std::cell::RefCell::new(StableHasher::new()),
            };
            let started = std::time::Instant::now();
            let installed = self.driver.set_spec_rendered(spec, &hashing);
            rendered = Some(SpecHash::from_u128(hashing.hash.into_inner().finish()));
            let attrs = &self.metric_attr();
            self.shared
                .metrics
                .template_duration
                .record(started.elapsed().as_secs_f64(), attrs);
            installed.map_err(|e| (e, renderer.take_error()))
        } else {
            self.driver.set_spec(spec).map_err(|e| (e, None))
        };
        if let Err((e, render)) = installed {
            return Err(match render {
                Some(render) => render.to_string(),
                None => format!(
                    "node `{}`: the spec does not decode into worker type `{}`: {e}; fix the spec",
                    self.path, self.cold.spec.worker_type
                ),
            });
        }
        if own.hash != self.cold.inputs.own.hash {
            self.cold.inputs.own = own;
        }
        Ok(rendered)
    }

    /// Step 4. An `InvalidSpec` error keeps the last good desired state; any
    /// other error, or a panic, is a failure.
    fn derive(&mut self) -> Result<(), ActorProcessingErr> {
        let read = std::sync::atomic::AtomicBool::new(false);
        let result = self.derive_reading(&read);
        self.cold.inputs.reads_variables = read.into_inner();
        match result {
            Ok(desired) => {
                self.derived(desired);
                Ok(())
            }
            Err(e) if e.is_invalid_spec() => {
                tracing::warn!(node.path = %self.path, error = %e, "invalid spec; keeping the last good desired state");
                self.set_problem(Problem::Derive, Some(e.to_string()));
                Ok(())
            }
            Err(e) => Err(Box::new(e)),
        }
    }

    /// Runs `derive_desired` on the installed spec, with the node's
    /// variables and location, and changes nothing.
    pub(super) fn derive_again(&self) -> Result<fsm_core::DesiredState, fsm_core::CallbackError> {
        self.derive_reading(&std::sync::atomic::AtomicBool::new(false))
    }

    /// As `derive_again`, setting `read` if the derivation reads the
    /// node's variables.
    fn derive_reading(
        &self,
        read: &std::sync::atomic::AtomicBool,
    ) -> Result<fsm_core::DesiredState, fsm_core::CallbackError> {
        let inputs = &self.cold.inputs;
        let globals = &self.cold.globals.map;
        let (path, worker_type) = (&self.path, &*self.cold.worker_type);
        let variables = || {
            read.store(true, std::sync::atomic::Ordering::Relaxed);
            let internal = inputs.internal_vars(path, worker_type);
            VariableBundle::flatten_parts(&inputs.own.user, globals, &internal)
        };
        let ctx = DeriveContext::new(&self.path)
            .with_variables_from(&variables)
            .with_location(&inputs.location_path);
        self.driver.derive_with(&ctx)
    }

    /// Installs a good derivation.
    fn derived(&mut self, mut desired: fsm_core::DesiredState) {
        let mut hashes = desired.child_hashes();
        let declared = match self.cold.from_state.as_deref_mut() {
            None => {
                self.declared_count = desired.children.len();
                SpecHash::of_list(&hashes)
            }
            Some(from_state) => {
                // Kept whole, to be combined with the children from
                // state whenever either changes.
                from_state.derived = std::mem::take(&mut desired.children);
                from_state.derived_hashes = std::mem::take(&mut hashes);
                self.declared_count = from_state.len();
                from_state.combined_hash()
            }
        };
        self.desired_children = declared;
        if self.applied_children == Some(declared) || self.rejected_children == Some(declared) {
            // Nothing to reconcile: the table has these specs already
            // (or they were rejected as they are).
            desired.children = Vec::new();
            hashes = Vec::new();
        }
        self.cold.child_hashes = hashes;
        self.cold.declared = desired.children;
        self.cold.supervision = desired.supervision.map(Box::new);
        self.desired_state = desired.state;
        self.desired_version += 1;
        self.set_problem(Problem::Derive, None);
        self.check_desired_state();
    }

    /// A desired state that is none of the worker's states is a
    /// configuration problem (the node could never converge), naming the
    /// state and the worker's states. Checked whenever the effective desired
    /// state changes.
    pub(super) fn check_desired_state(&mut self) {
        let desired = self.desired_state();
        let names = self.driver.state_names();
        let problem = (!desired.is_empty() && !names.contains(&desired)).then(|| {
            SpecError::unknown_state(
                self.path.clone(),
                &self.cold.worker_type,
                "desired state",
                desired,
                names,
            )
            .to_string()
        });
        if let Some(why) = &problem {
            tracing::warn!(node.path = %self.path, error = %why, "unknown desired state");
        }
        self.set_problem(Problem::State, problem);
    }

    /// A new spec from the parent (same worker type).
    pub(super) fn update_spec(
        &mut self,
        spec: Arc<ChildSpec>,
        hash: SpecHash,
    ) -> Result<(), ActorProcessingErr> {
        if hash != self.cold.spec_hash {
            tracing::info!(node.path = %self.path, "spec updated");
            self.cold.spec = spec;
            self.cold.spec_hash = hash;
            // What the actions act on changed (a fixed address, new
            // credentials): the failures of the old spec hold nothing back.
            self.cold.action_retry = None;
        }
        self.apply_inputs()
    }

    /// New inherited variables or location from the parent.
    pub(super) fn update_context(
        &mut self,
        context: Arc<ParentContext>,
    ) -> Result<(), ActorProcessingErr> {
        if context.hash != self.cold.context_hash {
            self.cold.context_hash = context.hash;
            self.cold.inputs.context = context;
        }
        self.apply_inputs()
    }

    /// The variables this node's children inherit, and their hash.
    pub(super) fn children_context(&self) -> &Arc<ParentContext> {
        &self.cold.inputs.own
    }
}

/// Which incarnation of a node this is: its actor and when it started.
pub(crate) struct Incarnation {
    pub(crate) id: ActorId,
    pub(crate) created_at_ms: u64,
}

impl Incarnation {
    /// The incarnation of actor `id`, starting now.
    pub(crate) fn now(id: ActorId) -> Self {
        let created_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self { id, created_at_ms }
    }
}

impl Inputs {
    /// The `internal` variables of the incarnation at `path`.
    fn internal_vars(&self, path: &NodePath, worker_type: &str) -> InternalVars {
        InternalVars::new(
            self.incarnation.id.to_string(),
            path.clone(),
            worker_type,
            self.incarnation.created_at_ms,
        )
        .with_location_path(&*self.location_path)
    }
}
