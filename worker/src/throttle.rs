//! Keeps a failure that repeats on every message (a store that stopped taking writes) from
//! flooding the log: the first one is logged, then at most one per interval, each saying how
//! many were not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often a repeating failure is logged at most.
pub(crate) const EVERY: Duration = Duration::from_secs(10);

/// One kind of failure's log throttle; shared freely (atomics only).
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    /// When the last one was logged, in ms since the epoch plus one (0: never).
    logged_at: AtomicU64,
    /// Failures since then that were not logged.
    skipped: AtomicU64,
}

impl Throttle {
    pub(crate) const fn new() -> Throttle {
        Throttle {
            logged_at: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// A failure happened now: `Some(skipped)` if it is to be logged (with how many since the
    /// last logged one were not), `None` if it only counts.
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.admit_at(now.as_millis() as u64, EVERY.as_millis() as u64)
    }

    fn admit_at(&self, now_ms: u64, every_ms: u64) -> Option<u64> {
        let last = self.logged_at.load(Ordering::Acquire);
        let due = last == 0 || now_ms.saturating_add(1).saturating_sub(last) >= every_ms;
        // One of the callers racing past an interval's end logs; the others count.
        if due
            && self
                .logged_at
                .compare_exchange(
                    last,
                    now_ms.saturating_add(1),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            return Some(self.skipped.swap(0, Ordering::AcqRel));
        }
        self.skipped.fetch_add(1, Ordering::AcqRel);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_logged_then_one_an_interval_with_the_count_of_the_rest() {
        let throttle = Throttle::new();
        assert_eq!(throttle.admit_at(5_000, 1_000), Some(0));
        for t in 5_001..5_004 {
            assert_eq!(throttle.admit_at(t, 1_000), None);
        }
        assert_eq!(throttle.admit_at(5_999, 1_000), None);
        assert_eq!(throttle.admit_at(6_000, 1_000), Some(4));
        assert_eq!(throttle.admit_at(6_500, 1_000), None);
        assert_eq!(throttle.admit_at(60_000, 1_000), Some(1));
    }

    #[test]
    fn a_clock_at_the_epoch_still_logs_the_first() {
        let throttle = Throttle::new();
        assert_eq!(throttle.admit_at(0, 1_000), Some(0));
        assert_eq!(throttle.admit_at(1, 1_000), None);
    }
}
