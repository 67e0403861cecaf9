//! ISA-95 locations: where a node sits in the plant.
//!
//! Levels, from the top: `enterprise` (0), `site` (1), `area` (2), `line`
//! (3), `work_cell` (4), and deeper levels by number (5 to 15). A node's
//! location extends its parent's: it may set levels its parent left unset,
//! never change one its parent set.
//!
//! **Gaps**: when a level is unset but a deeper one is set, the dotted path
//! shows the unset level as [`GAP`] (`_`), so that every path has exactly one
//! segment per level from the enterprise down — `acme._.packaging` is an
//! area directly under the enterprise, with no site — and two paths can be
//! compared segment by segment.

use std::collections::BTreeMap;

use fsm_core::NodePath;
use serde::{Deserialize, Serialize};

use crate::error::LocationError;

/// The named levels, by number.
pub const LEVEL_NAMES: [&str; 5] = ["enterprise", "site", "area", "line", "work_cell"];
/// How many levels a location can have.
pub const MAX_LEVELS: usize = 16;
/// The path segment of an unset level below a set one.
pub const GAP: &str = "_";

/// A node's place in the ISA-95 hierarchy: level number → name.
///
/// # Examples
///
/// ```
/// use std::collections::BTreeMap;
/// use fsm_core::NodePath;
/// use fsm_templates::Location;
///
/// let node = NodePath::parse("plant/line-1");
/// let plant = Location::default()
///     .extend(&BTreeMap::from([("enterprise".into(), "acme".into()), ("site".into(), "plant-a".into())]), &node)?;
/// let line = plant.extend(&BTreeMap::from([("area".into(), "packaging".into()), ("line".into(), "line-1".into())]), &node)?;
/// assert_eq!(line.path(), "acme.plant-a.packaging.line-1");
///
/// // A child may not move its parent's site.
/// let moved = line.extend(&BTreeMap::from([("site".into(), "plant-b".into())]), &node);
/// assert!(moved.is_err());
///
/// // Gaps are filled, so the path keeps one segment per level.
/// let gappy = Location::default().extend(&BTreeMap::from([("enterprise".into(), "acme".into()), ("area".into(), "packaging".into())]), &node)?;
/// assert_eq!(gappy.path(), "acme._.packaging");
/// # Ok::<(), fsm_templates::LocationError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Location {
    levels: BTreeMap<usize, String>,
}

fn level_name(level: usize) -> String {
    LEVEL_NAMES
        .get(level)
        .map_or_else(|| level.to_string(), |n| (*n).to_owned())
}

fn parse_level(key: &str) -> Option<usize> {
    LEVEL_NAMES
        .iter()
        .position(|n| *n == key)
        .or_else(|| key.parse::<usize>().ok().filter(|l| *l < MAX_LEVELS))
}

impl Location {
    /// This location extended by `own` (level name or number → name), as
    /// declared for the node at `node`.
    ///
    /// # Errors
    ///
    /// [`LocationError::Conflict`] when `own` changes a level this location
    /// sets; [`LocationError::UnknownLevel`] and [`LocationError::BadValue`]
    /// for malformed entries.
    pub fn extend(
        &self,
        own: &BTreeMap<String, String>,
        node: &NodePath,
    ) -> Result<Self, LocationError> {
        let mut merged = self.clone();
        for (key, value) in own {
            let level = parse_level(key).ok_or_else(|| LocationError::UnknownLevel {
                node: node.clone(),
                key: key.clone(),
                max: MAX_LEVELS - 1,
            })?;
            if value.is_empty() || value.contains('.') || value.chars().any(char::is_whitespace) {
                return Err(LocationError::BadValue {
                    node: node.clone(),
                    level: level_name(level),
                    value: value.clone(),
                });
            }
            match self.levels.get(&level) {
                Some(inherited) if inherited != value => {
                    return Err(LocationError::Conflict {
                        node: node.clone(),
                        level: level_name(level),
                        parent: inherited.clone(),
                        child: value.clone(),
                    });
                }
                _ => {
                    merged.levels.insert(level, value.clone());
                }
            }
        }
        Ok(merged)
    }

    /// The name at `level`, if set.
    #[must_use]
    pub fn level(&self, level: usize) -> Option<&str> {
        self.levels.get(&level).map(String::as_str)
    }

    /// Whether no level is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// The number of levels in the path (the deepest set level plus one).
    #[must_use]
    pub fn depth(&self) -> usize {
        self.levels.keys().next_back().map_or(0, |l| l + 1)
    }

    /// The dotted path from the enterprise down, gaps filled with [`GAP`].
    #[must_use]
    pub fn path(&self) -> String {
        let mut out = String::new();
        for level in 0..self.depth() {
            if level > 0 {
                out.push('.');
            }
            out.push_str(self.level(level).unwrap_or(GAP));
        }
        out
    }

    /// The levels as `name → value` (for templates: `{{ location.site }}`).
    #[must_use]
    pub fn named(&self) -> BTreeMap<String, String> {
        self.levels
            .iter()
            .map(|(l, v)| (level_name(*l), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_child_extends_its_parent_and_may_repeat_a_level_unchanged() {
        let n = NodePath::parse("x");
        let p = Location::default()
            .extend(&own(&[("enterprise", "acme")]), &n)
            .unwrap();
        let c = p
            .extend(&own(&[("enterprise", "acme"), ("site", "a")]), &n)
            .unwrap();
        assert_eq!(c.path(), "acme.a");
        assert_eq!(p.path(), "acme");
    }

    #[test]
    fn conflicts_name_the_level_both_values_and_the_node() {
        let n = NodePath::parse("plant/line-1");
        let p = Location::default()
            .extend(&own(&[("site", "a")]), &n)
            .unwrap();
        let err = p
            .extend(&own(&[("site", "b")]), &n)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plant/line-1")
                && err.contains("`site`")
                && err.contains("`a`")
                && err.contains("`b`"),
            "{err}"
        );
    }

    #[test]
    fn numbered_and_deeper_levels_work_and_gaps_are_filled() {
        let n = NodePath::parse("x");
        let l = Location::default()
            .extend(&own(&[("0", "acme"), ("line", "l1"), ("6", "valve")]), &n)
            .unwrap();
        assert_eq!(l.path(), "acme._._.l1._._.valve");
        assert_eq!(l.depth(), 7);
        assert_eq!(l.named().get("line").map(String::as_str), Some("l1"));
    }

    #[test]
    fn malformed_entries_are_refused() {
        let n = NodePath::parse("x");
        assert!(matches!(
            Location::default().extend(&own(&[("building", "b")]), &n),
            Err(LocationError::UnknownLevel { .. })
        ));
        assert!(matches!(
            Location::default().extend(&own(&[("site", "a.b")]), &n),
            Err(LocationError::BadValue { .. })
        ));
        assert!(matches!(
            Location::default().extend(&own(&[("16", "deep")]), &n),
            Err(LocationError::UnknownLevel { .. })
        ));
        assert_eq!(Location::default().path(), "");
    }
}
