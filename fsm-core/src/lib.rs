//! The pure model of fsmv2-rs: everything that can be decided without an
//! actor, a runtime or a clock.
//!
//! * [`Value`], [`ChildSpec`], [`DesiredState`]: the declarative data, with a
//!   stable content hash ([`SpecHash`]) and a binary [`codec`].
//! * [`Worker`], [`State`], [`Transition`], [`Action`]: what a user writes.
//! * [`WorkerRegistry`]: worker-type names → typed constructors.
//! * [`plan_children`] and [`validate_children`]: the reconcile plan.
//! * [`RestartPolicy`], [`Strategy`], [`RestartWindow`], [`Backoff`],
//!   [`Circuit`]: supervision decisions, with time as an argument.
//! * [`NodeDriver`]: the type-erased worker the runtime (`fsm-actors`) drives.
//!
//! Start with [`Worker`]; the runtime that spawns a tree of workers is in the
//! `fsm-actors` crate.

#![forbid(unsafe_code)]

pub mod codec;
mod driver;
mod duration_ms;
mod error;
pub mod freshness;
pub mod from_state;
mod hash;
mod metrics;
mod path;
mod reconcile;
mod registry;
mod spec;
mod states;
mod supervision;
mod value;
mod worker;

/// What the [`states!`] macro expands to; not an API.
#[doc(hidden)]
pub mod __private {
    pub use crate::states::{snake_case, snake_case_len};
}

pub use driver::{CollectStart, DecodedSpec, NodeDriver, Observation, StepInput, StepOutcome};
pub use error::{
    Callback, CallbackError, CodecError, DeclarationError, DeclarationProblem, InvalidSpec,
    RegistryError, SpecError, SupervisionError, panic_message,
};
pub use hash::{SpecHash, StableHasher};
pub use metrics::{NoMetrics, WorkerMetrics};
pub use path::{NodePath, PATH_SEPARATOR};
pub use reconcile::{
    PlanCounts, PlanStep, ReconcilePlan, RunningChild, decode_children_hashed, plan_children,
    plan_children_hashed, validate_children, validate_children_hashed,
};
pub use registry::{MakeMetrics, WorkerRegistry};
pub use spec::{ChildSpec, DesiredState};
pub use states::StateNames;
pub use supervision::{
    Backoff, Circuit, CircuitChange, ExitReason, IntensityVerdict, RestartIntensity, RestartPolicy,
    RestartWindow, SplitMix64, Strategy, Supervision, affected_children,
};
pub use value::{Map, Template, TemplateRenderer, Value, ValueError, is_template};
pub use worker::{
    Action, ActionContext, ActionOutcome, ActionReport, BoxError, BoxFuture, BoxedAction,
    ChildStatus, CollectContext, DeriveContext, FnAction, Signal, State, StopContext, TickContext,
    Transition, Worker, WorkerInit, action,
};
