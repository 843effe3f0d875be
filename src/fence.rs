//! The write fence: whether this replica may start an AWS write *now*.
//!
//! With leader election the fence is open only until a deadline on this process's monotonic
//! clock, which each confirmed lease renewal pushes forward. It closes by itself when the deadline
//! passes, so a wedged lease loop or a process frozen (SIGSTOP, a long GC-like stall, a paused VM)
//! cannot keep writing: the check compares the clock, it does not wait for the lease loop to act.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Fence {
    /// Without leader election every write is allowed.
    always_open: bool,
    /// Origin of `open_until`, so the deadline fits an atomic.
    base: Instant,
    /// Writes may start while `now - base < open_until` (nanoseconds); 0 = closed.
    open_until: AtomicU64,
    /// Set once the replica stepped down: no renewal may reopen the fence.
    revoked: AtomicBool,
}

impl Fence {
    /// A fence that never closes: the only replica (`--leader-elect=false`).
    pub fn open() -> Self {
        Self { always_open: true, base: Instant::now(), open_until: AtomicU64::new(0), revoked: AtomicBool::new(false) }
    }

    /// A fence for leader election: closed until the first confirmed hold of the lease.
    pub fn closed() -> Self {
        Self { always_open: false, ..Self::open() }
    }

    /// May a write start now? Cheap: one clock read and one atomic load.
    pub fn allows_writes(&self) -> bool {
        self.allows_writes_at(Instant::now())
    }

    pub fn allows_writes_at(&self, now: Instant) -> bool {
        self.always_open || self.nanos(now) < self.open_until.load(Ordering::Acquire)
    }

    /// Opens the fence until `deadline` (never moves an existing deadline back).
    pub fn open_until(&self, deadline: Instant) {
        if self.revoked.load(Ordering::Acquire) {
            return;
        }
        self.open_until.fetch_max(self.nanos(deadline), Ordering::AcqRel);
    }

    /// Closes the fence for good: this replica stepped down.
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
        self.open_until.store(0, Ordering::Release);
    }

    /// How long writes stay allowed from `now` (zero when closed).
    pub fn remaining_at(&self, now: Instant) -> Duration {
        if self.always_open {
            return Duration::MAX;
        }
        Duration::from_nanos(self.open_until.load(Ordering::Acquire).saturating_sub(self.nanos(now)))
    }

    fn nanos(&self, at: Instant) -> u64 {
        // 1 ns past the origin at least, so that 0 keeps meaning "closed".
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_leader_election_always_open() {
        let fence = Fence::open();
        fence.revoke();
        assert!(fence.allows_writes_at(Instant::now() + Duration::from_secs(3600)));
    }

    #[test]
    fn closes_by_itself_at_the_deadline() {
        let fence = Fence::closed();
        let t0 = Instant::now();
        assert!(!fence.allows_writes_at(t0), "closed before the lease is held");
        fence.open_until(t0 + Duration::from_secs(10));
        assert!(fence.allows_writes_at(t0 + Duration::from_millis(9_999)));
        assert!(!fence.allows_writes_at(t0 + Duration::from_secs(10)), "closed at the deadline, with no one acting");
        assert_eq!(fence.remaining_at(t0 + Duration::from_secs(4)), Duration::from_secs(6));
    }

    #[test]
    fn a_late_older_renewal_does_not_shorten_it_and_revocation_is_final() {
        let fence = Fence::closed();
        let t0 = Instant::now();
        fence.open_until(t0 + Duration::from_secs(10));
        fence.open_until(t0 + Duration::from_secs(5));
        assert!(fence.allows_writes_at(t0 + Duration::from_secs(7)));
        fence.revoke();
        assert!(!fence.allows_writes_at(t0));
        fence.open_until(t0 + Duration::from_secs(20));
        assert!(!fence.allows_writes_at(t0), "a renewal that completes after stepping down reopens nothing");
    }
}
