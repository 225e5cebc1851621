//! Proving a lease by this process's own clock.
//!
//! The store fences writes: a write carrying an old epoch is refused. It cannot fence side
//! effects: a process that stalled (stopped, swapped out, partitioned from the store) past its
//! lease may wake up while another process drives the execution, and a step body it starts then
//! runs beside the new owner's. So the engine starts a step body, a compensation or a child
//! execution only while it can *prove* that it still holds the lease:
//!
//! - every grant of a lease (creating, claiming, reopening an execution) and every renewal
//!   notes the monotonic instant **before** the write that set `lease_until = now + lease`, so
//!   the lease holds at least until that instant plus the lease duration;
//! - the engine counts on it only until that instant plus `lease - margin`, where the margin is
//!   a fifth of the lease (6 s with the default 30 s): it covers small differences between the
//!   processes' wall clocks and the moments between the check and the body's first instruction;
//! - it checks right before each attempt of a body or a compensation, after any wait or pause
//!   (a backoff, a timer, a barrier), with no await in between;
//! - an execution whose lease it can no longer prove — the renewal did not cover it, or the
//!   proof ran out (renewals failed, or the process stalled) — is given up at once: its body is
//!   dropped, nothing more is written, and the store takes it back if no one else did.
//!
//! What no engine can prevent: a process stopped *between* the check and the body's first
//! instruction, or inside a body, keeps running that body when it continues. Step bodies get
//! an idempotency key for this (`StepContext::idempotency_key`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How much of the lease the engine does not count on: a fifth.
const MARGIN_DIVISOR: u32 = 5;

/// The engine's clock for lease proofs.
pub(crate) struct LeaseClock {
    /// Instants are kept as nanoseconds since this one.
    base: Instant,
    /// How long the engine counts on a lease after the instant it was granted or renewed.
    provable: Duration,
}

impl LeaseClock {
    pub(crate) fn new(lease: Duration) -> Self {
        Self { base: Instant::now(), provable: lease - lease / MARGIN_DIVISOR }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// How long one execution's lease is provable.
pub(crate) struct HeldLease {
    /// Nanoseconds since the clock's base until which the lease is provable (0: lost).
    until: AtomicU64,
    /// Nanoseconds since the clock's base at which the last write that granted or renewed the
    /// lease had *returned*: a renewal that begins later must list the execution. (The instant
    /// the write began says nothing of when it committed: a grant under way while a renewal
    /// commits is not in the renewal's answer, and is not lost.)
    confirmed: AtomicU64,
}

impl HeldLease {
    /// A lease granted by a write that began at `from`.
    pub(crate) fn granted(clock: &LeaseClock, from: Instant) -> Self {
        let lease = Self { until: AtomicU64::new(0), confirmed: AtomicU64::new(0) };
        lease.renewed(clock, from);
        lease
    }

    /// The lease was renewed (or granted) by a write that began at `from` and has returned.
    pub(crate) fn renewed(&self, clock: &LeaseClock, from: Instant) {
        let until = clock.nanos(from).saturating_add(u64::try_from(clock.provable.as_nanos()).unwrap_or(u64::MAX));
        self.until.fetch_max(until, Ordering::AcqRel);
        self.confirmed.fetch_max(clock.nanos(Instant::now()), Ordering::AcqRel);
    }

    /// True if the lease is provable now.
    pub(crate) fn holds(&self, clock: &LeaseClock) -> bool {
        clock.nanos(Instant::now()) < self.until.load(Ordering::Acquire)
    }

    /// True if the last write that granted or renewed the lease had returned before `at`: a
    /// renewal that began at `at` saw it committed, so an answer without the execution means
    /// another engine owns it now.
    pub(crate) fn confirmed_before(&self, clock: &LeaseClock, at: Instant) -> bool {
        self.confirmed.load(Ordering::Acquire) < clock.nanos(at)
    }

    /// The lease is gone (another engine owns the execution, or it is no longer active).
    pub(crate) fn lost(&self) {
        self.until.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_provable_for_four_fifths_of_its_duration_from_the_write() {
        let clock = LeaseClock::new(Duration::from_millis(50));
        let lease = HeldLease::granted(&clock, Instant::now());
        assert!(lease.holds(&clock));
        std::thread::sleep(Duration::from_millis(41));
        assert!(!lease.holds(&clock), "40 ms of a 50 ms lease are provable");
        assert!(lease.confirmed_before(&clock, Instant::now() + Duration::from_millis(1)));
        lease.renewed(&clock, Instant::now());
        assert!(lease.holds(&clock));
        lease.lost();
        assert!(!lease.holds(&clock));
    }

    #[test]
    fn a_grant_still_under_way_when_a_renewal_began_is_not_counted_as_missed_by_it() {
        let clock = LeaseClock::new(Duration::from_secs(30));
        // The grant's write began first, the renewal began (and committed without it), then the
        // grant's write returned.
        let grant_began = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        let renewal_began = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        let lease = HeldLease::granted(&clock, grant_began);
        assert!(!lease.confirmed_before(&clock, renewal_began));
        // The next renewal begins after the grant returned: it must list the execution.
        assert!(lease.confirmed_before(&clock, Instant::now() + Duration::from_millis(1)));
    }
}
