//! The pure model of fsmv2-rs: everything that can be decided without an
//! actor, a runtime or a clock.
//!
//! * [`Value`], [`ChildSpec`], [`DesiredState`]: the declarative data, with a
//!   stable content hash ([`SpecHash`]) and a binary [`codec`].
//! * [`Worker`], [`State`], [`Transition`], [`Action`]: what a user writes;
//!   [`states!`] names a state enum's states, [`action`] makes an action
//!   from a closure.
//! * [`TickContext`]: what a state machine's [`State::next`] looks at
//!   (build one with [`TickContext::new`] to unit-test a state machine).
//! * [`WorkerRegistry`]: worker-type names → typed constructors.
//! * [`plan_children`] and [`validate_children`]: the reconcile plan.
//! * [`Supervision`], [`RestartPolicy`], [`Strategy`], [`RestartIntensity`],
//!   [`Backoff`]: how a child is supervised, as configured in its
//!   [`ChildSpec`]. The decisions themselves (restart windows, the circuit
//!   breaker, exit reasons), with time as an argument, are in
//!   [`supervision`].
//! * [`Secret`]: a spec field (a token, a password) that is stored but
//!   prints `<redacted>`.
//! * [`store`]: the [`Store`](store::Store) interface that keeps a tree's
//!   identity, desired and observed documents, and an in-memory backend.
//! * [`freshness`]: when an observation is fresh, stale or missing.
//! * [`placement`]: where a child runs in a cluster ([`Placement`]), and the
//!   pure decisions about it (which node, stale epochs, expired leases).
//! * [`runtime`]: the interface the runtime (`fsm-actors`) drives workers
//!   through; applications do not need it.
//!
//! Start with [`Worker`]; the runtime that spawns a tree of workers is in the
//! `fsm-actors` crate.

#![forbid(unsafe_code)]
#![warn(unnameable_types)]

pub mod codec;
mod driver;
mod duration_ms;
mod error;
pub mod freshness;
pub mod from_state;
mod hash;
mod metrics;
mod path;
pub mod placement;
mod reconcile;
mod registry;
pub mod runtime;
mod secret;
mod spec;
mod states;
pub mod store;
pub mod supervision;
mod value;
mod worker;

/// What the [`states!`] macro expands to; not an API.
#[doc(hidden)]
pub mod __private {
    pub use crate::states::{snake_case, snake_case_len};
}

pub use error::{
    Callback, CallbackError, CodecError, DeclarationError, DeclarationProblem, InvalidSpec,
    RegistryError, SpecError, SupervisionError,
};
pub use hash::SpecHash;
pub use metrics::{NoMetrics, WorkerMetrics};
pub use path::{NodePath, PATH_SEPARATOR};
pub use placement::Placement;
pub use reconcile::{
    PlanCounts, PlanStep, ReconcilePlan, RunningChild, plan_children, validate_children,
};
pub use registry::{MakeMetrics, WorkerRegistry};
pub use secret::Secret;
pub use spec::{ChildSpec, DesiredState};
pub use states::StateNames;
pub use supervision::{Backoff, RestartIntensity, RestartPolicy, Strategy, Supervision};
pub use value::{Key, Map, Template, TemplateRenderer, Value, ValueError, is_template};
pub use worker::{
    Action, ActionContext, ActionOutcome, ActionReport, BoxError, BoxFuture, BoxedAction,
    ChildStatus, CollectContext, DeriveContext, FnAction, Signal, State, StopContext, TickContext,
    Transition, Worker, WorkerInit, action,
};
