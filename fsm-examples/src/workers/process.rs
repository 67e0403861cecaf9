//! The lifecycle every demo worker shares: it runs one simulated process and
//! moves `stopped → starting → running` (and `running → stopping →
//! stopped`) through idempotent start and stop actions. A configuration
//! change while running starts the process again with the new
//! configuration.
//!
//! What differs between the demo's workers (their spec, their device, what
//! configuration their process needs, which children they declare) is a
//! [`Kind`]; [`ProcessWorker<K>`] is the one worker built on it.

use std::marker::PhantomData;

use fsm_core::{
    BoxError, ChildSpec, CollectContext, DeriveContext, DesiredState, State, StopContext,
    TickContext, Transition, Value, Worker, action,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::sim::{ProcStatus, SimIo};

/// What makes one kind of demo worker different from another.
pub trait Kind: Send + Sync + 'static {
    /// The typed spec.
    type Spec: DeserializeOwned + Send + Sync + 'static;

    /// The device the process talks to (empty when none).
    fn device(_spec: &Self::Spec) -> String {
        String::new()
    }

    /// The hash of the configuration the process must run with.
    fn config(_spec: &Self::Spec) -> u64 {
        0
    }

    /// The children this worker declares.
    ///
    /// # Errors
    ///
    /// When a child spec cannot be built.
    fn children(_spec: &Self::Spec) -> Result<Vec<ChildSpec>, BoxError> {
        Ok(Vec::new())
    }
}

/// A worker that runs one simulated process, of kind `K`.
pub struct ProcessWorker<K> {
    io: SimIo,
    _kind: PhantomData<fn() -> K>,
}

impl<K> ProcessWorker<K> {
    /// A worker acting on `io`.
    #[must_use]
    pub fn new(io: SimIo) -> Self {
        Self {
            io,
            _kind: PhantomData,
        }
    }
}

fsm_core::states! {
    /// The lifecycle of a process-running worker.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Lifecycle {
        /// Not running.
        Stopped,
        /// Start (or reconfiguration) requested.
        Starting,
        /// Running with the wanted configuration.
        Running,
        /// Stop requested.
        Stopping,
    }
}

/// The stable hash of any serialisable configuration.
#[must_use]
pub fn config_hash<T: Serialize + ?Sized>(config: &T) -> u64 {
    let mut h = fsm_core::runtime::StableHasher::new();
    Value::from_serialize(config)
        .unwrap_or_default()
        .stable_hash(&mut h);
    h.finish_u64()
}

impl<K: Kind> Worker for ProcessWorker<K> {
    type Spec = K::Spec;
    type Observed = ProcStatus;
    type State = Lifecycle;

    fn initial_state(&self) -> Lifecycle {
        Lifecycle::Stopped
    }

    async fn collect(&self, ctx: &CollectContext<'_, K::Spec>) -> Result<ProcStatus, BoxError> {
        let device = K::device(ctx.spec());
        Ok(self.io.status(ctx.path().as_str(), &device).await?)
    }

    fn derive_desired(
        &self,
        spec: &K::Spec,
        _ctx: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        Ok(DesiredState::new("running").with_children(K::children(spec)?))
    }

    async fn on_stop(&self, ctx: &StopContext<'_, K::Spec>) {
        // Leave nothing running behind.
        let _ = self.io.stop(ctx.path().as_str()).await;
    }
}

impl<K: Kind> State<ProcessWorker<K>> for Lifecycle {
    fn next(&self, s: &TickContext<'_, ProcessWorker<K>>) -> Transition<Lifecycle> {
        let observed = s.observed();
        let wanted = K::config(s.spec());
        match s.desired() {
            "running" if observed.running && observed.config == wanted => {
                if *self == Lifecycle::Running {
                    Transition::stay()
                } else {
                    Transition::to(Lifecycle::Running)
                        .because("the process runs with the wanted configuration")
                }
            }
            "running" => {
                let (io, device) = (s.worker().io.clone(), K::device(s.spec()));
                Transition::to(Lifecycle::Starting)
                    .with_action(action("start", move |ctx| async move {
                        Ok(io.start(ctx.path().as_str(), &device, wanted).await?)
                    }))
                    .because(if observed.running {
                        "the configuration changed"
                    } else {
                        "the process is not running"
                    })
            }
            "stopped" if !observed.running => {
                if *self == Lifecycle::Stopped {
                    Transition::stay()
                } else {
                    Transition::to(Lifecycle::Stopped).because("the process has stopped")
                }
            }
            "stopped" => {
                let io = s.worker().io.clone();
                Transition::to(Lifecycle::Stopping)
                    .with_action(action("stop", move |ctx| async move {
                        Ok(io.stop(ctx.path().as_str()).await?)
                    }))
                    .because("the process should not run")
            }
            _ => Transition::stay().because("unknown desired state; staying put"),
        }
    }
}
