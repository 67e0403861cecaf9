//! [`WorkerRegistry`]: worker-type strings → typed constructors.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::driver::{DecodedSpec, NodeDriver, TypedDriver};
use crate::error::{RegistryError, SpecError, panic_message};
use crate::metrics::WorkerMetrics;
use crate::path::NodePath;
use crate::spec::ChildSpec;
use crate::states::StateNames;
use crate::value::Value;
use crate::worker::{BoxError, Worker, WorkerInit};

/// The erased constructor of one worker type.
trait Factory: Send + Sync {
    /// Decodes `spec` to check it; the error message on failure.
    fn check(&self, spec: &Value) -> Result<(), String>;
    /// Decodes `spec`, keeping the result.
    fn decode(&self, spec: &Value) -> Result<DecodedSpec, String>;
    fn construct(
        &self,
        path: &NodePath,
        metrics: Option<&MakeMetrics<'_>>,
    ) -> Result<Box<dyn NodeDriver>, SpecError>;
    /// The worker's state names ([`State::NAMES`]).
    fn state_names(&self) -> &'static [&'static str];
}

/// Makes a node's [`WorkerMetrics`] when its worker asks for them.
pub type MakeMetrics<'a> = dyn Fn() -> Arc<dyn WorkerMetrics> + Sync + 'a;

struct TypedFactory<W, F> {
    worker_type: Arc<str>,
    construct: F,
    _worker: std::marker::PhantomData<fn() -> W>,
}

impl<W, F> Factory for TypedFactory<W, F>
where
    W: Worker,
    F: Fn(&WorkerInit<'_>) -> Result<W, BoxError> + Send + Sync + 'static,
{
    fn check(&self, spec: &Value) -> Result<(), String> {
        spec.decode::<W::Spec>()
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn decode(&self, spec: &Value) -> Result<DecodedSpec, String> {
        spec.decode::<W::Spec>()
            .map(|spec| DecodedSpec(Box::new(spec)))
            .map_err(|e| e.to_string())
    }

    fn state_names(&self) -> &'static [&'static str] {
        <W::State as StateNames>::NAMES
    }

    fn construct(
        &self,
        path: &NodePath,
        metrics: Option<&MakeMetrics<'_>>,
    ) -> Result<Box<dyn NodeDriver>, SpecError> {
        let init = WorkerInit {
            path,
            worker_type: &self.worker_type,
            metrics,
        };
        let worker = catch_unwind(AssertUnwindSafe(|| (self.construct)(&init)))
            .map_err(|p| SpecError::ConstructorPanicked {
                path: path.clone(),
                worker_type: self.worker_type.to_string(),
                message: panic_message(p.as_ref()),
            })?
            .map_err(|e| SpecError::ConstructorFailed {
                path: path.clone(),
                worker_type: self.worker_type.to_string(),
                message: e.to_string(),
            })?;
        Ok(Box::new(TypedDriver::<W>::new(
            Arc::clone(&self.worker_type),
            worker,
            None,
        )))
    }
}

/// Maps worker-type names to constructors. Built once, before the tree is
/// spawned; the tree shares it read-only.
///
/// # Examples
///
/// ```
/// # use fsm_core::{BoxError, DeriveContext, DesiredState, TickContext, State, Transition, Worker};
/// # fsm_core::states! { #[derive(Clone, Debug)] enum Idle { Idle } }
/// # struct Noop;
/// # impl Worker for Noop {
/// #     type Spec = (); type Observed = (); type State = Idle;
/// #     fn initial_state(&self) -> Idle { Idle::Idle }
/// #     fn derive_desired(&self, _: &(), _: &DeriveContext<'_>) -> Result<DesiredState, BoxError> { Ok(DesiredState::new("idle")) }
/// # }
/// # impl State<Noop> for Idle {
/// #     fn next(&self, _: &TickContext<'_, Noop>) -> Transition<Idle> { Transition::stay() }
/// # }
/// use fsm_core::{RegistryError, WorkerRegistry};
///
/// let mut registry = WorkerRegistry::new();
/// registry.register("noop", |_init| Noop)?;
/// assert!(registry.contains("noop"));
///
/// let again = registry.register("noop", |_init| Noop).unwrap_err();
/// assert_eq!(again, RegistryError::DuplicateWorkerType { worker_type: "noop".into() });
/// # Ok::<(), RegistryError>(())
/// ```
#[derive(Clone, Default)]
pub struct WorkerRegistry {
    factories: BTreeMap<String, Arc<dyn Factory>>,
}

impl WorkerRegistry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers worker type `worker_type`, built by `construct` each time a
    /// node of that type starts (or restarts).
    ///
    /// # Errors
    ///
    /// [`RegistryError::DuplicateWorkerType`] if the name is taken,
    /// [`RegistryError::EmptyWorkerType`] if it is empty.
    pub fn register<W, F>(
        &mut self,
        worker_type: impl Into<String>,
        construct: F,
    ) -> Result<&mut Self, RegistryError>
    where
        W: Worker,
        F: Fn(&WorkerInit<'_>) -> W + Send + Sync + 'static,
    {
        self.try_register(worker_type, move |init| Ok(construct(init)))
    }

    /// Registers worker type `worker_type`, built by a constructor that can
    /// fail (it opens a file, parses a certificate, ...).
    ///
    /// A constructor error fails the node's start like a panic in the
    /// constructor does: [`SpecError::ConstructorFailed`] names the node and
    /// the worker type, and at run time the parent's restart policy applies
    /// (at the root, [`Tree::spawn`] refuses the tree instead).
    ///
    /// [`Tree::spawn`]: https://docs.rs/fsm-actors/latest/fsm_actors/struct.Tree.html#method.spawn
    ///
    /// # Errors
    ///
    /// As [`register`](Self::register).
    pub fn try_register<W, F>(
        &mut self,
        worker_type: impl Into<String>,
        construct: F,
    ) -> Result<&mut Self, RegistryError>
    where
        W: Worker,
        F: Fn(&WorkerInit<'_>) -> Result<W, BoxError> + Send + Sync + 'static,
    {
        let worker_type = worker_type.into();
        if worker_type.is_empty() {
            return Err(RegistryError::EmptyWorkerType);
        }
        if self.factories.contains_key(&worker_type) {
            return Err(RegistryError::DuplicateWorkerType { worker_type });
        }
        let factory = TypedFactory {
            worker_type: Arc::from(worker_type.as_str()),
            construct,
            _worker: std::marker::PhantomData,
        };
        self.factories.insert(worker_type, Arc::new(factory));
        Ok(self)
    }

    /// Whether `worker_type` is registered.
    #[must_use]
    pub fn contains(&self, worker_type: &str) -> bool {
        self.factories.contains_key(worker_type)
    }

    /// The state names of worker type `worker_type`
    /// ([`State::NAMES`](crate::State::NAMES)), if it is registered.
    #[must_use]
    pub fn state_names(&self, worker_type: &str) -> Option<&'static [&'static str]> {
        self.factories.get(worker_type).map(|f| f.state_names())
    }

    /// The registered worker types, sorted.
    pub fn worker_types(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    fn factory(&self, path: &NodePath, worker_type: &str) -> Result<&dyn Factory, SpecError> {
        self.factories
            .get(worker_type)
            .map(|f| &**f)
            .ok_or_else(|| self.unknown(path.clone(), worker_type))
    }

    fn unknown(&self, path: NodePath, worker_type: &str) -> SpecError {
        SpecError::UnknownWorkerType {
            path,
            worker_type: worker_type.to_owned(),
            known: self.factories.keys().cloned().collect(),
        }
    }

    /// Checks that the node at `path` can be created from `spec`: its type is
    /// registered and its user spec decodes into the worker's typed spec. A
    /// user spec that holds templates cannot be decoded before it is rendered
    /// with the node's variables; only its worker type is checked then.
    ///
    /// # Errors
    ///
    /// [`SpecError::UnknownWorkerType`] or [`SpecError::Undecodable`], naming
    /// `path`.
    pub fn validate(&self, path: &NodePath, spec: &ChildSpec) -> Result<(), SpecError> {
        self.validate_at(|| path.clone(), spec)
    }

    /// [`validate`](Self::validate) for the child `spec` of the node at
    /// `parent`: its path is made only for an error.
    ///
    /// # Errors
    ///
    /// As [`validate`](Self::validate).
    pub fn validate_child(&self, parent: &NodePath, spec: &ChildSpec) -> Result<(), SpecError> {
        self.validate_at(|| parent.child(&spec.name), spec)
    }

    /// [`validate_child`](Self::validate_child) that keeps what it decoded:
    /// `None` for a spec with templates, which only the child can decode
    /// (once they render with its variables).
    ///
    /// # Errors
    ///
    /// As [`validate`](Self::validate).
    pub fn decode_child(
        &self,
        parent: &NodePath,
        spec: &ChildSpec,
    ) -> Result<Option<DecodedSpec>, SpecError> {
        self.check_at(
            || parent.child(&spec.name),
            spec,
            |factory, value| factory.decode(value).map(Some),
        )
        .map(Option::flatten)
    }

    fn validate_at(&self, path: impl Fn() -> NodePath, spec: &ChildSpec) -> Result<(), SpecError> {
        self.check_at(path, spec, |factory, value| factory.check(value))
            .map(drop)
    }

    /// Looks the worker type up and, unless the spec has templates, runs
    /// `check` on it; `None` for a spec with templates.
    fn check_at<T>(
        &self,
        path: impl Fn() -> NodePath,
        spec: &ChildSpec,
        check: impl FnOnce(&dyn Factory, &Value) -> Result<T, String>,
    ) -> Result<Option<T>, SpecError> {
        let Some(factory) = self.factories.get(&spec.worker_type) else {
            return Err(self.unknown(path(), &spec.worker_type));
        };
        let names = factory.state_names();
        for (parent_state, state) in &spec.state_mapping {
            if !names.contains(&state.as_str()) {
                return Err(SpecError::unknown_state(
                    path(),
                    &spec.worker_type,
                    format!("state mapping for parent state \"{parent_state}\""),
                    state,
                    names,
                ));
            }
        }
        if spec.user_spec.has_templates() {
            return Ok(None);
        }
        check(&**factory, &spec.user_spec)
            .map(Some)
            .map_err(|message| SpecError::Undecodable {
                path: path(),
                worker_type: spec.worker_type.clone(),
                message,
            })
    }

    /// Constructs the worker of the node at `path`, with no spec installed
    /// yet (install one with [`NodeDriver::set_spec`]).
    ///
    /// # Errors
    ///
    /// [`SpecError::UnknownWorkerType`],
    /// [`SpecError::ConstructorPanicked`], or
    /// [`SpecError::ConstructorFailed`].
    pub fn construct(
        &self,
        path: &NodePath,
        worker_type: &str,
    ) -> Result<Box<dyn NodeDriver>, SpecError> {
        self.factory(path, worker_type)?.construct(path, None)
    }

    /// Like [`construct`](Self::construct), and the worker's
    /// [`WorkerInit::metrics`] come from `metrics` (called only if the
    /// worker asks).
    ///
    /// # Errors
    ///
    /// As [`construct`](Self::construct).
    pub fn construct_with_metrics(
        &self,
        path: &NodePath,
        worker_type: &str,
        metrics: &MakeMetrics<'_>,
    ) -> Result<Box<dyn NodeDriver>, SpecError> {
        self.factory(path, worker_type)?
            .construct(path, Some(metrics))
    }

    /// Creates the driver of the node at `path`: constructs the worker and
    /// installs its (untemplated) spec.
    ///
    /// # Errors
    ///
    /// As [`validate`](Self::validate) and [`construct`](Self::construct).
    pub fn create(
        &self,
        path: &NodePath,
        spec: &ChildSpec,
    ) -> Result<Box<dyn NodeDriver>, SpecError> {
        let mut driver = self.construct(path, &spec.worker_type)?;
        driver
            .set_spec(&spec.user_spec)
            .map_err(|e| SpecError::Undecodable {
                path: path.clone(),
                worker_type: spec.worker_type.clone(),
                message: e.to_string(),
            })?;
        Ok(driver)
    }
}

impl fmt::Debug for WorkerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerRegistry")
            .field("worker_types", &self.factories.keys().collect::<Vec<_>>())
            .finish()
    }
}
