//! The rules every store keeps, one function each; `conformance!` runs each on every store.

use std::time::Duration;

use serde_json::value::RawValue;

use super::fixture::*;
use crate::execution::{ExecutionId, ExecutionState};
use crate::failure::{Failure, FailureKind};
use crate::journal::{CallKey, JournalEntry, JournalEvent};
use crate::queue::Queue;
use crate::store::contract::{
    Claim, CreateOutcome, Delivered, Delivery, ExecutionQuery, InboxKind, NewEvent, NewExecution, PageCursor, Purge,
    Reopen, Reopened, Reopening, ScheduleAdvance, StepEvent, Store, StoreError, Suspend, Suspended, Undelivered,
};
use crate::time::Timestamp;

const SECOND: Duration = Duration::from_secs(1);

/// A second create with the same id changes nothing and returns the first execution.
pub(super) async fn create_is_idempotent(store: &dyn Store) {
    let now = Timestamp::now();
    let first = store.create_execution(new_execution("order-1", "engine-a", now)).await.unwrap();
    assert!(matches!(first, CreateOutcome::Created), "{first:?}");
    let created = record(store, &"order-1".into()).await;
    assert_eq!(created.state, ExecutionState::Running);
    assert_eq!((created.epoch, created.owner.as_deref()), (1, Some("engine-a")));
    assert_eq!(created.workflow, WORKFLOW);
    assert_eq!(created.input.get(), r#""order-1""#);

    let mut again = new_execution("order-1", "engine-b", now + SECOND);
    again.input = json("another input");
    match store.create_execution(again).await.unwrap() {
        CreateOutcome::Exists(existing) => {
            assert_eq!(existing.input.get(), r#""order-1""#);
            assert_eq!((existing.epoch, existing.owner.as_deref()), (1, Some("engine-a")));
        }
        other => panic!("expected the existing execution, got {other:?}"),
    }
    let after = record(store, &"order-1".into()).await;
    assert_eq!((after.epoch, after.owner.as_deref(), after.input.get()), (1, Some("engine-a"), r#""order-1""#));
    assert!(store.journal(&"order-1".into()).await.unwrap().is_empty());
}

/// A claim takes an active execution only once its owner's lease ended, with the next epoch.
pub(super) async fn a_claim_takes_only_executions_whose_lease_expired(store: &dyn Store) {
    let now = Timestamp::now();
    create(store, new_execution("held", "engine-a", now)).await;
    assert!(claimed(store, &claim("engine-b", now)).await.is_empty(), "the lease holds");

    let later = now + LEASE + SECOND;
    let taken = store.claim_orphans(&claim("engine-b", later)).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].epoch, taken[0].owner.as_deref()), (2, Some("engine-b")));
    assert_eq!(taken[0].lease_until, Some(later + LEASE));
    let stored = record(store, &"held".into()).await;
    assert_eq!((stored.epoch, stored.owner.as_deref(), stored.lease_until), (2, Some("engine-b"), Some(later + LEASE)));
    // The new lease holds against everyone, the previous owner too.
    assert!(claimed(store, &claim("engine-a", later + SECOND)).await.is_empty());
}

/// An execution created without an owner (by a client-only engine) has no lease, and the next
/// claim of any engine takes it.
pub(super) async fn an_execution_created_without_an_owner_is_claimed_at_once(store: &dyn Store) {
    let now = Timestamp::now();
    let mut new = new_execution("for-workers", "client", now);
    new.owner = None;
    let created = create(store, new).await;
    assert_eq!((created.owner, created.lease_until, created.epoch), (None, None, 1));
    let taken = store.claim_orphans(&claim("worker", now)).await.unwrap();
    assert_eq!(taken.len(), 1, "claimable at once");
    assert_eq!((taken[0].epoch, taken[0].owner.as_deref()), (2, Some("worker")));
    assert!(renew(store, "client", &[("for-workers", 1)], now + LEASE).await.is_empty(), "the client holds nothing");
}

/// A claim takes only executions of the workflows it names, only the one it asks for if it
/// does, and no more than its limit.
pub(super) async fn a_claim_takes_only_the_workflows_it_names_and_no_more_than_its_limit(store: &dyn Store) {
    let now = Timestamp::now();
    for id in ["o-1", "o-2", "o-3", "o-4", "o-5"] {
        create(store, new_execution(id, "gone", now)).await;
    }
    let later = now + LEASE + SECOND;
    let mut other_workflows = claim("engine-b", later);
    other_workflows.workflows = vec![Claim::workflow_key("another_workflow", 0), Claim::workflow_key(WORKFLOW, 1)];
    assert!(claimed(store, &other_workflows).await.is_empty());

    let mut only = claim("engine-b", later);
    only.only = Some("o-4".into());
    assert_eq!(claimed(store, &only).await, ["o-4"]);

    let mut two = claim("engine-b", later);
    two.limit = 2;
    assert_eq!(claimed(store, &two).await.len(), 2);
    assert_eq!(claimed(store, &claim("engine-c", later)).await.len(), 2, "the rest");
}

/// A write with an older epoch than the execution's is refused whole: no entry, no state change.
pub(super) async fn fencing_refuses_a_stale_epoch_atomically(store: &dyn Store) {
    let now = Timestamp::now();
    create(store, new_execution("contested", "engine-a", now)).await;
    store.append(write("contested", 1, [started(0)], None)).await.unwrap();
    assert_eq!(claimed(store, &claim("engine-b", now + LEASE + SECOND)).await, ["contested"]);

    let stale = write("contested", 1, [started(1)], Some(to_state(ExecutionState::Completed, None)));
    let refused = store.append(stale).await.unwrap_err();
    assert!(matches!(refused, StoreError::Fenced { current: 2, attempted: 1, .. }), "{refused}");
    assert_eq!(store.journal(&"contested".into()).await.unwrap().len(), 1, "no entry of the refused write");
    let stored = record(store, &"contested".into()).await;
    assert_eq!((stored.state, stored.epoch), (ExecutionState::Running, 2), "no state change either");
    assert!(stored.result.is_none());

    // The new owner writes on.
    store.append(write("contested", 2, [started(1)], None)).await.unwrap();
    assert_eq!(store.journal(&"contested".into()).await.unwrap().len(), 2);
}

/// Each write's entries follow the journal's last index: a gap or a repeat is refused, and
/// so is every later write of that execution at that epoch (its writes land in order or not
/// at all); a takeover writes on.
pub(super) async fn appends_follow_the_journal_without_gaps_or_repeats(store: &dyn Store) {
    let now = Timestamp::now();
    create(store, new_execution("repeat", "engine-a", now)).await;
    store.append(write("repeat", 1, [started(0), started(1)], None)).await.unwrap();
    let repeat = store.append(write("repeat", 1, [started(1)], None)).await.unwrap_err();
    assert!(matches!(repeat, StoreError::OutOfSequence { expected: 2, got: 1, .. }), "{repeat}");
    let behind = write("repeat", 1, [started(2)], Some(to_state(ExecutionState::Completed, None)));
    let behind = store.append(behind).await.unwrap_err();
    assert!(behind.to_string().contains("an earlier write of execution repeat failed"), "{behind}");
    let stored = record(store, &"repeat".into()).await;
    assert_eq!(stored.state, ExecutionState::Running, "the state change behind the failure did not land");
    assert_eq!(store.journal(&"repeat".into()).await.unwrap().len(), 2);
    assert_eq!(claimed(store, &claim("engine-b", now + LEASE + SECOND)).await, ["repeat"]);
    store.append(write("repeat", 2, [started(2)], None)).await.unwrap();

    create(store, new_execution("gap", "engine-a", now)).await;
    store.append(write("gap", 1, [started(0)], None)).await.unwrap();
    let gap = store.append(write("gap", 1, [started(2)], None)).await.unwrap_err();
    assert!(matches!(gap, StoreError::OutOfSequence { expected: 1, got: 2, .. }), "{gap}");
    assert_eq!(store.journal(&"gap".into()).await.unwrap().iter().map(|e| e.index).collect::<Vec<_>>(), [0]);

    let unknown = store.append(write("nobody", 1, [started(0)], None)).await.unwrap_err();
    assert!(matches!(unknown, StoreError::NotFound(_)), "{unknown}");
}

/// Entries and a state change of one write land together; what was written reads back.
pub(super) async fn a_transition_is_written_with_its_entries(store: &dyn Store) {
    let now = Timestamp::now();
    create(store, new_execution("done", "engine-a", now)).await;
    let completed = JournalEntry {
        index: 0,
        at: now,
        event: JournalEvent::StepCompleted {
            seq: 0,
            key: CallKey::new("charge", 1),
            attempt: 2,
            input_hash: 0xfeed_beef_dead_cafe,
            started_at: now,
            output: json(42),
            compensation: Some(json("refund 42")),
            by: Some("host-a:42".into()),
        },
    };
    let retain_until = now + Duration::from_secs(3600);
    let transition = to_state(ExecutionState::Completed, Some(retain_until));
    store.append(write("done", 1, [completed.clone()], Some(transition))).await.unwrap();

    let stored = record(store, &"done".into()).await;
    assert_eq!(stored.state, ExecutionState::Completed);
    assert_eq!(stored.result.as_deref().map(RawValue::get), Some(r#""done""#));
    assert_eq!(stored.retain_until, Some(retain_until));
    let journal = store.journal(&"done".into()).await.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(serde_json::to_string(&journal[0]).unwrap(), serde_json::to_string(&completed).unwrap());
    // Finished: no claim takes it, however late.
    assert!(claimed(store, &claim("engine-b", now + LEASE * 10)).await.is_empty());
}

/// Renewal extends the leases of the executions an engine drives (held by it, at their epochs)
/// and lists them — nothing else it holds, and never to an earlier end; releasing gives them
/// up, so a claim takes them at once.
pub(super) async fn renewal_extends_leases_and_release_gives_them_up(store: &dyn Store) {
    let now = Timestamp::now();
    create(store, new_execution("r-1", "engine-a", now)).await;
    create(store, new_execution("r-2", "engine-a", now)).await;
    create(store, new_execution("r-3", "engine-b", now)).await;
    // Held by engine-a, which does not drive it (its creation's answer was lost): not renewed.
    create(store, new_execution("r-4", "engine-a", now)).await;

    let until = now + LEASE * 2;
    let held = [("r-1", 1), ("r-2", 1), ("r-3", 1), ("gone", 1)];
    let renewed = renew(store, "engine-a", &held, until).await;
    assert_eq!(renewed, [("r-1".to_owned(), 1, false), ("r-2".to_owned(), 1, false)]);
    assert_eq!(record(store, &"r-1".into()).await.lease_until, Some(until));
    assert_eq!(record(store, &"r-3".into()).await.lease_until, Some(now + LEASE), "another owner's lease is unchanged");
    assert_eq!(record(store, &"r-4".into()).await.lease_until, Some(now + LEASE), "not driven: not renewed");
    // At another epoch than the one held (taken over and back, or released and claimed again).
    assert!(renew(store, "engine-a", &[("r-1", 2)], until + SECOND).await.is_empty());
    // A renewal that was slow to land never shortens a later lease.
    assert_eq!(renew(store, "engine-a", &[("r-1", 1)], now + LEASE).await.len(), 1);
    assert_eq!(record(store, &"r-1".into()).await.lease_until, Some(until), "not shortened");

    let mut owners = store.owners().await.unwrap();
    owners.sort_by(|a, b| a.owner.cmp(&b.owner));
    assert_eq!(
        owners
            .iter()
            .map(|o| (o.owner.as_str(), o.executions, o.lease_until, o.earliest_lease_until))
            .collect::<Vec<_>>(),
        [("engine-a", 3, Some(until), Some(now + LEASE)), ("engine-b", 1, Some(now + LEASE), Some(now + LEASE))]
    );

    assert_eq!(store.release("engine-a").await.unwrap(), 3);
    assert_eq!(record(store, &"r-1".into()).await.owner, None);
    assert!(renew(store, "engine-a", &held, until).await.is_empty(), "nothing left to renew");
    assert_eq!(claimed(store, &claim("engine-c", now)).await, ["r-1", "r-2", "r-4"], "released: taken at once");
}

/// Releasing one execution happens only at the epoch it is held at.
pub(super) async fn releasing_one_execution_checks_its_epoch(store: &dyn Store) {
    let now = Timestamp::now();
    create(store, new_execution("one", "engine-a", now)).await;
    assert!(!store.release_execution(&"one".into(), 2).await.unwrap(), "not held at epoch 2");
    assert_eq!(record(store, &"one".into()).await.owner.as_deref(), Some("engine-a"));
    assert!(store.release_execution(&"one".into(), 1).await.unwrap());
    assert_eq!(record(store, &"one".into()).await.owner, None);
    assert_eq!(claimed(store, &claim("engine-b", now)).await, ["one"]);
}

fn suspend(id: &str, epoch: u64, wake_at: Option<Timestamp>, observed_wakeups: u64) -> Suspend {
    Suspend { execution: id.into(), epoch, wake_at, observed_wakeups }
}

/// A suspended execution is `waiting` and unowned; a delivery wakes it, and the next claim
/// takes it over as `running`, its inbox intact.
pub(super) async fn a_suspended_execution_is_woken_by_a_delivery(store: &dyn Store) {
    let now = Timestamp::now();
    create(store, new_execution("asleep", "engine-a", now)).await;
    assert_eq!(store.suspend(&suspend("asleep", 1, None, 0)).await.unwrap(), Suspended::Yes);
    let waiting = record(store, &"asleep".into()).await;
    assert_eq!((waiting.state, waiting.owner.as_deref()), (ExecutionState::Waiting, None));
    assert!(claimed(store, &claim("engine-b", now + LEASE * 10)).await.is_empty(), "nothing wakes it yet");
    assert_eq!(store.next_wake().await.unwrap(), None);

    let delivered = store.deliver(&event("asleep", "payment", 7, now + SECOND)).await.unwrap();
    assert_eq!(delivered, Delivered::Stored { woke: true });
    let taken = store.claim_orphans(&claim("engine-b", now + SECOND * 2)).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].state, taken[0].epoch, taken[0].wakeups), (ExecutionState::Running, 2, 1));
    let entry = store.inbox(&"asleep".into(), InboxKind::Event, "payment", 0).await.unwrap().expect("kept");
    assert_eq!((entry.position, entry.payload.as_deref().map(RawValue::get)), (0, Some("7")));
}

/// A suspend that did not see the latest delivery is refused, so no delivery is slept through.
pub(super) async fn a_suspend_behind_a_delivery_is_refused(store: &dyn Store) {
    let now = Timestamp::now();
    create(store, new_execution("busy", "engine-a", now)).await;
    let delivered = store.deliver(&event("busy", "payment", 1, now)).await.unwrap();
    assert_eq!(delivered, Delivered::Stored { woke: false }, "a running execution needs no waking");
    assert_eq!(store.suspend(&suspend("busy", 1, None, 0)).await.unwrap(), Suspended::Woken(1));
    assert_eq!(record(store, &"busy".into()).await.state, ExecutionState::Running);
    assert_eq!(store.suspend(&suspend("busy", 1, None, 1)).await.unwrap(), Suspended::Yes);
}

/// Only the owner at the current epoch may suspend an execution.
pub(super) async fn a_suspend_with_a_stale_epoch_is_fenced(store: &dyn Store) {
    let now = Timestamp::now();
    create(store, new_execution("taken", "engine-a", now)).await;
    assert_eq!(claimed(store, &claim("engine-b", now + LEASE + SECOND)).await, ["taken"]);
    let refused = store.suspend(&suspend("taken", 1, None, 0)).await.unwrap_err();
    assert!(matches!(refused, StoreError::Fenced { current: 2, attempted: 1, .. }), "{refused}");
    let stored = record(store, &"taken".into()).await;
    assert_eq!((stored.state, stored.owner.as_deref()), (ExecutionState::Running, Some("engine-b")));
}

/// Deliveries of one name keep their order, by position; names do not mix.
pub(super) async fn deliveries_are_kept_in_order_per_name(store: &dyn Store) {
    let now = Timestamp::now();
    create(store, new_execution("inbox", "engine-a", now)).await;
    for (payload, name) in [(1, "payment"), (2, "payment"), (9, "refund"), (3, "payment")] {
        store.deliver(&event("inbox", name, payload, now)).await.unwrap();
    }
    let at = |name: &'static str, position| async move {
        let entry = store.inbox(&"inbox".into(), InboxKind::Event, name, position).await.unwrap();
        entry.map(|e| (e.position, e.payload.unwrap().get().to_owned()))
    };
    assert_eq!(at("payment", 0).await, Some((0, "1".into())));
    assert_eq!(at("payment", 1).await, Some((1, "2".into())));
    assert_eq!(at("payment", 2).await, Some((2, "3".into())));
    assert_eq!(at("payment", 3).await, None);
    assert_eq!(at("refund", 0).await, Some((0, "9".into())));
    assert_eq!(at("shipping", 0).await, None);
    let completions = store.inbox(&"inbox".into(), InboxKind::Completion, "payment", 0).await.unwrap();
    assert!(completions.is_none(), "events and completions do not mix");
    assert_eq!(record(store, &"inbox".into()).await.wakeups, 4);
}

/// A timer's wake-up time is the earliest due, and a claim takes the execution once it is.
pub(super) async fn wake_up_times_come_due(store: &dyn Store) {
    let now = Timestamp::now();
    create(store, new_execution("timer", "engine-a", now)).await;
    create(store, new_execution("later", "engine-a", now)).await;
    let (soon, later) = (now + SECOND * 10, now + SECOND * 20);
    assert_eq!(store.suspend(&suspend("later", 1, Some(later), 0)).await.unwrap(), Suspended::Yes);
    assert_eq!(store.suspend(&suspend("timer", 1, Some(soon), 0)).await.unwrap(), Suspended::Yes);
    assert_eq!(store.next_wake().await.unwrap(), Some(soon));
    assert_eq!(record(store, &"timer".into()).await.wake_at, Some(soon));

    assert!(claimed(store, &claim("engine-b", now + SECOND)).await.is_empty(), "not due yet");
    assert_eq!(claimed(store, &claim("engine-b", soon + SECOND)).await, ["timer"]);
    assert_eq!(record(store, &"timer".into()).await.state, ExecutionState::Running);
    assert_eq!(store.next_wake().await.unwrap(), Some(later));
}

/// An execution whose exclusive key is held waits `pending`; it runs once the holder ends.
pub(super) async fn exclusive_keys_queue_and_hand_over(store: &dyn Store) {
    let now = Timestamp::now();
    let keyed = |id: &str, at: Timestamp| {
        let mut new = new_execution(id, "engine-a", at);
        new.exclusive_key = Some("cart-7".into());
        new
    };
    let first = store.create_execution(keyed("holder", now)).await.unwrap();
    assert!(matches!(first, CreateOutcome::Created), "{first:?}");
    let second = store.create_execution(keyed("queued", now + SECOND)).await.unwrap();
    assert!(matches!(second, CreateOutcome::Queued), "{second:?}");
    let third = store.create_execution(keyed("queued-too", now + SECOND * 2)).await.unwrap();
    assert!(matches!(third, CreateOutcome::Queued), "{third:?}");
    assert_eq!(record(store, &"queued".into()).await.state, ExecutionState::Pending);
    assert!(!store.acquire(&"queued".into(), 1).await.unwrap(), "the holder is active");

    finish(store, "holder", 1, 0, ExecutionState::Completed).await;
    assert!(!store.acquire(&"queued-too".into(), 1).await.unwrap(), "not the oldest waiting");
    assert!(store.acquire(&"queued".into(), 1).await.unwrap());
    assert_eq!(record(store, &"queued".into()).await.state, ExecutionState::Running);
    assert!(!store.acquire(&"queued-too".into(), 1).await.unwrap(), "the next holder is active");
    // Another key is independent.
    let mut other = new_execution("other-cart", "engine-a", now);
    other.exclusive_key = Some("cart-8".into());
    assert!(matches!(store.create_execution(other).await.unwrap(), CreateOutcome::Created));
}

/// With `fail_if_held`, a start whose key is held is refused, naming the holder.
pub(super) async fn a_key_held_refuses_a_start_that_asks_not_to_queue(store: &dyn Store) {
    let now = Timestamp::now();
    let mut holder = new_execution("holder", "engine-a", now);
    holder.exclusive_key = Some("nightly".into());
    create(store, holder).await;
    let mut eager = new_execution("eager", "engine-a", now);
    eager.exclusive_key = Some("nightly".into());
    eager.fail_if_held = true;
    match store.create_execution(eager).await.unwrap() {
        CreateOutcome::KeyHeld(by) => assert_eq!(by.as_str(), "holder"),
        other => panic!("expected KeyHeld, got {other:?}"),
    }
    assert!(store.execution(&"eager".into()).await.unwrap().is_none(), "not created");
}

/// A cancellation request is recorded, reaches the owner with its next renewal, and stops a
/// suspend; finished and unknown executions cannot be cancelled.
pub(super) async fn cancellation_requests_reach_the_owner_and_stop_a_suspend(store: &dyn Store) {
    let now = Timestamp::now();
    create(store, new_execution("doomed", "engine-a", now)).await;
    assert!(store.request_cancel(&"doomed".into(), now + RETAIN).await.unwrap());
    assert!(record(store, &"doomed".into()).await.cancel_requested);
    let renewed = renew(store, "engine-a", &[("doomed", 1)], now + LEASE).await;
    assert_eq!(renewed, [("doomed".to_owned(), 1, true)]);
    assert_eq!(store.suspend(&suspend("doomed", 1, None, 0)).await.unwrap(), Suspended::Cancelled);
    assert_eq!(record(store, &"doomed".into()).await.state, ExecutionState::Running);

    create(store, new_execution("finished", "engine-a", now)).await;
    finish(store, "finished", 1, 0, ExecutionState::Completed).await;
    assert!(!store.request_cancel(&"finished".into(), now + RETAIN).await.unwrap());
    assert!(!store.request_cancel(&"nobody".into(), now + RETAIN).await.unwrap());
}

/// Cancelling a waiting execution wakes it: the next claim takes it, to cancel it.
pub(super) async fn cancelling_a_waiting_execution_wakes_it(store: &dyn Store) {
    let now = Timestamp::now();
    create(store, new_execution("waiting", "engine-a", now)).await;
    let in_a_day = now + Duration::from_secs(86_400);
    assert_eq!(store.suspend(&suspend("waiting", 1, Some(in_a_day), 0)).await.unwrap(), Suspended::Yes);
    assert!(store.request_cancel(&"waiting".into(), now + RETAIN).await.unwrap());
    let taken = store.claim_orphans(&claim("engine-b", Timestamp::now() + SECOND)).await.unwrap();
    assert_eq!(taken.len(), 1, "woken to be cancelled");
    assert!(taken[0].cancel_requested);
}

/// Purge deletes finished executions whose retention ended — with their journals and
/// inboxes — and never an active one.
pub(super) async fn purge_deletes_finished_executions_past_their_retention(store: &dyn Store) {
    let now = Timestamp::now();
    let purged_at = now + SECOND;
    for id in ["expired", "retained", "active", "forever"] {
        create(store, new_execution(id, "engine-a", now)).await;
    }
    store.deliver(&event("expired", "note", 1, now)).await.unwrap();
    finish_retained(store, "expired", 1, 0, ExecutionState::Completed, Some(now)).await;
    finish_retained(store, "retained", 1, 0, ExecutionState::Compensated, Some(now + LEASE)).await;
    finish(store, "forever", 1, 0, ExecutionState::Failed).await;

    let purge = Purge { retained_before: Some(purged_at), finished_before: None, limit: 100 };
    assert_eq!(store.purge(&purge).await.unwrap(), 1);
    assert!(store.execution(&"expired".into()).await.unwrap().is_none());
    assert!(store.journal(&"expired".into()).await.unwrap().is_empty());
    assert!(store.inbox(&"expired".into(), InboxKind::Event, "note", 0).await.unwrap().is_none());
    for kept in ["retained", "active", "forever"] {
        assert!(store.execution(&kept.into()).await.unwrap().is_some(), "{kept} is kept");
    }
    assert_eq!(store.purge(&purge).await.unwrap(), 0, "nothing more is due");
}

/// Purge by finish time takes finished executions whatever their retention, at most `limit`
/// per call.
pub(super) async fn purge_by_finish_time_and_within_its_limit(store: &dyn Store) {
    let now = Timestamp::now();
    for id in ["f-1", "f-2", "f-3", "running"] {
        create(store, new_execution(id, "engine-a", now)).await;
    }
    for id in ["f-1", "f-2", "f-3"] {
        finish_retained(store, id, 1, 0, ExecutionState::Cancelled, Some(now + LEASE * 100)).await;
    }
    let purge = Purge { retained_before: None, finished_before: Some(Timestamp::now() + SECOND), limit: 2 };
    assert_eq!(store.purge(&purge).await.unwrap(), 2);
    assert_eq!(store.purge(&purge).await.unwrap(), 1);
    assert_eq!(store.purge(&purge).await.unwrap(), 0);
    assert!(store.execution(&"running".into()).await.unwrap().is_some());
    let not_yet = Purge { retained_before: None, finished_before: Some(now), limit: 10 };
    assert_eq!(store.purge(&not_yet).await.unwrap(), 0);
}

/// Nothing is delivered to an execution that is unknown, finished, or past its deadline.
pub(super) async fn deliveries_to_finished_unknown_or_timed_out_executions_are_refused(store: &dyn Store) {
    let now = Timestamp::now();
    assert_eq!(store.deliver(&event("nobody", "payment", 1, now)).await.unwrap(), Delivered::NotFound);

    create(store, new_execution("shipped", "engine-a", now)).await;
    finish(store, "shipped", 1, 0, ExecutionState::Completed).await;
    let late = store.deliver(&event("shipped", "payment", 1, now)).await.unwrap();
    assert_eq!(late, Delivered::Finished(ExecutionState::Completed));

    let mut bounded = new_execution("bounded", "engine-a", now);
    let deadline = now + SECOND * 5;
    bounded.deadline = Some(deadline);
    create(store, bounded).await;
    assert_eq!(record(store, &"bounded".into()).await.deadline, Some(deadline));
    assert_eq!(
        store.deliver(&event("bounded", "payment", 1, now + SECOND)).await.unwrap(),
        Delivered::Stored { woke: false }
    );
    let past = store.deliver(&event("bounded", "payment", 2, deadline)).await.unwrap();
    assert_eq!(past, Delivered::PastDeadline(deadline));
    assert!(store.inbox(&"bounded".into(), InboxKind::Event, "payment", 1).await.unwrap().is_none());
}

fn completion(id: &str, key: &CallKey, failure: Option<Failure>) -> Delivery {
    Delivery {
        execution: id.into(),
        kind: InboxKind::Completion,
        name: key.to_string(),
        payload: failure.is_none().then(|| json(true)),
        failure,
        at: Timestamp::now(),
        for_async_step: true,
        legacy_token: false,
    }
}

/// A completion from outside is taken only while an attempt of the async step runs or waits:
/// a failure once per attempt, a completion once for the token (the first wins, whichever
/// attempt it went to); after the step completed, none is.
pub(super) async fn an_async_step_takes_the_first_completion_of_its_token(store: &dyn Store) {
    let now = Timestamp::now();
    create(store, new_execution("approval", "engine-a", now)).await;
    let key = CallKey::new("approve", 1);
    let step = |index, attempt, event: fn(u32, CallKey, u32) -> JournalEvent| JournalEntry {
        index,
        at: now,
        event: event(0, key.clone(), attempt),
    };
    let started = |seq, key, attempt| JournalEvent::StepStarted { seq, key, attempt, input_hash: 0, by: None };
    let failed = |seq, key, attempt| JournalEvent::StepFailed {
        seq,
        key,
        attempt,
        input_hash: 0,
        started_at: Timestamp::now(),
        error: Box::new(Failure::new(FailureKind::Step, "declined")),
        retry_at: Some(Timestamp::now()),
        consumed: Some(0),
        by: None,
    };
    assert_eq!(store.deliver(&completion("approval", &key, None)).await.unwrap(), Delivered::NotStarted);

    store.append(write("approval", 1, [step(0, 1, started)], None)).await.unwrap();
    let failure = Failure::new(FailureKind::Step, "the manager said no");
    let first = store.deliver(&completion("approval", &key, Some(failure))).await.unwrap();
    assert_eq!(first, Delivered::Stored { woke: false });
    assert_eq!(store.deliver(&completion("approval", &key, None)).await.unwrap(), Delivered::AlreadyFailed);
    let entry = store.inbox(&"approval".into(), InboxKind::Completion, &key.to_string(), 0).await.unwrap().unwrap();
    assert_eq!((entry.attempt, entry.failure.is_some()), (Some(1), true));

    // The attempt failed and the next one has not started: nothing to deliver to.
    store.append(write("approval", 1, [step(1, 1, failed)], None)).await.unwrap();
    assert_eq!(store.deliver(&completion("approval", &key, None)).await.unwrap(), Delivered::NotStarted);
    store.append(write("approval", 1, [step(2, 2, started)], None)).await.unwrap();
    assert_eq!(store.deliver(&completion("approval", &key, None)).await.unwrap(), Delivered::Stored { woke: false });
    assert_eq!(store.deliver(&completion("approval", &key, None)).await.unwrap(), Delivered::AlreadyCompleted);
    let second = store.inbox(&"approval".into(), InboxKind::Completion, &key.to_string(), 1).await.unwrap().unwrap();
    assert_eq!((second.position, second.attempt, second.failure.is_none()), (1, Some(2), true));
    // Attempt 2 was cut off (a crash) before it recorded that it waits, and attempt 3 runs: it
    // takes the completion delivered to attempt 2. The token's first completion won: a second
    // one, for attempt 3, is refused, not stored where nothing would ever take it.
    store.append(write("approval", 1, [step(3, 3, started)], None)).await.unwrap();
    assert_eq!(store.deliver(&completion("approval", &key, None)).await.unwrap(), Delivered::AlreadyCompleted);
    let failure = Failure::new(FailureKind::Step, "too late");
    assert_eq!(store.deliver(&completion("approval", &key, Some(failure))).await.unwrap(), Delivered::AlreadyCompleted);
    assert!(store.inbox(&"approval".into(), InboxKind::Completion, &key.to_string(), 2).await.unwrap().is_none());
}

/// A write may carry a delivery to another execution (a child's result to its parent): both
/// land, or neither.
pub(super) async fn a_delivery_written_with_an_append_lands_with_it(store: &dyn Store) {
    let now = Timestamp::now();
    create(store, new_execution("parent", "engine-a", now)).await;
    let mut child = new_execution("parent:@child:ship#1", "engine-a", now);
    child.parent = Some(("parent".into(), "@child:ship#1".into()));
    create(store, child).await;
    assert_eq!(store.suspend(&suspend("parent", 1, None, 0)).await.unwrap(), Suspended::Yes);

    let result = Delivery {
        execution: "parent".into(),
        kind: InboxKind::Completion,
        name: "@child:ship#1".into(),
        payload: Some(json("shipped")),
        failure: None,
        at: now,
        for_async_step: false,
        legacy_token: false,
    };
    let mut stale = write("parent:@child:ship#1", 7, [started(0)], Some(to_state(ExecutionState::Completed, None)));
    stale.deliver = Some(Box::new(result.clone()));
    assert!(matches!(store.append(stale).await.unwrap_err(), StoreError::Fenced { .. }));
    assert!(store.inbox(&"parent".into(), InboxKind::Completion, "@child:ship#1", 0).await.unwrap().is_none());

    let mut ends = write("parent:@child:ship#1", 1, [started(0)], Some(to_state(ExecutionState::Completed, None)));
    ends.deliver = Some(Box::new(result));
    store.append(ends).await.unwrap();
    let delivered = store.inbox(&"parent".into(), InboxKind::Completion, "@child:ship#1", 0).await.unwrap();
    assert_eq!(delivered.unwrap().payload.unwrap().get(), r#""shipped""#);
    let child = record(store, &"parent:@child:ship#1".into()).await;
    assert_eq!(child.parent, Some((ExecutionId::from("parent"), "@child:ship#1".into())));
    assert_eq!(claimed(store, &claim("engine-b", now + SECOND)).await, ["parent"], "the parent is woken");
}

/// A completed execution (a child whose parent compensates) is taken into compensation by one
/// engine, with a new epoch; while that engine's lease holds, nobody else takes it.
pub(super) async fn reopen_takes_a_completed_execution_into_compensation(store: &dyn Store) {
    let now = Timestamp::now();
    create(store, new_execution("child", "engine-a", now)).await;
    finish(store, "child", 1, 0, ExecutionState::Completed).await;
    let reopen = |owner: &str, at: Timestamp| Reopen {
        execution: "child".into(),
        owner: owner.into(),
        now: at,
        lease_until: at + LEASE,
        failure: Failure::new(FailureKind::Cancelled, "the parent was cancelled"),
        purpose: Reopening::ParentCompensates,
    };
    match store.reopen(&reopen("engine-b", now)).await.unwrap() {
        Reopened::Yes(record) => {
            assert_eq!(
                (record.state, record.epoch, record.owner.as_deref()),
                (ExecutionState::Compensating, 2, Some("engine-b"))
            );
            assert!(record.failure.is_some_and(|f| f.message.contains("parent was cancelled")));
        }
        other => panic!("expected the execution, got {other:?}"),
    }
    let held = store.reopen(&reopen("engine-c", now + SECOND)).await.unwrap();
    assert!(matches!(held, Reopened::No(ExecutionState::Compensating)), "{held:?}");
    // Its owner gone, another engine takes it over.
    match store.reopen(&reopen("engine-c", now + LEASE + SECOND)).await.unwrap() {
        Reopened::Yes(record) => assert_eq!((record.epoch, record.owner.as_deref()), (3, Some("engine-c"))),
        other => panic!("expected a takeover, got {other:?}"),
    }
    finish(store, "child", 3, 1, ExecutionState::Compensated).await;
    let done = store.reopen(&reopen("engine-d", now + LEASE * 3)).await.unwrap();
    assert!(matches!(done, Reopened::No(ExecutionState::Compensated)), "{done:?}");
    let mut unknown = reopen("engine-d", now);
    unknown.execution = "nobody".into();
    assert!(matches!(store.reopen(&unknown).await.unwrap(), Reopened::NotFound));

    // A failed or blocked execution: only for an operator; a running one never.
    for (id, state) in [("failed", ExecutionState::Failed), ("blocked", ExecutionState::Blocked)] {
        create(store, new_execution(id, "engine-a", now)).await;
        let ended = if state == ExecutionState::Blocked { to_blocked(&["b"]) } else { to_state(state, None) };
        store.append(write(id, 1, [], Some(ended))).await.unwrap();
        let mut by_parent = reopen("engine-d", now);
        by_parent.execution = id.into();
        assert!(matches!(store.reopen(&by_parent).await.unwrap(), Reopened::No(s) if s == state));
        let by_operator = Reopen { purpose: Reopening::OperatorCompensates, ..by_parent };
        match store.reopen(&by_operator).await.unwrap() {
            Reopened::Yes(record) => assert_eq!(
                (record.state, record.epoch, record.owner.as_deref()),
                (ExecutionState::Compensating, 2, Some("engine-d"))
            ),
            other => panic!("expected {id} taken, got {other:?}"),
        }
    }
    create(store, new_execution("running", "engine-a", now)).await;
    let running =
        Reopen { execution: "running".into(), purpose: Reopening::OperatorCompensates, ..reopen("engine-d", now) };
    assert!(matches!(store.reopen(&running).await.unwrap(), Reopened::No(ExecutionState::Running)));
}

/// The key completion tokens are signed with is made with the store and stays the same.
pub(super) async fn the_token_key_is_made_once(store: &dyn Store) {
    let key = store.token_key().await.unwrap();
    assert_ne!(key, [0; 32]);
    assert_eq!(store.token_key().await.unwrap(), key);
}

/// Listings filter by state, workflow and creation time, newest first, and page.
pub(super) async fn listing_filters_and_pages_newest_first(store: &dyn Store) {
    let now = Timestamp::now();
    for (k, id) in ["l-0", "l-1", "l-2", "l-3"].into_iter().enumerate() {
        create(store, new_execution(id, "engine-a", now + SECOND * k as u32)).await;
    }
    finish(store, "l-1", 1, 0, ExecutionState::Completed).await;
    let list = |query: ExecutionQuery| async move {
        let list = store.list_executions(&query).await.unwrap();
        assert!(list.damaged.is_empty());
        list.records.into_iter().map(|r| r.id.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(list(ExecutionQuery::default()).await, ["l-3", "l-2", "l-1", "l-0"]);
    let running = ExecutionQuery { states: vec![ExecutionState::Running], ..Default::default() };
    assert_eq!(list(running).await, ["l-3", "l-2", "l-0"]);
    let page = ExecutionQuery { limit: Some(2), offset: 1, ..Default::default() };
    assert_eq!(list(page).await, ["l-2", "l-1"]);
    let window = ExecutionQuery { since: Some(now + SECOND), before: Some(now + SECOND * 3), ..Default::default() };
    assert_eq!(list(window).await, ["l-2", "l-1"]);
    let other = ExecutionQuery { workflow: Some("another_workflow".into()), ..Default::default() };
    assert!(list(other).await.is_empty());
    let ours = ExecutionQuery { workflow: Some(WORKFLOW.into()), limit: Some(1), ..Default::default() };
    assert_eq!(list(ours).await, ["l-3"]);
    // Keyset pages: after the last one listed, ties on the creation time ordered by id.
    create(store, new_execution("l-2b", "engine-a", now + SECOND * 2)).await;
    let after = |id: &str| {
        let at = now + SECOND * if id == "l-2b" { 2 } else { id[2..].parse::<u32>().unwrap() };
        ExecutionQuery {
            after: Some(PageCursor { created_at: at, id: id.into() }),
            limit: Some(2),
            ..Default::default()
        }
    };
    assert_eq!(list(after("l-3")).await, ["l-2b", "l-2"]);
    assert_eq!(list(after("l-2b")).await, ["l-2", "l-1"]);
    assert_eq!(list(after("l-1")).await, ["l-0"]);
    let running_after = ExecutionQuery { states: vec![ExecutionState::Running], ..after("l-2b") };
    assert_eq!(list(running_after).await, ["l-2", "l-0"]);
}

/// A store with executions in it checks clean.
pub(super) async fn a_fresh_store_checks_clean(store: &dyn Store) {
    let now = Timestamp::now();
    create(store, new_execution("c-1", "engine-a", now)).await;
    store.append(write("c-1", 1, [started(0), started(1)], None)).await.unwrap();
    let report = store.check(true).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!((report.executions, report.journal_entries), (1, 2));
}

/// A new execution of [`WORKFLOW`] on `queue`, created at `at` by an engine (which does not
/// own it: its queue admits it).
fn on_queue(id: &str, queue: &str, at: Timestamp) -> NewExecution {
    let mut new = new_execution(id, "engine-a", at);
    new.queue = Some(queue.into());
    new
}

/// A queue admits its queued executions oldest first, only as many as its concurrency leaves
/// room for; an admitted execution holds its slot while it waits, and gives it back when it
/// finishes.
pub(super) async fn a_queue_admits_within_its_concurrency_oldest_first(store: &dyn Store) {
    let now = Timestamp::now();
    store.define_queues(&[Queue::new("emails").concurrency(2)]).await.unwrap();
    for (n, id) in ["q1", "q2", "q3", "q4"].into_iter().enumerate() {
        let created = create(store, on_queue(id, "emails", now + SECOND * n as u32)).await;
        assert_eq!(created.state, ExecutionState::Queued);
        assert_eq!((created.owner, created.epoch, created.queue.as_deref()), (None, 0, Some("emails")));
    }
    let admitted = store.claim_orphans(&claim("engine-b", now)).await.unwrap();
    let ids: Vec<&str> = admitted.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["q1", "q2"], "the oldest, as many as the concurrency allows");
    assert!(admitted.iter().all(|r| r.state == ExecutionState::Running && r.epoch == 1));
    assert_eq!(admitted[0].owner.as_deref(), Some("engine-b"));
    assert!(claimed(store, &claim("engine-c", now)).await.is_empty(), "the queue is full");
    // A one-execution claim (a wake-up) admits nothing.
    let mut only = claim("engine-c", now);
    only.only = Some("q3".into());
    assert!(claimed(store, &only).await.is_empty());

    // Waiting, it holds its slot.
    assert_eq!(store.suspend(&suspend("q1", 1, None, 0)).await.unwrap(), Suspended::Yes);
    assert!(claimed(store, &claim("engine-c", now)).await.is_empty(), "a waiting execution holds its slot");
    finish(store, "q2", 1, 0, ExecutionState::Completed).await;
    assert_eq!(claimed(store, &claim("engine-c", now)).await, ["q3"]);

    let statuses = store.queues(now).await.unwrap();
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    let emails = &statuses[0];
    assert_eq!((emails.name.as_str(), emails.queued, emails.active), ("emails", 1, 2));
    assert_eq!(emails.limits, Some(Queue::new("emails").concurrency(2)));
    assert_eq!(emails.oldest_queued, Some(now + SECOND * 3));
    assert_eq!(emails.started_in_window, None, "no rate limit");

    // Raised limits are stored for every engine: the last one queued is admitted.
    store.define_queues(&[Queue::new("emails").concurrency(3)]).await.unwrap();
    assert_eq!(claimed(store, &claim("engine-c", now)).await, ["q4"]);
}

/// A rate-limited queue starts no more than its rate within any window; once its window is
/// full, the next wake-up is when its oldest counted start leaves it.
pub(super) async fn a_queue_starts_no_more_than_its_rate_in_a_window(store: &dyn Store) {
    let now = Timestamp::now();
    let minute = Duration::from_secs(60);
    store.define_queues(&[Queue::new("sms").rate(2, minute)]).await.unwrap();
    for (n, id) in ["s1", "s2", "s3"].into_iter().enumerate() {
        create(store, on_queue(id, "sms", now + Duration::from_millis(n as u64))).await;
    }
    assert_eq!(claimed(store, &claim("engine-a", now)).await, ["s1", "s2"]);
    finish(store, "s1", 1, 0, ExecutionState::Completed).await;
    finish(store, "s2", 1, 0, ExecutionState::Completed).await;
    assert!(claimed(store, &claim("engine-a", now + SECOND)).await.is_empty(), "two started within the minute");
    assert_eq!(store.next_wake().await.unwrap(), Some(now + minute), "when the window has room again");
    let sms = store.queues(now + SECOND).await.unwrap().remove(0);
    assert_eq!((sms.queued, sms.active, sms.started_in_window), (1, 0, Some(2)));
    assert_eq!(claimed(store, &claim("engine-a", now + minute + SECOND)).await, ["s3"]);
    assert_eq!(store.next_wake().await.unwrap(), None, "nothing queued");
}

/// A queued execution takes its exclusive key only once admitted (it waits for it `pending`,
/// holding its queue slot); one on a queue nobody defined stays queued; a queued execution
/// is cancelled at once, never having started.
pub(super) async fn queued_executions_take_their_key_when_admitted_and_cancel_at_once(store: &dyn Store) {
    let now = Timestamp::now();
    store.define_queues(&[Queue::new("payments")]).await.unwrap();
    let mut holder = new_execution("holder", "engine-a", now);
    holder.exclusive_key = Some("cart-7".into());
    create(store, holder).await;
    let mut keyed = on_queue("keyed", "payments", now + SECOND);
    keyed.exclusive_key = Some("cart-7".into());
    assert_eq!(create(store, keyed).await.state, ExecutionState::Queued);
    let admitted = store.claim_orphans(&claim("engine-b", now + SECOND)).await.unwrap();
    assert_eq!(admitted.len(), 1);
    assert_eq!((admitted[0].state, admitted[0].epoch), (ExecutionState::Pending, 1));
    assert!(!store.acquire(&"keyed".into(), 1).await.unwrap(), "its key is held");
    finish(store, "holder", 1, 0, ExecutionState::Completed).await;
    assert!(store.acquire(&"keyed".into(), 1).await.unwrap());

    create(store, on_queue("stranded", "nowhere", now)).await;
    assert!(claimed(store, &claim("engine-b", now + SECOND)).await.is_empty(), "an undefined queue admits nothing");
    let nowhere = store.queues(now).await.unwrap().into_iter().find(|q| q.name == "nowhere").expect("listed");
    assert_eq!((nowhere.limits, nowhere.queued), (None, 1));
    assert!(store.request_cancel(&"stranded".into(), now + RETAIN).await.unwrap());
    let cancelled = record(store, &"stranded".into()).await;
    assert_eq!((cancelled.state, cancelled.retain_until), (ExecutionState::Cancelled, Some(now + RETAIN)));
    assert!(!store.request_cancel(&"stranded".into(), now + RETAIN).await.unwrap(), "finished");
}

/// A schedule is stored at first sight, handled up to then; its handled ticks move by
/// compare-and-set (a process that read an older mark moves nothing), its latest run is kept
/// when a move starts none; pausing is stored, and an unknown schedule cannot be paused.
pub(super) async fn schedules_are_stored_at_first_sight_and_advanced_by_compare_and_set(store: &dyn Store) {
    let now = Timestamp::now();
    let names = ["hourly".to_owned(), "daily".to_owned()];
    let states = store.schedules(&names, now).await.unwrap();
    assert_eq!(states.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["hourly", "daily"], "in the order asked");
    assert!(states.iter().all(|s| s.since == now && s.handled == now && !s.paused && s.last_run.is_none()));
    assert!(states.iter().all(|s| s.missed == 0 && s.last_missed.is_none()));
    // A later sight changes nothing.
    let again = store.schedules(&names[..1], now + SECOND).await.unwrap();
    assert_eq!(again[0].handled, now);

    let advance = |from: Timestamp, to: Timestamp, run: Option<&str>| ScheduleAdvance {
        name: "hourly".into(),
        from,
        to,
        last_run: run.map(ExecutionId::from),
        missed: 2,
        last_missed: Some(from),
    };
    let hour = Duration::from_secs(3600);
    assert!(store.advance_schedule(&advance(now, now + hour, Some("hourly@1"))).await.unwrap());
    assert!(!store.advance_schedule(&advance(now, now + hour * 2, Some("hourly@2"))).await.unwrap(), "a stale mark");
    assert!(store.advance_schedule(&advance(now + hour, now + hour * 2, None)).await.unwrap());
    let hourly = store.schedules(&names[..1], now).await.unwrap().remove(0);
    assert_eq!((hourly.handled, hourly.last_run), (now + hour * 2, Some(ExecutionId::from("hourly@1"))));
    assert_eq!((hourly.missed, hourly.last_missed), (4, Some(now + hour)), "two moves of two missed each");

    assert!(store.pause_schedule("daily", true).await.unwrap());
    assert!(store.schedules(&names[1..], now).await.unwrap()[0].paused);
    assert!(store.pause_schedule("daily", false).await.unwrap());
    assert!(!store.schedules(&names[1..], now).await.unwrap()[0].paused);
    assert!(!store.pause_schedule("never-seen", true).await.unwrap());
}

/// An event is recorded once per id (a second recording changes nothing), listed for dispatch
/// oldest first until it is marked dispatched.
pub(super) async fn events_are_recorded_once_and_listed_until_dispatched(store: &dyn Store) {
    let now = Timestamp::now();
    let event =
        |id: &str, at: Timestamp| NewEvent { id: id.into(), name: "order.placed".into(), payload: json(id), at };
    assert!(store.record_event(event("e2", now + SECOND)).await.unwrap());
    assert!(store.record_event(event("e1", now)).await.unwrap());
    assert!(!store.record_event(event("e1", now + SECOND * 5)).await.unwrap(), "the same id again");
    let listed = store.undispatched_events(10).await.unwrap();
    assert_eq!(listed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["e1", "e2"], "oldest first");
    assert_eq!((listed[0].name.as_str(), listed[0].payload.get(), listed[0].at), ("order.placed", "\"e1\"", now));
    assert_eq!(store.undispatched_events(1).await.unwrap().len(), 1);
    store.mark_dispatched(&["e1".to_owned()]).await.unwrap();
    let listed = store.undispatched_events(10).await.unwrap();
    assert_eq!(listed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["e2"]);
}

/// Events a step emits are recorded with its journal write: one published at once is listed
/// for dispatch; one held by its execution is listed once the execution completes, and deleted
/// if it ends any other way.
pub(super) async fn events_a_step_emits_are_held_until_its_execution_completes(store: &dyn Store) {
    let now = Timestamp::now();
    let emitted = |id: &str, held: bool| StepEvent {
        event: NewEvent { id: id.into(), name: "order.placed".into(), payload: json(id), at: now },
        held,
    };
    let listed =
        || async { store.undispatched_events(10).await.unwrap().into_iter().map(|e| e.id).collect::<Vec<_>>() };
    for id in ["kept", "rolled-back"] {
        create(store, new_execution(id, "engine-a", now)).await;
    }
    let mut batch = write("kept", 1, [started(0)], None);
    batch.events = vec![emitted("kept/held", true), emitted("kept/now", false)];
    store.append(batch).await.unwrap();
    let mut batch = write("rolled-back", 1, [started(0)], None);
    batch.events = vec![emitted("rolled-back/held", true)];
    store.append(batch).await.unwrap();
    assert_eq!(listed().await, ["kept/now"], "held ones wait for their execution");

    finish(store, "kept", 1, 1, ExecutionState::Completed).await;
    finish(store, "rolled-back", 1, 1, ExecutionState::Compensated).await;
    assert_eq!(listed().await, ["kept/held", "kept/now"], "a completed execution's held event is published");
}

/// A child's held events are its parent's once it completes: published when the parent
/// completes, dropped when it is rolled back.
pub(super) async fn a_child_s_held_events_follow_its_parent(store: &dyn Store) {
    let now = Timestamp::now();
    let emitted = |id: &str| StepEvent {
        event: NewEvent { id: id.into(), name: "stock.reserved".into(), payload: json(id), at: now },
        held: true,
    };
    let listed =
        || async { store.undispatched_events(10).await.unwrap().into_iter().map(|e| e.id).collect::<Vec<_>>() };
    for parent in ["done", "undone"] {
        create(store, new_execution(parent, "engine-a", now)).await;
        let id = format!("{parent}:@child:reserve#1");
        let mut child = new_execution(&id, "engine-a", now);
        child.parent = Some((parent.into(), "@child:reserve#1".into()));
        create(store, child).await;
        let mut batch = write(&id, 1, [started(0)], None);
        batch.events = vec![emitted(&format!("{parent}/held"))];
        store.append(batch).await.unwrap();
        finish(store, &id, 1, 1, ExecutionState::Completed).await;
    }
    assert!(listed().await.is_empty(), "a completed child's events wait for its parent");
    finish(store, "undone", 1, 0, ExecutionState::Compensated).await;
    finish(store, "done", 1, 0, ExecutionState::Completed).await;
    assert_eq!(listed().await, ["done/held"], "published with the parent that completed, dropped with the other");
}

/// Dispatched events are purged once emitted before the cut-off, oldest first, within the limit;
/// the ones not dispatched yet (or held) are kept.
pub(super) async fn dispatched_events_are_purged_after_their_retention(store: &dyn Store) {
    let now = Timestamp::now();
    let event =
        |id: &str, at: Timestamp| NewEvent { id: id.into(), name: "order.placed".into(), payload: json(id), at };
    for (id, at) in [("old-1", now), ("old-2", now + SECOND), ("waiting", now), ("young", now + SECOND * 60)] {
        assert!(store.record_event(event(id, at)).await.unwrap());
    }
    store.mark_dispatched(&["old-1".to_owned(), "old-2".to_owned(), "young".to_owned()]).await.unwrap();
    let cut_off = now + SECOND * 30;
    assert_eq!(store.purge_events(cut_off, 1).await.unwrap(), 1, "within the limit");
    assert_eq!(store.purge_events(cut_off, 10).await.unwrap(), 1);
    assert_eq!(store.purge_events(cut_off, 10).await.unwrap(), 0);
    // Purged: the id records a new event. Kept: it is still the same event.
    assert!(store.record_event(event("old-1", now)).await.unwrap(), "a purged id is free again");
    assert!(!store.record_event(event("young", now)).await.unwrap(), "a kept one deduplicates");
    let listed = store.undispatched_events(10).await.unwrap();
    assert_eq!(listed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["old-1", "waiting"], "not dispatched: kept");
}

/// Undelivered events are recorded per (event, subscriber), updated in place, listed (the due
/// ones soonest first, or all of them latest failure first) and forgotten one subscriber or all.
pub(super) async fn undelivered_events_are_recorded_listed_and_forgotten(store: &dyn Store) {
    let now = Timestamp::now();
    let undelivered = |event: &str, subscriber: &str, failed: Timestamp, retry_at: Option<Timestamp>| Undelivered {
        event: event.into(),
        name: "order.placed".into(),
        payload: r#"{"order":1}"#.into(),
        emitted_at: now,
        subscriber: subscriber.into(),
        attempts: 1,
        error: "it conflicts".into(),
        first_failed_at: failed,
        last_failed_at: failed,
        retry_at,
    };
    let parked = undelivered("e1", "confirm", now, None);
    let soon = undelivered("e1", "reserve", now + SECOND, Some(now + SECOND * 2));
    let later = undelivered("e2", "reserve", now + SECOND * 2, Some(now + SECOND * 10));
    for u in [&parked, &soon, &later] {
        store.record_undelivered(u).await.unwrap();
    }
    let due = |at: Timestamp| async move {
        store.undelivered(Some(at), 10).await.unwrap().into_iter().map(|u| (u.event, u.subscriber)).collect::<Vec<_>>()
    };
    assert!(due(now).await.is_empty());
    assert_eq!(due(now + SECOND * 20).await, [("e1".into(), "reserve".into()), ("e2".into(), "reserve".into())]);
    let all = store.undelivered(None, 10).await.unwrap();
    assert_eq!(all, [later.clone(), soon.clone(), parked.clone()], "latest failure first, read back whole");
    assert_eq!(store.undelivered(None, 1).await.unwrap().len(), 1);

    // A second failure updates the record: its tries, error, time and next try.
    let again = Undelivered {
        attempts: 2,
        error: "still conflicts".into(),
        last_failed_at: now + SECOND * 3,
        retry_at: None,
        ..soon.clone()
    };
    store.record_undelivered(&again).await.unwrap();
    let all = store.undelivered(None, 10).await.unwrap();
    assert_eq!(all[0], again);
    assert_eq!(all.len(), 3);

    assert_eq!(store.forget_undelivered("e1", Some("reserve")).await.unwrap(), 1);
    assert_eq!(store.forget_undelivered("e1", None).await.unwrap(), 1);
    assert_eq!(store.forget_undelivered("e1", None).await.unwrap(), 0);
    assert_eq!(store.undelivered(None, 10).await.unwrap(), [later]);
}

/// A blocked execution gives up its lease and keeps the builds that blocked it: ordinary
/// claims pass it by, a claim to unblock takes it only for another build (and only blocked
/// ones), and cancelling it makes it an orphan any claim takes, to compensate it.
pub(super) async fn a_blocked_execution_is_claimed_only_by_another_build_or_to_be_cancelled(store: &dyn Store) {
    let now = Timestamp::now();
    for id in ["blocked", "running"] {
        create(store, new_execution(id, "engine-a", now)).await;
    }
    store.append(write("blocked", 1, [], Some(to_blocked(&["v1", "v2"])))).await.unwrap();
    let blocked = record(store, &"blocked".into()).await;
    assert_eq!(blocked.state, ExecutionState::Blocked);
    assert_eq!(blocked.blocked_by, ["v1", "v2"]);
    assert_eq!((blocked.owner, blocked.lease_until), (None, None));
    assert!(renew(store, "engine-a", &[("blocked", 1)], now + LEASE).await.is_empty(), "not renewed");

    let later = now + LEASE + SECOND;
    let unblock = |build: &str| Claim { unblock: Some(build.to_owned()), ..claim("engine-b", later) };
    assert_eq!(claimed(store, &claim("engine-b", now + SECOND)).await, Vec::<String>::new(), "an ordinary claim");
    assert_eq!(claimed(store, &unblock("v2")).await, Vec::<String>::new(), "a build that blocked it");
    assert_eq!(claimed(store, &unblock("v")).await, ["blocked"], "another build (not a prefix match)");
    let taken = record(store, &"blocked".into()).await;
    assert_eq!((taken.state, taken.epoch, taken.owner.as_deref()), (ExecutionState::Running, 2, Some("engine-b")));
    assert_eq!(taken.blocked_by, ["v1", "v2"], "kept: it would block those builds again");

    // Blocked again, then cancelled: any claim takes it, with its cancellation requested.
    store.append(write("blocked", 2, [], Some(to_blocked(&["v1", "v2", "v"])))).await.unwrap();
    assert!(store.request_cancel(&"blocked".into(), now + RETAIN).await.unwrap());
    let taken = store.claim_orphans(&claim("engine-c", Timestamp::now())).await.unwrap();
    assert_eq!(taken.iter().map(|r| (r.id.as_str(), r.cancel_requested)).collect::<Vec<_>>(), [("blocked", true)]);
}
