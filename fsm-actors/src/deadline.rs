//! Deadlines from durations that may be as large as a user can configure.
//!
//! `Instant + Duration` panics when the sum does not fit; a configured
//! timeout of `Duration::MAX` means "no deadline to speak of", so such sums
//! saturate to a far future instead.

use std::time::Duration;

use tokio::time::Instant;

/// About thirty years: later than anything a tree waits for, and small
/// enough to add to the clock of any running program.
pub(crate) const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `from + after`, or a far future when that does not fit in an `Instant`.
pub(crate) fn after(from: Instant, after: Duration) -> Instant {
    from.checked_add(after)
        .or_else(|| from.checked_add(FAR_FUTURE))
        .unwrap_or(from)
}

/// A deadline `timeout` from now (see [`after`]).
pub(crate) fn from_now(timeout: Duration) -> Instant {
    after(Instant::now(), timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_duration_saturates_instead_of_overflowing() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert!(after(now, Duration::MAX) >= now + FAR_FUTURE);
        assert!(from_now(Duration::MAX) > now);
    }
}
