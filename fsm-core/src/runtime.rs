//! The interface between the model and the runtime crate `fsm-actors`;
//! applications do not need it and it may change.
//!
//! A tree of workers is run by `fsm-actors`, which drives each node through
//! a type-erased [`NodeDriver`] made by the
//! [`WorkerRegistry`](crate::WorkerRegistry). What it needs to do that lives
//! here, out of the way of the types an application writes against:
//!
//! * [`NodeDriver`], [`StepInput`], [`StepOutcome`], [`CollectStart`],
//!   [`Observation`], [`DecodedSpec`]: one node's worker, spec, state and
//!   observation behind a trait object;
//! * [`plan_children_hashed`], [`validate_children_hashed`],
//!   [`decode_children_hashed`]: the reconcile plan and the declaration
//!   check with hashes the runtime has already computed;
//! * [`StableHasher`], [`SplitMix64`], [`panic_message`]: hashing, jitter and
//!   panic payloads, the same way in every crate of the workspace;
//! * [`known_state`]: a state name as the static name of a known state.

pub use crate::driver::{
    CollectStart, DecodedSpec, NodeDriver, Observation, StepInput, StepOutcome,
};
pub use crate::error::panic_message;
pub use crate::hash::StableHasher;
pub use crate::reconcile::{
    decode_children_hashed, plan_children_hashed, validate_children_hashed,
};
pub use crate::states::known_state;
pub use crate::supervision::random::SplitMix64;
