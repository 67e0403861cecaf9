//! Errors of variables, templates and locations. Each names the node path
//! and says what to fix.

use fsm_core::NodePath;

/// A template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node `{node}`: {}", self.describe())]
pub struct RenderError {
    /// The node whose spec holds the template.
    pub node: NodePath,
    /// Where in the spec the template is (`connection.host`, `tags.2`);
    /// empty for a template rendered on its own.
    pub field: String,
    /// The template source.
    pub template: String,
    /// The undefined variable, when that is the problem.
    pub variable: Option<String>,
    /// upon's message.
    pub message: String,
}

impl RenderError {
    fn describe(&self) -> String {
        let at = if self.field.is_empty() {
            String::new()
        } else {
            format!(" at `{}`", self.field)
        };
        match &self.variable {
            Some(var) => format!(
                "template `{}`{at} uses undefined variable `{var}`; define it in the `variables` of this node or an ancestor, or in the tree's globals",
                self.template
            ),
            None => format!("template `{}`{at} failed: {}", self.template, self.message),
        }
    }
}

/// A variable name is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "node `{node}`: variable `{name}` uses a reserved name (`global` and `internal` are namespaces); rename it"
)]
pub struct VariableError {
    /// The node that declared it.
    pub node: NodePath,
    /// The name.
    pub name: String,
}

/// A location does not fit its parent's, or is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocationError {
    /// The child sets a level its parent already set, to another value.
    #[error(
        "node `{node}`: location level `{level}` is `{parent}` by inheritance, and the node may not change it to `{child}`; remove it from the node's location or set a deeper level"
    )]
    Conflict {
        /// The node.
        node: NodePath,
        /// The level.
        level: String,
        /// The inherited value.
        parent: String,
        /// The value the node tried to set.
        child: String,
    },
    /// The level name is not known.
    #[error(
        "node `{node}`: unknown location level `{key}`; use one of enterprise, site, area, line, work_cell, or a level number 0 to {max}"
    )]
    UnknownLevel {
        /// The node.
        node: NodePath,
        /// The key given.
        key: String,
        /// The deepest level number.
        max: usize,
    },
    /// The value cannot be a path segment.
    #[error(
        "node `{node}`: location level `{level}` is `{value}`, which cannot be part of a dotted path (it must be non-empty, without `.` or whitespace)"
    )]
    BadValue {
        /// The node.
        node: NodePath,
        /// The level.
        level: String,
        /// The value given.
        value: String,
    },
}
