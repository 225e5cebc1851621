//! Operator actions that undo and recover: compensating an execution that completed, failed,
//! paused or is blocked (`workflows compensate`, [`Engine::compensate`]); retrying the step that
//! paused an execution (`workflows retry-step`, [`Engine::retry_step`]).

use std::sync::Arc;

use super::core::EngineInner;
use super::engine::Engine;
use super::rollback::compensate;
use crate::error::RunError;
use crate::execution::{ExecutionId, ExecutionState};
use crate::failure::{Failure, FailureKind};
use crate::journal::replay::Progress;
use crate::journal::{JournalEntry, JournalEvent};
use crate::store::{AppendBatch, Reopened, Reopening, WriteMode};
use crate::time::Timestamp;

impl Engine {
    /// Reverts an execution that is `completed`, `failed`, `paused` or `blocked`: the compensations of
    /// its completed steps run here, in reverse completion order (its completed children are
    /// compensated as units), without running its body, and it ends `compensated` (or
    /// `compensation_failed`, with [`RunError::CompensationFailed`]). Medusa's cancel of a
    /// finished transaction; journaled like any compensation, so a crash meanwhile is resumed
    /// by whichever worker takes the execution over, and each compensation runs once.
    ///
    /// One that is still running or waiting is cancelled instead ([`Engine::cancel`]); one
    /// already compensated, cancelled or timed out is [`RunError::Conflict`] and changes
    /// nothing, as is one that another live engine compensates.
    pub async fn compensate(&self, id: &ExecutionId) -> Result<(), RunError> {
        self.inner.compensate_by_operator(id).await
    }
}

impl Engine {
    /// Runs again the step that paused execution `id` (a step with `on_failure = "pause"` that
    /// failed for good; `key` is its call key, `charge_card#1`, as `workflows inspect` shows it),
    /// with a fresh attempt budget: the retry is journaled, and the execution resumes — in this
    /// engine, or, for a client-only engine, in the next worker that claims it. Await its outcome
    /// with `run_with(.., RunOptions::new().id(id))`. An execution that is not paused, or a key
    /// that did not fail for good in it, is [`RunError::Conflict`] and changes nothing.
    pub async fn retry_step(&self, id: &ExecutionId, key: &str) -> Result<(), RunError> {
        self.inner.retry_step(id, key).await
    }
}

impl EngineInner {
    /// See [`Engine::retry_step`].
    pub(crate) async fn retry_step(self: &Arc<Self>, id: &ExecutionId, key: &str) -> Result<(), RunError> {
        let conflict = |reason: String| RunError::Conflict { execution: id.clone(), reason };
        let record = self.store.execution(id).await?.ok_or_else(|| RunError::NotFound { execution: id.clone() })?;
        if record.state != ExecutionState::Paused {
            return Err(conflict(format!("it is {}: only a paused execution's step is retried", record.state)));
        }
        let failed = |journal| {
            let progress = Progress::from_journal(journal);
            progress.failed_for_good(key).ok_or_else(|| {
                conflict(format!(
                    "its step `{key}` did not fail for good; the steps that did: {}",
                    progress.failed_keys().join(", ")
                ))
            })
        };
        failed(self.store.journal(id).await?)?;
        let why = Failure::new(FailureKind::Operator, "retried by an operator");
        let (lease_from, reopen) = self.reopen_request(id, Reopening::OperatorRetries, why);
        let record = match self.store.reopen(&reopen).await? {
            Reopened::Yes(record) => *record,
            Reopened::No(state) => return Err(conflict(format!("it is {state} now: another operator acted on it"))),
            Reopened::NotFound => return Err(RunError::NotFound { execution: id.clone() }),
        };
        // Read again under the lease: what is journaled now is what the retry follows.
        let journal = self.store.journal(id).await?;
        let index = journal.len() as u64;
        let (seq, call) = failed(journal)?;
        let retried = JournalEvent::StepRetried { seq, key: call, by: Some(self.process.clone()) };
        let batch = AppendBatch {
            execution: id.clone(),
            epoch: record.epoch,
            entries: std::iter::once(JournalEntry { index, at: Timestamp::now(), event: retried }).collect(),
            transition: None,
            mode: WriteMode::Durable,
            deliver: None,
            events: Vec::new(),
        };
        self.store.append(batch).await?;
        tracing::info!(execution = %id, step = key, "step retried by an operator");
        if self.client_only {
            // For the workers: an orphan their next claim takes.
            self.store.release_execution(id, record.epoch).await?;
            return Ok(());
        }
        self.resume(record, lease_from).await?;
        Ok(())
    }

    /// See [`Engine::compensate`].
    pub(crate) async fn compensate_by_operator(self: &Arc<Self>, id: &ExecutionId) -> Result<(), RunError> {
        let why = Failure::new(FailureKind::Operator, "compensated by an operator");
        let (lease_from, reopen) = self.reopen_request(id, Reopening::OperatorCompensates, why);
        let conflict = |reason: String| RunError::Conflict { execution: id.clone(), reason };
        let record = match self.store.reopen(&reopen).await? {
            Reopened::Yes(record) => record,
            Reopened::NotFound => return Err(RunError::NotFound { execution: id.clone() }),
            Reopened::No(state) => {
                return Err(conflict(match state {
                    ExecutionState::Compensated
                    | ExecutionState::CompensationFailed
                    | ExecutionState::Cancelled
                    | ExecutionState::TimedOut => format!("it was compensated already: it is {state}"),
                    ExecutionState::Compensating => "another engine is compensating it now".to_owned(),
                    _ => format!(
                        "it is {state}: cancel it instead (`workflows cancel {id}`), which stops it and compensates \
                         its completed steps"
                    ),
                }));
            }
        };
        let live = Arc::new(self.compensating(*record, lease_from).await?);
        // Tracked like a task of its own while it compensates, so that its lease is renewed.
        let failure = reopen.failure;
        match self.track(&live, Box::pin(compensate(&live, failure, false))).await {
            RunError::Compensated { .. } => Ok(()),
            other => Err(other),
        }
    }
}
