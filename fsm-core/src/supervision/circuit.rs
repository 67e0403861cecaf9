//! The infrastructure circuit breaker of one supervisor.
//!
//! While any child is failed, restarting or stale, the circuit is open: the
//! supervisor's own state machine pauses (no transitions, no actions) while
//! observations continue and restarts proceed. It closes as soon as every
//! child is healthy again. It is recomputed from the children's current
//! status on every tick, so it cannot latch open.

use std::time::{Duration, Instant};

/// A change of the circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitChange {
    /// It opened.
    Opened,
    /// It closed after being open for this long.
    Closed {
        /// How long it was open.
        open_for: Duration,
    },
}

/// The circuit breaker of one supervisor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Circuit {
    open_since: Option<Instant>,
    last_heartbeat: Option<Instant>,
}

impl Circuit {
    /// A closed circuit.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the circuit is open.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.open_since.is_some()
    }

    /// Since when it has been open.
    #[must_use]
    pub fn open_since(&self) -> Option<Instant> {
        self.open_since
    }

    /// Updates the circuit from whether any child is faulty now.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use fsm_core::{supervision::Circuit, supervision::CircuitChange};
    ///
    /// let mut c = Circuit::new();
    /// let t0 = Instant::now();
    /// assert_eq!(c.update(true, t0), Some(CircuitChange::Opened));
    /// assert_eq!(c.update(true, t0), None);
    /// let t1 = t0 + Duration::from_secs(3);
    /// assert_eq!(c.update(false, t1), Some(CircuitChange::Closed { open_for: Duration::from_secs(3) }));
    /// assert!(!c.is_open());
    /// ```
    pub fn update(&mut self, any_child_faulty: bool, now: Instant) -> Option<CircuitChange> {
        match (self.open_since, any_child_faulty) {
            (None, true) => {
                self.open_since = Some(now);
                self.last_heartbeat = Some(now);
                Some(CircuitChange::Opened)
            }
            (Some(since), false) => {
                self.open_since = None;
                self.last_heartbeat = None;
                Some(CircuitChange::Closed {
                    open_for: now.saturating_duration_since(since),
                })
            }
            _ => None,
        }
    }

    /// Whether a "still recovering" heartbeat is due at `now`, given the
    /// interval; records it if so.
    pub fn heartbeat_due(&mut self, now: Instant, every: Duration) -> bool {
        match self.last_heartbeat {
            Some(last)
                if self.open_since.is_some() && now.saturating_duration_since(last) >= every =>
            {
                self.last_heartbeat = Some(now);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_closes_whenever_the_fault_clears_however_often_it_opened() {
        let mut c = Circuit::new();
        let t0 = Instant::now();
        for i in 0..50 {
            let t = t0 + Duration::from_secs(i * 2);
            assert_eq!(c.update(true, t), Some(CircuitChange::Opened));
            assert!(matches!(
                c.update(false, t + Duration::from_secs(1)),
                Some(CircuitChange::Closed { .. })
            ));
            assert!(!c.is_open());
        }
    }

    #[test]
    fn clock_readings_out_of_order_or_far_apart_never_panic() {
        let mut c = Circuit::new();
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(100 * 365 * 24 * 3600);
        c.update(true, far);
        // A reading before the opening: open for no time at all.
        assert!(!c.heartbeat_due(t0, Duration::from_secs(1)));
        assert_eq!(
            c.update(false, t0),
            Some(CircuitChange::Closed {
                open_for: Duration::ZERO
            })
        );
        c.update(true, t0);
        assert!(!c.heartbeat_due(far, Duration::MAX));
        assert!(c.heartbeat_due(far, Duration::from_secs(1)));
    }

    #[test]
    fn heartbeats_come_at_the_interval_only_while_open() {
        let mut c = Circuit::new();
        let t0 = Instant::now();
        let every = Duration::from_secs(5);
        assert!(!c.heartbeat_due(t0, every));
        c.update(true, t0);
        assert!(!c.heartbeat_due(t0 + Duration::from_secs(4), every));
        assert!(c.heartbeat_due(t0 + Duration::from_secs(5), every));
        assert!(!c.heartbeat_due(t0 + Duration::from_secs(6), every));
        assert!(c.heartbeat_due(t0 + Duration::from_secs(10), every));
        c.update(false, t0 + Duration::from_secs(11));
        assert!(!c.heartbeat_due(t0 + Duration::from_secs(20), every));
    }
}
