//! The store of a crash scenario: it counts the durable writes of an execution and "crashes"
//! just before or just after one of them — from then on nothing reaches the store and nothing
//! comes back, as if the process had been killed —, and it notes which step completions have
//! landed, to catch a step body that begins after its completion was committed.

use std::any::Any;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::engine::double::Began;
use crate::execution::{ExecutionId, ExecutionRecord};
use crate::journal::{CallKey, JournalEntry, JournalEvent};
use crate::store::*;
use crate::time::Timestamp;

/// Where a scenario crashes: just before, or just after, its `write`-th durable write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashPoint {
    /// The write, from 1, in the order the run without a crash made them.
    pub write: usize,
    /// Just before it (it never lands) or just after it (it landed; its answer never came).
    pub when: When,
}

/// Which side of a write a crash falls on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// The write never reached the store.
    Before,
    /// The write landed; the process died before it heard so.
    After,
}

/// What one scenario saw, across its engines (before and after the crash).
#[derive(Default)]
pub(super) struct Scenario {
    /// Step completions that landed: (execution, call).
    committed: Mutex<HashSet<(ExecutionId, CallKey)>>,
    /// Step bodies and compensations, in the order they began: the step's name (with
    /// ` (compensation)`), and the call if a step body began after its completion landed.
    pub(super) bodies: Mutex<Vec<(String, Option<CallKey>)>>,
}

impl Scenario {
    /// A step body begins: noted, and checked against the completions that landed.
    pub(super) fn body_began(&self, execution: &ExecutionId, key: &CallKey, body: Began) {
        if body == Began::Compensation {
            self.bodies.lock().push((format!("{} (compensation)", key.name()), None));
            return;
        }
        let late = self.committed.lock().contains(&(execution.clone(), key.clone()));
        self.bodies.lock().push((key.name().to_owned(), late.then(|| key.clone())));
    }

    fn landed(&self, batch_execution: &ExecutionId, events: &[CallKey]) {
        let mut committed = self.committed.lock();
        for key in events {
            committed.insert((batch_execution.clone(), key.clone()));
        }
    }
}

/// The crash switch of one engine's store.
#[derive(Default)]
pub(super) struct Switch {
    /// Where to crash (`None`: count, never crash).
    crash_at: Option<CrashPoint>,
    /// What each counted write was, in order.
    pub(super) writes: Mutex<Vec<String>>,
    crashed: AtomicBool,
    pub(super) crash: Notify,
    /// Answers that never come (their senders, kept so the receivers wait for good).
    parked: Mutex<Vec<Box<dyn Any + Send>>>,
}

impl Switch {
    pub(super) fn new(crash_at: Option<CrashPoint>) -> Self {
        Self { crash_at, ..Self::default() }
    }

    pub(super) fn crashed(&self) -> bool {
        self.crashed.load(Ordering::Acquire)
    }

    fn crash_now(&self) {
        self.crashed.store(true, Ordering::Release);
        self.crash.notify_one();
    }

    /// Counts a write; says where it falls against the crash point.
    fn count(&self, what: String) -> Option<When> {
        let mut writes = self.writes.lock();
        writes.push(what);
        let n = writes.len();
        self.crash_at.filter(|at| at.write == n).map(|at| at.when)
    }
}

/// A store seen through a scenario's switch.
pub(super) struct CrashStore {
    pub(super) inner: Arc<dyn Store>,
    pub(super) switch: Arc<Switch>,
    pub(super) scenario: Arc<Scenario>,
}

fn hang<'a, T: 'a>() -> StoreFuture<'a, T> {
    Box::pin(std::future::pending())
}

impl CrashStore {
    /// A read, or a write not counted (renewals, schedules, events): passes until the crash.
    fn pass<'a, T: 'a>(&'a self, op: impl FnOnce() -> StoreFuture<'a, T>) -> StoreFuture<'a, T> {
        if self.switch.crashed() { hang() } else { op() }
    }

    /// A counted write.
    fn write<'a, T: Send + 'a>(
        &'a self,
        what: impl FnOnce() -> String,
        op: impl FnOnce() -> StoreFuture<'a, T>,
    ) -> StoreFuture<'a, T> {
        if self.switch.crashed() {
            return hang();
        }
        match self.switch.count(what()) {
            None => op(),
            Some(When::Before) => {
                self.switch.crash_now();
                hang()
            }
            Some(When::After) => {
                let write = op();
                let switch = self.switch.clone();
                Box::pin(async move {
                    let _ = write.await;
                    switch.crash_now();
                    std::future::pending().await
                })
            }
        }
    }

    /// A counted write answered by a [`StoreAck`]; `landed` sees what landed.
    fn write_ack<T: Send + Unpin + 'static>(
        &self,
        what: impl FnOnce() -> String,
        landed: impl FnOnce(&Result<T, StoreError>) + Send + 'static,
        op: impl FnOnce() -> StoreAck<T>,
    ) -> StoreAck<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        if self.switch.crashed() {
            self.switch.parked.lock().push(Box::new(answer));
            return StoreAck::pending(answered);
        }
        let when = self.switch.count(what());
        if when == Some(When::Before) {
            self.switch.crash_now();
            self.switch.parked.lock().push(Box::new(answer));
            return StoreAck::pending(answered);
        }
        let write = op();
        let switch = self.switch.clone();
        tokio::spawn(async move {
            let result = write.await;
            landed(&result);
            if when == Some(When::After) {
                switch.crash_now();
                switch.parked.lock().push(Box::new(answer));
                return;
            }
            let _ = answer.send(result);
        });
        StoreAck::pending(answered)
    }
}

/// A short description of an append, for the report: its events and its state change.
fn describe_append(batch: &AppendBatch) -> String {
    let mut parts: Vec<String> = batch.entries.iter().map(|entry| describe_event(&entry.event)).collect();
    if let Some(transition) = &batch.transition {
        parts.push(format!("→ {}", transition.state));
    }
    format!("append to {}: {}", batch.execution, parts.join(", "))
}

pub(super) fn describe_event(event: &JournalEvent) -> String {
    format!("{} {}", event.kind(), event.step().1)
}

fn completions(batch: &AppendBatch) -> Vec<CallKey> {
    batch
        .entries
        .iter()
        .filter_map(|entry| match &entry.event {
            JournalEvent::StepCompleted { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

impl Store for CrashStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn create_execution(&self, new: NewExecution) -> StoreAck<CreateOutcome> {
        let what = format!("create execution {}", new.id);
        let inner = self.inner.clone();
        self.write_ack(|| what, |_| {}, move || inner.create_execution(new))
    }
    fn append(&self, batch: AppendBatch) -> WriteAck {
        let (what, execution, completed) = (describe_append(&batch), batch.execution.clone(), completions(&batch));
        let scenario = self.scenario.clone();
        let inner = self.inner.clone();
        let landed = move |result: &Result<(), StoreError>| {
            if result.is_ok() {
                scenario.landed(&execution, &completed);
            }
        };
        self.write_ack(|| what, landed, move || inner.append(batch))
    }
    fn execution<'a>(&'a self, id: &'a ExecutionId) -> StoreFuture<'a, Option<ExecutionRecord>> {
        self.pass(|| self.inner.execution(id))
    }
    fn journal<'a>(&'a self, id: &'a ExecutionId) -> StoreFuture<'a, Vec<JournalEntry>> {
        self.pass(|| self.inner.journal(id))
    }
    fn list_executions<'a>(&'a self, query: &'a ExecutionQuery) -> StoreFuture<'a, ExecutionList> {
        self.pass(|| self.inner.list_executions(query))
    }
    fn claim_orphans<'a>(&'a self, claim: &'a Claim) -> StoreFuture<'a, Vec<ExecutionRecord>> {
        if self.switch.crashed() {
            return hang();
        }
        // Counted only when it claims something (most looks find nothing), and so only after it
        // landed: a crash "before" a claim is a crash after it.
        Box::pin(async move {
            let claimed = self.inner.claim_orphans(claim).await?;
            if claimed.is_empty() || self.switch.crashed() {
                return Ok(claimed);
            }
            let ids: Vec<String> = claimed.iter().map(|record| record.id.to_string()).collect();
            if self.switch.count(format!("claim {}", ids.join(", "))).is_some() {
                self.switch.crash_now();
                return std::future::pending().await;
            }
            Ok(claimed)
        })
    }
    fn renew_leases<'a>(&'a self, renewal: &'a Renewal) -> StoreFuture<'a, Renewals> {
        self.pass(|| self.inner.renew_leases(renewal))
    }
    fn release<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, u64> {
        self.pass(|| self.inner.release(owner))
    }
    fn owners(&self) -> StoreFuture<'_, Vec<OwnerLeases>> {
        self.pass(|| self.inner.owners())
    }
    fn release_execution<'a>(&'a self, id: &'a ExecutionId, epoch: u64) -> StoreFuture<'a, bool> {
        self.write(|| format!("release {id}"), || self.inner.release_execution(id, epoch))
    }
    fn request_cancel<'a>(&'a self, id: &'a ExecutionId, retain_until: Timestamp) -> StoreFuture<'a, bool> {
        self.write(|| format!("request the cancellation of {id}"), || self.inner.request_cancel(id, retain_until))
    }
    fn acquire<'a>(&'a self, id: &'a ExecutionId, epoch: u64) -> StoreFuture<'a, bool> {
        self.write(|| format!("acquire the key of {id}"), || self.inner.acquire(id, epoch))
    }
    fn purge<'a>(&'a self, purge: &'a Purge) -> StoreFuture<'a, u64> {
        self.pass(|| self.inner.purge(purge))
    }
    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> StoreFuture<'a, Delivered> {
        self.write(|| format!("deliver to {}", delivery.execution), || self.inner.deliver(delivery))
    }
    fn inbox<'a>(
        &'a self,
        id: &'a ExecutionId,
        kind: InboxKind,
        name: &'a str,
        position: u64,
    ) -> StoreFuture<'a, Option<InboxEntry>> {
        self.pass(|| self.inner.inbox(id, kind, name, position))
    }
    fn suspend<'a>(&'a self, suspend: &'a Suspend) -> StoreFuture<'a, Suspended> {
        self.write(|| format!("suspend {}", suspend.execution), || self.inner.suspend(suspend))
    }
    fn next_wake(&self) -> StoreFuture<'_, Option<Timestamp>> {
        self.pass(|| self.inner.next_wake())
    }
    fn define_queues<'a>(&'a self, queues: &'a [crate::queue::Queue]) -> StoreFuture<'a, ()> {
        self.pass(|| self.inner.define_queues(queues))
    }
    fn queues(&self, now: Timestamp) -> StoreFuture<'_, Vec<crate::queue::QueueStatus>> {
        self.pass(|| self.inner.queues(now))
    }
    fn schedules<'a>(&'a self, names: &'a [String], now: Timestamp) -> StoreFuture<'a, Vec<ScheduleState>> {
        self.pass(|| self.inner.schedules(names, now))
    }
    fn stored_schedules(&self) -> StoreFuture<'_, Vec<ScheduleState>> {
        self.pass(|| self.inner.stored_schedules())
    }
    fn advance_schedule<'a>(&'a self, advance: &'a ScheduleAdvance) -> StoreFuture<'a, bool> {
        self.pass(|| self.inner.advance_schedule(advance))
    }
    fn pause_schedule<'a>(&'a self, name: &'a str, paused: bool) -> StoreFuture<'a, bool> {
        self.pass(|| self.inner.pause_schedule(name, paused))
    }
    fn record_event(&self, event: NewEvent) -> StoreFuture<'_, bool> {
        if self.switch.crashed() {
            return hang();
        }
        self.inner.record_event(event)
    }
    fn undispatched_events(&self, limit: usize) -> StoreFuture<'_, Vec<NewEvent>> {
        self.pass(|| self.inner.undispatched_events(limit))
    }
    fn mark_dispatched<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, ()> {
        self.pass(|| self.inner.mark_dispatched(ids))
    }
    fn purge_events(&self, before: Timestamp, limit: usize) -> StoreFuture<'_, u64> {
        self.pass(|| self.inner.purge_events(before, limit))
    }
    fn record_undelivered<'a>(&'a self, undelivered: &'a Undelivered) -> StoreFuture<'a, ()> {
        self.pass(|| self.inner.record_undelivered(undelivered))
    }
    fn undelivered(&self, due: Option<Timestamp>, limit: usize) -> StoreFuture<'_, Vec<Undelivered>> {
        self.pass(|| self.inner.undelivered(due, limit))
    }
    fn forget_undelivered<'a>(&'a self, event: &'a str, subscriber: Option<&'a str>) -> StoreFuture<'a, u64> {
        self.pass(|| self.inner.forget_undelivered(event, subscriber))
    }
    fn token_key(&self) -> StoreFuture<'_, [u8; 32]> {
        self.pass(|| self.inner.token_key())
    }
    fn check(&self, full: bool) -> StoreFuture<'_, CheckReport> {
        self.pass(|| self.inner.check(full))
    }
    fn reopen<'a>(&'a self, reopen: &'a Reopen) -> StoreFuture<'a, Reopened> {
        self.write(|| "reopen".to_owned(), || self.inner.reopen(reopen))
    }
    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<Notice>> {
        self.inner.notices()
    }
}
