//! The restart-intensity window: how many restarts a supervisor tolerates
//! within a period before it gives up and escalates.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::SupervisionError;

/// At most `max_restarts` restarts within `period`; one more and the
/// supervisor escalates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartIntensity {
    /// Restarts tolerated within the window.
    pub max_restarts: u32,
    /// The window.
    #[serde(with = "crate::duration_ms")]
    pub period: Duration,
}

impl Default for RestartIntensity {
    /// 10 restarts within 10 seconds.
    fn default() -> Self {
        Self {
            max_restarts: 10,
            period: Duration::from_secs(10),
        }
    }
}

impl RestartIntensity {
    /// `max_restarts` within `period`.
    #[must_use]
    pub fn new(max_restarts: u32, period: Duration) -> Self {
        Self {
            max_restarts,
            period,
        }
    }

    /// Checks that the settings make sense: the period is not zero (no
    /// restart would ever count towards the limit, so the supervisor would
    /// never give up). A long period, up to `Duration::MAX`, is fine.
    ///
    /// # Errors
    ///
    /// [`SupervisionError::ZeroPeriod`].
    pub fn validate(&self) -> Result<(), SupervisionError> {
        if self.period.is_zero() {
            return Err(SupervisionError::ZeroPeriod);
        }
        Ok(())
    }
}

/// What recording one more restart means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntensityVerdict {
    /// Go ahead; `in_window` restarts (this one included) in the window.
    Allowed {
        /// Restarts in the window, this one included.
        in_window: u32,
    },
    /// Go ahead, but the next restart within the window will escalate.
    LastBeforeEscalation {
        /// Restarts in the window, this one included.
        in_window: u32,
    },
    /// Too many restarts: stop the children and escalate.
    Exceeded {
        /// Restarts in the window, this one included.
        in_window: u32,
    },
}

/// The timestamps of recent restarts of one supervisor.
#[derive(Clone, Debug, Default)]
pub struct RestartWindow {
    restarts: VecDeque<Instant>,
}

impl RestartWindow {
    /// An empty window.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a restart at `now` and says whether it is within `intensity`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use fsm_core::{supervision::IntensityVerdict, RestartIntensity, supervision::RestartWindow};
    ///
    /// let limit = RestartIntensity::new(2, Duration::from_secs(10));
    /// let mut window = RestartWindow::new();
    /// let t0 = Instant::now();
    /// assert_eq!(window.record(t0, limit), IntensityVerdict::Allowed { in_window: 1 });
    /// assert_eq!(window.record(t0, limit), IntensityVerdict::LastBeforeEscalation { in_window: 2 });
    /// assert_eq!(window.record(t0, limit), IntensityVerdict::Exceeded { in_window: 3 });
    /// // Restarts spaced out beyond the period never reach the limit.
    /// let mut spaced = RestartWindow::new();
    /// for i in 0..100 {
    ///     let v = spaced.record(t0 + Duration::from_secs(6 * i), limit);
    ///     assert!(!matches!(v, IntensityVerdict::Exceeded { .. }));
    /// }
    /// ```
    pub fn record(&mut self, now: Instant, intensity: RestartIntensity) -> IntensityVerdict {
        while let Some(&oldest) = self.restarts.front() {
            if now.saturating_duration_since(oldest) >= intensity.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        let in_window = u32::try_from(self.restarts.len()).unwrap_or(u32::MAX);
        if in_window > intensity.max_restarts {
            IntensityVerdict::Exceeded { in_window }
        } else if in_window == intensity.max_restarts {
            IntensityVerdict::LastBeforeEscalation { in_window }
        } else {
            IntensityVerdict::Allowed { in_window }
        }
    }

    /// Restarts currently in the window (as of the last record).
    #[must_use]
    pub fn len(&self) -> usize {
        self.restarts.len()
    }

    /// Whether no restart is in the window.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.restarts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_tolerance_escalates_on_the_first_restart() {
        let mut w = RestartWindow::new();
        let v = w.record(
            Instant::now(),
            RestartIntensity::new(0, Duration::from_secs(1)),
        );
        assert_eq!(v, IntensityVerdict::Exceeded { in_window: 1 });
    }

    #[test]
    fn a_period_of_duration_max_counts_every_restart_without_overflowing() {
        let limit = RestartIntensity::new(3, Duration::MAX);
        assert_eq!(limit.validate(), Ok(()));
        let mut w = RestartWindow::new();
        let t0 = Instant::now();
        let far = Duration::from_secs(100 * 365 * 24 * 3600);
        let verdicts: Vec<_> = [t0, t0 + far, t0, t0 + far + far]
            .into_iter()
            .map(|t| w.record(t, limit))
            .collect();
        assert_eq!(
            verdicts[2],
            IntensityVerdict::LastBeforeEscalation { in_window: 3 }
        );
        assert_eq!(verdicts[3], IntensityVerdict::Exceeded { in_window: 4 });
    }

    #[test]
    fn a_zero_period_is_invalid() {
        let err = RestartIntensity::new(3, Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("`intensity.period`"), "{err}");
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let limit = RestartIntensity::new(3, Duration::from_secs(10));
        let mut w = RestartWindow::new();
        let t0 = Instant::now();
        for i in 0..3 {
            w.record(t0 + Duration::from_secs(i), limit);
        }
        // At 11 s the restarts at 0 s and 1 s are a full period old and have
        // left the window; the one at 2 s has not.
        let v = w.record(t0 + Duration::from_secs(11), limit);
        assert_eq!(v, IntensityVerdict::Allowed { in_window: 2 });
    }
}
