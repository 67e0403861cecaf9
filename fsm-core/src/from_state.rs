//! Children a worker declares from its state, beside those its spec
//! declares.
//!
//! [`Worker::derive_desired`](crate::Worker::derive_desired) declares
//! children from the spec alone. A worker that starts one child per device
//! it discovered, or its transport children only once it has
//! authenticated, declares them from its state machine instead, with
//! [`Transition::with_children`](crate::Transition::with_children). The
//! node reconciles both together, as one declaration: the derived children
//! first, in their order, then the ones from state, in theirs (the start
//! order; stops run in reverse). This module is the pure part of that: the
//! declaration from state with its hashes, the hash of the union, and the
//! check that no name is declared by both.

use std::collections::HashMap;

use crate::error::{DeclarationError, DeclarationProblem};
use crate::hash::{SpecHash, StableHasher};
use crate::path::NodePath;
use crate::spec::ChildSpec;

/// The children a worker's state machine declared last
/// ([`Transition::with_children`](crate::Transition::with_children)), with
/// their hashes, computed once when a transition carries them.
#[derive(Debug, Clone)]
pub struct StateChildren {
    specs: Vec<ChildSpec>,
    hashes: Vec<SpecHash>,
    hash: SpecHash,
}

impl StateChildren {
    /// The declaration, hashed.
    #[must_use]
    pub fn new(specs: Vec<ChildSpec>) -> Self {
        let hashes: Vec<SpecHash> = specs.iter().map(ChildSpec::hash).collect();
        let hash = SpecHash::of_list(&hashes);
        Self {
            specs,
            hashes,
            hash,
        }
    }

    /// The declared children, in order.
    #[must_use]
    pub fn specs(&self) -> &[ChildSpec] {
        &self.specs
    }

    /// Each child's [`ChildSpec::hash`], in order.
    #[must_use]
    pub fn hashes(&self) -> &[SpecHash] {
        &self.hashes
    }

    /// The hash of the whole declaration ([`SpecHash::of_list`] of
    /// [`hashes`](Self::hashes)).
    #[must_use]
    pub fn hash(&self) -> SpecHash {
        self.hash
    }

    /// How many children.
    #[must_use]
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether none are declared.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }
}

/// The hash of the union of the derived children (by their hashes) and
/// those from state: [`SpecHash::of_list`] of the derived hashes followed
/// by the ones from state, so that with none from state it is the derived
/// declaration's own hash. Allocates nothing.
#[must_use]
pub fn combined_hash(derived: &[SpecHash], from_state: Option<&StateChildren>) -> SpecHash {
    let Some(state) = from_state else {
        return SpecHash::of_list(derived);
    };
    let mut h = StableHasher::new();
    h.write_u64((derived.len() + state.hashes.len()) as u64);
    for x in derived.iter().chain(&state.hashes) {
        h.write_u128(x.as_u128());
    }
    SpecHash::from_u128(h.finish())
}

/// The union in start order (derived first), with its hashes, for the
/// reconcile; refused as a whole when a name is declared by both sources.
///
/// # Errors
///
/// A [`DeclarationError`] with one
/// [`DeclarationProblem::DeclaredByBoth`] per name both declare. (Other
/// problems — empty or duplicate names within one source, unknown worker
/// types — are found by the reconcile's usual validation of the union.)
pub fn combine(
    path: &NodePath,
    derived: &[ChildSpec],
    derived_hashes: &[SpecHash],
    from_state: &StateChildren,
) -> Result<(Vec<ChildSpec>, Vec<SpecHash>), DeclarationError> {
    let by_name: HashMap<&str, usize> = derived
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let problems: Vec<DeclarationProblem> = from_state
        .specs
        .iter()
        .enumerate()
        .filter_map(|(state_index, c)| {
            by_name
                .get(c.name.as_str())
                .map(|&derived_index| DeclarationProblem::DeclaredByBoth {
                    name: c.name.clone(),
                    derived_index,
                    state_index,
                })
        })
        .collect();
    if !problems.is_empty() {
        return Err(DeclarationError {
            path: path.clone(),
            problems,
        });
    }
    let mut specs = Vec::with_capacity(derived.len() + from_state.len());
    specs.extend_from_slice(derived);
    specs.extend_from_slice(&from_state.specs);
    let mut hashes = Vec::with_capacity(specs.len());
    if derived_hashes.len() == derived.len() {
        hashes.extend_from_slice(derived_hashes);
    } else {
        hashes.extend(derived.iter().map(ChildSpec::hash));
    }
    hashes.extend_from_slice(&from_state.hashes);
    Ok((specs, hashes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(name: &str) -> ChildSpec {
        ChildSpec::new(name, "leaf")
    }

    #[test]
    fn with_nothing_from_state_the_hash_is_the_derived_declarations_own() {
        let derived = [child("a").hash(), child("b").hash()];
        assert_eq!(combined_hash(&derived, None), SpecHash::of_list(&derived));
    }

    #[test]
    fn the_combined_hash_is_the_hash_of_the_concatenation_and_depends_on_both() {
        let derived = [child("a").hash()];
        let state = StateChildren::new(vec![child("b")]);
        let all = [child("a").hash(), child("b").hash()];
        assert_eq!(
            combined_hash(&derived, Some(&state)),
            SpecHash::of_list(&all)
        );
        let empty = StateChildren::new(Vec::new());
        assert_ne!(
            combined_hash(&derived, Some(&state)),
            combined_hash(&derived, Some(&empty))
        );
    }

    #[test]
    fn the_union_puts_derived_children_first_then_those_from_state() {
        let path = NodePath::parse("p");
        let derived = vec![child("a"), child("b")];
        let hashes: Vec<SpecHash> = derived.iter().map(ChildSpec::hash).collect();
        let state = StateChildren::new(vec![child("c")]);
        let (specs, all) = combine(&path, &derived, &hashes, &state).unwrap();
        let names: Vec<&str> = specs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(all, specs.iter().map(ChildSpec::hash).collect::<Vec<_>>());
    }

    #[test]
    fn a_name_declared_by_both_sources_is_refused_naming_both() {
        let path = NodePath::parse("p");
        let derived = vec![child("a"), child("link")];
        let state = StateChildren::new(vec![child("x"), child("link")]);
        let err = combine(&path, &derived, &[], &state).unwrap_err();
        assert_eq!(
            err.problems,
            [DeclarationProblem::DeclaredByBoth {
                name: "link".into(),
                derived_index: 1,
                state_index: 1
            }]
        );
        let text = err.to_string();
        assert!(text.contains("derive_desired"), "{text}");
        assert!(text.contains("Transition::with_children"), "{text}");
    }
}
