//! The demo's workers: a simulated plant.
//!
//! ```text
//! plant ──▶ line (one per spec entry) ──▶ bridge (one per spec entry) ──┬▶ connection
//!                                                                       ├▶ read-flow
//!                                                                       └▶ write-flow (if it writes)
//! ```
//!
//! Every worker runs one simulated process (see [`process`]); parents map
//! their desired state onto their children (`running → running`,
//! `stopped → stopped`).

pub mod process;

use fsm_core::{BoxError, ChildSpec, WorkerRegistry};
use serde::{Deserialize, Serialize};

use crate::sim::SimIo;
use process::{Kind, ProcessWorker, config_hash};

/// The spec of the plant: its lines.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlantSpec {
    /// The lines, in start order.
    pub lines: Vec<LineSpec>,
}

/// One production line: its bridges.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineSpec {
    /// The line's name (its child name under the plant).
    pub name: String,
    /// The bridges, in start order.
    pub bridges: Vec<BridgeSpec>,
}

/// The spec a line worker receives.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineWorkerSpec {
    /// The bridges of the line.
    pub bridges: Vec<BridgeSpec>,
}

/// One bridge: a device connection plus the flows that read from and write
/// to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSpec {
    /// The bridge's name (its child name under the line).
    pub name: String,
    /// The device's address.
    pub host: String,
    /// The device's port.
    pub port: u16,
    /// The protocol (`modbus`, `opcua`, `s7`, ...).
    pub protocol: String,
    /// Tags read from the device.
    #[serde(default)]
    pub read: Vec<String>,
    /// Tags written to the device.
    #[serde(default)]
    pub write: Vec<String>,
}

/// The spec of a connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSpec {
    /// The device's address.
    pub host: String,
    /// The device's port.
    pub port: u16,
    /// The protocol.
    pub protocol: String,
}

/// The spec of a read or write flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// The device the flow talks to (`host:port`).
    pub device: String,
    /// The tags it moves.
    pub tags: Vec<String>,
}

/// A child whose desired state follows its parent's.
fn child<T: Serialize>(name: &str, worker_type: &str, spec: &T) -> Result<ChildSpec, BoxError> {
    Ok(ChildSpec::new(name, worker_type)
        .with_typed_spec(spec)?
        .map_state("running", "running")
        .map_state("stopped", "stopped"))
}

/// The plant: runs a historian and one line per spec entry.
pub struct Plant;

impl Kind for Plant {
    type Spec = PlantSpec;

    fn children(spec: &PlantSpec) -> Result<Vec<ChildSpec>, BoxError> {
        spec.lines
            .iter()
            .map(|l| {
                let bridges = l.bridges.clone();
                child(&l.name, "line", &LineWorkerSpec { bridges })
            })
            .collect()
    }
}

/// A line: runs a line controller and one bridge per spec entry.
pub struct Line;

impl Kind for Line {
    type Spec = LineWorkerSpec;

    fn children(spec: &LineWorkerSpec) -> Result<Vec<ChildSpec>, BoxError> {
        spec.bridges
            .iter()
            .map(|b| child(&b.name, "bridge", b))
            .collect()
    }
}

/// A bridge: runs a protocol converter, and declares a connection, a read
/// flow, and a write flow when it writes anything.
pub struct Bridge;

impl Kind for Bridge {
    type Spec = BridgeSpec;

    fn device(spec: &BridgeSpec) -> String {
        spec.host.clone()
    }

    fn config(spec: &BridgeSpec) -> u64 {
        // Tags belong to the flows: changing them does not restart the bridge.
        config_hash(&(&spec.host, spec.port, &spec.protocol))
    }

    fn children(spec: &BridgeSpec) -> Result<Vec<ChildSpec>, BoxError> {
        let connection = ConnectionSpec {
            host: spec.host.clone(),
            port: spec.port,
            protocol: spec.protocol.clone(),
        };
        let device = format!("{}:{}", spec.host, spec.port);
        let read = FlowSpec {
            device: device.clone(),
            tags: spec.read.clone(),
        };
        let mut children = vec![
            child("connection", "connection", &connection)?,
            child("read-flow", "read-flow", &read)?,
        ];
        if !spec.write.is_empty() {
            let write = FlowSpec {
                device,
                tags: spec.write.clone(),
            };
            children.push(child("write-flow", "write-flow", &write)?);
        }
        Ok(children)
    }
}

/// A device connection.
pub struct Connection;

impl Kind for Connection {
    type Spec = ConnectionSpec;

    fn device(spec: &ConnectionSpec) -> String {
        spec.host.clone()
    }

    fn config(spec: &ConnectionSpec) -> u64 {
        config_hash(spec)
    }
}

/// A data flow, reading tags from or writing tags to a device.
pub struct Flow;

impl Kind for Flow {
    type Spec = FlowSpec;

    fn device(spec: &FlowSpec) -> String {
        spec.device.split(':').next().unwrap_or_default().to_owned()
    }

    fn config(spec: &FlowSpec) -> u64 {
        config_hash(spec)
    }
}

/// The demo's registry: `plant`, `line`, `bridge`, `connection`, `read-flow`
/// and `write-flow`, all acting on `io`.
///
/// # Errors
///
/// Only if a type were registered twice, which this function does not do.
pub fn registry(io: &SimIo) -> Result<WorkerRegistry, fsm_core::RegistryError> {
    fn add<K: Kind>(
        r: &mut WorkerRegistry,
        name: &str,
        io: &SimIo,
    ) -> Result<(), fsm_core::RegistryError> {
        let io = io.clone();
        r.register(name, move |_| ProcessWorker::<K>::new(io.clone()))
            .map(drop)
    }
    let mut r = WorkerRegistry::new();
    add::<Plant>(&mut r, "plant", io)?;
    add::<Line>(&mut r, "line", io)?;
    add::<Bridge>(&mut r, "bridge", io)?;
    add::<Connection>(&mut r, "connection", io)?;
    add::<Flow>(&mut r, "read-flow", io)?;
    add::<Flow>(&mut r, "write-flow", io)?;
    Ok(r)
}
