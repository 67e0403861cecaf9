//! [`NodePath`]: where a node sits in the tree, as names joined by `/`.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The path of a node: the names from the root down, joined by `/`
/// (`plant/line-1/bridge-a`). Cheap to clone.
///
/// The empty path is the tree's invisible top, above the root node.
///
/// # Examples
///
/// ```
/// use fsm_core::NodePath;
///
/// let root = NodePath::top().child("plant");
/// let bridge = root.child("line-1").child("bridge-a");
/// assert_eq!(bridge.as_str(), "plant/line-1/bridge-a");
/// assert_eq!(bridge.name(), "bridge-a");
/// assert_eq!(bridge.depth(), 3);
/// assert_eq!(bridge.parent().unwrap().as_str(), "plant/line-1");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodePath(Arc<str>);

/// The character that separates names in a path; a child name may not
/// contain it.
pub const PATH_SEPARATOR: char = '/';

impl NodePath {
    /// The path above the root node (empty).
    #[must_use]
    pub fn top() -> Self {
        Self(Arc::from(""))
    }

    /// Parses a path from its `/`-joined form. Empty segments are dropped.
    #[must_use]
    pub fn parse(s: &str) -> Self {
        let joined: Vec<&str> = s.split(PATH_SEPARATOR).filter(|p| !p.is_empty()).collect();
        Self(Arc::from(joined.join("/")))
    }

    /// The path of a child called `name`.
    #[must_use]
    pub fn child(&self, name: &str) -> Self {
        /// Paths up to this long are joined on the stack, so that the shared
        /// string is the only allocation.
        const ON_STACK: usize = 256;
        if self.0.is_empty() {
            return Self(Arc::from(name));
        }
        let len = self.0.len() + 1 + name.len();
        if len <= ON_STACK {
            let mut buf = [0u8; ON_STACK];
            buf[..self.0.len()].copy_from_slice(self.0.as_bytes());
            buf[self.0.len()] = PATH_SEPARATOR as u8;
            buf[self.0.len() + 1..len].copy_from_slice(name.as_bytes());
            // Two strings joined by an ASCII byte are UTF-8.
            if let Ok(joined) = std::str::from_utf8(&buf[..len]) {
                return Self(Arc::from(joined));
            }
        }
        let mut s = String::with_capacity(len);
        s.push_str(&self.0);
        s.push(PATH_SEPARATOR);
        s.push_str(name);
        Self(Arc::from(s))
    }

    /// The path as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path as a shared string: a clone costs no allocation.
    #[must_use]
    pub fn as_shared(&self) -> &Arc<str> {
        &self.0
    }

    /// Whether this is the empty path above the root node.
    #[must_use]
    pub fn is_top(&self) -> bool {
        self.0.is_empty()
    }

    /// The last name in the path (empty for the top).
    #[must_use]
    pub fn name(&self) -> &str {
        self.0.rsplit(PATH_SEPARATOR).next().unwrap_or("")
    }

    /// The parent's path, or `None` for the top.
    #[must_use]
    pub fn parent(&self) -> Option<Self> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.rfind(PATH_SEPARATOR) {
            Some(i) => Self(Arc::from(&self.0[..i])),
            None => Self::top(),
        })
    }

    /// The number of names in the path (0 for the top, 1 for the root node).
    #[must_use]
    pub fn depth(&self) -> usize {
        if self.0.is_empty() {
            0
        } else {
            self.0.matches(PATH_SEPARATOR).count() + 1
        }
    }

    /// The names from the root down.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split(PATH_SEPARATOR).filter(|s| !s.is_empty())
    }

    /// Whether `self` is `other` or lies below it.
    #[must_use]
    pub fn starts_with(&self, other: &NodePath) -> bool {
        other.0.is_empty()
            || self.0.as_ref() == other.0.as_ref()
            || (self.0.starts_with(other.0.as_ref())
                && self.0[other.0.len()..].starts_with(PATH_SEPARATOR))
    }
}

impl Default for NodePath {
    /// The top (empty) path.
    fn default() -> Self {
        Self::top()
    }
}

impl fmt::Display for NodePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("<top>")
        } else {
            f.write_str(&self.0)
        }
    }
}

impl fmt::Debug for NodePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodePath({:?})", &*self.0)
    }
}

impl Serialize for NodePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self::parse(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_respects_segment_boundaries() {
        let a = NodePath::parse("plant/line-1");
        assert!(NodePath::parse("plant/line-1/b").starts_with(&a));
        assert!(a.starts_with(&a));
        assert!(!NodePath::parse("plant/line-10").starts_with(&a));
        assert!(a.starts_with(&NodePath::top()));
    }

    #[test]
    fn child_paths_join_short_long_and_non_ascii_names() {
        let top = NodePath::top();
        let root = top.child("plant");
        assert_eq!(root.as_str(), "plant");
        let short = root.child("Ölpumpe-1");
        assert_eq!(short.as_str(), "plant/Ölpumpe-1");
        assert_eq!(short.name(), "Ölpumpe-1");
        assert_eq!(short.parent().as_ref(), Some(&root));
        // Longer than what is joined on the stack.
        let long_name = "ß".repeat(200);
        let long = short.child(&long_name);
        assert_eq!(long.as_str(), format!("plant/Ölpumpe-1/{long_name}"));
        assert_eq!(long.name(), long_name);
        assert_eq!(long.depth(), 3);
        assert!(std::sync::Arc::ptr_eq(
            long.as_shared(),
            long.clone().as_shared()
        ));
    }

    #[test]
    fn parse_drops_empty_segments() {
        assert_eq!(NodePath::parse("/a//b/").as_str(), "a/b");
        assert_eq!(NodePath::top().depth(), 0);
        assert_eq!(NodePath::top().parent(), None);
        assert_eq!(NodePath::parse("a").parent(), Some(NodePath::top()));
    }
}
