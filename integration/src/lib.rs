//! Test workers for the scenario tests: a configurable [`Probe`] worker whose
//! whole behaviour (children, target state, action and collect behaviour)
//! comes from its spec, and a [`Journal`] that records what happened in
//! which order.
//!
//! [`scale`] holds the pieces of the scale harness (the `scale` binary): a
//! trivial worker that derives its children from a few numbers, and the
//! same tree as bare ractor actors.
//!
//! [`exposition`] parses the Prometheus text format strictly, to check
//! what the metrics endpoint serves.

#![forbid(unsafe_code)]

pub mod exposition;

pub mod probe;

pub mod scenario;

pub mod scale;

pub use probe::{
    ActionMode, CollectMode, Event, Fault, Journal, Probe, ProbeSpec, ProbeWorld, probe_registry,
    probe_spec, quiet_probe_panics, small_tree,
};
pub use scenario::{
    WaitError, giving_up, in_memory_meter, render, test_config, wait_for_snapshot, wait_for_stats,
};
