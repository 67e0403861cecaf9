//! [`SimIo`]: the simulated outside world of the demo: processes that take
//! a while to start and stop, and devices that may be unreachable. It stands
//! in for the real I/O a worker would do (a PLC connection, a protocol
//! converter, a data flow).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fsm_core::runtime::StableHasher;

/// The status of one simulated process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// Whether it runs.
    pub running: bool,
    /// The hash of the configuration it runs with.
    pub config: u64,
}

/// A simulated process failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// The device behind the process does not answer.
    #[error("device `{0}` is unreachable")]
    Unreachable(String),
    /// The simulated world is poisoned (a panic while holding its lock).
    #[error("simulated I/O is unavailable")]
    Unavailable,
}

#[derive(Default)]
struct World {
    procs: HashMap<String, ProcStatus>,
    unreachable: HashSet<String>,
}

/// The simulated world, shared by every demo worker. Cheap to clone.
#[derive(Clone)]
pub struct SimIo {
    world: Arc<Mutex<World>>,
    /// How long a status query takes.
    pub query_latency: Duration,
    /// How long a start or stop takes, at most (each process gets a stable
    /// share of it, so starts do not all finish at once).
    pub action_latency: Duration,
}

impl Default for SimIo {
    fn default() -> Self {
        Self {
            world: Arc::default(),
            query_latency: Duration::from_millis(1),
            action_latency: Duration::from_millis(20),
        }
    }
}

impl SimIo {
    fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> Result<T, SimError> {
        self.world
            .lock()
            .map(|mut w| f(&mut w))
            .map_err(|_| SimError::Unavailable)
    }

    fn start_latency(&self, id: &str) -> Duration {
        let mut h = StableHasher::new();
        h.write_str(id);
        let max = self.action_latency.as_millis().max(1) as u64;
        Duration::from_millis(1 + h.finish_u64() % max)
    }

    /// Queries a process.
    ///
    /// # Errors
    ///
    /// [`SimError::Unreachable`] if its device has been made unreachable.
    pub async fn status(&self, id: &str, device: &str) -> Result<ProcStatus, SimError> {
        tokio::time::sleep(self.query_latency).await;
        self.with(|w| {
            if w.unreachable.contains(device) {
                return Err(SimError::Unreachable(device.to_owned()));
            }
            Ok(w.procs.get(id).copied().unwrap_or_default())
        })?
    }

    /// Starts (or reconfigures) a process. Idempotent.
    ///
    /// # Errors
    ///
    /// [`SimError::Unreachable`] if its device has been made unreachable.
    pub async fn start(&self, id: &str, device: &str, config: u64) -> Result<(), SimError> {
        tokio::time::sleep(self.start_latency(id)).await;
        self.with(|w| {
            if w.unreachable.contains(device) {
                return Err(SimError::Unreachable(device.to_owned()));
            }
            w.procs.insert(
                id.to_owned(),
                ProcStatus {
                    running: true,
                    config,
                },
            );
            Ok(())
        })?
    }

    /// Stops a process. Idempotent.
    ///
    /// # Errors
    ///
    /// [`SimError::Unavailable`] only.
    pub async fn stop(&self, id: &str) -> Result<(), SimError> {
        tokio::time::sleep(self.start_latency(id) / 2).await;
        self.with(|w| {
            w.procs.remove(id);
        })
    }

    /// Makes a device (un)reachable, for demonstrating failures.
    pub fn set_reachable(&self, device: &str, reachable: bool) {
        let _ = self.with(|w| {
            if reachable {
                w.unreachable.remove(device);
            } else {
                w.unreachable.insert(device.to_owned());
            }
        });
    }

    /// Whether a process runs now (for tests).
    #[must_use]
    pub fn is_running(&self, id: &str) -> bool {
        self.with(|w| w.procs.get(id).is_some_and(|p| p.running))
            .unwrap_or(false)
    }

    /// How many processes run now.
    #[must_use]
    pub fn running_count(&self) -> usize {
        self.with(|w| w.procs.values().filter(|p| p.running).count())
            .unwrap_or(0)
    }
}
