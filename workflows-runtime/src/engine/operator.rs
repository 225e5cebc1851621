//! Operator actions that undo: compensating an execution that completed, failed or is blocked
//! (`workflows compensate`, [`Engine::compensate`]).

use std::sync::Arc;

use super::core::{EngineInner, LiveExecution};
use super::engine::Engine;
use super::rollback::compensate;
use crate::error::RunError;
use crate::execution::{ExecutionId, ExecutionRecord, ExecutionState};
use crate::failure::{Failure, FailureKind};
use crate::journal::replay::Progress;
use crate::store::{Reopen, Reopened};
use crate::time::Timestamp;

impl Engine {
    /// Reverts an execution that is `completed`, `failed` or `blocked`: the compensations of
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

impl EngineInner {
    /// See [`Engine::compensate`].
    pub(crate) async fn compensate_by_operator(self: &Arc<Self>, id: &ExecutionId) -> Result<(), RunError> {
        // Before the write that grants the lease: it is provable from here.
        let lease_from = std::time::Instant::now();
        let now = Timestamp::now();
        let reopen = Reopen {
            execution: id.clone(),
            owner: self.owner.to_string(),
            now,
            lease_until: now + self.lease,
            failure: Failure::new(FailureKind::Operator, "compensated by an operator"),
            operator: true,
        };
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

    /// The live execution of a record taken into `compensating` (its lease granted by a write
    /// that began at `lease_from`), to run its compensations from its journal.
    async fn compensating(
        self: &Arc<Self>,
        record: ExecutionRecord,
        lease_from: std::time::Instant,
    ) -> Result<LiveExecution, RunError> {
        let Some(definition) = crate::registry::Registry::checked().workflow_version(&record.workflow, record.version)
        else {
            // Given back at once, for a process that has the code.
            self.store.release_execution(&record.id, record.epoch).await?;
            return Err(RunError::Conflict {
                execution: record.id.clone(),
                reason: format!(
                    "workflow `{}` version {} is not linked in this program: compensate it from a program that \
                     has it (its compensations are its code); it stays compensating, and a worker that has it \
                     finishes the compensation",
                    record.workflow, record.version
                ),
            });
        };
        let progress = Progress::from_journal(self.store.journal(&record.id).await?);
        let setup = super::live::Setup {
            container: None,
            epoch: record.epoch,
            lease_from,
            started_fingerprint: record.fingerprint.into(),
            deadline: None,
            exclusive_key: record.exclusive_key,
            in_queue: record.queue.is_some(),
            parent: record.parent,
            wakeups: record.wakeups,
            blocked_by: record.blocked_by,
        };
        Ok(LiveExecution::new(record.id, definition, self.clone(), progress, setup))
    }
}
