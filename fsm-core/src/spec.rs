//! The declarative data: [`ChildSpec`] (what a child is) and
//! [`DesiredState`] (what a node wants: its own state and its children).
//!
//! Both are plain serde types: a desired tree can be printed as JSON, encoded
//! with the [`codec`](crate::codec), stored, and a tree restored from it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hash::{SpecHash, StableHasher};
use crate::placement::Placement;
use crate::supervision::{RestartPolicy, Supervision};
use crate::value::{Map, Value, ValueError};

/// The declaration of one child: its name (unique among its siblings), the
/// worker type that runs it, its user spec, and how the parent's desired
/// state maps onto the child's.
///
/// # Examples
///
/// ```
/// use fsm_core::{ChildSpec, Value};
///
/// let conn = ChildSpec::new("connection", "connection")
///     .with_spec(Value::map([("host", "10.0.0.5".into()), ("port", 502.into())]))
///     .map_state("running", "running")
///     .map_state("stopped", "stopped");
/// assert_eq!(conn.mapped_state("running"), Some("running"));
/// assert_eq!(conn.mapped_state("degraded"), None);
/// ```
///
/// Read from JSON (or any self-describing format), an unknown key is an
/// error, so that a misspelt `state_maping` is not silently ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ChildSpec {
    /// Unique among siblings; part of the node's path. May not be empty or
    /// contain `/`.
    pub name: String,
    /// The worker type, as registered in the
    /// [`WorkerRegistry`](crate::WorkerRegistry).
    pub worker_type: String,
    /// The child's configuration; decoded into the worker's typed `Spec`.
    #[serde(default)]
    pub user_spec: Value,
    /// Parent desired state → this child's desired state. When the parent's
    /// desired state has an entry here, it overrides the state the child
    /// derives for itself.
    #[serde(default)]
    pub state_mapping: BTreeMap<String, String>,
    /// When the child is restarted after it ends.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Variables for the child and its subtree, overlaid on those it
    /// inherits (see `fsm-templates`).
    #[serde(default)]
    pub variables: Map,
    /// The ISA-95 location levels the child adds to its parent's (`site`,
    /// `area`, `line`, ...); it may not change a level its parent set.
    #[serde(default)]
    pub location: BTreeMap<String, String>,
    /// Where the child runs: `None` (the default) beside its parent, as
    /// every child did before clusters; otherwise on a node of the cluster
    /// (see [`Placement`] and `docs/cluster.md`). Part of the declaration:
    /// changing it moves the subtree.
    #[serde(default)]
    pub placement: Option<Placement>,
}

impl ChildSpec {
    /// A child with an empty (null) spec and no state mapping.
    #[must_use]
    pub fn new(name: impl Into<String>, worker_type: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            worker_type: worker_type.into(),
            user_spec: Value::Null,
            state_mapping: BTreeMap::new(),
            restart: RestartPolicy::Permanent,
            variables: Map::new(),
            location: BTreeMap::new(),
            placement: None,
        }
    }

    /// Places the child on a node of the cluster (see [`Placement`]).
    #[must_use]
    pub fn with_placement(mut self, placement: Placement) -> Self {
        self.placement = Some(placement);
        self
    }

    /// Sets one variable for the child and its subtree.
    #[must_use]
    pub fn with_variable(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.variables.insert(name.into(), value.into());
        self
    }

    /// Sets one location level (`enterprise`, `site`, `area`, `line`,
    /// `work_cell`, or a level number).
    #[must_use]
    pub fn with_location(mut self, level: impl Into<String>, name: impl Into<String>) -> Self {
        self.location.insert(level.into(), name.into());
        self
    }

    /// Sets the restart policy.
    #[must_use]
    pub fn with_restart(mut self, restart: RestartPolicy) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the user spec.
    #[must_use]
    pub fn with_spec(mut self, spec: impl Into<Value>) -> Self {
        self.user_spec = spec.into();
        self
    }

    /// Sets the user spec from any serialisable value (typically the child
    /// worker's own `Spec` type).
    ///
    /// # Errors
    ///
    /// See [`Value::from_serialize`].
    pub fn with_typed_spec<T: Serialize>(mut self, spec: &T) -> Result<Self, ValueError> {
        self.user_spec = Value::from_serialize(spec)?;
        Ok(self)
    }

    /// Adds one state-mapping entry: when the parent wants `parent_state`,
    /// this child wants `child_state`.
    #[must_use]
    pub fn map_state(
        mut self,
        parent_state: impl Into<String>,
        child_state: impl Into<String>,
    ) -> Self {
        self.state_mapping
            .insert(parent_state.into(), child_state.into());
        self
    }

    /// The state this child should be in when the parent wants
    /// `parent_desired`, if the mapping says.
    #[must_use]
    pub fn mapped_state(&self, parent_desired: &str) -> Option<&str> {
        self.state_mapping.get(parent_desired).map(String::as_str)
    }

    /// The stable content hash of the whole declaration.
    #[must_use]
    pub fn hash(&self) -> SpecHash {
        let mut h = StableHasher::new();
        self.stable_hash(&mut h);
        SpecHash::from_u128(h.finish())
    }

    /// Feeds the declaration into a hasher (see [`ChildSpec::hash`]).
    pub fn stable_hash(&self, h: &mut StableHasher) {
        h.write_str(&self.name);
        h.write_str(&self.worker_type);
        self.user_spec.stable_hash(h);
        h.write_u64(self.state_mapping.len() as u64);
        for (k, v) in &self.state_mapping {
            h.write_str(k);
            h.write_str(v);
        }
        h.write_u8(match self.restart {
            RestartPolicy::Permanent => 0,
            RestartPolicy::Transient => 1,
            RestartPolicy::Temporary => 2,
        });
        Value::stable_hash_map(&self.variables, h);
        h.write_u64(self.location.len() as u64);
        for (k, v) in &self.location {
            h.write_str(k);
            h.write_str(v);
        }
        // Only when set: a spec without a placement hashes as it did before
        // placements existed.
        if let Some(placement) = &self.placement {
            h.write_u8(0xb1);
            placement.stable_hash(h);
        }
    }
}

/// What a node wants: its own target state and the children it declares.
/// Returned by [`Worker::derive_desired`](crate::Worker::derive_desired).
///
/// # Examples
///
/// ```
/// use fsm_core::{ChildSpec, DesiredState};
///
/// let desired = DesiredState::new("running")
///     .with_child(ChildSpec::new("connection", "connection"))
///     .with_child(ChildSpec::new("read-flow", "flow"));
/// assert_eq!(desired.children.len(), 2);
/// ```
///
/// Like [`ChildSpec`], it refuses unknown keys when it is read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DesiredState {
    /// The node's own target state (the name of one of its states).
    pub state: String,
    /// The children the node declares, in start order.
    #[serde(default)]
    pub children: Vec<ChildSpec>,
    /// How the node supervises its children; the tree's default when `None`.
    #[serde(default)]
    pub supervision: Option<Supervision>,
}

impl DesiredState {
    /// A desired state with no children.
    #[must_use]
    pub fn new(state: impl Into<String>) -> Self {
        Self {
            state: state.into(),
            children: Vec::new(),
            supervision: None,
        }
    }

    /// Sets how the node supervises its children.
    #[must_use]
    pub fn with_supervision(mut self, supervision: Supervision) -> Self {
        self.supervision = Some(supervision);
        self
    }

    /// Adds a child declaration.
    #[must_use]
    pub fn with_child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }

    /// Adds several child declarations.
    #[must_use]
    pub fn with_children(mut self, children: impl IntoIterator<Item = ChildSpec>) -> Self {
        self.children.extend(children);
        self
    }

    /// The stable hash of the children declarations (not the own state): when
    /// it is unchanged, there is nothing to reconcile.
    #[must_use]
    pub fn children_hash(&self) -> SpecHash {
        SpecHash::of_list(&self.child_hashes())
    }

    /// Each child declaration's [`ChildSpec::hash`], in order. Computed once
    /// per derivation, they serve the reconcile
    /// ([`validate_children_hashed`](crate::runtime::validate_children_hashed) or
    /// [`decode_children_hashed`](crate::runtime::decode_children_hashed),
    /// [`plan_children_hashed`](crate::runtime::plan_children_hashed)) and, combined
    /// with [`SpecHash::of_list`], equal [`DesiredState::children_hash`].
    #[must_use]
    pub fn child_hashes(&self) -> Vec<SpecHash> {
        self.children.iter().map(ChildSpec::hash).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_changes_with_every_field() {
        let base = ChildSpec::new("a", "t")
            .with_spec(Value::from(1))
            .map_state("x", "y");
        let h = base.hash();
        assert_eq!(h, base.clone().hash());
        assert_ne!(
            h,
            ChildSpec {
                name: "b".into(),
                ..base.clone()
            }
            .hash()
        );
        assert_ne!(
            h,
            ChildSpec {
                worker_type: "u".into(),
                ..base.clone()
            }
            .hash()
        );
        assert_ne!(h, base.clone().with_spec(Value::from(2)).hash());
        assert_ne!(h, base.clone().map_state("x", "z").hash());
        assert_ne!(
            h,
            base.clone().with_restart(RestartPolicy::Transient).hash()
        );
        assert_ne!(h, base.clone().with_variable("IP", "x").hash());
        assert_ne!(h, base.clone().with_location("site", "a").hash());
        let placed = base.clone().with_placement(Placement::node("b"));
        assert_ne!(h, placed.hash());
        assert_ne!(
            placed.hash(),
            base.clone().with_placement(Placement::node("c")).hash()
        );
        assert_ne!(
            placed.hash(),
            base.clone().with_placement(Placement::label("b")).hash()
        );
    }

    #[test]
    fn a_spec_without_a_placement_hashes_as_before_placements_existed() {
        // Pinned: the hash of a spec without a placement is that of the
        // format before the field was added, so stored hashes stay valid.
        let spec = ChildSpec::new("a", "t").with_spec(Value::from(1));
        let mut h = StableHasher::new();
        h.write_str("a");
        h.write_str("t");
        Value::from(1).stable_hash(&mut h);
        h.write_u64(0);
        h.write_u8(0);
        Value::stable_hash_map(&Map::new(), &mut h);
        h.write_u64(0);
        assert_eq!(spec.hash(), SpecHash::from_u128(h.finish()));
    }

    #[test]
    fn a_placement_is_read_from_json_and_round_trips_every_format() {
        let spec: ChildSpec = serde_json::from_str(
            r#"{"name":"line-1","worker_type":"line","placement":{"node":"b"}}"#,
        )
        .unwrap();
        assert_eq!(spec.placement, Some(Placement::node("b")));
        let spec: ChildSpec = serde_json::from_str(
            r#"{"name":"line-1","worker_type":"line","placement":{"label":"edge"}}"#,
        )
        .unwrap();
        assert_eq!(spec.placement, Some(Placement::label("edge")));
        let err = serde_json::from_str::<ChildSpec>(
            r#"{"name":"l","worker_type":"line","placement":{"nod":"b"}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `nod`"), "{err}");
        let bytes = crate::codec::encode_spec(&spec).unwrap();
        assert_eq!(crate::codec::decode_spec(&bytes).unwrap(), spec);
        let v = Value::from_serialize(&spec).unwrap();
        assert_eq!(v.decode::<ChildSpec>().unwrap(), spec);
    }

    #[test]
    fn misspelt_keys_are_refused_naming_the_key() {
        for (json, key) in [
            (
                r#"{"name":"a","worker_type":"t","state_maping":{"running":"up"}}"#,
                "state_maping",
            ),
            (
                r#"{"name":"a","worker_type":"t","variabels":{"IP":"x"}}"#,
                "variabels",
            ),
        ] {
            let err = serde_json::from_str::<ChildSpec>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("unknown field `{key}`")), "{err}");
        }
        let err = serde_json::from_str::<DesiredState>(r#"{"state":"s","chidlren":[]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `chidlren`"), "{err}");
        // Inside a spec, the error names where the child is.
        let parent = Value::map([(
            "children",
            Value::List(vec![Value::map([
                ("name", Value::from("a")),
                ("worker_type", Value::from("t")),
                ("variabels", Value::map([("IP", Value::from("x"))])),
            ])]),
        )]);
        #[derive(Debug, Deserialize)]
        struct Parent {
            #[allow(dead_code)]
            children: Vec<ChildSpec>,
        }
        let err = parent.decode::<Parent>().unwrap_err();
        assert_eq!(err.path(), Some("children[0].variabels"), "{err}");
        assert!(err.message().contains("unknown field `variabels`"), "{err}");
    }

    #[test]
    fn refusing_unknown_keys_leaves_every_format_round_tripping() {
        let spec = ChildSpec::new("a", "t")
            .with_spec(Value::map([("port", Value::from(502))]))
            .map_state("running", "up")
            .with_restart(RestartPolicy::Transient)
            .with_variable("IP", "10.0.0.5")
            .with_location("site", "s");
        let desired = DesiredState::new("running")
            .with_child(spec.clone())
            .with_supervision(Supervision::default());
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<ChildSpec>(&json).unwrap(), spec);
        let json = serde_json::to_string(&desired).unwrap();
        assert_eq!(
            serde_json::from_str::<DesiredState>(&json).unwrap(),
            desired
        );
        let bytes = crate::codec::encode_spec(&spec).unwrap();
        assert_eq!(crate::codec::decode_spec(&bytes).unwrap(), spec);
        let bytes = crate::codec::encode_desired(&desired).unwrap();
        assert_eq!(crate::codec::decode_desired(&bytes).unwrap(), desired);
        // And through a `Value`, as a parent's spec carries its children.
        let v = Value::from_serialize(&desired).unwrap();
        assert_eq!(v.decode::<DesiredState>().unwrap(), desired);
    }

    #[test]
    fn json_nested_too_deep_is_an_error_not_a_stack_overflow() {
        // serde_json stops at 128 levels itself; the user spec's own bound
        // (`Value::MAX_DEPTH`) applies in every other format too.
        let levels = 100_000;
        let json = format!(
            r#"{{"name":"a","worker_type":"t","user_spec":{}null{}}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        );
        let result = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || serde_json::from_str::<ChildSpec>(&json).map(drop))
            .unwrap()
            .join()
            .unwrap();
        let err = result.unwrap_err().to_string();
        assert!(err.contains("recursion limit"), "{err}");
    }

    #[test]
    fn floats_in_a_spec_survive_a_json_round_trip_exactly() {
        // An integer beyond u64 is read as a float; written out as
        // 1.845674402337204e25, it must read back as the same float, or
        // the spec's hash changes on every round trip through a file.
        let input = r#"{"name":"a","worker_type":"t","user_spec":[18456744023372036854775808,1e308,-0.0,5e-324,0.1]}"#;
        let spec: ChildSpec = serde_json::from_str(input).unwrap();
        let written = serde_json::to_string(&spec).unwrap();
        let again: ChildSpec = serde_json::from_str(&written).unwrap();
        assert_eq!(serde_json::to_string(&again).unwrap(), written);
        assert_eq!(again.hash(), spec.hash());
    }

    #[test]
    fn json_accepts_omitted_optional_fields() {
        let spec: ChildSpec = serde_json::from_str(r#"{"name":"a","worker_type":"t"}"#).unwrap();
        assert_eq!(spec, ChildSpec::new("a", "t"));
    }
}
