//! The in-memory store: for tests and benchmarks. Nothing survives the process.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{
    AppendBatch, Claim, CreateOutcome, ExecutionQuery, NewExecution, Store, StoreError, StoreFuture, WriteAck,
};
use crate::execution::{ExecutionId, ExecutionRecord, ExecutionState};
use crate::journal::JournalEntry;
use crate::time::Timestamp;

/// A [`Store`] that keeps everything in the process's memory.
///
/// Several engines in one process can share one `MemoryStore` (wrap it in an `Arc`), which is
/// how tests show an execution resuming on a new engine.
#[derive(Default)]
pub struct MemoryStore {
    executions: Mutex<HashMap<ExecutionId, Entry>>,
}

struct Entry {
    record: ExecutionRecord,
    journal: Vec<JournalEntry>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ExecutionId, Entry>> {
        // A panic while holding the lock leaves consistent data: every change below is
        // completed before anything that can panic.
        self.executions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn apply(&self, batch: AppendBatch) -> Result<(), StoreError> {
        let mut executions = self.lock();
        let entry =
            executions.get_mut(&batch.execution).ok_or_else(|| StoreError::NotFound(batch.execution.clone()))?;
        if entry.record.epoch != batch.epoch {
            return Err(StoreError::Fenced {
                execution: batch.execution,
                current: entry.record.epoch,
                attempted: batch.epoch,
            });
        }
        for (offset, journal_entry) in batch.entries.iter().enumerate() {
            let expected = entry.journal.len() as u64 + offset as u64;
            if journal_entry.index != expected {
                return Err(StoreError::OutOfSequence {
                    execution: batch.execution,
                    expected,
                    got: journal_entry.index,
                });
            }
        }
        entry.journal.extend(batch.entries);
        if let Some(transition) = batch.transition {
            let record = &mut entry.record;
            record.state = transition.state;
            record.result = transition.result;
            record.failure = transition.failure;
            record.updated_at = Timestamp::now();
            if transition.state.is_finished() {
                record.owner = None;
                record.lease_until = None;
            }
        }
        Ok(())
    }
}

impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_owned()
    }

    fn create_execution(&self, new: NewExecution) -> StoreFuture<'_, CreateOutcome> {
        let mut executions = self.lock();
        let outcome = match executions.get(&new.id) {
            Some(existing) => CreateOutcome::Exists(Box::new(existing.record.clone())),
            None => {
                let record = ExecutionRecord {
                    id: new.id.clone(),
                    workflow: new.workflow,
                    fingerprint: new.fingerprint,
                    version: new.version,
                    input: new.input,
                    state: ExecutionState::Running,
                    result: None,
                    failure: None,
                    created_at: new.now,
                    updated_at: new.now,
                    owner: Some(new.owner),
                    lease_until: Some(new.lease_until),
                    epoch: 1,
                };
                executions.insert(new.id, Entry { record, journal: Vec::new() });
                CreateOutcome::Created
            }
        };
        Box::pin(std::future::ready(Ok(outcome)))
    }

    fn append(&self, batch: AppendBatch) -> WriteAck {
        WriteAck::ready(self.apply(batch))
    }

    fn execution<'a>(&'a self, id: &'a ExecutionId) -> StoreFuture<'a, Option<ExecutionRecord>> {
        let record = self.lock().get(id).map(|e| e.record.clone());
        Box::pin(std::future::ready(Ok(record)))
    }

    fn journal<'a>(&'a self, id: &'a ExecutionId) -> StoreFuture<'a, Vec<JournalEntry>> {
        let journal = self.lock().get(id).map(|e| e.journal.clone()).unwrap_or_default();
        Box::pin(std::future::ready(Ok(journal)))
    }

    fn list_executions<'a>(&'a self, query: &'a ExecutionQuery) -> StoreFuture<'a, Vec<ExecutionRecord>> {
        let mut records: Vec<_> =
            self.lock().values().filter(|e| query.matches(&e.record)).map(|e| e.record.clone()).collect();
        records.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        if let Some(limit) = query.limit {
            records.truncate(limit);
        }
        Box::pin(std::future::ready(Ok(records)))
    }

    fn claim_orphans<'a>(&'a self, claim: &'a Claim) -> StoreFuture<'a, Vec<ExecutionRecord>> {
        let mut executions = self.lock();
        let mut orphans: Vec<&mut Entry> = executions
            .values_mut()
            .filter(|e| {
                e.record.state.is_active()
                    && claim.workflows.contains(&e.record.workflow)
                    && (e.record.owner.is_none() || e.record.lease_until.is_none_or(|t| t < claim.now))
            })
            .collect();
        orphans.sort_by_key(|e| e.record.created_at);
        let claimed = orphans
            .into_iter()
            .take(claim.limit)
            .map(|e| {
                e.record.owner = Some(claim.owner.clone());
                e.record.lease_until = Some(claim.lease_until);
                e.record.epoch += 1;
                e.record.clone()
            })
            .collect();
        Box::pin(std::future::ready(Ok(claimed)))
    }

    fn renew_leases<'a>(&'a self, owner: &'a str, lease_until: Timestamp) -> StoreFuture<'a, u64> {
        let mut renewed = 0;
        for entry in self.lock().values_mut() {
            if entry.record.owner.as_deref() == Some(owner) && entry.record.state.is_active() {
                entry.record.lease_until = Some(lease_until);
                renewed += 1;
            }
        }
        Box::pin(std::future::ready(Ok(renewed)))
    }

    fn release<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, u64> {
        let mut released = 0;
        for entry in self.lock().values_mut() {
            if entry.record.owner.as_deref() == Some(owner) && entry.record.state.is_active() {
                entry.record.owner = None;
                entry.record.lease_until = None;
                released += 1;
            }
        }
        Box::pin(std::future::ready(Ok(released)))
    }
}
