//! Example workers and binaries of fsmv2-rs: `fsm-demo` drives a simulated
//! plant of production lines, bridges, device connections and data flows;
//! `fsm-trace` prints the spans the runtime recorded; `fsm-relay` serves a
//! local management relay.
//!
//! * [`workers`]: the workers and their registry;
//! * [`sim`]: the simulated I/O they act on;
//! * [`demo`]: the embedded root spec, the mid-run change and the readable
//!   tree printer used by `fsm-demo`;
//! * [`guide`]: the application `docs/guide.md` builds, step by step;
//! * [`communicator`]: the Communicator, connecting an instance to its
//!   management relay over HTTP (workers, client, channels);
//! * [`protocol`]: the management relay's wire protocol;
//! * [`relay`]: a local management relay with fault injection, served by
//!   `fsm-relay` and used by the tests;
//! * [`soak`]: the demo plant at thousands of workers, run for a long time
//!   under faults and sampled for leaks, used by `fsm-soak`;
//! * [`trace_view`]: reading and printing the span files of the JSON-lines
//!   trace exporter, used by `fsm-trace`.

#![forbid(unsafe_code)]
#![warn(unnameable_types)]

pub mod communicator;
pub mod demo;
pub mod guide;
pub mod protocol;
pub mod relay;
pub mod sim;
pub mod soak;
pub mod trace_view;
pub mod workers;
