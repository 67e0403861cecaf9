//! What a user writes: a [`Worker`] (look at the world, derive what it
//! should be), its [`State`] machine (pure transitions), and [`Action`]s
//! (idempotent effects, run by the executor).
//!
//! The framework calls these in a fixed order on every tick of a node (see
//! `docs/architecture.md`): `derive_desired` when the spec changes, `next` on
//! the freshest observation, an action at most one at a time. `collect` runs
//! off the node's message loop, with a timeout.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::metrics::{NoMetrics, WorkerMetrics};
use crate::path::NodePath;
use crate::spec::DesiredState;
use crate::states::StateNames;
use crate::value::Value;

/// The error type user callbacks return: any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A worker: the user code behind one kind of node.
///
/// * [`collect`](Worker::collect) looks at the world (async, may fail, runs
///   off the node's loop with a timeout);
/// * [`derive_desired`](Worker::derive_desired) is pure: from the typed spec
///   it derives the node's own target state and its children;
/// * the [`State`] machine decides transitions and actions from a
///   [`TickContext`].
///
/// # Examples
///
/// ```
/// use fsm_core::{
///     BoxError, CollectContext, DeriveContext, DesiredState, TickContext, State, Transition,
///     Worker, action,
/// };
/// use serde::Deserialize;
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
///
/// #[derive(Deserialize)]
/// struct LampSpec { on: bool }
///
/// /// The "world": whether the lamp is lit.
/// #[derive(Default)]
/// struct Lamp { lit: Arc<AtomicBool> }
///
/// fsm_core::states! {
///     #[derive(Clone, Debug)]
///     enum LampState { Off, On }
/// }
///
/// impl Worker for Lamp {
///     type Spec = LampSpec;
///     type Observed = bool;
///     type State = LampState;
///
///     fn initial_state(&self) -> LampState { LampState::Off }
///
///     async fn collect(&self, _ctx: &CollectContext<'_, LampSpec>) -> Result<bool, BoxError> {
///         Ok(self.lit.load(Ordering::SeqCst))
///     }
///
///     fn derive_desired(&self, spec: &LampSpec, _ctx: &DeriveContext<'_>) -> Result<DesiredState, BoxError> {
///         Ok(DesiredState::new(if spec.on { "on" } else { "off" }))
///     }
/// }
///
/// impl State<Lamp> for LampState {
///     fn next(&self, s: &TickContext<'_, Lamp>) -> Transition<LampState> {
///         match (self, s.desired(), *s.observed()) {
///             (LampState::Off, "on", true) => Transition::to(LampState::On).because("lamp is lit"),
///             (LampState::Off, "on", false) => {
///                 let lit = s.worker().lit.clone();
///                 Transition::stay()
///                     .with_action(action("switch-on", move |_ctx| {
///                         let lit = lit.clone();
///                         async move {
///                             lit.store(true, Ordering::SeqCst); // idempotent
///                             Ok(())
///                         }
///                     }))
///                     .because("lamp should be on")
///             }
///             _ => Transition::stay(),
///         }
///     }
/// }
/// ```
pub trait Worker: Send + Sync + Sized + 'static {
    /// The typed user spec, decoded from the node's
    /// [`ChildSpec::user_spec`](crate::ChildSpec::user_spec).
    type Spec: DeserializeOwned + Send + Sync + 'static;
    /// What [`collect`](Worker::collect) observes. `Default` is what a
    /// worker that observes nothing (a pure supervisor, `Observed = ()`)
    /// reports without writing `collect`.
    type Observed: Default + Send + Sync + 'static;
    /// The state machine (an enum is the idiomatic fit).
    type State: State<Self>;

    /// The state a fresh worker starts in.
    fn initial_state(&self) -> Self::State;

    /// Looks at the world. Runs off the node's message loop, bounded by the
    /// tree's observation timeout; a late or failed observation marks the
    /// node stale and never blocks a tick.
    ///
    /// Called once as the node starts (its first tick steps on that
    /// observation), then at the end of every tick while none is running,
    /// and at once when an action ends; a worker type with an observation
    /// interval is called at most once per interval.
    ///
    /// Without it, a worker observes nothing: every observation is
    /// `Observed::default()`, as fits a supervisor whose state follows its
    /// spec and its children (`type Observed = ();`).
    fn collect(
        &self,
        ctx: &CollectContext<'_, Self::Spec>,
    ) -> impl Future<Output = Result<Self::Observed, BoxError>> + Send {
        let _ = ctx;
        std::future::ready(Ok(Self::Observed::default()))
    }

    /// Derives the node's desired state, including the specs of its children,
    /// from its spec. Must be pure: the framework calls it only when its
    /// inputs change and caches the result.
    ///
    /// # Errors
    ///
    /// An [`InvalidSpec`](crate::InvalidSpec) error is a configuration
    /// problem: the node keeps its last good desired state, is unhealthy with
    /// the error as `last_error`, and derives again when its spec changes.
    /// Any other error (or a panic) is a failure: the node is restarted
    /// under its restart policy.
    fn derive_desired(
        &self,
        spec: &Self::Spec,
        ctx: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError>;

    /// The stop hook: runs once when the node stops for good (removed, or the
    /// tree shuts down), after all of its children have stopped and, if the
    /// worker has a state named `"stopped"`, after its state machine has
    /// driven it there (see [`State`]); on its own when that does not happen
    /// within the removal budget, or the node is failing. Bounded by the
    /// shutdown deadline and the tree's `stop_hook_timeout`.
    fn on_stop(&self, ctx: &StopContext<'_, Self::Spec>) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }
}

/// A worker's state machine. `next` is pure: it looks at a [`TickContext`]
/// and returns a [`Transition`]; the framework carries it out.
///
/// The states' names come from [`StateNames`], which
/// [`states!`](crate::states) writes for an enum: the framework knows every
/// state's name, so a desired state or a state mapping that names no state
/// of the worker is a configuration error, not a node that never converges.
///
/// A worker with a state named `"stopped"` is stopped gracefully: when its
/// node is removed, restarted on its own request (`Signal::NeedsRestart`)
/// or shut down with the tree, its desired state becomes `"stopped"` and its
/// state machine keeps running (observing and ticking itself) until it is
/// in `stopped` with no action in flight, within the tree's
/// `removal_timeout`; only then does the node stop and
/// [`Worker::on_stop`] run. A worker without a `stopped` state goes
/// straight to `on_stop`.
pub trait State<W: Worker>: StateNames + Clone + fmt::Debug + Send + Sync + 'static {
    /// Decides what happens next, given the freshest observation.
    ///
    /// The framework calls it on every tick while the node is not stale and
    /// its circuit is closed, with one rule about actions: **after an
    /// action ends, `next` is called again only with an observation from a
    /// collect started after the action ended.** So `next` never sees the
    /// world as it was before its own action took effect and need not guard
    /// against asking for the same action twice. An action that failed and
    /// is asked for again is held back with backoff (`TreeConfig`'s
    /// `action_backoff` in `fsm-actors`).
    fn next(&self, ctx: &TickContext<'_, W>) -> Transition<Self>;
}

/// Signals a state machine can raise to its supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Replace this worker with a fresh one from the registry (same spec).
    NeedsRestart,
    /// Remove this node: it has finished its work.
    NeedsRemoval,
}

/// The result of [`State::next`]: an optional next state, at most one action,
/// an optional signal, and a human-readable reason.
///
/// # Examples
///
/// ```
/// use fsm_core::{Signal, Transition};
///
/// #[derive(Clone, Debug, PartialEq)]
/// enum S { Starting, Running }
///
/// let t = Transition::to(S::Running).because("process is up");
/// assert_eq!(t.next_state(), Some(&S::Running));
/// assert_eq!(t.reason(), "process is up");
///
/// let t: Transition<S> = Transition::signal(Signal::NeedsRestart).because("wedged");
/// assert_eq!(t.signal_raised(), Some(Signal::NeedsRestart));
/// ```
#[must_use]
pub struct Transition<S> {
    next: Option<S>,
    action: Option<BoxedAction>,
    signal: Option<Signal>,
    reason: Cow<'static, str>,
    /// `Some`: replaces the children declared from state.
    children: Option<Vec<crate::spec::ChildSpec>>,
}

impl<S> Transition<S> {
    /// Stay in the current state.
    pub fn stay() -> Self {
        Self {
            next: None,
            action: None,
            signal: None,
            reason: Cow::Borrowed(""),
            children: None,
        }
    }

    /// Move to `state`.
    pub fn to(state: S) -> Self {
        Self {
            next: Some(state),
            ..Self::stay()
        }
    }

    /// Raise a signal to the supervisor.
    pub fn signal(signal: Signal) -> Self {
        Self {
            signal: Some(signal),
            ..Self::stay()
        }
    }

    /// Also run `action` (at most one per transition; a second call
    /// replaces the first). It is dropped if an action of this node is still
    /// in flight: actions are idempotent and the state machine will ask again.
    pub fn with_action(mut self, action: impl Action) -> Self {
        self.action = Some(BoxedAction::new(action));
        self
    }

    /// Declares the children this worker wants from its state: one per
    /// device it discovered, its transport children once it has
    /// authenticated. They **replace** the children it declared from state
    /// before, and are kept across later transitions that do not call this;
    /// `with_children([])` clears them. A restarted worker starts with none.
    ///
    /// The node reconciles them together with the children of
    /// [`Worker::derive_desired`], as one declaration: the derived children
    /// first, then these, in order (the start order; stops run in
    /// reverse). They are validated as derived children are — a name
    /// declared by both is a problem, and an invalid declaration is refused
    /// as a whole, keeping the last good children — and each child's
    /// `state_mapping` applies as to any child. The running children are in
    /// [`TickContext::children`], these declarations in
    /// [`TickContext::children_from_state`].
    pub fn with_children(
        mut self,
        children: impl IntoIterator<Item = crate::spec::ChildSpec>,
    ) -> Self {
        self.children = Some(children.into_iter().collect());
        self
    }

    /// The children this transition declares from state, if it does (see
    /// [`with_children`](Self::with_children)).
    #[must_use]
    pub fn declared_children(&self) -> Option<&[crate::spec::ChildSpec]> {
        self.children.as_deref()
    }

    /// Takes the children declared from state out of the transition.
    pub(crate) fn take_children(&mut self) -> Option<Vec<crate::spec::ChildSpec>> {
        self.children.take()
    }

    /// Says why (shows up in logs and traces).
    pub fn because(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.reason = reason.into();
        self
    }

    /// The next state, if any.
    #[must_use]
    pub fn next_state(&self) -> Option<&S> {
        self.next.as_ref()
    }

    /// The action, if any.
    #[must_use]
    pub fn action(&self) -> Option<&BoxedAction> {
        self.action.as_ref()
    }

    /// The signal, if any.
    #[must_use]
    pub fn signal_raised(&self) -> Option<Signal> {
        self.signal
    }

    /// The reason.
    #[must_use]
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Splits the transition into its parts.
    pub(crate) fn into_parts(
        self,
    ) -> (
        Option<S>,
        Option<BoxedAction>,
        Option<Signal>,
        Cow<'static, str>,
    ) {
        (self.next, self.action, self.signal, self.reason)
    }
}

impl<S: fmt::Debug> fmt::Debug for Transition<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transition")
            .field("next", &self.next)
            .field("action", &self.action.as_ref().map(BoxedAction::name))
            .field("signal", &self.signal)
            .field("reason", &self.reason)
            .field("children", &self.children.as_ref().map(Vec::len))
            .finish()
    }
}

/// An effect on the world, run by the tree's executor, never inside a tick.
///
/// Actions must be idempotent (the state machine may ask for the same action
/// again after a restart or a lost outcome) and should watch
/// [`ActionContext::cancelled`] at long waits: a cancelled action is dropped
/// at its next await point.
pub trait Action: Send + Sync + 'static {
    /// A short name for logs and metrics. Defaults to the type's name
    /// without module paths, generic arguments included (`Write<Coil>` for
    /// `plant::Write<modbus::Coil>`).
    fn name(&self) -> &'static str {
        short_type_name(std::any::type_name::<Self>())
    }

    /// A timeout for this action, overriding the tree's default.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Performs the effect.
    fn execute(&self, ctx: &ActionContext) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// `type_name` without module paths: `Write<Coil>` for
/// `plant::Write<modbus::Coil>`. A name with no generic arguments is a
/// suffix of the full name; any other is built once per type and kept.
fn short_type_name(full: &'static str) -> &'static str {
    /// Characters of a path: identifiers, `::`, closures' `{{closure}}`.
    fn in_path(c: char) -> bool {
        c.is_alphanumeric() || matches!(c, '_' | ':' | '{' | '}' | '\'')
    }
    if full.chars().all(in_path) {
        return full.rsplit("::").next().unwrap_or(full);
    }
    static SHORT: OnceLock<
        std::sync::RwLock<std::collections::HashMap<&'static str, &'static str>>,
    > = OnceLock::new();
    let cache = SHORT.get_or_init(Default::default);
    if let Some(short) = cache.read().ok().and_then(|c| c.get(full).copied()) {
        return short;
    }
    let mut short = String::with_capacity(full.len());
    let mut rest = full;
    while !rest.is_empty() {
        let end = rest.find(|c| !in_path(c)).unwrap_or(rest.len());
        let (path, tail) = rest.split_at(end);
        short.push_str(path.rsplit("::").next().unwrap_or(path));
        let delimiter = tail.chars().next().map_or(0, char::len_utf8);
        short.push_str(&tail[..delimiter]);
        rest = &tail[delimiter..];
    }
    // Poisoned (a panic while inserting): the full name still says what the
    // action is.
    let Ok(mut c) = cache.write() else {
        return full;
    };
    if let Some(built) = c.get(full).copied() {
        // Built by another thread meanwhile.
        return built;
    }
    // Leaked once per generic action type: names live as long as the
    // program, and there are as many as the program has action types.
    let short: &'static str = Box::leak(short.into_boxed_str());
    c.insert(full, short);
    short
}

/// An action made from a closure: [`action`]`("switch-on", |ctx| async { .. })`.
/// For an action that needs no type of its own.
pub struct FnAction<F> {
    name: &'static str,
    timeout: Option<Duration>,
    /// Taken by the one run: an action made from a closure runs once (the
    /// runtime consumes every action it runs), so the closure may move what
    /// it captured into its future.
    run: std::sync::Mutex<Option<F>>,
}

/// An action named `name` that runs `run` once with the action's context: a
/// simple action without a type of its own. `run` may move what it captured
/// into the future it returns (it is an `FnOnce`): build the action where
/// the transition is decided, with clones of the handles it needs.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use fsm_core::{Action, Transition, action};
///
/// #[derive(Clone, Debug)]
/// enum Pump { Off, Starting }
///
/// let motor = Arc::new(AtomicBool::new(false));
/// let m = Arc::clone(&motor);
/// let switch_on = action("switch-on", move |_ctx| async move {
///     m.store(true, Ordering::SeqCst); // idempotent
///     Ok(())
/// });
/// assert_eq!(switch_on.name(), "switch-on");
/// let t = Transition::to(Pump::Starting).with_action(switch_on);
/// assert_eq!(t.action().map(|a| a.name()), Some("switch-on"));
/// ```
pub fn action<F, Fut>(name: &'static str, run: F) -> FnAction<F>
where
    F: FnOnce(ActionContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    FnAction {
        name,
        timeout: None,
        run: std::sync::Mutex::new(Some(run)),
    }
}

impl<F> FnAction<F> {
    /// Gives the action a timeout of its own, instead of the tree's default.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl<F> fmt::Debug for FnAction<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnAction")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<F, Fut> Action for FnAction<F>
where
    F: FnOnce(ActionContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn execute(&self, ctx: &ActionContext) -> impl Future<Output = Result<(), BoxError>> + Send {
        // A poisoned lock means a run panicked while taking the closure: it
        // is gone either way.
        let run = self.run.lock().ok().and_then(|mut run| run.take());
        let name = self.name;
        let future = run.map(|run| run(ctx.clone()));
        async move {
            match future {
                Some(future) => future.await,
                None => Err(format!(
                    "action {name:?} made by `fsm_core::action` was run a second time; \
                     it runs once (return a new one from `next` to run it again)"
                )
                .into()),
            }
        }
    }
}

/// Object-safe form of [`Action`], implemented for every action.
trait DynAction: Send + Sync {
    fn timeout(&self) -> Option<Duration>;
    fn run(self: Box<Self>, ctx: ActionContext) -> BoxFuture<'static, Result<(), BoxError>>;
}

impl<A: Action> DynAction for A {
    fn timeout(&self) -> Option<Duration> {
        Action::timeout(self)
    }

    fn run(self: Box<Self>, ctx: ActionContext) -> BoxFuture<'static, Result<(), BoxError>> {
        Box::pin(async move { self.execute(&ctx).await })
    }
}

/// A type-erased [`Action`], as it travels to the executor.
pub struct BoxedAction {
    /// Asked once: the default name is derived from the type name.
    name: &'static str,
    action: Box<dyn DynAction>,
}

impl BoxedAction {
    /// Boxes an action.
    pub fn new(action: impl Action) -> Self {
        Self {
            name: Action::name(&action),
            action: Box::new(action),
        }
    }

    /// The action's name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The action's own timeout, if it sets one.
    #[must_use]
    pub fn timeout(&self) -> Option<Duration> {
        self.action.timeout()
    }

    /// Turns the action into the future that performs it.
    // Hidden: only the executor of `fsm-actors` runs actions; an
    // application hands them over in a `Transition` and never runs one.
    #[doc(hidden)]
    pub fn run(self, ctx: ActionContext) -> BoxFuture<'static, Result<(), BoxError>> {
        self.action.run(ctx)
    }
}

impl fmt::Debug for BoxedAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BoxedAction({})", self.name())
    }
}

/// How an enqueued action ended. Every enqueued action ends in exactly one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum ActionOutcome {
    /// The action returned `Ok`.
    Succeeded,
    /// The action returned an error or panicked.
    Failed(String),
    /// The action ran past its timeout and was dropped.
    TimedOut,
    /// The action was cancelled before it finished (its node was removed,
    /// restarted or shut down).
    Cancelled,
    /// The executor's queue was full; the action never ran.
    Rejected(String),
    /// The action was started and its process ended before it finished
    /// (killed, crashed, lost power): found so, without an outcome, when
    /// the tree was restored from its store. Nobody knows how far it got.
    Interrupted,
}

impl ActionOutcome {
    /// A short label: `succeeded`, `failed`, `timed_out`, `cancelled`,
    /// `rejected`, `interrupted`.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed(_) => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Rejected(_) => "rejected",
            Self::Interrupted => "interrupted",
        }
    }
}

/// The last action of a node and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionReport {
    /// The action's name.
    pub action: String,
    /// How it ended.
    pub outcome: ActionOutcome,
}

/// What a parent knows of one of its children, from the child's reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildStatus {
    /// The child's name.
    pub name: String,
    /// The child's current state (a state's name, which is static; owned
    /// when deserialized).
    pub state: Cow<'static, str>,
    /// The child's desired state (static when it is one of the child's
    /// states, as it should be; owned otherwise, and when deserialized).
    pub desired: Cow<'static, str>,
    /// Whether the child itself is healthy.
    pub healthy: bool,
    /// Whether the child's last good observation is too old.
    pub stale: bool,
    /// Whether the child and its whole subtree have converged.
    pub converged: bool,
}

/// Everything a state machine may look at on a tick: the spec, the freshest
/// observation, the desired state, the children, and the action in flight.
///
/// The framework builds one for every call of [`State::next`]. To unit-test
/// a state machine, build one with [`TickContext::new`] and call `next`
/// yourself:
///
/// ```
/// use fsm_core::{
///     ActionOutcome, ActionReport, BoxError, CollectContext, DeriveContext, DesiredState,
///     NodePath, State, TickContext, Transition, Worker,
/// };
///
/// struct Valve;
///
/// fsm_core::states! {
///     #[derive(Clone, Debug, PartialEq)]
///     enum ValveState { Closed, Open }
/// }
///
/// impl Worker for Valve {
///     type Spec = ();
///     type Observed = bool; // whether the valve reports open
///     type State = ValveState;
///
///     fn initial_state(&self) -> ValveState { ValveState::Closed }
///
///     async fn collect(&self, _: &CollectContext<'_, ()>) -> Result<bool, BoxError> { Ok(false) }
///
///     fn derive_desired(&self, _: &(), _: &DeriveContext<'_>) -> Result<DesiredState, BoxError> {
///         Ok(DesiredState::new("open"))
///     }
/// }
///
/// impl State<Valve> for ValveState {
///     fn next(&self, ctx: &TickContext<'_, Valve>) -> Transition<ValveState> {
///         match (self, ctx.desired(), *ctx.observed()) {
///             (ValveState::Closed, "open", true) => Transition::to(ValveState::Open),
///             (ValveState::Closed, "open", false) if ctx.last_action().is_some() => {
///                 Transition::stay().because("waiting for the valve to report open")
///             }
///             _ => Transition::stay(),
///         }
///     }
/// }
///
/// let path = NodePath::top().child("valve");
/// let opened = TickContext::new(&path, &Valve, &(), &true, "open");
/// assert_eq!(ValveState::Closed.next(&opened).next_state(), Some(&ValveState::Open));
///
/// let report = ActionReport { action: "Open".into(), outcome: ActionOutcome::Succeeded };
/// let waiting = TickContext::new(&path, &Valve, &(), &false, "open")
///     .with_action_in_flight(false)
///     .with_last_action(Some(&report));
/// let t = ValveState::Closed.next(&waiting);
/// assert_eq!(t.next_state(), None);
/// assert_eq!(t.reason(), "waiting for the valve to report open");
/// ```
pub struct TickContext<'a, W: Worker> {
    path: &'a NodePath,
    worker: &'a W,
    spec: &'a W::Spec,
    observed: &'a W::Observed,
    desired: &'a str,
    children: &'a [ChildStatus],
    from_state: &'a [crate::spec::ChildSpec],
    action_in_flight: bool,
    last_action: Option<&'a ActionReport>,
}

impl<'a, W: Worker> TickContext<'a, W> {
    /// A context for the node at `path`, with its worker, typed spec,
    /// freshest observation and desired state; no children, no action in
    /// flight and no action history (set them with the `with_*` methods).
    /// The framework builds these itself: this constructor is how a test
    /// calls a state machine's [`State::next`] (see the example on
    /// [`TickContext`]).
    #[must_use]
    pub fn new(
        path: &'a NodePath,
        worker: &'a W,
        spec: &'a W::Spec,
        observed: &'a W::Observed,
        desired: &'a str,
    ) -> Self {
        Self {
            path,
            worker,
            spec,
            observed,
            desired,
            children: &[],
            from_state: &[],
            action_in_flight: false,
            last_action: None,
        }
    }

    /// Sets the children declared from state (see
    /// [`Transition::with_children`]).
    #[must_use]
    pub fn with_children_from_state(mut self, declared: &'a [crate::spec::ChildSpec]) -> Self {
        self.from_state = declared;
        self
    }

    /// The children this worker declares from its state, as its last
    /// [`Transition::with_children`] left them (empty if it never did, and
    /// after a restart). Those running are among [`children`](Self::children)
    /// with the derived ones, by name.
    #[must_use]
    pub fn children_from_state(&self) -> &'a [crate::spec::ChildSpec] {
        self.from_state
    }

    /// Sets the children's statuses.
    #[must_use]
    pub fn with_children(mut self, children: &'a [ChildStatus]) -> Self {
        self.children = children;
        self
    }

    /// Sets whether an action of this node is queued or running
    /// ([`action_in_flight`](Self::action_in_flight)).
    #[must_use]
    pub fn with_action_in_flight(mut self, in_flight: bool) -> Self {
        self.action_in_flight = in_flight;
        self
    }

    /// Sets the node's last finished action
    /// ([`last_action`](Self::last_action)).
    #[must_use]
    pub fn with_last_action(mut self, last: Option<&'a ActionReport>) -> Self {
        self.last_action = last;
        self
    }

    /// The node's path.
    #[must_use]
    pub fn path(&self) -> &NodePath {
        self.path
    }

    /// The worker (for handles an action needs, such as a client).
    #[must_use]
    pub fn worker(&self) -> &W {
        self.worker
    }

    /// The typed spec.
    #[must_use]
    pub fn spec(&self) -> &W::Spec {
        self.spec
    }

    /// The freshest observation.
    #[must_use]
    pub fn observed(&self) -> &W::Observed {
        self.observed
    }

    /// The desired state: the parent's mapped state when the mapping has an
    /// entry for the parent's desired state, otherwise the node's own derived
    /// state.
    #[must_use]
    pub fn desired(&self) -> &str {
        self.desired
    }

    /// The children's last reported statuses, in start order.
    #[must_use]
    pub fn children(&self) -> &[ChildStatus] {
        self.children
    }

    /// Whether every declared child is running and its subtree converged.
    #[must_use]
    pub fn children_converged(&self) -> bool {
        self.children.iter().all(|c| c.converged)
    }

    /// Whether an action of this node is queued or running.
    #[must_use]
    pub fn action_in_flight(&self) -> bool {
        self.action_in_flight
    }

    /// The node's last finished action, if any.
    #[must_use]
    pub fn last_action(&self) -> Option<&ActionReport> {
        self.last_action
    }
}

/// Passed to a worker's constructor in the registry.
pub struct WorkerInit<'a> {
    path: &'a NodePath,
    worker_type: &'a str,
    metrics: Option<&'a crate::registry::MakeMetrics<'a>>,
}

impl<'a> WorkerInit<'a> {
    /// What the constructor of a node at `path` of type `worker_type` is
    /// given; its [`metrics`](Self::metrics) record nothing. The registry
    /// builds these itself: this is for testing a constructor.
    #[must_use]
    pub fn new(path: &'a NodePath, worker_type: &'a str) -> Self {
        Self {
            path,
            worker_type,
            metrics: None,
        }
    }

    /// Makes [`metrics`](Self::metrics) come from `metrics`.
    pub(crate) fn with_metrics(
        mut self,
        metrics: Option<&'a crate::registry::MakeMetrics<'a>>,
    ) -> Self {
        self.metrics = metrics;
        self
    }

    /// The node's path.
    #[must_use]
    pub fn path(&self) -> &'a NodePath {
        self.path
    }

    /// The registered worker type.
    #[must_use]
    pub fn worker_type(&self) -> &'a str {
        self.worker_type
    }

    /// The node's [`WorkerMetrics`], for a worker that records metrics of
    /// its own outside actions (in `collect`, say): keep the handle in the
    /// worker. Made on each call; without a runtime behind the registry it
    /// records nothing.
    #[must_use]
    pub fn metrics(&self) -> Arc<dyn WorkerMetrics> {
        match self.metrics {
            Some(make) => make(),
            None => Arc::new(NoMetrics),
        }
    }
}

impl fmt::Debug for WorkerInit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerInit")
            .field("path", &self.path)
            .field("worker_type", &self.worker_type)
            .finish_non_exhaustive()
    }
}

/// Writes a context that shows a callback its node: path, typed spec, state
/// and desired state. `collect` and `on_stop` get one each, of the same
/// shape but distinct types, so neither can be passed where the other is
/// meant.
macro_rules! node_context {
    (
        $(#[$doc:meta])*
        $name:ident {
            new: $new:literal,
            spec: $spec:literal,
            state: $state:literal,
            desired: $desired:literal $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name<'a, S> {
            path: &'a NodePath,
            spec: &'a S,
            state: &'static str,
            desired: &'a str,
        }

        impl<'a, S> $name<'a, S> {
            #[doc = $new]
            #[must_use]
            pub fn new(path: &'a NodePath, spec: &'a S) -> Self {
                Self {
                    path,
                    spec,
                    state: "",
                    desired: "",
                }
            }

            /// Sets the node's state and its desired state.
            #[must_use]
            pub fn with_states(mut self, state: &'static str, desired: &'a str) -> Self {
                self.state = state;
                self.desired = desired;
                self
            }

            /// The node's path.
            #[must_use]
            pub fn path(&self) -> &'a NodePath {
                self.path
            }

            #[doc = $spec]
            #[must_use]
            pub fn spec(&self) -> &'a S {
                self.spec
            }

            #[doc = $state]
            #[must_use]
            pub fn state(&self) -> &'static str {
                self.state
            }

            #[doc = $desired]
            #[must_use]
            pub fn desired(&self) -> &'a str {
                self.desired
            }
        }
    };
}

node_context! {
    /// Passed to [`Worker::collect`]: the node's path, its current typed spec,
    /// its current state and its desired state (a worker may skip observing
    /// while it should be, and is, `stopped`).
    CollectContext {
        new: "A context for `path` with `spec` (no state or desired state known: both empty).",
        spec: "The node's current typed spec.",
        state: "The node's current state's name.",
        desired: "The node's desired state (`\"stopped\"` while it is being stopped).",
    }
}

/// Passed to [`Worker::derive_desired`]: the node's path, its variables and
/// its location.
///
/// The variables are built on first use: most derivations never read them,
/// and in a large tree building them for every node would cost more than
/// the derivations themselves.
///
/// ```
/// use fsm_core::{DeriveContext, NodePath, Value};
///
/// let path = NodePath::top().child("line");
/// let vars = Value::map([("IP", Value::from("10.0.0.5"))]);
/// let ctx = DeriveContext::new(&path).with_variables(&vars);
/// assert_eq!(ctx.variable("IP"), Some(&Value::from("10.0.0.5")));
///
/// let make = || Value::map([("PORT", Value::from(502))]);
/// let lazy = DeriveContext::new(&path).with_variables_from(&make);
/// assert_eq!(lazy.variable("PORT"), Some(&Value::from(502)));
/// assert_eq!(lazy.variable("nope"), None);
/// ```
pub struct DeriveContext<'a> {
    path: &'a NodePath,
    location_path: &'a str,
    variables: Variables<'a>,
}

enum Variables<'a> {
    Ready(&'a Value),
    Lazy {
        make: &'a (dyn Fn() -> Value + Sync),
        made: OnceLock<Value>,
    },
}

static NO_VARIABLES: Value = Value::Null;

impl<'a> DeriveContext<'a> {
    /// A context for `path` with no variables and no location.
    #[must_use]
    pub fn new(path: &'a NodePath) -> Self {
        Self {
            path,
            location_path: "",
            variables: Variables::Ready(&NO_VARIABLES),
        }
    }

    /// Sets the variables (a flattened variable bundle).
    #[must_use]
    pub fn with_variables(mut self, variables: &'a Value) -> Self {
        self.variables = Variables::Ready(variables);
        self
    }

    /// Sets the variables to what `make` returns, called at most once, on
    /// first use.
    #[must_use]
    pub fn with_variables_from(mut self, make: &'a (dyn Fn() -> Value + Sync)) -> Self {
        self.variables = Variables::Lazy {
            make,
            made: OnceLock::new(),
        };
        self
    }

    /// Sets the location path.
    #[must_use]
    pub fn with_location(mut self, location_path: &'a str) -> Self {
        self.location_path = location_path;
        self
    }

    /// The node's path.
    #[must_use]
    pub fn path(&self) -> &'a NodePath {
        self.path
    }

    /// The node's ISA-95 location as a dotted path
    /// (`acme.plant-a.packaging.line-1`; empty when unset).
    #[must_use]
    pub fn location_path(&self) -> &'a str {
        self.location_path
    }

    /// The node's variables, as templates see them: `user` variables at the
    /// top level, `global` and `internal` as maps (`Null` when there are
    /// none).
    #[must_use]
    pub fn variables(&self) -> &Value {
        match &self.variables {
            Variables::Ready(v) => v,
            Variables::Lazy { make, made } => made.get_or_init(make),
        }
    }

    /// A variable by dotted name (`IP`, `global.api_endpoint`,
    /// `internal.path`).
    #[must_use]
    pub fn variable(&self, dotted: &str) -> Option<&Value> {
        dotted
            .split('.')
            .try_fold(self.variables(), |v, segment| v.get(segment))
    }
}

impl fmt::Debug for DeriveContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeriveContext")
            .field("path", &self.path)
            .field("location_path", &self.location_path)
            .field("variables", self.variables())
            .finish()
    }
}

node_context! {
    /// Passed to [`Worker::on_stop`]: the node's path, its last typed spec, the
    /// state it stopped in and its desired state (`"stopped"` when it was
    /// removed or shut down).
    StopContext {
        new: "A context for `path` with `spec` (no state or desired state known: both empty). \
              The runtime builds these itself: this is for testing a stop hook.",
        spec: "The node's last typed spec.",
        state: "The name of the state the node stopped in (`\"stopped\"` after a graceful stop).",
        desired: "The node's desired state when it stopped.",
    }
}

/// Passed to [`Action::execute`]: the node's path, the cancellation
/// signal and the node's [`WorkerMetrics`].
#[derive(Clone, Debug)]
pub struct ActionContext {
    path: NodePath,
    cancel: CancellationToken,
    metrics: Option<Arc<dyn WorkerMetrics>>,
}

impl ActionContext {
    /// A context for an action of `path`, cancelled through `cancel`, whose
    /// metrics go nowhere (see [`with_metrics`](Self::with_metrics)).
    #[must_use]
    pub fn new(path: NodePath, cancel: CancellationToken) -> Self {
        Self {
            path,
            cancel,
            metrics: None,
        }
    }

    /// Records the action's metrics through `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<dyn WorkerMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Where the action records metrics of its own, labelled with its
    /// node's worker type (and path, when the tree records per-node
    /// series).
    ///
    /// ```
    /// # use fsm_core::{ActionContext, NodePath};
    /// # let ctx = ActionContext::new(NodePath::top(), Default::default());
    /// ctx.metrics().counter_add("writes", 1);
    /// ```
    #[must_use]
    pub fn metrics(&self) -> &dyn WorkerMetrics {
        self.metrics.as_deref().unwrap_or(&NoMetrics)
    }

    /// The path of the node that asked for the action.
    #[must_use]
    pub fn path(&self) -> &NodePath {
        &self.path
    }

    /// Whether the action has been cancelled.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the action is cancelled.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod plant {
        pub(super) mod modbus {
            pub(in super::super) struct Coil;
        }
        pub(in super::super) struct Write<T>(pub(in super::super) std::marker::PhantomData<T>);
        pub(in super::super) struct Reset;
    }

    impl<T: Send + Sync + 'static> Action for plant::Write<T> {
        async fn execute(&self, _ctx: &ActionContext) -> Result<(), BoxError> {
            Ok(())
        }
    }

    impl Action for plant::Reset {
        async fn execute(&self, _ctx: &ActionContext) -> Result<(), BoxError> {
            Ok(())
        }
    }

    #[test]
    fn the_default_action_name_is_the_type_name_without_module_paths_generics_included() {
        let write = plant::Write::<plant::modbus::Coil>(std::marker::PhantomData);
        assert_eq!(Action::name(&write), "Write<Coil>");
        assert_eq!(BoxedAction::new(write).name(), "Write<Coil>");
        let nested =
            plant::Write::<(plant::Reset, Vec<plant::modbus::Coil>)>(std::marker::PhantomData);
        assert_eq!(Action::name(&nested), "Write<(Reset, Vec<Coil>)>");
        assert_eq!(Action::name(&plant::Reset), "Reset");
    }

    #[test]
    fn a_generic_action_name_is_built_once_per_type() {
        let a = Action::name(&plant::Write::<plant::Reset>(std::marker::PhantomData));
        let b = Action::name(&plant::Write::<plant::Reset>(std::marker::PhantomData));
        assert_eq!(a, "Write<Reset>");
        assert!(std::ptr::eq(a, b), "the second name was built again");
    }
}
