//! Where a child runs, as data: beside its parent (no [`Placement`], the
//! default) or on a node of a cluster, by name or by label.
//!
//! The decisions are pure, with time and the set of live nodes as
//! arguments: which node a placement picks ([`choose_node`]), whether a
//! placement epoch is stale ([`epoch_is_stale`]), whether a lease has
//! expired ([`lease_expired`]) and whether lease timings keep a subtree from
//! ever running twice ([`LeaseTiming::check`]). The runtime that acts on
//! them is the `cluster` feature of `fsm-actors`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hash::StableHasher;

/// Where a child runs, when not beside its parent.
///
/// * `node`: the node of this name, while it is live;
/// * `label`: any live node carrying this label (also narrows `node`: a
///   named node without the label does not qualify).
///
/// When the named node is not live, any live node that qualifies takes the
/// child (see [`choose_node`]), so that a subtree survives the loss of its
/// node.
///
/// # Examples
///
/// ```
/// use fsm_core::{ChildSpec, Placement};
///
/// let line = ChildSpec::new("line-1", "line").with_placement(Placement::node("b"));
/// let json = serde_json::to_string(&line.placement).unwrap();
/// assert_eq!(json, r#"{"node":"b","label":null}"#);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Placement {
    /// The node preferred, by name.
    #[serde(default)]
    pub node: Option<String>,
    /// Only nodes with this label qualify.
    #[serde(default)]
    pub label: Option<String>,
}

impl Placement {
    /// On the node of this name (or, while it is not live, on any live
    /// node).
    #[must_use]
    pub fn node(name: impl Into<String>) -> Self {
        Self {
            node: Some(name.into()),
            label: None,
        }
    }

    /// On any live node with this label.
    #[must_use]
    pub fn label(label: impl Into<String>) -> Self {
        Self {
            node: None,
            label: Some(label.into()),
        }
    }

    /// Feeds the placement into a hasher (part of
    /// [`ChildSpec::hash`](crate::ChildSpec::hash)).
    pub fn stable_hash(&self, h: &mut StableHasher) {
        for part in [&self.node, &self.label] {
            match part {
                Some(s) => {
                    h.write_u8(1);
                    h.write_str(s);
                }
                None => h.write_u8(0),
            }
        }
    }

    /// Whether `node` qualifies (its label, if the placement names one).
    #[must_use]
    pub fn admits(&self, node: &LiveNode) -> bool {
        self.label
            .as_ref()
            .is_none_or(|l| node.labels.iter().any(|x| x == l))
    }
}

/// A node of the cluster that is live now, as its host announces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveNode {
    /// The node's name (unique in the cluster).
    pub name: String,
    /// Its labels.
    pub labels: Vec<String>,
}

impl LiveNode {
    /// A live node with these labels.
    #[must_use]
    pub fn new(
        name: impl Into<String>,
        labels: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            labels: labels.into_iter().map(Into::into).collect(),
        }
    }
}

/// No live node qualifies for a placement.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "no live node qualifies for placement {placement:?} of `{key}` ({live} live); \
     start a node with the label, or change the placement"
)]
pub struct NoNodeError {
    /// The placed child (its path).
    pub key: String,
    /// The placement.
    pub placement: Placement,
    /// How many nodes were live.
    pub live: usize,
}

/// The node a child placed by `placement` runs on: the named node if it is
/// live and qualifies; otherwise one of the qualifying live nodes, chosen by
/// a stable hash of `key` (the child's path), so that the same set of live
/// nodes always gives the same answer and children spread over the nodes.
/// `avoid` names a node not to choose while another qualifies (the one a
/// child just failed on, whose loss may not be known everywhere yet).
///
/// # Errors
///
/// [`NoNodeError`] when no live node qualifies.
///
/// # Examples
///
/// ```
/// use fsm_core::placement::{LiveNode, Placement, choose_node};
///
/// let live = [LiveNode::new("a", ["edge"]), LiveNode::new("b", ["edge"])];
/// assert_eq!(choose_node("/plant/line-1", &Placement::node("b"), &live, None).unwrap(), "b");
/// // "c" is not live: another qualifying node takes the child.
/// let other = choose_node("/plant/line-1", &Placement::node("c"), &live, None).unwrap();
/// assert!(other == "a" || other == "b");
/// ```
pub fn choose_node<'a>(
    key: &str,
    placement: &Placement,
    live: &'a [LiveNode],
    avoid: Option<&str>,
) -> Result<&'a str, NoNodeError> {
    let qualifying = || live.iter().filter(|n| placement.admits(n));
    if let Some(name) = &placement.node
        && let Some(node) = qualifying().find(|n| &n.name == name && Some(name.as_str()) != avoid)
    {
        return Ok(&node.name);
    }
    let mut candidates: Vec<&LiveNode> = qualifying()
        .filter(|n| Some(n.name.as_str()) != avoid)
        .collect();
    if candidates.is_empty() {
        candidates = qualifying().collect();
    }
    if candidates.is_empty() {
        return Err(NoNodeError {
            key: key.to_owned(),
            placement: placement.clone(),
            live: live.len(),
        });
    }
    candidates.sort_by(|a, b| a.name.cmp(&b.name));
    let mut h = StableHasher::new();
    h.write_str(key);
    let at = (h.finish_u64() % candidates.len() as u64) as usize;
    Ok(&candidates[at].name)
}

/// Whether a placement request or renewal with epoch `offered` is stale
/// where `held` is the latest epoch seen for the same child: an older epoch
/// comes from an incarnation of the proxy that has been replaced, and is
/// refused (a later epoch replaces the held one).
#[must_use]
pub fn epoch_is_stale(held: Option<u64>, offered: u64) -> bool {
    held.is_some_and(|held| offered < held)
}

/// Whether a lease last renewed at `renewed` (any monotonic clock, as a
/// duration since its origin) has expired at `now` on the same clock.
#[must_use]
pub fn lease_expired(renewed: Duration, lease: Duration, now: Duration) -> bool {
    now.saturating_sub(renewed) >= lease
}

/// The timings that decide whether a subtree can run on two nodes at once.
///
/// The host that runs a subtree stops it once `lease` has passed since its
/// last renewal. The parent's side sees the host as lost at the earliest
/// `detection` after the last renewal it sent, and places the subtree again
/// at the earliest `replacement` after that. So the old copy has stopped
/// before the new one starts when `lease + max_delay < detection +
/// replacement`, where `max_delay` bounds how late a renewal may arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a renewal keeps a subtree running on its host.
    pub lease: Duration,
    /// How long without an answer before a host counts as lost.
    pub detection: Duration,
    /// The least time from losing a host to placing the subtree again.
    pub replacement: Duration,
    /// How late a renewal may arrive at the host after it was sent.
    pub max_delay: Duration,
}

impl LeaseTiming {
    /// Whether the old copy of a subtree always stops before a new one
    /// starts (see [`LeaseTiming`]).
    #[must_use]
    pub fn never_twice(&self) -> bool {
        self.lease.saturating_add(self.max_delay) < self.detection.saturating_add(self.replacement)
    }

    /// [`never_twice`](Self::never_twice), or why not.
    ///
    /// # Errors
    ///
    /// A sentence naming the timings and what to change.
    pub fn check(&self) -> Result<(), String> {
        if self.never_twice() {
            Ok(())
        } else {
            Err(format!(
                "lease {:?} + delay {:?} must be shorter than detection {:?} + re-placement {:?}: \
                 shorten the lease or lengthen the detection time",
                self.lease, self.max_delay, self.detection, self.replacement
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(names: &[(&str, &[&str])]) -> Vec<LiveNode> {
        names
            .iter()
            .map(|(n, labels)| LiveNode::new(*n, labels.iter().copied()))
            .collect()
    }

    #[test]
    fn a_named_live_node_takes_its_child() {
        let nodes = live(&[("a", &[]), ("b", &[]), ("c", &[])]);
        for name in ["a", "b", "c"] {
            assert_eq!(
                choose_node("/p/x", &Placement::node(name), &nodes, None),
                Ok(name)
            );
        }
    }

    #[test]
    fn a_child_of_a_lost_node_goes_to_another_live_node_the_same_one_every_time() {
        let nodes = live(&[("a", &[]), ("b", &[])]);
        let first = choose_node("/p/line-3", &Placement::node("c"), &nodes, None).unwrap();
        for _ in 0..10 {
            assert_eq!(
                choose_node("/p/line-3", &Placement::node("c"), &nodes, None).unwrap(),
                first
            );
        }
        // Children spread over the nodes.
        let chosen: std::collections::BTreeSet<&str> = (0..32)
            .map(|i| {
                choose_node(&format!("/p/line-{i}"), &Placement::default(), &nodes, None).unwrap()
            })
            .collect();
        assert_eq!(chosen.len(), 2, "{chosen:?}");
    }

    #[test]
    fn a_label_admits_only_nodes_that_carry_it() {
        let nodes = live(&[("a", &["cloud"]), ("b", &["edge"]), ("c", &["edge", "gpu"])]);
        for i in 0..16 {
            let key = format!("/p/{i}");
            let n = choose_node(&key, &Placement::label("edge"), &nodes, None).unwrap();
            assert!(n == "b" || n == "c", "{n}");
            assert_eq!(
                choose_node(&key, &Placement::label("gpu"), &nodes, None),
                Ok("c")
            );
        }
        // A named node without the label does not qualify.
        let p = Placement {
            node: Some("a".into()),
            label: Some("gpu".into()),
        };
        assert_eq!(choose_node("/p/x", &p, &nodes, None), Ok("c"));
        let err = choose_node("/p/x", &Placement::label("tpu"), &nodes, None).unwrap_err();
        assert_eq!(err.live, 3);
        assert!(err.to_string().contains("/p/x"), "{err}");
    }

    #[test]
    fn the_node_to_avoid_is_chosen_only_when_no_other_qualifies() {
        let nodes = live(&[("a", &[]), ("b", &[])]);
        for i in 0..16 {
            let key = format!("/p/{i}");
            assert_eq!(
                choose_node(&key, &Placement::node("b"), &nodes, Some("b")),
                Ok("a")
            );
            assert_eq!(
                choose_node(&key, &Placement::default(), &nodes, Some("a")),
                Ok("b")
            );
        }
        let one = live(&[("a", &[])]);
        assert_eq!(
            choose_node("/p/x", &Placement::default(), &one, Some("a")),
            Ok("a")
        );
        assert!(choose_node("/p/x", &Placement::default(), &[], None).is_err());
    }

    #[test]
    fn an_older_epoch_is_stale_the_same_or_a_later_one_is_not() {
        assert!(!epoch_is_stale(None, 0));
        assert!(!epoch_is_stale(Some(3), 3));
        assert!(!epoch_is_stale(Some(3), 4));
        assert!(epoch_is_stale(Some(3), 2));
    }

    #[test]
    fn a_lease_expires_once_its_length_has_passed_since_the_renewal() {
        let ms = Duration::from_millis;
        assert!(!lease_expired(ms(100), ms(500), ms(599)));
        assert!(lease_expired(ms(100), ms(500), ms(600)));
        // A clock read before the renewal (another thread's) is not expiry.
        assert!(!lease_expired(ms(100), ms(500), ms(50)));
    }

    #[test]
    fn the_lease_must_end_before_the_subtree_can_be_placed_again() {
        let ms = Duration::from_millis;
        let timing = LeaseTiming {
            lease: ms(700),
            detection: ms(1000),
            replacement: ms(50),
            max_delay: ms(100),
        };
        assert!(timing.never_twice());
        assert!(timing.check().is_ok());
        let long = LeaseTiming {
            lease: ms(1000),
            ..timing
        };
        assert!(!long.never_twice());
        assert!(long.check().unwrap_err().contains("shorten the lease"));
    }
}
