//! The baseline: the same tree [`Shape`] as plain ractor actors, with
//! nothing of the framework: each actor spawns its children with
//! `spawn_linked` once started, forwards a `Tick` to them, and counts the
//! tick in a shared [`Counter`] — the same counter, at the same point (after
//! forwarding), as the scale worker's state machine step.
//!
//! ```text
//!   BareTree::tick ──Tick──▶ root ──Tick──▶ children ──Tick──▶ ...
//!                             │ counts the tick after forwarding it
//!                             ▼
//!                     BareWorld::ticks (one fetch_add per node per tick)
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::{Counter, Shape};

/// What every bare actor of a tree shares.
#[derive(Debug, Default)]
pub struct BareWorld {
    /// Actors started: counted at the end of `post_start`, once the
    /// actor's own task has run and it has spawned its children. (ractor
    /// runs `pre_start` inside the parent's `spawn_linked`; the new actor's
    /// task runs later. Counted there, the last of 10,000 actors was
    /// constructed while half to seven eighths of them had not run yet.)
    pub started: Counter,
    /// Ticks handled (one per actor per tick).
    pub ticks: Counter,
    /// Actors whose state is alive now.
    pub alive: AtomicU64,
}

/// The one message of a bare actor.
#[derive(Debug)]
pub enum BareMsg {
    /// Forward to the children, then count.
    Tick,
}

/// The bare tree could not be spawned, ticked or stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bare ractor tree: {0}")]
pub struct BareError(String);

struct BareNode;

struct BareArgs {
    shape: Arc<Shape>,
    level: u32,
    index: u64,
    world: Arc<BareWorld>,
}

/// Decrements [`BareWorld::alive`] when the actor's state is dropped.
struct AliveGuard(Arc<BareWorld>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::Relaxed);
    }
}

struct BareState {
    children: Vec<ActorRef<BareMsg>>,
    shape: Arc<Shape>,
    level: u32,
    index: u64,
    world: Arc<BareWorld>,
    _alive: AliveGuard,
}

impl Actor for BareNode {
    type Msg = BareMsg;
    type State = BareState;
    type Arguments = BareArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<BareMsg>,
        args: BareArgs,
    ) -> Result<BareState, ActorProcessingErr> {
        args.world.alive.fetch_add(1, Ordering::Relaxed);
        Ok(BareState {
            children: Vec::new(),
            _alive: AliveGuard(Arc::clone(&args.world)),
            shape: args.shape,
            level: args.level,
            index: args.index,
            world: args.world,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<BareMsg>,
        state: &mut BareState,
    ) -> Result<(), ActorProcessingErr> {
        let children = state.shape.children_of(state.level, state.index);
        state
            .children
            .reserve(usize::try_from(children.end - children.start)?);
        for index in children {
            let args = BareArgs {
                shape: Arc::clone(&state.shape),
                level: state.level + 1,
                index,
                world: Arc::clone(&state.world),
            };
            let (child, _) = Actor::spawn_linked(None, BareNode, args, myself.get_cell()).await?;
            state.children.push(child);
        }
        state.world.started.hit();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<BareMsg>,
        msg: BareMsg,
        state: &mut BareState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BareMsg::Tick => {
                for child in &state.children {
                    let _ = child.cast(BareMsg::Tick);
                }
                state.world.ticks.hit();
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<BareMsg>,
        _event: SupervisionEvent,
        _state: &mut BareState,
    ) -> Result<(), ActorProcessingErr> {
        // Children end only when this actor stops them.
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<BareMsg>,
        _state: &mut BareState,
    ) -> Result<(), ActorProcessingErr> {
        myself.stop_children_and_wait(None, None).await;
        Ok(())
    }
}

/// A running bare tree.
pub struct BareTree {
    root: ActorRef<BareMsg>,
    world: Arc<BareWorld>,
}

impl BareTree {
    /// Spawns the root; the root spawns its children once started, and so
    /// on down. Wait for [`BareWorld::started`] to reach the shape's size to
    /// know that every actor runs.
    ///
    /// # Errors
    ///
    /// When the root fails to start.
    pub async fn spawn(shape: &Shape) -> Result<Self, BareError> {
        let world = Arc::new(BareWorld::default());
        let args = BareArgs {
            shape: Arc::new(shape.clone()),
            level: 0,
            index: 0,
            world: Arc::clone(&world),
        };
        let (root, _) = Actor::spawn(None, BareNode, args)
            .await
            .map_err(|e| BareError(e.to_string()))?;
        Ok(Self { root, world })
    }

    /// The counters.
    #[must_use]
    pub fn world(&self) -> &Arc<BareWorld> {
        &self.world
    }

    /// Sends the root a tick.
    ///
    /// # Errors
    ///
    /// When the root is gone.
    pub fn tick(&self) -> Result<(), BareError> {
        self.root
            .cast(BareMsg::Tick)
            .map_err(|e| BareError(e.to_string()))
    }

    /// Stops the tree, children before parents, and waits for it.
    ///
    /// # Errors
    ///
    /// When the root does not stop within `timeout`.
    pub async fn stop(self, timeout: Duration) -> Result<(), BareError> {
        self.root
            .stop_and_wait(None, Some(timeout))
            .await
            .map_err(|e| BareError(e.to_string()))
    }
}
