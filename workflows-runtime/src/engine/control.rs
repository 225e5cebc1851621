//! Acting on executions: cancel, re-run, purge.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::core::EngineInner;
use super::engine::Engine;
use super::handle::ExecutionHandle;
use super::options::RunOptions;
use crate::error::RunError;
use crate::execution::{ExecutionId, ExecutionState};
use crate::failure::Failure;
use crate::store::{Purge, StoreError};
use crate::time::Timestamp;
use crate::workflow::WorkflowFn;

/// How many executions one purge deletes at most, in a transaction of its own: a workflow's
/// write waits behind one batch at most (about 5 ms on SQLite), however large the backlog.
pub(crate) const PURGE_BATCH: usize = 25;

/// How many events one purge write deletes at most (an event is one row).
const EVENT_PURGE_BATCH: usize = 200;

/// The longest pause between two purge batches (see [`EngineInner::purge`]).
const PURGE_PAUSE_MAX: std::time::Duration = std::time::Duration::from_millis(10);

impl Engine {
    /// Cancels an execution: no further step starts, its running step bodies see
    /// [`StepContext::cancelled`](crate::StepContext::cancelled) and are waited for (bounded by
    /// their timeout; their outcomes are journaled), its completed steps are compensated, and
    /// it ends `cancelled`. A queued execution (waiting
    /// for its exclusive key) ends `cancelled` at once.
    ///
    /// An execution driven by another engine is cancelled by that engine when it next renews
    /// its leases (a third of the lease duration at most); one whose owner is gone is taken
    /// over and cancelled here. Await it with `run_with(.., RunOptions::new().id(id))` to see
    /// the outcome. Cancelling a finished execution is [`RunError::NotCancellable`] and changes
    /// nothing; an unknown id is [`RunError::NotFound`].
    pub async fn cancel(&self, id: &ExecutionId) -> Result<(), RunError> {
        self.inner.cancel(id).await
    }

    /// Starts a new execution of the same workflow with the same input as the finished
    /// execution `id` (one that was compensated, say, after the cause was fixed). The new
    /// execution gets a new id and records `rerun_of = id`; the old one is unchanged.
    pub async fn rerun(&self, id: &ExecutionId) -> Result<ExecutionHandle<Box<RawValue>>, RunError> {
        let record =
            self.inner.store.execution(id).await?.ok_or_else(|| RunError::NotFound { execution: id.clone() })?;
        if !record.state.is_finished() {
            return Err(RunError::Conflict {
                execution: id.clone(),
                reason: format!("it is still {}; cancel it or wait for it before re-running it", record.state),
            });
        }
        let mut options = RunOptions::new().rerun_of(id.clone());
        if let Some(key) = record.exclusive_key {
            options = options.exclusive_key(key);
        }
        if let Some(queue) = record.queue {
            options = options.queue(queue);
        }
        self.start_workflow_by_name(&record.workflow, &*record.input, options).await
    }

    /// [`Engine::rerun`], for a known workflow type: the output comes back typed.
    pub async fn rerun_workflow<W: WorkflowFn>(&self, id: &ExecutionId) -> Result<W::Output, RunError> {
        let handle = self.rerun(id).await?;
        let execution = handle.id().clone();
        let json = handle.result().await?;
        serde_json::from_str(json.get()).map_err(|source| RunError::Output {
            execution,
            expected: std::any::type_name::<W::Output>(),
            source,
        })
    }

    /// Deletes the finished executions whose retention has ended (the engine also does this in
    /// the background). Returns how many were deleted.
    pub async fn purge_due(&self) -> Result<u64, StoreError> {
        self.inner.purge_due().await
    }

    /// Deletes the executions that finished before `before`, whatever their retention.
    /// Running executions are never deleted. Returns how many were deleted.
    pub async fn purge_finished_before(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.inner.purge(Purge { retained_before: None, finished_before: Some(before), limit: PURGE_BATCH }).await
    }
}

impl EngineInner {
    /// See [`Engine::cancel`].
    pub(crate) async fn cancel(self: &Arc<Self>, id: &ExecutionId) -> Result<(), RunError> {
        if let Some(live) = self.live_execution(id) {
            live.request_stop(Failure::cancellation(), true);
            return Ok(());
        }
        let not_cancellable = |state| RunError::NotCancellable { execution: id.clone(), state };
        let record = self.store.execution(id).await?.ok_or_else(|| RunError::NotFound { execution: id.clone() })?;
        if record.state.is_finished() {
            return Err(not_cancellable(record.state));
        }
        let retention = crate::registry::Registry::checked()
            .workflow(&record.workflow)
            .and_then(|w| w.retention())
            .unwrap_or(self.retention);
        if !self.store.request_cancel(id, Timestamp::now() + retention).await? {
            // It finished in between.
            let state = self.store.execution(id).await?.map_or(record.state, |r| r.state);
            return Err(not_cancellable(state));
        }
        if record.state == ExecutionState::Queued {
            // It ended `cancelled` in the store; whoever waits here for it hears it now.
            self.notify_watchers(id);
            return Ok(());
        }
        // Nobody may drive it (its owner is gone, or it was suspended): take it over, which
        // cancels it.
        self.resume_one(id).await?;
        Ok(())
    }

    /// See [`Engine::purge_due`].
    pub(crate) async fn purge_due(&self) -> Result<u64, StoreError> {
        let now = Timestamp::now();
        let executions = self.purge(Purge { retained_before: Some(now), finished_before: None, limit: PURGE_BATCH });
        let executions = executions.await?;
        let events = self.purge_events(now - self.event_retention).await?;
        if events > 0 {
            tracing::debug!(events, "purged dispatched events past their retention");
        }
        Ok(executions)
    }

    /// Deletes the dispatched events emitted before `before`, in batches, pausing between them
    /// as [`purge`](Self::purge) does.
    pub(crate) async fn purge_events(&self, before: Timestamp) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let began = std::time::Instant::now();
            let deleted = self.store.purge_events(before, EVENT_PURGE_BATCH).await?;
            total += deleted;
            if deleted < EVENT_PURGE_BATCH as u64 {
                return Ok(total);
            }
            tokio::time::sleep(began.elapsed().min(PURGE_PAUSE_MAX)).await;
        }
    }

    /// Purges in batches, pausing after each as long as it took (up to [`PURGE_PAUSE_MAX`]):
    /// the store's write lock is free at least half the time, so the workflows of this process
    /// and of others on the same store go through between batches rather than behind a run
    /// of them.
    pub(crate) async fn purge(&self, purge: Purge) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let began = std::time::Instant::now();
            let deleted = self.store.purge(&purge).await?;
            total += deleted;
            if deleted < purge.limit as u64 {
                return Ok(total);
            }
            tokio::time::sleep(began.elapsed().min(PURGE_PAUSE_MAX)).await;
        }
    }
}
