//! Recovery runs in the background: a worker's `start()` returns while the store still holds
//! its claims, new work runs meanwhile, and the orphans resume once the claims go through.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::execution::{ExecutionId, ExecutionRecord};
use crate::journal::JournalEntry;
use crate::prelude::*;
use crate::store::*;
use crate::time::Timestamp;
use crate::{ExecutionState, MemoryStore};

/// A memory store whose claims wait for a permit: a store busy with a long recovery.
struct HeldClaims {
    inner: MemoryStore,
    permits: Semaphore,
}

impl Store for HeldClaims {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn create_execution(&self, new: NewExecution) -> StoreAck<CreateOutcome> {
        self.inner.create_execution(new)
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
            // One execution woken by a delivery is not part of the recovery held here.
            if claim.only.is_none() {
                self.permits.acquire().await.expect("open").forget();
            }
            self.inner.claim_orphans(claim).await
        })
    }
    fn renew_leases<'a>(&'a self, owner: &'a str, lease_until: Timestamp) -> StoreFuture<'a, Vec<Renewed>> {
        self.inner.renew_leases(owner, lease_until)
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
    fn request_cancel<'a>(&'a self, id: &'a ExecutionId) -> StoreFuture<'a, bool> {
        self.inner.request_cancel(id)
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

#[step]
async fn double(n: u32) -> Result<u32, StepError> {
    Ok(n * 2)
}

#[workflow]
async fn doubled(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    Ok(double(wf, n).await?)
}

#[tokio::test]
async fn start_returns_while_recovery_waits_and_new_work_runs_meanwhile() {
    let store = Arc::new(HeldClaims { inner: MemoryStore::new(), permits: Semaphore::new(0) });
    // An orphan: created by an engine that is gone (its owner released, nobody drives it).
    let now = Timestamp::now();
    let mut orphan = crate::store::conformance::fixture::new_execution("orphan", "gone", now);
    (orphan.workflow, orphan.fingerprint) = ("doubled", doubled::definition().fingerprint());
    orphan.input = crate::store::conformance::fixture::json(21u32);
    store.create_execution(orphan).await.unwrap();
    store.release("gone").await.unwrap();

    let started = Engine::builder().store_contract(store.clone()).start();
    let engine = tokio::time::timeout(Duration::from_secs(5), started)
        .await
        .expect("start() returns while its recovery waits for the store")
        .unwrap();
    assert_eq!(doubled::run(&engine, 4).await.unwrap(), 8, "new work runs during recovery");
    let orphan_id = ExecutionId::from("orphan");
    assert_eq!(engine.execution(&orphan_id).await.unwrap().unwrap().state, ExecutionState::Running);

    store.permits.add_permits(1000);
    let resumed = async {
        loop {
            let record = engine.execution(&orphan_id).await.unwrap().unwrap();
            if record.state == ExecutionState::Completed {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let record = tokio::time::timeout(Duration::from_secs(5), resumed).await.expect("the orphan resumes");
    assert_eq!(record.result.unwrap().get(), "42");
}
