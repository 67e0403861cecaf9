//! Example workers and the `fsm-demo` binary: a simulated plant of
//! production lines, bridges, device connections and data flows, driven by
//! fsmv2-rs.
//!
//! * [`workers`]: the workers and their registry;
//! * [`sim`]: the simulated I/O they act on;
//! * [`demo`]: the embedded root spec, the mid-run change and the readable
//!   tree printer used by `fsm-demo`.

#![forbid(unsafe_code)]

pub mod demo;
pub mod sim;
pub mod workers;
