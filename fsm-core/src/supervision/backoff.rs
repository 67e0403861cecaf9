//! Exponential backoff with jitter between restarts.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::SupervisionError;

/// The wait before restart attempt `n` (counting from 0):
/// `min(max, base·2ⁿ)·(1 + r·jitter)` with `r` uniform in `[0, 1)`. The
/// attempt count resets when a child has run for `reset_after` without
/// failing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Backoff {
    /// The first wait.
    #[serde(with = "crate::duration_ms")]
    pub base: Duration,
    /// The longest wait (before jitter).
    #[serde(with = "crate::duration_ms")]
    pub max: Duration,
    /// The jitter factor: up to this fraction is added to each wait, so that
    /// siblings that failed together do not restart together.
    pub jitter: f64,
    /// A child that ran this long without failing starts again from the
    /// first wait.
    #[serde(with = "crate::duration_ms")]
    pub reset_after: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling up to 30 s, 20 % jitter, reset after 60 s of stable
    /// running.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            max: Duration::from_secs(30),
            jitter: 0.2,
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// No wait at all (restart at once).
    #[must_use]
    pub fn none() -> Self {
        Self {
            base: Duration::ZERO,
            max: Duration::ZERO,
            jitter: 0.0,
            reset_after: Duration::ZERO,
        }
    }

    /// The longest wait [`delay`](Self::delay) returns, whatever the
    /// settings: a year. Waits that long mean "practically never" already,
    /// and any clock reading plus this one stays representable, so a huge
    /// `base`, `max` or `jitter` saturates here instead of overflowing.
    pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

    /// The wait before attempt `attempt`, given `unit_random` in `[0, 1)`.
    /// It saturates at [`MAX_DELAY`](Self::MAX_DELAY); a jitter that is not
    /// a number of at least 0 (see [`validate`](Self::validate)) adds
    /// nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use fsm_core::Backoff;
    ///
    /// let b = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(1), jitter: 0.5, ..Backoff::default() };
    /// assert_eq!(b.delay(0, 0.0), Duration::from_millis(100));
    /// assert_eq!(b.delay(3, 0.0), Duration::from_millis(800));
    /// assert_eq!(b.delay(4, 0.0), Duration::from_secs(1));      // capped
    /// assert_eq!(b.delay(4, 0.5), Duration::from_millis(1250)); // plus jitter
    /// ```
    #[must_use]
    pub fn delay(&self, attempt: u32, unit_random: f64) -> Duration {
        let exp = 2u32.checked_pow(attempt.min(31)).unwrap_or(u32::MAX);
        let raw = self.base.saturating_mul(exp).min(self.max);
        let r = if unit_random.is_finite() {
            unit_random.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let jitter = if self.jitter.is_finite() && self.jitter > 0.0 {
            self.jitter
        } else {
            0.0
        };
        // `mul_f64` panics past `Duration::MAX`; this saturates instead.
        let factor = 1.0 + r * jitter;
        Duration::try_from_secs_f64(raw.as_secs_f64() * factor)
            .unwrap_or(Duration::MAX)
            .min(Self::MAX_DELAY)
    }

    /// Checks that the settings make sense: the jitter is a number of at
    /// least 0. (Large durations are not errors: waits saturate at
    /// [`MAX_DELAY`](Self::MAX_DELAY).)
    ///
    /// # Errors
    ///
    /// [`SupervisionError::BadJitter`] naming the value.
    pub fn validate(&self) -> Result<(), SupervisionError> {
        if self.jitter.is_finite() && self.jitter >= 0.0 {
            Ok(())
        } else {
            Err(SupervisionError::BadJitter {
                jitter: self.jitter.to_string(),
            })
        }
    }

    /// The attempt number to use for a failure at `now` of a child started
    /// at `started` whose previous attempt number was `attempt`: back to 0
    /// after a stable run.
    #[must_use]
    pub fn next_attempt(&self, attempt: u32, started: Instant, now: Instant) -> u32 {
        if now.saturating_duration_since(started) >= self.reset_after && !self.reset_after.is_zero()
        {
            0
        } else {
            attempt
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_delay_stays_within_its_bounds(attempt in 0u32..200, r in 0.0f64..1.0) {
            let b = Backoff::default();
            let d = b.delay(attempt, r);
            let raw = b.base.saturating_mul(2u32.saturating_pow(attempt.min(31))).min(b.max);
            prop_assert!(d >= raw);
            prop_assert!(d <= raw.mul_f64(1.0 + b.jitter) + Duration::from_nanos(1));
            prop_assert!(d <= b.max.mul_f64(1.0 + b.jitter) + Duration::from_nanos(1));
        }

        #[test]
        fn the_delay_never_shrinks_as_attempts_grow(attempt in 0u32..64) {
            let b = Backoff::default();
            prop_assert!(b.delay(attempt + 1, 0.0) >= b.delay(attempt, 0.0));
        }
    }

    #[test]
    fn a_stable_run_resets_the_attempts() {
        let b = Backoff::default();
        let t0 = Instant::now();
        assert_eq!(b.next_attempt(5, t0, t0 + Duration::from_secs(1)), 5);
        assert_eq!(b.next_attempt(5, t0, t0 + Duration::from_secs(60)), 0);
    }

    #[test]
    fn huge_settings_saturate_instead_of_overflowing() {
        let huge = Backoff {
            base: Duration::MAX,
            max: Duration::MAX,
            jitter: 5.0,
            reset_after: Duration::MAX,
        };
        for attempt in [0, 1, 31, 32, u32::MAX] {
            for r in [0.0, 0.5, 0.999] {
                assert_eq!(huge.delay(attempt, r), Backoff::MAX_DELAY);
            }
        }
        let enormous_jitter = Backoff {
            jitter: f64::MAX,
            ..Backoff::default()
        };
        assert_eq!(enormous_jitter.delay(3, 0.5), Backoff::MAX_DELAY);
        assert_eq!(enormous_jitter.delay(0, 0.0), enormous_jitter.base);
        // A large jitter is no error: it is a large, saturating wait.
        assert_eq!(huge.validate(), Ok(()));
        assert_eq!(enormous_jitter.validate(), Ok(()));
        // The clock plus the longest wait stays representable.
        let t0 = Instant::now();
        assert!(t0.checked_add(Backoff::MAX_DELAY).is_some());
        assert_eq!(huge.next_attempt(7, t0, t0 + Duration::from_secs(1)), 7);
    }

    #[test]
    fn a_jitter_that_is_not_a_number_of_at_least_zero_is_invalid_and_adds_nothing() {
        for jitter in [f64::NAN, -0.5, f64::NEG_INFINITY, f64::INFINITY] {
            let b = Backoff {
                jitter,
                ..Backoff::default()
            };
            let err = b.validate().unwrap_err();
            assert!(
                err.to_string().contains("`backoff.jitter`"),
                "{jitter}: {err}"
            );
            assert_eq!(b.delay(2, 0.9), b.base * 4, "{jitter}");
        }
    }

    #[test]
    fn bad_random_input_adds_no_jitter() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, f64::NAN), b.base);
        assert_eq!(b.delay(0, -3.0), b.base);
    }
}
