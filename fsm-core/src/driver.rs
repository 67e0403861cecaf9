//! The type-erased form of a worker that the runtime drives: one
//! [`NodeDriver`] per node, created by the
//! [`WorkerRegistry`](crate::WorkerRegistry).
//!
//! Everything here is synchronous and pure except the futures it hands out
//! (`collect`, the stop hook), which the runtime runs where it likes. Panics
//! in `derive_desired` and `next` are caught here and returned as
//! [`CallbackError::Panicked`].

use std::any::Any;
use std::borrow::Cow;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use sync_wrapper::SyncWrapper;

use crate::error::{Callback, CallbackError, InvalidSpec, panic_message};
use crate::path::NodePath;
use crate::spec::DesiredState;
use crate::states::StateNames;
use crate::supervision::Supervision;
use crate::value::{TemplateRenderer, Value, ValueError};
use crate::worker::{
    ActionReport, BoxError, BoxFuture, BoxedAction, ChildStatus, CollectContext, DeriveContext,
    Signal, State, StopContext, TickContext, Worker,
};

/// A type-erased observation, as it travels from the collector back to the
/// node.
pub type Observation = Box<dyn Any + Send + Sync>;

/// A user spec decoded into its worker's typed spec ahead of the node that
/// will run it: a parent decodes its children's specs to validate a
/// declaration before anything changes, and hands each new child its
/// decoded spec ([`NodeDriver::set_decoded_spec`]) instead of having it
/// decode the same data again. Made by
/// [`decode_children_hashed`](crate::runtime::decode_children_hashed).
pub struct DecodedSpec(pub(crate) Box<dyn Any + Send + Sync>);

impl std::fmt::Debug for DecodedSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecodedSpec(..)")
    }
}

/// How [`NodeDriver::start_collect`] went.
pub enum CollectStart {
    /// The collect finished at once: the observation is installed, or this
    /// is why there is none (an error, a panic, no spec).
    Done(Result<(), String>),
    /// The collect is waiting on something: run this future to its end.
    Pending(BoxFuture<'static, Result<Observation, BoxError>>),
}

impl std::fmt::Debug for CollectStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Done(r) => f.debug_tuple("Done").field(r).finish(),
            Self::Pending(_) => f.write_str("Pending(..)"),
        }
    }
}

/// What the runtime knows when it runs a state machine step.
#[derive(Debug)]
#[non_exhaustive]
pub struct StepInput<'a> {
    /// The node's path.
    pub path: &'a NodePath,
    /// The effective desired state.
    pub desired: &'a str,
    /// The children's statuses.
    pub children: &'a [ChildStatus],
    /// Whether an action is queued or running.
    pub action_in_flight: bool,
    /// The last finished action.
    pub last_action: Option<&'a ActionReport>,
    /// The children the worker declared from its state (see
    /// [`Transition::with_children`](crate::Transition::with_children)).
    pub from_state: &'a [crate::spec::ChildSpec],
}

impl<'a> StepInput<'a> {
    /// A step input with no children and no action history.
    #[must_use]
    pub fn new(path: &'a NodePath, desired: &'a str) -> Self {
        Self {
            path,
            desired,
            children: &[],
            action_in_flight: false,
            last_action: None,
            from_state: &[],
        }
    }

    /// Sets the children declared from state.
    #[must_use]
    pub fn with_children_from_state(mut self, declared: &'a [crate::spec::ChildSpec]) -> Self {
        self.from_state = declared;
        self
    }

    /// Sets the children.
    #[must_use]
    pub fn with_children(mut self, children: &'a [ChildStatus]) -> Self {
        self.children = children;
        self
    }

    /// Sets whether an action is queued or running.
    #[must_use]
    pub fn with_action_in_flight(mut self, in_flight: bool) -> Self {
        self.action_in_flight = in_flight;
        self
    }

    /// Sets the last finished action.
    #[must_use]
    pub fn with_last_action(mut self, last: Option<&'a ActionReport>) -> Self {
        self.last_action = last;
        self
    }
}

/// What one state machine step decided.
#[derive(Debug)]
#[non_exhaustive]
pub struct StepOutcome {
    /// The state before the step.
    pub from: &'static str,
    /// The state after the step, when it changed.
    pub to: Option<&'static str>,
    /// The action to enqueue, if any.
    pub action: Option<BoxedAction>,
    /// The signal raised, if any.
    pub signal: Option<Signal>,
    /// Why.
    pub reason: Cow<'static, str>,
    /// `Some`: the transition replaced the children declared from state
    /// (see [`Transition::with_children`](crate::Transition::with_children)).
    pub children: Option<Vec<crate::spec::ChildSpec>>,
}

/// A worker with its spec, state and latest observation, behind a trait
/// object so the runtime can drive any worker type.
pub trait NodeDriver: Send + Sync {
    /// The registered worker type (shared by every node of the type, so
    /// that a node keeps it without allocating).
    fn worker_type(&self) -> &Arc<str>;

    /// The current state's name.
    fn state_name(&self) -> &'static str;

    /// Every state's name ([`StateNames::NAMES`](crate::StateNames::NAMES)).
    fn state_names(&self) -> &'static [&'static str];

    /// Decodes and installs a new spec. On error the old spec stays.
    ///
    /// # Errors
    ///
    /// The serde message when `spec` does not decode.
    fn set_spec(&mut self, spec: &Value) -> Result<(), ValueError>;

    /// Installs a spec decoded ahead from the same data (see
    /// [`DecodedSpec`]).
    ///
    /// # Errors
    ///
    /// Gives the spec back if it is not this worker's spec type.
    fn set_decoded_spec(&mut self, spec: DecodedSpec) -> Result<(), DecodedSpec>;

    /// Decodes a new spec while rendering the templates it reads with
    /// `renderer` (see [`Value::decode_with`]), and installs it. On error the
    /// old spec stays.
    ///
    /// # Errors
    ///
    /// The renderer's or serde's message.
    fn set_spec_rendered(
        &mut self,
        spec: &Value,
        renderer: &dyn TemplateRenderer,
    ) -> Result<(), ValueError>;

    /// The collect future, owning everything it needs. (`&mut`: the worker
    /// and spec are kept in place until something must own a share of
    /// them.) Its context has no desired state.
    fn collect(&mut self, path: &NodePath) -> BoxFuture<'static, Result<Observation, BoxError>>;

    /// Starts a collect by polling it once, here and now. A collect that is
    /// ready at once (most are: they read state that is kept current
    /// elsewhere) is installed without a task or a message; one that is not
    /// comes back as a future to run elsewhere (with a timeout), whose
    /// observation is installed with [`set_observation`](Self::set_observation).
    /// Either way the collect is started once: a waiting one goes on as
    /// the very future that was polled here. `desired` is the node's
    /// desired state, for the collect's context.
    /// `desired_version` changes whenever `desired` may have (the node
    /// numbers its changes), so that an unchanged one costs no comparison.
    fn start_collect(
        &mut self,
        path: &NodePath,
        desired: &str,
        desired_version: u64,
    ) -> CollectStart;

    /// Installs an observation produced by this driver's `collect`. Returns
    /// `false` (and ignores it) if it is of another type.
    fn set_observation(&mut self, observation: Observation) -> bool;

    /// Whether an observation has been installed.
    fn has_observation(&self) -> bool;

    /// The latest installed observation, borrowed, for a typed read on
    /// request (the runtime clones it only then). `None` before the first,
    /// and from drivers that do not offer it.
    fn latest_observation(&self) -> Option<&(dyn Any + Send + Sync)> {
        None
    }

    /// The type of the worker's observations
    /// ([`Worker::Observed`](crate::Worker::Observed)) and its name
    /// ([`std::any::type_name`]), to check a typed read against; `None` from
    /// drivers that do not say.
    fn observed_type(&self) -> Option<(std::any::TypeId, &'static str)> {
        None
    }

    /// Runs `derive_desired` on the current spec, without variables.
    ///
    /// # Errors
    ///
    /// When the callback returns an error or panics.
    fn derive(&self, path: &NodePath) -> Result<DesiredState, CallbackError> {
        self.derive_with(&DeriveContext::new(path))
    }

    /// Runs `derive_desired` on the current spec with this context.
    ///
    /// # Errors
    ///
    /// When the callback returns an error or panics, or no spec is installed
    /// yet ([`Callback::DeriveDesired`] failing with "no spec").
    fn derive_with(&self, ctx: &DeriveContext<'_>) -> Result<DesiredState, CallbackError>;

    /// Whether a spec has been installed (a node whose templates did not
    /// render yet has none).
    fn has_spec(&self) -> bool;

    /// Runs one state machine step on the latest observation. Returns
    /// `Ok(None)` when there is no observation yet.
    ///
    /// # Errors
    ///
    /// When `next` panics.
    fn step(&mut self, input: &StepInput<'_>) -> Result<Option<StepOutcome>, CallbackError>;

    /// The stop-hook future; `desired` is the node's desired state, for the
    /// hook's context.
    fn stop_hook(&mut self, path: &NodePath, desired: &str) -> BoxFuture<'static, ()>;
}

/// What an owned collect needs besides the current state: one share for
/// all of it, made again only when the spec or the desired state changes,
/// so that starting a collect (once per tick) costs one reference count.
struct CollectShares<W: Worker> {
    worker: Arc<W>,
    spec: Arc<W::Spec>,
    path: NodePath,
    /// One of the worker's state names (static: nothing to allocate), or
    /// a name it does not know (the node then shows a problem, but its
    /// collects go on).
    desired: Cow<'static, str>,
    desired_version: u64,
}

/// A collect that owns what it needs, to run anywhere.
// Not an `async fn`: its future must be declared `Send`, to run on the
// collector task.
#[allow(clippy::manual_async_fn)]
fn owned_collect<W: Worker>(
    shares: Arc<CollectShares<W>>,
    state: &'static str,
) -> impl Future<Output = Result<W::Observed, BoxError>> + Send + 'static {
    async move {
        let ctx =
            CollectContext::new(&shares.path, &*shares.spec).with_states(state, &shares.desired);
        shares.worker.collect(&ctx).await
    }
}

/// A place on the heap where a node's collects run one after another. A
/// collect that is ready at once runs there and leaves the place to the
/// next one, so a collect costs no allocation; one that waits is handed,
/// place and all, to the task that runs it to its end (it must not move
/// once polled), and the next collect gets a new place.
trait CollectSlot<W: Worker>: Send {
    /// Puts the collect in `next` (an `Option` of the concrete future
    /// type) in the place, dropping the one there.
    fn put(self: Pin<&mut Self>, next: &mut dyn Any);

    /// Polls the collect in the place.
    fn poll_collect(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<W::Observed, BoxError>>;

    /// Drops the collect in the place (a finished one holds its shares).
    fn clear(self: Pin<&mut Self>);
}

impl<W: Worker, F> CollectSlot<W> for Option<F>
where
    F: Future<Output = Result<W::Observed, BoxError>> + Send + 'static,
{
    fn put(mut self: Pin<&mut Self>, next: &mut dyn Any) {
        if let Some(next) = next.downcast_mut::<Option<F>>() {
            self.set(next.take());
        }
    }

    fn poll_collect(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<W::Observed, BoxError>> {
        match self.as_pin_mut() {
            Some(collect) => collect.poll(cx),
            None => Poll::Ready(Err("no collect in its place".into())),
        }
    }

    fn clear(mut self: Pin<&mut Self>) {
        self.set(None);
    }
}

fn collect_panicked(payload: &(dyn std::any::Any + Send)) -> CollectStart {
    CollectStart::Done(Err(format!("collect panicked: {}", panic_message(payload))))
}

/// An owned collect to be run elsewhere, handing back an erased observation.
fn pending_collect<O: Send + Sync + 'static>(
    future: BoxFuture<'static, Result<O, BoxError>>,
) -> CollectStart {
    CollectStart::Pending(Box::pin(async move {
        let observed = future.await?;
        Ok(Box::new(observed) as Observation)
    }))
}

/// A value kept in place until a future that outlives the borrow (an owned
/// collect, a stop hook) needs a share of it; then moved into an `Arc`, once,
/// and shared from there on (the first collect does: a worker that is only
/// derived, such as a parent's validation copy, never pays for the `Arc`).
struct Shareable<T> {
    owned: Option<T>,
    shared: Option<Arc<T>>,
}

impl<T> Shareable<T> {
    const fn empty() -> Self {
        Self {
            owned: None,
            shared: None,
        }
    }

    fn new(value: T) -> Self {
        Self {
            owned: Some(value),
            shared: None,
        }
    }

    fn get(&self) -> Option<&T> {
        self.owned.as_ref().or(self.shared.as_deref())
    }

    fn is_set(&self) -> bool {
        self.owned.is_some() || self.shared.is_some()
    }

    /// A share of the value (moving it into an `Arc` the first time).
    fn share(&mut self) -> Option<Arc<T>> {
        if let Some(value) = self.owned.take() {
            self.shared = Some(Arc::new(value));
        }
        self.shared.clone()
    }
}

/// The [`NodeDriver`] of a worker of type `W`.
pub(crate) struct TypedDriver<W: Worker> {
    worker_type: Arc<str>,
    /// Always set (`Shareable` is only ever empty for the spec).
    worker: Shareable<W>,
    /// Unset until a spec decodes (templates that did not render yet).
    spec: Shareable<W::Spec>,
    state: W::State,
    observed: Option<W::Observed>,
    /// What the last collect was given, for the next ones while the spec
    /// and the desired state stay the same.
    shares: Option<Arc<CollectShares<W>>>,
    /// Where the next collect runs (see [`CollectSlot`]).
    slot: SyncWrapper<Option<Pin<Box<dyn CollectSlot<W>>>>>,
}

impl<W: Worker> TypedDriver<W> {
    pub(crate) fn new(worker_type: Arc<str>, worker: W, spec: Option<W::Spec>) -> Self {
        let state = worker.initial_state();
        Self {
            worker_type,
            worker: Shareable::new(worker),
            spec: spec.map_or_else(Shareable::empty, Shareable::new),
            state,
            observed: None,
            shares: None,
            slot: SyncWrapper::new(None),
        }
    }
}

impl<W: Worker> TypedDriver<W> {
    /// An owned collect: shares of the worker and the spec.
    fn owned_collect(
        &mut self,
        path: &NodePath,
        desired: &str,
        desired_version: u64,
    ) -> Result<Arc<CollectShares<W>>, String> {
        let current = self
            .shares
            .as_ref()
            // (The path is the node's: it never changes.)
            .filter(|s| s.desired_version == desired_version);
        let shares = match current {
            Some(shares) => Arc::clone(shares),
            None => {
                let (Some(worker), Some(spec)) = (self.worker.share(), self.spec.share()) else {
                    return Err("no spec is installed yet".to_owned());
                };
                let shares = Arc::new(CollectShares {
                    worker,
                    spec,
                    path: path.clone(),
                    desired: crate::states::known_state(<W::State as StateNames>::NAMES, desired),
                    desired_version,
                });
                self.shares = Some(Arc::clone(&shares));
                shares
            }
        };
        Ok(shares)
    }

    /// Installs a newly decoded spec (the next collect shares it anew).
    fn install(&mut self, spec: W::Spec) {
        self.spec = Shareable::new(spec);
        self.shares = None;
    }

    /// Installs a finished collect's observation.
    fn collected(&mut self, result: Result<W::Observed, BoxError>) -> CollectStart {
        match result {
            Ok(observed) => {
                self.observed = Some(observed);
                CollectStart::Done(Ok(()))
            }
            Err(e) => CollectStart::Done(Err(format!("collect failed: {e}"))),
        }
    }
}

impl<W: Worker> NodeDriver for TypedDriver<W> {
    fn worker_type(&self) -> &Arc<str> {
        &self.worker_type
    }

    fn state_name(&self) -> &'static str {
        self.state.name()
    }

    fn state_names(&self) -> &'static [&'static str] {
        <W::State as StateNames>::NAMES
    }

    fn set_spec(&mut self, spec: &Value) -> Result<(), ValueError> {
        self.install(spec.decode::<W::Spec>()?);
        Ok(())
    }

    fn set_decoded_spec(&mut self, spec: DecodedSpec) -> Result<(), DecodedSpec> {
        match spec.0.downcast::<W::Spec>() {
            Ok(spec) => {
                self.install(*spec);
                Ok(())
            }
            Err(other) => Err(DecodedSpec(other)),
        }
    }

    fn has_spec(&self) -> bool {
        self.spec.is_set()
    }

    fn set_spec_rendered(
        &mut self,
        spec: &Value,
        renderer: &dyn TemplateRenderer,
    ) -> Result<(), ValueError> {
        self.install(spec.decode_with::<W::Spec>(renderer)?);
        Ok(())
    }

    fn collect(&mut self, path: &NodePath) -> BoxFuture<'static, Result<Observation, BoxError>> {
        let future = match self.owned_collect(path, "", u64::MAX) {
            Ok(shares) => Box::pin(owned_collect(shares, self.state.name())),
            Err(e) => return Box::pin(async move { Err(e.into()) }),
        };
        Box::pin(async move {
            let observed = future.await?;
            Ok(Box::new(observed) as Observation)
        })
    }

    fn start_collect(
        &mut self,
        path: &NodePath,
        desired: &str,
        desired_version: u64,
    ) -> CollectStart {
        // Always the owned future, polled once here: a collect that waits
        // goes on running elsewhere as the very future that started, so the
        // code before its first `.await` runs once per observation (a
        // request sent there goes out once).
        let shares = match self.owned_collect(path, desired, desired_version) {
            Ok(shares) => shares,
            Err(e) => return CollectStart::Done(Err(e)),
        };
        let mut next = Some(owned_collect(shares, self.state.name()));
        let place = self.slot.get_mut();
        let slot = match place {
            Some(slot) => {
                slot.as_mut().put(&mut next);
                slot
            }
            None => place.insert(Box::pin(next)),
        };
        let mut cx = Context::from_waker(Waker::noop());
        match catch_unwind(AssertUnwindSafe(|| slot.as_mut().poll_collect(&mut cx))) {
            Ok(Poll::Ready(result)) => {
                slot.as_mut().clear();
                self.collected(result)
            }
            Err(payload) => {
                slot.as_mut().clear();
                collect_panicked(payload.as_ref())
            }
            Ok(Poll::Pending) => match self.slot.get_mut().take() {
                Some(mut running) => pending_collect(Box::pin(std::future::poll_fn(move |cx| {
                    running.as_mut().poll_collect(cx)
                }))),
                None => CollectStart::Done(Err("the collect lost its place".to_owned())),
            },
        }
    }

    fn set_observation(&mut self, observation: Observation) -> bool {
        match observation.downcast::<W::Observed>() {
            Ok(observed) => {
                self.observed = Some(*observed);
                true
            }
            Err(_) => false,
        }
    }

    fn has_observation(&self) -> bool {
        self.observed.is_some()
    }

    fn latest_observation(&self) -> Option<&(dyn Any + Send + Sync)> {
        self.observed
            .as_ref()
            .map(|o| o as &(dyn Any + Send + Sync))
    }

    fn observed_type(&self) -> Option<(std::any::TypeId, &'static str)> {
        Some((
            std::any::TypeId::of::<W::Observed>(),
            std::any::type_name::<W::Observed>(),
        ))
    }

    fn derive_with(&self, ctx: &DeriveContext<'_>) -> Result<DesiredState, CallbackError> {
        let (Some(worker), Some(spec)) = (self.worker.get(), self.spec.get()) else {
            return Err(CallbackError::Failed {
                callback: Callback::DeriveDesired,
                source: "no spec is installed yet".into(),
            });
        };
        match catch_unwind(AssertUnwindSafe(|| worker.derive_desired(spec, ctx))) {
            Ok(Ok(desired)) => match desired.supervision.as_ref().map(Supervision::validate) {
                // Nonsense supervision settings are a configuration error
                // (the node keeps its last good desired state), not a
                // failure to restart.
                Some(Err(e)) => Err(CallbackError::Failed {
                    callback: Callback::DeriveDesired,
                    source: InvalidSpec::new(format!("the declared supervision is invalid: {e}"))
                        .into(),
                }),
                _ => Ok(desired),
            },
            Ok(Err(source)) => Err(CallbackError::Failed {
                callback: Callback::DeriveDesired,
                source,
            }),
            Err(payload) => Err(CallbackError::Panicked {
                callback: Callback::DeriveDesired,
                message: panic_message(payload.as_ref()),
            }),
        }
    }

    fn step(&mut self, input: &StepInput<'_>) -> Result<Option<StepOutcome>, CallbackError> {
        let (Some(observed), Some(worker), Some(spec)) =
            (self.observed.as_ref(), self.worker.get(), self.spec.get())
        else {
            return Ok(None);
        };
        let ctx = TickContext::new(input.path, worker, spec, observed, input.desired)
            .with_children(input.children)
            .with_action_in_flight(input.action_in_flight)
            .with_last_action(input.last_action)
            .with_children_from_state(input.from_state);
        let from = self.state.name();
        let transition =
            catch_unwind(AssertUnwindSafe(|| self.state.next(&ctx))).map_err(|payload| {
                CallbackError::Panicked {
                    callback: Callback::Next,
                    message: panic_message(payload.as_ref()),
                }
            })?;
        let mut transition = transition;
        let children = transition.take_children();
        let (next, action, signal, reason) = transition.into_parts();
        let to = next.map(|s| {
            let name = s.name();
            self.state = s;
            name
        });
        Ok(Some(StepOutcome {
            from,
            to: to.filter(|t| *t != from),
            action,
            signal,
            reason,
            children,
        }))
    }

    fn stop_hook(&mut self, path: &NodePath, desired: &str) -> BoxFuture<'static, ()> {
        let (Some(worker), Some(spec)) = (self.worker.share(), self.spec.share()) else {
            // Never configured, so nothing was started that needs stopping.
            return Box::pin(async {});
        };
        let path = path.clone();
        let state = self.state.name();
        let desired = desired.to_owned();
        Box::pin(async move {
            let ctx = StopContext::new(&path, &*spec).with_states(state, &desired);
            worker.on_stop(&ctx).await;
        })
    }
}
