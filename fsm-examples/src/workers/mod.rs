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
//! `stopped → stopped`). Configuration flows down as variables: a line sets
//! its `SUBNET`, a bridge's `host` is the template `{{ SUBNET }}.10`, and a
//! bridge hands its connection and flows `HOST`, `PORT`, `PROTOCOL` and
//! `TAGS` for their own templates. Every level adds to the ISA-95 location
//! (`acme.plant-a.packaging.line-1.press`).

pub mod process;

use fsm_core::{BoxError, ChildSpec, Value, WorkerRegistry};
use serde::{Deserialize, Serialize};

use crate::sim::SimIo;
use process::{Kind, ProcessWorker, config_hash};

/// The spec of the plant: its lines, each a child spec of worker type
/// `line` (with its own location, variables and spec).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlantSpec {
    /// The lines, in start order.
    pub lines: Vec<ChildSpec>,
}

/// The spec of a line: its bridges, each a child spec of worker type
/// `bridge`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineSpec {
    /// The bridges, in start order.
    pub bridges: Vec<ChildSpec>,
}

/// A bridge: a device connection plus the flows that read from and write to
/// it. Its fields may be templates (`"host": "{{ SUBNET }}.10"`), rendered
/// with the bridge's variables when it reads them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSpec {
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
    /// The device's `host:port`.
    pub address: String,
    /// The protocol.
    pub protocol: String,
}

/// The spec of a read or write flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// The flow's name in the broker.
    pub name: String,
    /// The device the flow talks to (`host:port`).
    pub device: String,
    /// The topic it publishes to or subscribes from.
    pub topic: String,
    /// The broker.
    pub broker: String,
    /// The tags it moves.
    pub tags: Vec<String>,
}

/// A child whose desired state follows its parent's.
fn follows_parent(child: ChildSpec) -> ChildSpec {
    child
        .map_state("running", "running")
        .map_state("stopped", "stopped")
}

/// The plant: runs a historian and the lines its spec lists.
pub struct Plant;

impl Kind for Plant {
    type Spec = PlantSpec;

    fn children(spec: &PlantSpec) -> Result<Vec<ChildSpec>, BoxError> {
        Ok(spec.lines.iter().cloned().map(follows_parent).collect())
    }
}

/// A line: runs a line controller and the bridges its spec lists.
pub struct Line;

impl Kind for Line {
    type Spec = LineSpec;

    fn children(spec: &LineSpec) -> Result<Vec<ChildSpec>, BoxError> {
        Ok(spec.bridges.iter().cloned().map(follows_parent).collect())
    }
}

/// A bridge: runs a protocol converter, and declares a connection, a read
/// flow, and a write flow when it writes anything. The children's specs are
/// templates over variables the bridge sets for them, rendered by each
/// child.
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
        let device = Value::map([
            ("HOST", Value::from(spec.host.as_str())),
            ("PORT", Value::from(spec.port)),
            ("PROTOCOL", Value::from(spec.protocol.as_str())),
        ]);
        let with_device = |child: ChildSpec| -> ChildSpec {
            let mut child = child;
            if let Value::Map(vars) = &device {
                child.variables.extend(vars.clone());
            }
            follows_parent(child)
        };
        let connection = ChildSpec::new("connection", "connection").with_spec(Value::map([
            ("address", Value::from("{{ HOST }}:{{ PORT }}")),
            ("protocol", Value::from("{{ PROTOCOL }}")),
        ]));
        let flow = |name: &str, worker_type: &str, direction: &str, tags: &[String]| {
            ChildSpec::new(name, worker_type)
                .with_variable("TAGS", Value::from(tags.to_vec()))
                .with_spec(Value::map([
                    ("name", Value::from(format!("{{{{ internal.location_path }}}}.{direction}"))),
                    ("device", Value::from("{{ HOST }}:{{ PORT }}")),
                    (
                        "topic",
                        Value::from(format!(
                            "umh/v1/{{{{ internal.location_path | replace: \".\", \"/\" }}}}/{direction}"
                        )),
                    ),
                    ("broker", Value::from("{{ BROKER }}")),
                    ("tags", Value::from("{{ TAGS }}")),
                ]))
        };
        let mut children = vec![
            with_device(connection),
            with_device(flow("read-flow", "read-flow", "read", &spec.read)),
        ];
        if !spec.write.is_empty() {
            children.push(with_device(flow(
                "write-flow",
                "write-flow",
                "write",
                &spec.write,
            )));
        }
        Ok(children)
    }
}

/// A device connection.
pub struct Connection;

impl Kind for Connection {
    type Spec = ConnectionSpec;

    fn device(spec: &ConnectionSpec) -> String {
        spec.address
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned()
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

#[cfg(test)]
mod tests {
    use super::*;
    use fsm_core::{Map, NodePath};
    use fsm_templates::{InternalVars, SpecRenderer, Templates, VariableBundle};

    /// Renders a declared child's spec the way the child will: with the
    /// variables it inherits and its own.
    fn render_child<T: serde::de::DeserializeOwned>(
        child: &ChildSpec,
        inherited: &Map,
        location: &str,
    ) -> T {
        let mut user = inherited.clone();
        user.extend(child.variables.clone());
        let path = NodePath::parse("plant/line-1/press").child(&child.name);
        let vars = VariableBundle::default()
            .with_user(user)
            .with_internal(
                InternalVars::new("1", path.clone(), "x", 0).with_location_path(location),
            )
            .flatten();
        let templates = Templates::new();
        child
            .user_spec
            .decode_with(&SpecRenderer::new(&templates, &vars, &path))
            .unwrap()
    }

    #[test]
    fn a_bridge_configures_its_connection_and_flows_through_variables() {
        let bridge = BridgeSpec {
            host: "10.0.1.10".into(),
            port: 502,
            protocol: "modbus".into(),
            read: vec!["temperature".into()],
            write: vec!["setpoint".into()],
        };
        let children = Bridge::children(&bridge).unwrap();
        let names: Vec<&str> = children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["connection", "read-flow", "write-flow"]);
        let inherited = Map::from([("BROKER".to_owned(), Value::from("tcp://b:1883"))]);
        let location = "acme.plant-a.packaging.line-1.press";
        let conn: ConnectionSpec = render_child(&children[0], &inherited, location);
        assert_eq!(conn.address, "10.0.1.10:502");
        assert_eq!(conn.protocol, "modbus");
        let read: FlowSpec = render_child(&children[1], &inherited, location);
        assert_eq!(read.name, "acme.plant-a.packaging.line-1.press.read");
        assert_eq!(
            read.topic,
            "umh/v1/acme/plant-a/packaging/line-1/press/read"
        );
        assert_eq!(read.device, "10.0.1.10:502");
        assert_eq!(read.broker, "tcp://b:1883");
        assert_eq!(read.tags, ["temperature"]);
        let write: FlowSpec = render_child(&children[2], &inherited, location);
        assert_eq!(write.tags, ["setpoint"]);
    }
}
