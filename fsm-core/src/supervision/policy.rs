//! Restart policies, exit reasons and strategies.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::backoff::Backoff;
use super::intensity::RestartIntensity;
use crate::error::SupervisionError;

/// When a child is restarted after it ends. Set per child in its
/// [`ChildSpec`](crate::ChildSpec).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Always restarted, whatever the exit reason (OTP `permanent`).
    #[default]
    Permanent,
    /// Restarted only after an abnormal exit (OTP `transient`): a child
    /// that finishes its work (`NeedsRemoval`) stays removed.
    Transient,
    /// Never restarted, not even as the bystander of a group restart (OTP
    /// `temporary`).
    Temporary,
}

/// Why a child ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", content = "detail", rename_all = "snake_case")]
pub enum ExitReason {
    /// The worker finished (it raised `NeedsRemoval`).
    Normal,
    /// Its supervisor stopped it on purpose (declaration removed, tree shut
    /// down, bystander of a group restart).
    Shutdown,
    /// It failed: a panic, an error, a failed start, a `NeedsRestart`
    /// signal, a collector that kept failing, an escalation from below.
    Abnormal(String),
}

impl ExitReason {
    /// Whether the exit is abnormal.
    #[must_use]
    pub fn is_abnormal(&self) -> bool {
        matches!(self, Self::Abnormal(_))
    }
}

impl RestartPolicy {
    /// Whether a child with this policy is restarted after ending for
    /// `reason`. A deliberate stop (`Shutdown`) is never restarted.
    ///
    /// # Examples
    ///
    /// ```
    /// use fsm_core::{supervision::ExitReason, RestartPolicy};
    ///
    /// let crash = ExitReason::Abnormal("panicked".into());
    /// assert!(RestartPolicy::Permanent.restarts_after(&ExitReason::Normal));
    /// assert!(RestartPolicy::Transient.restarts_after(&crash));
    /// assert!(!RestartPolicy::Transient.restarts_after(&ExitReason::Normal));
    /// assert!(!RestartPolicy::Temporary.restarts_after(&crash));
    /// assert!(!RestartPolicy::Permanent.restarts_after(&ExitReason::Shutdown));
    /// ```
    #[must_use]
    pub fn restarts_after(self, reason: &ExitReason) -> bool {
        match (self, reason) {
            (_, ExitReason::Shutdown) | (Self::Temporary, _) => false,
            (Self::Permanent, _) => true,
            (Self::Transient, r) => r.is_abnormal(),
        }
    }

    /// Whether a child with this policy is restarted as the bystander of a
    /// group restart.
    #[must_use]
    pub fn restarts_as_bystander(self) -> bool {
        self != Self::Temporary
    }
}

/// Which children restart when one fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the failed child.
    #[default]
    OneForOne,
    /// All children.
    OneForAll,
    /// The failed child and the children started after it.
    RestForOne,
}

/// The start-order positions of the children a failure at `failed` (among
/// `len` children) affects under `strategy`: the failed child and its
/// bystanders.
///
/// # Examples
///
/// ```
/// use fsm_core::{Strategy, supervision::affected_children};
///
/// assert_eq!(affected_children(Strategy::OneForOne, 2, 5), 2..3);
/// assert_eq!(affected_children(Strategy::OneForAll, 2, 5), 0..5);
/// assert_eq!(affected_children(Strategy::RestForOne, 2, 5), 2..5);
/// ```
#[must_use]
pub fn affected_children(strategy: Strategy, failed: usize, len: usize) -> Range<usize> {
    match strategy {
        Strategy::OneForOne => failed..(failed + 1).min(len),
        Strategy::OneForAll => 0..len,
        Strategy::RestForOne => failed..len,
    }
}

/// How a supervisor treats its children's failures: strategy, intensity
/// and backoff. A worker may declare it in its
/// [`DesiredState`](crate::DesiredState); otherwise the tree's default
/// applies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Supervision {
    /// Which children restart when one fails.
    pub strategy: Strategy,
    /// How many restarts are tolerated, and within what window.
    pub intensity: RestartIntensity,
    /// How long to wait before each restart.
    pub backoff: Backoff,
}

impl Supervision {
    /// A supervision with the given strategy and default intensity and
    /// backoff.
    #[must_use]
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            ..Self::default()
        }
    }

    /// Sets the intensity.
    #[must_use]
    pub fn with_intensity(mut self, intensity: RestartIntensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// Sets the backoff.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Checks that the settings make sense (see [`Backoff::validate`] and
    /// [`RestartIntensity::validate`]). A supervision a worker declares in
    /// its [`DesiredState`](crate::DesiredState) is checked after every
    /// derivation; an invalid one is an [`InvalidSpec`](crate::InvalidSpec).
    ///
    /// # Errors
    ///
    /// The first problem found, naming the field.
    pub fn validate(&self) -> Result<(), SupervisionError> {
        self.intensity.validate()?;
        self.backoff.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restart_matrix_follows_otp_except_deliberate_stops() {
        let crash = ExitReason::Abnormal("x".into());
        let table = [
            (RestartPolicy::Permanent, ExitReason::Normal, true),
            (RestartPolicy::Permanent, ExitReason::Shutdown, false),
            (RestartPolicy::Permanent, crash.clone(), true),
            (RestartPolicy::Transient, ExitReason::Normal, false),
            (RestartPolicy::Transient, ExitReason::Shutdown, false),
            (RestartPolicy::Transient, crash.clone(), true),
            (RestartPolicy::Temporary, ExitReason::Normal, false),
            (RestartPolicy::Temporary, ExitReason::Shutdown, false),
            (RestartPolicy::Temporary, crash, false),
        ];
        for (policy, reason, expected) in table {
            assert_eq!(
                policy.restarts_after(&reason),
                expected,
                "{policy:?} {reason:?}"
            );
        }
    }

    #[test]
    fn affected_ranges_stay_in_bounds() {
        assert_eq!(affected_children(Strategy::OneForOne, 0, 1), 0..1);
        assert_eq!(affected_children(Strategy::RestForOne, 4, 5), 4..5);
        assert!(affected_children(Strategy::OneForAll, 0, 0).is_empty());
    }

    #[test]
    fn policies_read_from_json() {
        let p: RestartPolicy = serde_json::from_str("\"transient\"").unwrap();
        assert_eq!(p, RestartPolicy::Transient);
        let s: Supervision = serde_json::from_str(r#"{"strategy":"rest_for_one"}"#).unwrap();
        assert_eq!(s.strategy, Strategy::RestForOne);
        assert_eq!(s.intensity, RestartIntensity::default());
    }
}
