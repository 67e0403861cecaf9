//! Supervision as pure functions: restart policies and exit reasons, restart
//! strategies, the restart-intensity window, exponential backoff with
//! jitter, and the circuit breaker. Time is always an argument; the runtime
//! (`fsm-actors`) carries out what these decide.
//!
//! The semantics follow Erlang/OTP's `supervisor`:
//!
//! * a **permanent** child is always restarted, a **transient** child only
//!   after an abnormal exit, a **temporary** child never (not even as the
//!   bystander of a group restart);
//! * **one_for_one** restarts the failed child, **one_for_all** all
//!   children, **rest_for_one** the failed child and those started after it;
//!   bystanders are stopped in reverse start order and everything restarts
//!   in start order;
//! * more than `max_restarts` restarts within `period` and the supervisor
//!   gives up: it stops its children and fails itself, so its own parent's
//!   policy applies (escalation).
//!
//! Unlike OTP, restarts are spaced out by exponential backoff with jitter,
//! and a child stopped on purpose (removed from the declaration, shut down)
//! is never restarted.
//!
//! What a user configures ([`Supervision`], [`RestartPolicy`], [`Strategy`],
//! [`RestartIntensity`], [`Backoff`]) is also exported at the crate root;
//! the decisions ([`RestartWindow`], [`Circuit`], [`ExitReason`],
//! [`affected_children`]) are used by the runtime and named from here.

mod backoff;
mod circuit;
mod intensity;
mod policy;
pub(crate) mod random;

pub use backoff::Backoff;
pub use circuit::{Circuit, CircuitChange};
pub use intensity::{IntensityVerdict, RestartIntensity, RestartWindow};
pub use policy::{ExitReason, RestartPolicy, Strategy, Supervision, affected_children};
