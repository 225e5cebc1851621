//! A memory store with hooks around the writes the engine races on (creating an execution,
//! claiming, renewing leases): crate tests use it to hold one write while another goes
//! through, and show what the engine makes of the order.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::*;
use crate::execution::{ExecutionId, ExecutionRecord};
use crate::journal::JournalEntry;
use crate::time::Timestamp;

/// What a test does around the store's writes. Each hook runs before the write reaches the
/// store, or after it and before its answer reaches the engine.
pub(crate) trait Hooks: Send + Sync + 'static {
    fn before_create<'a>(&'a self, _new: &'a NewExecution) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    fn after_create<'a>(&'a self, _id: &'a ExecutionId) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    fn before_claim<'a>(&'a self, _claim: &'a Claim) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
    fn after_renew<'a>(&'a self, _renewed: &'a [Renewed]) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// A [`MemoryStore`] whose writes go through `hooks`.
pub(crate) struct Hooked<H> {
    pub inner: Arc<MemoryStore>,
    pub hooks: Arc<H>,
}

impl<H: Hooks> Hooked<H> {
    /// The store, to hand to [`crate::EngineBuilder::store_contract`] and to keep for the test.
    pub(crate) fn new(hooks: H) -> Arc<Self> {
        Arc::new(Self { inner: Arc::new(MemoryStore::new()), hooks: Arc::new(hooks) })
    }
}

impl<H: Hooks> Store for Hooked<H> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn create_execution(&self, new: NewExecution) -> StoreAck<CreateOutcome> {
        let (answer, receiver) = tokio::sync::oneshot::channel();
        let (inner, hooks) = (self.inner.clone(), self.hooks.clone());
        tokio::spawn(async move {
            hooks.before_create(&new).await;
            let id = new.id.clone();
            let created = inner.create_execution(new).await;
            hooks.after_create(&id).await;
            let _ = answer.send(created);
        });
        StoreAck::pending(receiver)
    }
    fn append(&self, batch: AppendBatch) -> WriteAck {
        self.inner.append(batch)
    }
    fn execution<'a>(&'a self, id: &'a ExecutionId) -> StoreFuture<'a, Option<ExecutionRecord>> {
        self.inner.execution(id)
    }
    fn journal<'a>(&'a self, id: &'a ExecutionId) -> StoreFuture<'a, Vec<JournalEntry>> {
        self.inner.journal(id)
    }
    fn list_executions<'a>(&'a self, query: &'a ExecutionQuery) -> StoreFuture<'a, ExecutionList> {
        self.inner.list_executions(query)
    }
    fn claim_orphans<'a>(&'a self, claim: &'a Claim) -> StoreFuture<'a, Vec<ExecutionRecord>> {
        Box::pin(async move {
            self.hooks.before_claim(claim).await;
            self.inner.claim_orphans(claim).await
        })
    }
    fn renew_leases<'a>(&'a self, renewal: &'a Renewal) -> StoreFuture<'a, Renewals> {
        Box::pin(async move {
            let renewals = self.inner.renew_leases(renewal).await?;
            self.hooks.after_renew(&renewals.renewed).await;
            Ok(renewals)
        })
    }
    fn release<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, u64> {
        self.inner.release(owner)
    }
    fn owners(&self) -> StoreFuture<'_, Vec<OwnerLeases>> {
        self.inner.owners()
    }
    fn release_execution<'a>(&'a self, id: &'a ExecutionId, epoch: u64) -> StoreFuture<'a, bool> {
        self.inner.release_execution(id, epoch)
    }
    fn request_cancel<'a>(&'a self, id: &'a ExecutionId, retain_until: Timestamp) -> StoreFuture<'a, bool> {
        self.inner.request_cancel(id, retain_until)
    }
    fn acquire<'a>(&'a self, id: &'a ExecutionId, epoch: u64) -> StoreFuture<'a, bool> {
        self.inner.acquire(id, epoch)
    }
    fn purge<'a>(&'a self, purge: &'a Purge) -> StoreFuture<'a, u64> {
        self.inner.purge(purge)
    }
    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> StoreFuture<'a, Delivered> {
        self.inner.deliver(delivery)
    }
    fn inbox<'a>(
        &'a self,
        id: &'a ExecutionId,
        kind: InboxKind,
        name: &'a str,
        position: u64,
    ) -> StoreFuture<'a, Option<InboxEntry>> {
        self.inner.inbox(id, kind, name, position)
    }
    fn suspend<'a>(&'a self, suspend: &'a Suspend) -> StoreFuture<'a, Suspended> {
        self.inner.suspend(suspend)
    }
    fn next_wake(&self) -> StoreFuture<'_, Option<Timestamp>> {
        self.inner.next_wake()
    }
    fn define_queues<'a>(&'a self, queues: &'a [crate::queue::Queue]) -> StoreFuture<'a, ()> {
        self.inner.define_queues(queues)
    }
    fn queues(&self, now: Timestamp) -> StoreFuture<'_, Vec<crate::queue::QueueStatus>> {
        self.inner.queues(now)
    }
    fn schedules<'a>(
        &'a self,
        names: &'a [String],
        now: Timestamp,
    ) -> StoreFuture<'a, Vec<crate::store::ScheduleState>> {
        self.inner.schedules(names, now)
    }
    fn stored_schedules(&self) -> StoreFuture<'_, Vec<ScheduleState>> {
        self.inner.stored_schedules()
    }
    fn advance_schedule<'a>(&'a self, advance: &'a crate::store::ScheduleAdvance) -> StoreFuture<'a, bool> {
        self.inner.advance_schedule(advance)
    }
    fn pause_schedule<'a>(&'a self, name: &'a str, paused: bool) -> StoreFuture<'a, bool> {
        self.inner.pause_schedule(name, paused)
    }
    fn record_event(&self, event: crate::store::NewEvent) -> StoreFuture<'_, bool> {
        self.inner.record_event(event)
    }
    fn undispatched_events(&self, limit: usize) -> StoreFuture<'_, Vec<crate::store::NewEvent>> {
        self.inner.undispatched_events(limit)
    }
    fn mark_dispatched<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, ()> {
        self.inner.mark_dispatched(ids)
    }
    fn purge_events(&self, before: Timestamp, limit: usize) -> StoreFuture<'_, u64> {
        self.inner.purge_events(before, limit)
    }
    fn record_undelivered<'a>(&'a self, undelivered: &'a Undelivered) -> StoreFuture<'a, ()> {
        self.inner.record_undelivered(undelivered)
    }
    fn undelivered(&self, due: Option<Timestamp>, limit: usize) -> StoreFuture<'_, Vec<Undelivered>> {
        self.inner.undelivered(due, limit)
    }
    fn forget_undelivered<'a>(&'a self, event: &'a str, subscriber: Option<&'a str>) -> StoreFuture<'a, u64> {
        self.inner.forget_undelivered(event, subscriber)
    }
    fn token_key(&self) -> StoreFuture<'_, [u8; 32]> {
        self.inner.token_key()
    }
    fn check(&self, full: bool) -> StoreFuture<'_, CheckReport> {
        self.inner.check(full)
    }
    fn reopen<'a>(&'a self, reopen: &'a Reopen) -> StoreFuture<'a, Reopened> {
        self.inner.reopen(reopen)
    }
}
