//! Child executions: started by a parent's body, compensated as a unit when the parent
//! compensates, cancelled with the parent.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::live::{Abort, LiveExecution};
use super::{Created, Engine, EngineInner, RunOptions, driver, handle};
use crate::error::{Failure, FailureKind, RunError};
use crate::execution::{ExecutionId, ExecutionState};
use crate::journal::StepKey;
use crate::journal::replay::Progress;
use crate::registry::WorkflowDefinition;
use crate::step::compensation;
use crate::store::{Reopen, Reopened};
use crate::time::Timestamp;
use crate::workflow::Workflow;

/// Starts the child execution `id` of `definition` for the parent `live` (which knows it as
/// `key`), and drives it here; if it exists already (the parent is replaying), leaves it to
/// whoever drives it. Its outcome arrives in the parent's inbox.
pub(crate) async fn start_child(
    live: &Arc<LiveExecution>,
    definition: &'static WorkflowDefinition,
    id: ExecutionId,
    key: String,
    input: Box<RawValue>,
) -> Result<(), RunError> {
    let engine = Engine { inner: live.engine.clone() };
    let options = RunOptions::new().id(id).parent(live.id.clone(), key);
    let child = match engine.create(definition, input.clone(), options).await? {
        Created::New(child, _) => child,
        Created::Exists(record)
            if record.workflow != definition.name() || !handle::same_json(&input, &record.input) =>
        {
            return Err(RunError::Conflict {
                execution: record.id,
                reason: format!(
                    "it is not the child this call starts (workflow `{}` with input {})",
                    definition.name(),
                    input.get()
                ),
            });
        }
        Created::Exists(_) => return Ok(()),
    };
    engine.inner.spawn(&child.clone(), async move {
        let wf = Workflow { live: child };
        match (definition.entry)(&wf, &input) {
            Ok(body) => driver::drive(&wf, body, None).await,
            Err(error) => {
                let message = format!("the child's input does not decode as `{}`: {error}", definition.input_type());
                driver::fail(&wf.live, Failure::new(FailureKind::Decode, message)).await;
            }
        }
    });
    Ok(())
}

/// Compensates a completed child execution as a unit (its parent compensates): the child
/// becomes `compensating` and runs its own compensations in reverse order. Returns the
/// failure if the child could not be compensated.
pub(crate) async fn compensate_child(
    live: &Arc<LiveExecution>,
    seq: u32,
    key: StepKey,
    child: &ExecutionId,
) -> Option<Failure> {
    if !compensation::begin(live, seq, &key).await {
        return None;
    }
    let result = match undo(&live.engine, child, &live.id).await {
        Ok(result) => result,
        Err(error) => {
            live.abort(Abort::Store(error));
            return None;
        }
    };
    let result = result.map_err(|message| Failure {
        kind: FailureKind::Compensation,
        message,
        step: Some(key.name().to_owned()),
        key: Some(key.to_string()),
        attempts: Some(1),
        permanent: true,
    });
    compensation::finish(live, seq, key, result)
}

/// Takes the child into `compensating` and runs its compensations here, or waits for whoever
/// runs them. The inner result is the child's compensation failure, described.
async fn undo(
    inner: &Arc<EngineInner>,
    child: &ExecutionId,
    parent: &ExecutionId,
) -> Result<Result<(), String>, crate::store::StoreError> {
    let why = Failure::new(FailureKind::Workflow, format!("its parent execution {parent} compensates"));
    loop {
        // Before the write that grants the lease: it is provable from here.
        let lease_from = std::time::Instant::now();
        let now = Timestamp::now();
        let reopen = Reopen {
            execution: child.clone(),
            owner: inner.owner.to_string(),
            now,
            lease_until: now + inner.lease,
            failure: why.clone(),
        };
        let record = match inner.store.reopen(&reopen).await? {
            Reopened::Yes(record) => record,
            // Undone already, or it never completed (it compensated itself then).
            Reopened::No(
                ExecutionState::Compensated
                | ExecutionState::Cancelled
                | ExecutionState::TimedOut
                | ExecutionState::Failed,
            ) => return Ok(Ok(())),
            Reopened::No(ExecutionState::CompensationFailed) => {
                return Ok(Err(format!("child execution {child} could not be fully compensated")));
            }
            // Driven by a live owner (compensating, or still running): wait for it, then look again.
            Reopened::No(_) => {
                if let Err(error) = handle::finished(inner, child).await {
                    return Ok(Err(format!("child execution {child} could not be compensated: {error}")));
                }
                continue;
            }
            Reopened::NotFound => return Ok(Err(format!("child execution {child} is not in the store (purged?)"))),
        };
        let Some(definition) = inner.registry.workflow(&record.workflow) else {
            return Ok(Err(format!(
                "workflow `{}` of child execution {child} is not registered here",
                record.workflow
            )));
        };
        let progress = Progress::from_journal(inner.store.journal(child).await?);
        let failure = record.failure.clone().unwrap_or_else(|| why.clone());
        let setup = super::live::Setup {
            container: None,
            epoch: record.epoch,
            lease_from,
            started_fingerprint: record.fingerprint.into(),
            deadline: None,
            exclusive_key: None,
            parent: None,
            wakeups: 0,
        };
        let child_live = Arc::new(LiveExecution::new(record.id.clone(), definition, inner.clone(), progress, setup));
        // Tracked like a task of its own while it compensates, so that its lease is renewed.
        let compensating = inner.track(&child_live, Box::pin(driver::compensate(&child_live, failure, false)));
        return Ok(match compensating.await {
            RunError::Compensated { .. } => Ok(()),
            RunError::Interrupted { reason, .. } => Err(format!("child execution {child} was interrupted: {reason}")),
            other => Err(format!("child execution {child}: {other}")),
        });
    }
}

/// Cancels the children the parent started that have not finished, and waits for them to
/// stop (each compensates itself).
pub(crate) async fn cancel_children(live: &LiveExecution) {
    let children = live.with_progress(|p| p.running_children());
    for child in children {
        let engine = Engine { inner: live.engine.clone() };
        match engine.cancel(&child).await {
            Ok(()) | Err(RunError::NotCancellable { .. } | RunError::NotFound { .. }) => {}
            Err(error) => tracing::warn!(execution = %child, %error, "could not cancel a child execution"),
        }
        if let Err(error) = handle::finished(&live.engine, &child).await {
            tracing::warn!(execution = %child, %error, "could not wait for a cancelled child execution");
        }
    }
}
