//! [`VariableBundle`]: the variables a node renders its templates with.

use fsm_core::{Map, NodePath, SpecHash, Value, runtime::StableHasher};
use serde::{Deserialize, Serialize};

use crate::error::VariableError;

/// Names a `user` variable may not have: they are the other namespaces in a
/// template's context.
pub const RESERVED_NAMES: [&str; 2] = ["global", "internal"];

/// Runtime metadata about a node. Computed by the runtime for every node;
/// never serialised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InternalVars {
    /// A unique id of this incarnation of the node.
    pub id: String,
    /// The node's path.
    pub path: NodePath,
    /// Its parent's path.
    pub parent_path: NodePath,
    /// Its worker type.
    pub worker_type: String,
    /// When this incarnation started, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// The node's ISA-95 location as a dotted path.
    pub location_path: String,
}

impl InternalVars {
    /// Metadata for the node at `path`.
    #[must_use]
    pub fn new(
        id: impl Into<String>,
        path: NodePath,
        worker_type: impl Into<String>,
        created_at_ms: u64,
    ) -> Self {
        Self {
            id: id.into(),
            parent_path: path.parent().unwrap_or_else(NodePath::top),
            path,
            worker_type: worker_type.into(),
            created_at_ms,
            location_path: String::new(),
        }
    }

    /// Sets the location path.
    #[must_use]
    pub fn with_location_path(mut self, location_path: impl Into<String>) -> Self {
        self.location_path = location_path.into();
        self
    }

    fn to_value(&self) -> Value {
        Value::map([
            ("id", Value::from(self.id.as_str())),
            ("path", Value::from(self.path.as_str())),
            ("parent_path", Value::from(self.parent_path.as_str())),
            ("worker_type", Value::from(self.worker_type.as_str())),
            (
                "created_at_ms",
                Value::Int(i64::try_from(self.created_at_ms).unwrap_or(i64::MAX)),
            ),
            ("location_path", Value::from(self.location_path.as_str())),
        ])
    }
}

/// The variables of one node, in three namespaces.
///
/// # Examples
///
/// ```
/// use fsm_core::{Map, Value};
/// use fsm_templates::VariableBundle;
///
/// let parent = VariableBundle::default().with_user(Map::from([("IP", Value::from("10.0.0.5"))]));
/// let own = Map::from([("PORT", Value::from(502))]);
/// let child = parent.child(&own);
/// let ctx = child.flatten();
/// assert_eq!(ctx.get("IP"), Some(&Value::from("10.0.0.5")));
/// assert_eq!(ctx.get("PORT"), Some(&Value::from(502)));
/// assert!(ctx.get("global").is_some() && ctx.get("internal").is_some());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VariableBundle {
    /// Defined in specs, inherited and overridden down the tree; top level
    /// in templates.
    #[serde(default)]
    pub user: Map,
    /// Fleet-wide, from the tree's configuration; `global.*` in templates.
    #[serde(default)]
    pub global: Map,
    /// Runtime metadata; `internal.*` in templates; never serialised.
    #[serde(skip)]
    pub internal: InternalVars,
}

impl VariableBundle {
    /// Sets the `user` namespace.
    #[must_use]
    pub fn with_user(mut self, user: Map) -> Self {
        self.user = user;
        self
    }

    /// Sets the `global` namespace.
    #[must_use]
    pub fn with_global(mut self, global: Map) -> Self {
        self.global = global;
        self
    }

    /// Sets the `internal` namespace.
    #[must_use]
    pub fn with_internal(mut self, internal: InternalVars) -> Self {
        self.internal = internal;
        self
    }

    /// A child's bundle: this bundle's `user` variables overlaid with the
    /// child's own (the child's win), the same `global`, no `internal` yet.
    #[must_use]
    pub fn child(&self, own: &Map) -> Self {
        let mut user = self.user.clone();
        user.overlay(own);
        Self {
            user,
            global: self.global.clone(),
            internal: InternalVars::default(),
        }
    }

    /// Checks that no `user` variable has a reserved name.
    ///
    /// # Errors
    ///
    /// A [`VariableError`] naming the node and the variable.
    pub fn validate(own: &Map, node: &NodePath) -> Result<(), VariableError> {
        match own.keys().find(|k| RESERVED_NAMES.contains(&k.as_str())) {
            Some(name) => Err(VariableError {
                node: node.clone(),
                name: name.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// The template context: `user` variables at the top level, `global`
    /// and `internal` as maps.
    #[must_use]
    pub fn flatten(&self) -> Value {
        Self::flatten_parts(&self.user, &self.global, &self.internal)
    }

    /// [`VariableBundle::flatten`] of a bundle made of these parts, without
    /// building the bundle.
    #[must_use]
    pub fn flatten_parts(user: &Map, global: &Map, internal: &InternalVars) -> Value {
        let mut ctx = user.clone();
        ctx.insert("global".to_owned(), Value::Map(global.clone()));
        ctx.insert("internal".to_owned(), internal.to_value());
        Value::Map(ctx)
    }

    /// The stable hash of what a node's derivation may depend on: `user`
    /// and `global` (not `internal`, which differs per incarnation).
    #[must_use]
    pub fn hash(&self) -> SpecHash {
        let mut h = StableHasher::new();
        Value::Map(self.user.clone()).stable_hash(&mut h);
        Value::Map(self.global.clone()).stable_hash(&mut h);
        SpecHash::from_u128(h.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, Value)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn the_child_overrides_and_inherits() {
        let parent = VariableBundle::default()
            .with_user(map(&[("A", 1.into()), ("B", 2.into())]))
            .with_global(map(&[("api", "x".into())]));
        let child = parent.child(&map(&[("B", 3.into()), ("C", 4.into())]));
        assert_eq!(
            child.user,
            map(&[("A", 1.into()), ("B", 3.into()), ("C", 4.into())])
        );
        assert_eq!(child.global, parent.global);
    }

    #[test]
    fn internal_variables_are_in_the_context_but_never_serialised() {
        let b = VariableBundle::default()
            .with_user(map(&[("A", 1.into())]))
            .with_global(map(&[("g", true.into())]))
            .with_internal(InternalVars::new("7", NodePath::parse("p/c"), "conn", 5));
        let ctx = b.flatten();
        assert_eq!(
            ctx.get("internal").and_then(|i| i.get("parent_path")),
            Some(&Value::from("p"))
        );
        assert_eq!(
            ctx.get("global").and_then(|g| g.get("g")),
            Some(&Value::from(true))
        );
        let json = serde_json::to_string(&b).unwrap();
        assert!(
            !json.contains("internal") && !json.contains("conn"),
            "{json}"
        );
        let back: VariableBundle = serde_json::from_str(&json).unwrap();
        assert_eq!(back.user, b.user);
        assert_eq!(back.global, b.global);
        assert_eq!(back.internal, InternalVars::default());
    }

    #[test]
    fn the_hash_ignores_internal_but_not_user_or_global() {
        let b = VariableBundle::default().with_user(map(&[("A", 1.into())]));
        let with_internal =
            b.clone()
                .with_internal(InternalVars::new("x", NodePath::parse("a"), "t", 9));
        assert_eq!(b.hash(), with_internal.hash());
        assert_ne!(b.hash(), b.child(&map(&[("A", 2.into())])).hash());
        assert_ne!(
            b.hash(),
            b.clone().with_global(map(&[("A", 1.into())])).hash()
        );
    }

    #[test]
    fn reserved_names_are_refused() {
        let err = VariableBundle::validate(&map(&[("global", 1.into())]), &NodePath::parse("n"))
            .unwrap_err();
        assert!(err.to_string().contains("`global`") && err.to_string().contains("node `n`"));
    }
}
