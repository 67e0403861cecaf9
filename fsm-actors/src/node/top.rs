//! The invisible node above the root: a built-in worker whose spec is the
//! root's [`ChildSpec`] and whose only child is the root. It makes the root
//! an ordinary child, so that replacing, restarting and stopping the root
//! reuse the same code as every other node.

use fsm_core::{
    BoxError, ChildSpec, CollectContext, DeriveContext, DesiredState, NodePath, State, TickContext,
    Transition, Value, Worker, WorkerRegistry, runtime::NodeDriver,
};

/// The worker type of the top node. Not registrable by users (the registry
/// refuses nothing, but the top node never looks it up).
pub(crate) const TOP_WORKER_TYPE: &str = "fsm.top";
const RUNNING: &str = "running";

pub(crate) struct TopWorker;

#[derive(Clone, Debug)]
pub(crate) struct TopRunning;

impl Worker for TopWorker {
    type Spec = ChildSpec;
    type Observed = ();
    type State = TopRunning;

    fn initial_state(&self) -> TopRunning {
        TopRunning
    }

    async fn collect(&self, _ctx: &CollectContext<'_, ChildSpec>) -> Result<(), BoxError> {
        Ok(())
    }

    fn derive_desired(
        &self,
        root: &ChildSpec,
        _ctx: &DeriveContext<'_>,
    ) -> Result<DesiredState, BoxError> {
        Ok(DesiredState::new(RUNNING).with_child(root.clone()))
    }
}

impl fsm_core::StateNames for TopRunning {
    const NAMES: &'static [&'static str] = &[RUNNING];

    fn name(&self) -> &'static str {
        RUNNING
    }
}

impl State<TopWorker> for TopRunning {
    fn next(&self, _snapshot: &TickContext<'_, TopWorker>) -> Transition<TopRunning> {
        Transition::stay()
    }
}

/// The top node's own spec, wrapping the root spec.
pub(crate) fn top_spec(root: &ChildSpec) -> Result<ChildSpec, fsm_core::ValueError> {
    Ok(ChildSpec::new("", TOP_WORKER_TYPE).with_spec(Value::from_serialize(root)?))
}

/// The top node's driver.
pub(crate) fn top_driver(root: &ChildSpec) -> Result<Box<dyn NodeDriver>, fsm_core::SpecError> {
    let mut registry = WorkerRegistry::new();
    // A fresh registry cannot already hold the type.
    let _ = registry.register(TOP_WORKER_TYPE, |_| TopWorker);
    let spec = top_spec(root).map_err(|e| fsm_core::SpecError::Undecodable {
        path: NodePath::top(),
        worker_type: TOP_WORKER_TYPE.to_owned(),
        message: e.to_string(),
    })?;
    registry.create(&NodePath::top(), &spec)
}
