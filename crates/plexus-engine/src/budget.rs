//! The time budget of one CNI call (`callTimeoutSeconds`).
//!
//! The runtime waits for `plexus` only so long: the kubelet gives the whole RunPodSandbox CRI call
//! two minutes (`--runtime-request-timeout`), then cancels it and the runtime SIGKILLs us. A call
//! that is killed cannot roll back or explain itself, so every delegate and every API request of a
//! call runs against one deadline that ends well before that.
//!
//! The last part of the budget, the *teardown reserve*, is kept for undoing: work that may have to
//! be rolled back (ADD delegates, API requests, CHECK, STATUS, GC) must finish by
//! [`Budget::work_deadline`], so that a rollback's DELs still have time to run before
//! [`Budget::end`].

use plexus_cni::Command;
use std::time::{Duration, Instant};

/// The default `callTimeoutSeconds`: under the kubelet's two-minute runtime request timeout, with
/// room for what the runtime does around the CNI call in the same CRI request.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(100);

/// The teardown reserve is this share of the budget ...
const RESERVE_DIVISOR: u32 = 5;
/// ... but never more than this: DELs of real plugins take milliseconds; 20 s covers a slow
/// IPAM server.
const MAX_RESERVE: Duration = Duration::from_secs(20);

/// When one CNI call must be done; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    total: Duration,
    end: Instant,
    reserve: Duration,
}

impl Budget {
    /// A budget of `total` counted from `start` (the moment the runtime started us, as near as we
    /// can tell).
    pub fn starting_at(start: Instant, total: Duration) -> Self {
        Self {
            total,
            end: start + total,
            reserve: (total / RESERVE_DIVISOR).min(MAX_RESERVE),
        }
    }

    /// A budget of `total` from now.
    pub fn from_now(total: Duration) -> Self {
        Self::starting_at(Instant::now(), total)
    }

    /// The whole budget (`callTimeoutSeconds`).
    pub fn total(&self) -> Duration {
        self.total
    }

    /// When the call must be over, teardown included.
    pub fn end(&self) -> Instant {
        self.end
    }

    /// The time kept for rolling back after [`Budget::work_deadline`].
    pub fn reserve(&self) -> Duration {
        self.reserve
    }

    /// When work that may have to be undone must be finished.
    pub fn work_deadline(&self) -> Instant {
        self.end - self.reserve
    }

    /// The deadline of a delegate invocation: DEL is teardown and may use the reserve; every
    /// other verb is work that a rollback may have to follow.
    pub fn deadline_for(&self, command: Command) -> Instant {
        match command {
            Command::Del => self.end,
            _ => self.work_deadline(),
        }
    }

    /// What is left of the budget for `command` at `now` (zero when it is spent).
    pub fn remaining_for(&self, command: Command, now: Instant) -> Duration {
        self.deadline_for(command).saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_a_fifth_capped_at_twenty_seconds() {
        let t0 = Instant::now();
        let b = Budget::starting_at(t0, Duration::from_secs(100));
        assert_eq!(b.reserve(), Duration::from_secs(20));
        assert_eq!(b.work_deadline(), t0 + Duration::from_secs(80));
        assert_eq!(b.end(), t0 + Duration::from_secs(100));
        let b = Budget::starting_at(t0, Duration::from_secs(300));
        assert_eq!(b.reserve(), MAX_RESERVE);
        let b = Budget::starting_at(t0, Duration::from_secs(3));
        assert_eq!(b.reserve(), Duration::from_millis(600));
    }

    #[test]
    fn del_may_use_the_reserve_other_verbs_may_not() {
        let t0 = Instant::now();
        let b = Budget::starting_at(t0, Duration::from_secs(10));
        let at = t0 + Duration::from_secs(7);
        assert_eq!(b.remaining_for(Command::Add, at), Duration::from_secs(1));
        assert_eq!(b.remaining_for(Command::Del, at), Duration::from_secs(3));
        assert_eq!(b.remaining_for(Command::Gc, at), Duration::from_secs(1));
        let late = t0 + Duration::from_secs(9);
        assert_eq!(b.remaining_for(Command::Add, late), Duration::ZERO);
        assert_eq!(
            b.remaining_for(Command::Del, t0 + Duration::from_secs(11)),
            Duration::ZERO
        );
    }
}
