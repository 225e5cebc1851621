//! What every store shares about queues (see [`Queue`]): how many queued executions a
//! queue's limits admit now, and when a rate-limited queue may start one again.
//!
//! A queue's slots are held by its executions that were admitted and have not finished —
//! `pending` (waiting for an exclusive key), `running`, `waiting`, `compensating` — whoever
//! owns them, and whether their owner is alive: a worker that dies keeps its slots until its
//! executions are taken over and finish. A start is an admission (`queued` → `running`), at
//! the claiming engine's clock; the rate limit counts the starts within the window that ends
//! now.

use std::time::Duration;

use crate::queue::{Queue, QueueStatus};
use crate::time::Timestamp;

/// The states that hold a slot of their queue, as SQL.
pub(crate) const SLOT_STATES: &str = "('pending', 'running', 'waiting', 'compensating')";

/// How many more of the queue's executions may start now, given how many hold a slot and how
/// many started within the rate window; at most `limit`.
pub(crate) fn budget(queue: &Queue, active: u64, started_in_window: u64, limit: u64) -> u64 {
    let by_concurrency = queue.concurrency.map_or(u64::MAX, |max| u64::from(max).saturating_sub(active));
    let by_rate = queue.rate.map_or(u64::MAX, |rate| u64::from(rate.starts).saturating_sub(started_in_window));
    by_concurrency.min(by_rate).min(limit)
}

/// The start of the rate window that ends at `now`: starts strictly after it count.
pub(crate) fn window_start(per: Duration, now: Timestamp) -> Timestamp {
    Timestamp::from_micros(now.as_micros().saturating_sub(per.as_micros() as i64))
}

/// When a queue whose rate window is full may start again: when its `starts`-th most recent
/// start (`nth_latest`) leaves the window. `None` if that is not after `now` (the window is
/// not full: a start is allowed now, or only the concurrency limit holds it back).
pub(crate) fn reopens_at(per: Duration, nth_latest: Option<Timestamp>, now: Timestamp) -> Option<Timestamp> {
    let at = Timestamp::from_micros(nth_latest?.as_micros().saturating_add(per.as_micros() as i64));
    (at > now).then_some(at)
}

/// The names of every queue: the defined ones and the ones executions name, sorted.
pub(crate) fn all_names(named: Vec<String>, defined: &[Queue]) -> Vec<String> {
    let mut names = named;
    names.extend(defined.iter().map(|q| q.name.clone()));
    names.sort();
    names.dedup();
    names
}

/// How a queue stands: its stored limits (if defined), the executions holding its slots and
/// started within its rate window (`usage`), and its queued ones with the oldest's creation.
pub(crate) fn status(
    name: String,
    defined: &[Queue],
    usage: (u64, u64),
    queued: u64,
    oldest_queued: Option<Timestamp>,
) -> QueueStatus {
    let limits = defined.iter().find(|q| q.name == name).cloned();
    let (active, started) = usage;
    QueueStatus {
        started_in_window: limits.as_ref().and_then(|q| q.rate).map(|_| started),
        limits,
        queued,
        active,
        oldest_queued,
        name,
    }
}

/// A queue's limits from stored columns (concurrency, starts per window, the window in
/// microseconds).
pub(crate) fn from_columns(name: String, concurrency: Option<i64>, starts: Option<i64>, per: Option<i64>) -> Queue {
    let mut queue = Queue::new(name);
    queue.concurrency = concurrency.map(|n| n.clamp(0, i64::from(u32::MAX)) as u32);
    if let (Some(starts), Some(per)) = (starts, per) {
        queue = queue.rate(starts.clamp(0, i64::from(u32::MAX)) as u32, Duration::from_micros(per.max(0) as u64));
    }
    queue
}

/// A queue's limits as stored columns: concurrency, starts per window, the window in
/// microseconds.
pub(crate) fn to_columns(queue: &Queue) -> (Option<i64>, Option<i64>, Option<i64>) {
    (
        queue.concurrency.map(i64::from),
        queue.rate.map(|rate| i64::from(rate.starts)),
        queue.rate.map(|rate| rate.per.as_micros() as i64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_the_tightest_limit() {
        let both = Queue::new("q").concurrency(3).rate(5, Duration::from_secs(60));
        assert_eq!(budget(&both, 0, 0, 100), 3);
        assert_eq!(budget(&both, 2, 0, 100), 1);
        assert_eq!(budget(&both, 0, 4, 100), 1);
        assert_eq!(budget(&both, 4, 0, 100), 0, "more active than allowed (limits lowered) admits none");
        assert_eq!(budget(&Queue::new("q"), 1_000, 1_000, 7), 7);
    }

    #[test]
    fn a_full_window_reopens_when_its_oldest_counted_start_leaves_it() {
        let now = Timestamp::from_micros(100_000_000);
        let per = Duration::from_secs(60);
        let start = Timestamp::from_micros(now.as_micros() - 10_000_000);
        assert_eq!(reopens_at(per, Some(start), now), Some(Timestamp::from_micros(start.as_micros() + 60_000_000)));
        assert_eq!(reopens_at(per, Some(Timestamp::from_micros(now.as_micros() - 60_000_000)), now), None);
        assert_eq!(reopens_at(per, None, now), None);
        assert_eq!(window_start(per, now), Timestamp::from_micros(40_000_000));
    }
}
