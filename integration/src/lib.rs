//! Test workers for the scenario tests: a configurable [`Probe`] worker whose
//! whole behaviour (children, target state, action and collect behaviour)
//! comes from its spec, and a [`Journal`] that records what happened in
//! which order.

#![forbid(unsafe_code)]

pub mod probe;

pub mod scenario;

pub use probe::{
    ActionMode, CollectMode, Event, Fault, Journal, Probe, ProbeSpec, ProbeWorld, probe_registry,
    probe_spec,
};
pub use scenario::{WaitError, render, test_config, wait_for_snapshot, wait_for_stats};
