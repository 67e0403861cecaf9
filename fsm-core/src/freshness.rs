//! How fresh a node's observation is, and when its collector counts as
//! hung: pure maths, with time passed in as an argument.
//!
//! A node measures from its last good observation (or from its start,
//! before the first one):
//!
//! * past [`FreshnessLimits::stale_after`] it is **stale**: its state
//!   machine pauses and it reports unhealthy, until a good observation
//!   arrives;
//! * past [`FreshnessLimits::collector_restart_after`] its collector is
//!   considered **hung**: the node fails, so that its parent restarts it.
//!
//! Until the smaller of the two has passed, a node can be neither. The
//! runtime keeps only the end of that *quiet* period
//! ([`FreshnessLimits::quiet_until`]), so a healthy node checks one
//! comparison per tick ([`is_quiet`]) and measures no durations; once the
//! period is over, the instant of the last good observation is recovered
//! from it ([`FreshnessLimits::observed_since`]).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use fsm_core::freshness::{Freshness, FreshnessLimits};
//!
//! let limits = FreshnessLimits::new(Duration::from_secs(10), Duration::from_secs(60));
//! let observed = Instant::now();
//! let quiet_until = limits.quiet_until(observed);
//! let later = observed + Duration::from_secs(11);
//! assert_eq!(limits.stale_for(quiet_until, observed, later), Some(Duration::from_secs(11)));
//! assert_eq!(limits.hung_for(quiet_until, observed, later), None);
//! assert!(Freshness::of(Some(observed), later, limits.stale_after).is_stale());
//! ```

use std::time::{Duration, Instant};

/// One node's latest observation, as it stands at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// The last good observation is no older than the stale threshold.
    Fresh {
        /// How long ago it was made.
        age: Duration,
    },
    /// The last good observation is older than the stale threshold: the
    /// node's state machine is paused and the node reports unhealthy.
    Stale {
        /// How long ago it was made.
        age: Duration,
    },
    /// The node has made no good observation yet. (How long it may take is
    /// measured from the node's start: see [`FreshnessLimits::stale_for`].)
    NeverObserved,
}

impl Freshness {
    /// The freshness at `now` of an observation last made well at
    /// `last_good` (`None`: never), judged by `stale_after`. An observation
    /// exactly `stale_after` old is still fresh.
    #[must_use]
    pub fn of(last_good: Option<Instant>, now: Instant, stale_after: Duration) -> Self {
        match last_good {
            None => Self::NeverObserved,
            Some(at) => {
                let age = now.saturating_duration_since(at);
                if age > stale_after {
                    Self::Stale { age }
                } else {
                    Self::Fresh { age }
                }
            }
        }
    }

    /// Whether the observation is [`Freshness::Stale`].
    #[must_use]
    pub fn is_stale(self) -> bool {
        matches!(self, Self::Stale { .. })
    }

    /// How old the observation is, if there is one.
    #[must_use]
    pub fn age(self) -> Option<Duration> {
        match self {
            Self::Fresh { age } | Self::Stale { age } => Some(age),
            Self::NeverObserved => None,
        }
    }
}

/// The two thresholds a node's observations are judged by (the tree's
/// `stale_after` and `collector_restart_after` settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreshnessLimits {
    /// How old the last good observation may be before the node is stale.
    pub stale_after: Duration,
    /// How long the collector may go without a good observation before it
    /// is considered hung and the node is failed (and restarted).
    pub collector_restart_after: Duration,
}

impl FreshnessLimits {
    /// The two thresholds.
    #[must_use]
    #[inline]
    pub const fn new(stale_after: Duration, collector_restart_after: Duration) -> Self {
        Self {
            stale_after,
            collector_restart_after,
        }
    }

    /// The limits of a node that is observed only every `interval` (see
    /// [`collect_due`]): both thresholds allow for the interval, so that
    /// an observation is stale only once older than `interval +
    /// stale_after`, and the collector hung only past `interval +
    /// collector_restart_after`. Saturates at `Duration::MAX`.
    #[must_use]
    #[inline]
    pub fn with_interval(self, interval: Duration) -> Self {
        Self {
            stale_after: self.stale_after.saturating_add(interval),
            collector_restart_after: self.collector_restart_after.saturating_add(interval),
        }
    }

    /// How long after a good observation (or the start) a node can be
    /// neither stale nor hung: the smaller of the two thresholds.
    #[must_use]
    #[inline]
    pub fn quiet_for(self) -> Duration {
        self.stale_after.min(self.collector_restart_after)
    }

    /// Until when a node whose last good observation (or start) was at
    /// `since` can be neither stale nor hung; `None` when that is beyond
    /// what an [`Instant`] holds (it is then quiet for ever).
    #[must_use]
    #[inline]
    pub fn quiet_until(self, since: Instant) -> Option<Instant> {
        since.checked_add(self.quiet_for())
    }

    /// When the last good observation was made (or the node started, if
    /// none was yet), recovered from the end of its quiet period. Without
    /// one (see [`FreshnessLimits::quiet_until`]), or should it not go back
    /// that far, `started`.
    #[must_use]
    #[inline]
    pub fn observed_since(self, quiet_until: Option<Instant>, started: Instant) -> Instant {
        quiet_until
            .and_then(|until| until.checked_sub(self.quiet_for()))
            .unwrap_or(started)
    }

    /// How long the node has been stale at `now` (measured from its last
    /// good observation, or its start), or `None` if it is not. Measures
    /// nothing while the quiet period lasts.
    #[must_use]
    #[inline]
    pub fn stale_for(
        self,
        quiet_until: Option<Instant>,
        started: Instant,
        now: Instant,
    ) -> Option<Duration> {
        if is_quiet(quiet_until, now) {
            return None;
        }
        let age = now.saturating_duration_since(self.observed_since(quiet_until, started));
        (age > self.stale_after).then_some(age)
    }

    /// How long the collector has gone without a good observation at `now`
    /// if that is past the restart threshold (the collector is hung and the
    /// node must fail), or `None`. Measures nothing while the quiet period
    /// lasts.
    #[must_use]
    #[inline]
    pub fn hung_for(
        self,
        quiet_until: Option<Instant>,
        started: Instant,
        now: Instant,
    ) -> Option<Duration> {
        if is_quiet(quiet_until, now) {
            return None;
        }
        let age = now.saturating_duration_since(self.observed_since(quiet_until, started));
        (age > self.collector_restart_after).then_some(age)
    }
}

/// Whether `now` is within the quiet period ending at `quiet_until` (see
/// [`FreshnessLimits::quiet_until`]; `None`: for ever), when a node can be
/// neither stale nor hung. The end itself is still quiet.
#[must_use]
#[inline]
pub fn is_quiet(quiet_until: Option<Instant>, now: Instant) -> bool {
    quiet_until.is_none_or(|until| now <= until)
}

/// Whether a node observed every `interval` may start a collect at `now`,
/// its last collect having started at `last_started` (`None`: it never
/// collected, so it may).
#[must_use]
#[inline]
pub fn collect_due(last_started: Option<Instant>, interval: Duration, now: Instant) -> bool {
    last_started.is_none_or(|at| now.saturating_duration_since(at) >= interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collect_is_due_first_and_then_once_the_interval_has_passed_since_the_last_started() {
        let t0 = Instant::now();
        let every = Duration::from_secs(10);
        assert!(collect_due(None, every, t0));
        assert!(!collect_due(Some(t0), every, t0));
        assert!(!collect_due(Some(t0), every, t0 + 9 * S));
        assert!(collect_due(Some(t0), every, t0 + 10 * S));
        assert!(collect_due(Some(t0), every, t0 + 11 * S));
        // A clock reading before the last start is never due early.
        assert!(!collect_due(Some(t0 + S), every, t0));
    }

    #[test]
    fn an_interval_is_allowed_for_by_both_thresholds() {
        let l = limits(2, 30).with_interval(Duration::from_secs(10));
        assert_eq!(l, limits(12, 40));
        let t0 = Instant::now();
        let quiet = l.quiet_until(t0);
        // Not stale between collects of a node observed every 10 s...
        assert_eq!(l.stale_for(quiet, t0, t0 + 11 * S), None);
        assert_eq!(l.stale_for(quiet, t0, t0 + 12 * S), None);
        // ...only once older than interval + stale_after.
        assert_eq!(l.stale_for(quiet, t0, t0 + 13 * S), Some(13 * S));
        assert_eq!(l.hung_for(quiet, t0, t0 + 40 * S), None);
        assert_eq!(l.hung_for(quiet, t0, t0 + 41 * S), Some(41 * S));
        let max = limits(2, 30).with_interval(Duration::MAX);
        assert_eq!(max.stale_after, Duration::MAX);
    }

    const S: Duration = Duration::from_secs(1);

    fn limits(stale: u64, restart: u64) -> FreshnessLimits {
        FreshnessLimits::new(Duration::from_secs(stale), Duration::from_secs(restart))
    }

    #[test]
    fn the_quiet_period_is_the_smaller_threshold_whichever_it_is() {
        assert_eq!(limits(10, 60).quiet_for(), 10 * S);
        assert_eq!(limits(60, 10).quiet_for(), 10 * S);
    }

    #[test]
    fn a_node_is_quiet_up_to_and_including_the_end_of_its_quiet_period() {
        let t0 = Instant::now();
        let until = limits(10, 60).quiet_until(t0);
        assert_eq!(until, Some(t0 + 10 * S));
        assert!(is_quiet(until, t0));
        assert!(is_quiet(until, t0 + 10 * S));
        assert!(!is_quiet(until, t0 + 10 * S + Duration::from_nanos(1)));
    }

    #[test]
    fn a_quiet_period_beyond_what_an_instant_holds_never_ends() {
        let t0 = Instant::now();
        let endless = FreshnessLimits::new(Duration::MAX, Duration::MAX);
        let until = endless.quiet_until(t0);
        assert_eq!(until, None);
        assert!(is_quiet(until, t0 + 1_000_000 * S));
        assert_eq!(endless.stale_for(until, t0, t0 + 1_000_000 * S), None);
        assert_eq!(endless.hung_for(until, t0, t0 + 1_000_000 * S), None);
    }

    #[test]
    fn the_last_good_observation_is_recovered_from_the_end_of_its_quiet_period() {
        let t0 = Instant::now();
        let l = limits(10, 60);
        let observed = t0 + 5 * S;
        assert_eq!(l.observed_since(l.quiet_until(observed), t0), observed);
        // Without an end, from the start.
        assert_eq!(l.observed_since(None, t0), t0);
    }

    #[test]
    fn a_node_is_stale_only_once_its_observation_is_older_than_the_threshold() {
        let t0 = Instant::now();
        let l = limits(10, 60);
        let until = l.quiet_until(t0);
        assert_eq!(l.stale_for(until, t0, t0 + 10 * S), None);
        assert_eq!(l.stale_for(until, t0, t0 + 11 * S), Some(11 * S));
    }

    #[test]
    fn a_node_that_never_observed_is_stale_measured_from_its_start() {
        let started = Instant::now();
        let l = limits(10, 60);
        let until = l.quiet_until(started);
        assert_eq!(l.stale_for(until, started, started + 12 * S), Some(12 * S));
    }

    #[test]
    fn a_collector_is_hung_only_past_the_restart_threshold_not_the_stale_one() {
        let t0 = Instant::now();
        let l = limits(10, 60);
        let until = l.quiet_until(t0);
        assert_eq!(l.hung_for(until, t0, t0 + 30 * S), None);
        assert_eq!(l.hung_for(until, t0, t0 + 60 * S), None);
        assert_eq!(l.hung_for(until, t0, t0 + 61 * S), Some(61 * S));
    }

    #[test]
    fn with_a_restart_threshold_below_the_stale_one_a_collector_hangs_before_the_node_is_stale() {
        let t0 = Instant::now();
        let l = limits(60, 10);
        let until = l.quiet_until(t0);
        assert_eq!(l.hung_for(until, t0, t0 + 11 * S), Some(11 * S));
        assert_eq!(l.stale_for(until, t0, t0 + 11 * S), None);
    }

    #[test]
    fn a_new_good_observation_starts_the_measure_again() {
        let t0 = Instant::now();
        let l = limits(10, 60);
        let again = t0 + 50 * S;
        let until = l.quiet_until(again);
        assert_eq!(l.stale_for(until, t0, t0 + 55 * S), None);
        assert_eq!(l.stale_for(until, t0, t0 + 61 * S), Some(11 * S));
        assert_eq!(l.hung_for(until, t0, t0 + 100 * S), None);
    }

    #[test]
    fn freshness_says_fresh_stale_or_never_observed_with_the_age() {
        let t0 = Instant::now();
        let stale_after = 10 * S;
        assert_eq!(
            Freshness::of(None, t0, stale_after),
            Freshness::NeverObserved
        );
        let fresh = Freshness::of(Some(t0), t0 + 10 * S, stale_after);
        assert_eq!(fresh, Freshness::Fresh { age: 10 * S });
        assert!(!fresh.is_stale());
        let stale = Freshness::of(Some(t0), t0 + 11 * S, stale_after);
        assert_eq!(stale, Freshness::Stale { age: 11 * S });
        assert!(stale.is_stale());
        assert_eq!(stale.age(), Some(11 * S));
        assert_eq!(Freshness::NeverObserved.age(), None);
    }

    #[test]
    fn an_observation_from_the_future_is_fresh_and_of_no_age() {
        let t0 = Instant::now();
        assert_eq!(
            Freshness::of(Some(t0 + S), t0, 10 * S),
            Freshness::Fresh {
                age: Duration::ZERO
            }
        );
    }
}
