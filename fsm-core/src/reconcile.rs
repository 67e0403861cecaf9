//! The reconcile plan: a pure function from the running children and the
//! declared ones to the ordered steps that turn one into the other, like a
//! Kubernetes controller's diff.
//!
//! Guarantees (property-tested below):
//!
//! * applying a plan and planning again gives an empty plan;
//! * from any running set, applying the plan yields exactly the declared set
//!   (names, worker types and spec hashes);
//! * removals come first, in reverse start order; then spawns, updates and
//!   replacements, in declaration order.
//!
//! Validation runs before any step: an invalid declaration (empty or
//! duplicate names, unknown worker type, undecodable spec) is rejected as a
//! whole and changes nothing.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::driver::DecodedSpec;
use crate::error::{DeclarationError, DeclarationProblem, SpecError};
use crate::hash::SpecHash;
use crate::path::{NodePath, PATH_SEPARATOR};
use crate::registry::WorkerRegistry;
use crate::spec::ChildSpec;

/// A running child, as the plan sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunningChild<'a> {
    /// The child's name.
    pub name: &'a str,
    /// Its worker type.
    pub worker_type: &'a str,
    /// The hash of the spec it runs with.
    pub hash: SpecHash,
}

/// One step of a [`ReconcilePlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanStep {
    /// Stop a running child that is no longer declared (and its subtree).
    Stop {
        /// The child's name.
        name: String,
    },
    /// Start the declared child at `index`.
    Spawn {
        /// Index into the declared children.
        index: usize,
    },
    /// Send the declared child at `index` its changed spec; it keeps running.
    Update {
        /// Index into the declared children.
        index: usize,
    },
    /// The worker type of the declared child at `index` changed: stop the
    /// running child, then start a new one.
    Replace {
        /// Index into the declared children.
        index: usize,
    },
}

/// How many children a plan spawns, updates, replaces and stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanCounts {
    /// Children started.
    pub spawned: usize,
    /// Children sent a new spec.
    pub updated: usize,
    /// Children replaced (worker type changed).
    pub replaced: usize,
    /// Children stopped.
    pub stopped: usize,
}

/// The ordered steps that turn the running children into the declared ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcilePlan {
    /// The steps, in the order they must be carried out.
    pub steps: Vec<PlanStep>,
}

impl ReconcilePlan {
    /// Whether there is nothing to do.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The number of steps of each kind.
    #[must_use]
    pub fn counts(&self) -> PlanCounts {
        let mut c = PlanCounts::default();
        for s in &self.steps {
            match s {
                PlanStep::Spawn { .. } => c.spawned += 1,
                PlanStep::Update { .. } => c.updated += 1,
                PlanStep::Replace { .. } => c.replaced += 1,
                PlanStep::Stop { .. } => c.stopped += 1,
            }
        }
        c
    }
}

/// Plans the steps from `running` (in start order) to `declared`.
///
/// `declared` must be valid (see [`validate_children`]); with duplicate
/// names, the later declaration of a name is ignored.
///
/// # Examples
///
/// ```
/// use fsm_core::{ChildSpec, PlanStep, RunningChild, plan_children};
///
/// let a = ChildSpec::new("a", "conn");
/// let running = [RunningChild { name: "a", worker_type: "conn", hash: a.hash() },
///                RunningChild { name: "old", worker_type: "conn", hash: a.hash() }];
/// let declared = [a.clone(), ChildSpec::new("b", "flow")];
/// let plan = plan_children(&running, &declared);
/// assert_eq!(plan.steps, vec![PlanStep::Stop { name: "old".into() }, PlanStep::Spawn { index: 1 }]);
/// ```
#[must_use]
pub fn plan_children(running: &[RunningChild<'_>], declared: &[ChildSpec]) -> ReconcilePlan {
    let hashes: Vec<SpecHash> = declared.iter().map(ChildSpec::hash).collect();
    plan_children_hashed(running, declared, &hashes)
}

/// [`plan_children`] with each declaration's [`ChildSpec::hash`] computed
/// already (`hashes[i]` for `declared[i]`, as
/// [`DesiredState::child_hashes`](crate::DesiredState::child_hashes) gives
/// them), so that a large declaration is hashed once per derivation, not
/// once per use. A missing hash is computed.
#[must_use]
pub fn plan_children_hashed(
    running: &[RunningChild<'_>],
    declared: &[ChildSpec],
    hashes: &[SpecHash],
) -> ReconcilePlan {
    let mut steps = Vec::new();
    if running.is_empty() {
        // A first start (the common case in a large tree): every first
        // occurrence of a name is spawned, and nothing else is looked up.
        let mut seen: HashSet<&str> = HashSet::with_capacity(declared.len());
        steps.reserve(declared.len());
        for (index, spec) in declared.iter().enumerate() {
            if seen.insert(spec.name.as_str()) {
                steps.push(PlanStep::Spawn { index });
            }
        }
        return ReconcilePlan { steps };
    }
    let declared_names: HashSet<&str> = declared.iter().map(|c| c.name.as_str()).collect();
    for r in running.iter().rev() {
        if !declared_names.contains(r.name) {
            steps.push(PlanStep::Stop {
                name: r.name.to_owned(),
            });
        }
    }
    let by_name: HashMap<&str, &RunningChild<'_>> = running.iter().map(|r| (r.name, r)).collect();
    let mut seen: HashSet<&str> = HashSet::with_capacity(declared.len());
    for (index, spec) in declared.iter().enumerate() {
        if !seen.insert(spec.name.as_str()) {
            continue;
        }
        match by_name.get(spec.name.as_str()) {
            None => steps.push(PlanStep::Spawn { index }),
            Some(r) if r.worker_type != spec.worker_type => steps.push(PlanStep::Replace { index }),
            Some(r) if r.hash != hash_at(declared, hashes, index) => {
                steps.push(PlanStep::Update { index });
            }
            Some(_) => {}
        }
    }
    ReconcilePlan { steps }
}

/// Validates a node's declared children before anything changes: names
/// non-empty, free of `/` and unique; worker types registered; user specs
/// decodable into each worker's typed spec. Children that are `running` with
/// the same spec hash were validated when they started and are not decoded
/// again.
///
/// # Errors
///
/// A [`DeclarationError`] listing every problem, naming the parent's path and
/// each child's.
pub fn validate_children(
    path: &NodePath,
    declared: &[ChildSpec],
    running: &[RunningChild<'_>],
    registry: &WorkerRegistry,
) -> Result<(), DeclarationError> {
    let hashes: Vec<SpecHash> = if running.is_empty() {
        // Nothing runs, so nothing is skipped: no hash is needed.
        Vec::new()
    } else {
        declared.iter().map(ChildSpec::hash).collect()
    };
    validate_children_hashed(path, declared, &hashes, running, registry)
}

/// [`validate_children`] with each declaration's [`ChildSpec::hash`]
/// computed already (see [`plan_children_hashed`]).
///
/// # Errors
///
/// As [`validate_children`].
pub fn validate_children_hashed(
    path: &NodePath,
    declared: &[ChildSpec],
    hashes: &[SpecHash],
    running: &[RunningChild<'_>],
    registry: &WorkerRegistry,
) -> Result<(), DeclarationError> {
    check_children(path, declared, hashes, running, |_, spec| {
        registry.validate_child(path, spec)
    })
}

/// [`validate_children_hashed`] that keeps each decoded spec, to hand to
/// the child that will run it ([`DecodedSpec`]): `decoded[i]` for
/// `declared[i]`, `None` where nothing was decoded (a running child whose
/// spec is unchanged, a spec with templates).
///
/// # Errors
///
/// As [`validate_children`].
pub fn decode_children_hashed(
    path: &NodePath,
    declared: &[ChildSpec],
    hashes: &[SpecHash],
    running: &[RunningChild<'_>],
    registry: &WorkerRegistry,
) -> Result<Vec<Option<DecodedSpec>>, DeclarationError> {
    let mut decoded: Vec<Option<DecodedSpec>> = Vec::with_capacity(declared.len());
    decoded.resize_with(declared.len(), || None);
    check_children(path, declared, hashes, running, |index, spec| {
        decoded[index] = registry.decode_child(path, spec)?;
        Ok(())
    })?;
    Ok(decoded)
}

/// The checks of [`validate_children_hashed`], with `check` for each child
/// that is new or changed.
fn check_children(
    path: &NodePath,
    declared: &[ChildSpec],
    hashes: &[SpecHash],
    running: &[RunningChild<'_>],
    mut check: impl FnMut(usize, &ChildSpec) -> Result<(), SpecError>,
) -> Result<(), DeclarationError> {
    let mut problems = Vec::new();
    let mut first_seen: HashMap<&str, usize> = HashMap::with_capacity(declared.len());
    let unchanged: HashSet<(&str, SpecHash)> = running.iter().map(|r| (r.name, r.hash)).collect();
    for (index, spec) in declared.iter().enumerate() {
        if spec.name.is_empty() {
            problems.push(DeclarationProblem::EmptyName {
                index,
                worker_type: spec.worker_type.clone(),
            });
            continue;
        }
        if spec.name.contains(PATH_SEPARATOR) {
            problems.push(DeclarationProblem::InvalidName {
                name: spec.name.clone(),
            });
            continue;
        }
        if let Some(first) = first_seen.insert(spec.name.as_str(), index) {
            problems.push(DeclarationProblem::DuplicateName {
                name: spec.name.clone(),
                first,
                second: index,
            });
            continue;
        }
        if !unchanged.is_empty()
            && unchanged.contains(&(spec.name.as_str(), hash_at(declared, hashes, index)))
        {
            continue;
        }
        if let Err(e) = check(index, spec) {
            problems.push(e.into());
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(DeclarationError {
            path: path.clone(),
            problems,
        })
    }
}

/// The hash of `declared[index]`: from `hashes` when given, else computed.
fn hash_at(declared: &[ChildSpec], hashes: &[SpecHash], index: usize) -> SpecHash {
    hashes
        .get(index)
        .copied()
        .unwrap_or_else(|| declared[index].hash())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;
    use proptest::prelude::*;

    /// Carries out a plan on a simulated running set (name, type, hash), in
    /// start order: stops remove, spawns and replacements append, updates
    /// change the hash in place.
    fn apply(
        running: &[(String, String, SpecHash)],
        declared: &[ChildSpec],
        plan: &ReconcilePlan,
    ) -> Vec<(String, String, SpecHash)> {
        let mut out = running.to_vec();
        for step in &plan.steps {
            match step {
                PlanStep::Stop { name } => out.retain(|(n, _, _)| n != name),
                PlanStep::Spawn { index } => {
                    let s = &declared[*index];
                    out.push((s.name.clone(), s.worker_type.clone(), s.hash()));
                }
                PlanStep::Update { index } => {
                    let s = &declared[*index];
                    if let Some(e) = out.iter_mut().find(|(n, _, _)| *n == s.name) {
                        e.2 = s.hash();
                    }
                }
                PlanStep::Replace { index } => {
                    let s = &declared[*index];
                    out.retain(|(n, _, _)| *n != s.name);
                    out.push((s.name.clone(), s.worker_type.clone(), s.hash()));
                }
            }
        }
        out
    }

    fn as_running(set: &[(String, String, SpecHash)]) -> Vec<RunningChild<'_>> {
        set.iter()
            .map(|(n, t, h)| RunningChild {
                name: n,
                worker_type: t,
                hash: *h,
            })
            .collect()
    }

    fn spec_strategy() -> impl Strategy<Value = ChildSpec> {
        ("[a-f]", "(conn|flow|bridge)", 0i64..3)
            .prop_map(|(name, ty, v)| ChildSpec::new(name, ty).with_spec(Value::from(v)))
    }

    /// Unique-name declarations (as validation guarantees).
    fn declared_strategy() -> impl Strategy<Value = Vec<ChildSpec>> {
        proptest::collection::vec(spec_strategy(), 0..8).prop_map(|v| {
            let mut seen = HashSet::new();
            v.into_iter()
                .filter(|s| seen.insert(s.name.clone()))
                .collect()
        })
    }

    fn running_strategy() -> impl Strategy<Value = Vec<(String, String, SpecHash)>> {
        declared_strategy().prop_map(|v| {
            v.into_iter()
                .map(|s| {
                    let h = s.hash();
                    (s.name, s.worker_type, h)
                })
                .collect()
        })
    }

    #[test]
    fn a_first_start_spawns_each_name_once_in_declaration_order() {
        let declared = vec![
            ChildSpec::new("a", "w"),
            ChildSpec::new("b", "w"),
            ChildSpec::new("a", "w"),
            ChildSpec::new("c", "other"),
        ];
        let plan = plan_children(&[], &declared);
        assert_eq!(
            plan.steps,
            vec![
                PlanStep::Spawn { index: 0 },
                PlanStep::Spawn { index: 1 },
                PlanStep::Spawn { index: 3 },
            ]
        );
    }

    proptest! {
        #[test]
        fn planning_with_precomputed_hashes_gives_the_same_plan(
            running in running_strategy(), declared in declared_strategy()
        ) {
            let hashes: Vec<SpecHash> = declared.iter().map(ChildSpec::hash).collect();
            let running = as_running(&running);
            prop_assert_eq!(
                plan_children_hashed(&running, &declared, &hashes),
                plan_children(&running, &declared)
            );
            // Missing hashes are computed, not taken as changes.
            prop_assert_eq!(
                plan_children_hashed(&running, &declared, &[]),
                plan_children(&running, &declared)
            );
        }

        #[test]
        fn applying_a_plan_then_planning_again_gives_an_empty_plan(
            running in running_strategy(), declared in declared_strategy()
        ) {
            let plan = plan_children(&as_running(&running), &declared);
            let after = apply(&running, &declared, &plan);
            prop_assert!(plan_children(&as_running(&after), &declared).is_empty());
        }

        #[test]
        fn the_plan_reaches_exactly_the_declared_set(
            running in running_strategy(), declared in declared_strategy()
        ) {
            let plan = plan_children(&as_running(&running), &declared);
            let after = apply(&running, &declared, &plan);
            let mut got = after.clone();
            got.sort();
            let mut want: Vec<_> = declared
                .iter()
                .map(|s| (s.name.clone(), s.worker_type.clone(), s.hash()))
                .collect();
            want.sort();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn declaration_order_is_kept_and_stops_come_first_in_reverse_start_order(
            running in running_strategy(), declared in declared_strategy()
        ) {
            let plan = plan_children(&as_running(&running), &declared);
            let first_non_stop = plan
                .steps
                .iter()
                .position(|s| !matches!(s, PlanStep::Stop { .. }))
                .unwrap_or(plan.steps.len());
            let stops_after_others = plan.steps[first_non_stop..]
                .iter()
                .any(|s| matches!(s, PlanStep::Stop { .. }));
            prop_assert!(!stops_after_others);
            let stop_positions: Vec<usize> = plan.steps[..first_non_stop]
                .iter()
                .map(|s| match s {
                    PlanStep::Stop { name } => running.iter().position(|(n, _, _)| n == name).unwrap(),
                    _ => unreachable!(),
                })
                .collect();
            prop_assert!(stop_positions.windows(2).all(|w| w[0] > w[1]));
            let indices: Vec<usize> = plan.steps[first_non_stop..]
                .iter()
                .map(|s| match s {
                    PlanStep::Spawn { index } | PlanStep::Update { index } | PlanStep::Replace { index } => *index,
                    PlanStep::Stop { .. } => unreachable!(),
                })
                .collect();
            prop_assert!(indices.windows(2).all(|w| w[0] < w[1]));
            // And new children are appended in declaration order.
            let after = apply(&running, &declared, &plan);
            let spawned: Vec<&str> = plan.steps.iter().filter_map(|s| match s {
                PlanStep::Spawn { index } => Some(declared[*index].name.as_str()),
                _ => None,
            }).collect();
            let order_in_after: Vec<usize> = spawned
                .iter()
                .map(|n| after.iter().position(|(m, _, _)| m == n).unwrap())
                .collect();
            prop_assert!(order_in_after.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn unchanged_children_need_no_step() {
        let a = ChildSpec::new("a", "conn").with_spec(Value::from(1));
        let running = [RunningChild {
            name: "a",
            worker_type: "conn",
            hash: a.hash(),
        }];
        assert!(plan_children(&running, &[a]).is_empty());
    }

    #[test]
    fn spec_change_is_an_update_and_type_change_a_replacement() {
        let a = ChildSpec::new("a", "conn").with_spec(Value::from(1));
        let running = [RunningChild {
            name: "a",
            worker_type: "conn",
            hash: a.hash(),
        }];
        let changed = a.clone().with_spec(Value::from(2));
        assert_eq!(
            plan_children(&running, &[changed]).steps,
            vec![PlanStep::Update { index: 0 }]
        );
        let retyped = ChildSpec::new("a", "flow").with_spec(Value::from(1));
        assert_eq!(
            plan_children(&running, &[retyped]).steps,
            vec![PlanStep::Replace { index: 0 }]
        );
    }
}
