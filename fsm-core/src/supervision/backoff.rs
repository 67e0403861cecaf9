//! Exponential backoff with jitter between restarts.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The wait before restart attempt `n` (counting from 0):
/// `min(max, base·2ⁿ)·(1 + r·jitter)` with `r` uniform in `[0, 1)`. The
/// attempt count resets when a child has run for `reset_after` without
/// failing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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

    /// The wait before attempt `attempt`, given `unit_random` in `[0, 1)`.
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
        // `mul_f64` panics past `Duration::MAX` (a configured maximum that
        // large, or jitter on top of it): saturate instead.
        Duration::try_from_secs_f64(raw.as_secs_f64() * (1.0 + r * jitter)).unwrap_or(Duration::MAX)
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

    #[test]
    fn a_delay_beyond_what_a_duration_holds_saturates() {
        let b = Backoff {
            base: Duration::MAX,
            max: Duration::MAX,
            jitter: 0.5,
            ..Backoff::default()
        };
        assert_eq!(b.delay(0, 0.0), Duration::MAX);
        assert_eq!(b.delay(31, 1.0), Duration::MAX);
    }

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
    fn bad_random_input_adds_no_jitter() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, f64::NAN), b.base);
        assert_eq!(b.delay(0, -3.0), b.base);
    }
}
