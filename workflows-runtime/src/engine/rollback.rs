//! Rolling an execution back: its completed steps' compensations in reverse completion order
//! (each run by `compensation.rs`), its completed children compensated as units, and the
//! execution's end — `compensated`, `compensation_failed`, `cancelled` or `timed_out`.

use std::sync::Arc;

use super::compensation::{self, run_compensation};
use super::core::{Abort, EngineInner, LiveExecution};
use super::finish::{gave_up, interrupted, release_slots, wake_parent};
use super::handle;
use crate::error::RunError;
use crate::execution::{ExecutionId, ExecutionRecord, ExecutionState};
use crate::failure::{Failure, FailureKind};
use crate::journal::replay::{Compensate, Progress};
use crate::journal::{CallKey, JournalEvent};
use crate::store::{Reopen, Reopened, Reopening, WriteMode};
use crate::time::Timestamp;

/// Compensates every completed step in reverse completion order, then ends the execution
/// `compensated` (or `cancelled` / `timed_out`, after which the failure's kind is named) or
/// `compensation_failed`. `transition` is false when resuming an execution that is already
/// `compensating`.
pub(crate) async fn compensate(live: &Arc<LiveExecution>, failure: Failure, transition: bool) -> RunError {
    if live.engine.replay_only {
        // A replay check runs no compensation: the replay matched the journal up to here.
        return RunError::Interrupted {
            execution: live.id.clone(),
            reason: "the replay reached a rollback".to_owned(),
        };
    }
    // Step bodies still running (their calls were dropped with the body) end first, and their
    // outcomes are journaled: one that completed is compensated with the others.
    live.finish_detached().await;
    if transition {
        // Durable before any compensation runs: a restart then resumes compensating instead
        // of re-running the body.
        let state = ExecutionState::Compensating;
        if let Err(error) = live.durable(live.transition(state, None, Some(failure.clone()))).await {
            return interrupted(live, error);
        }
    }
    // Children still running stop first (each compensates itself); children that completed
    // join the compensation plan.
    settle_children(live).await;
    if let Some(error) = given_up(live) {
        return error;
    }
    let (plan, mut failures) = live.with_progress(|p| p.compensation_plan());
    for item in plan {
        let failed = match &item.target {
            Compensate::Step(input) => run_compensation(live, item.seq, item.key, input).await,
            Compensate::Child(child) => Box::pin(compensate_child(live, item.seq, item.key, child)).await,
        };
        if let Some(failure) = failed {
            failures.push(failure);
        }
        if let Some(error) = given_up(live) {
            return error;
        }
    }
    let workflow = live.definition.name().to_owned();
    let execution = live.id.clone();
    let state = match (failures.is_empty(), failure.kind) {
        (false, _) => ExecutionState::CompensationFailed,
        (true, FailureKind::Cancelled) => ExecutionState::Cancelled,
        (true, FailureKind::TimedOut) => ExecutionState::TimedOut,
        (true, _) => ExecutionState::Compensated,
    };
    if let Err(error) = live.durable(live.transition(state, None, Some(failure.clone()))).await {
        return interrupted(live, error);
    }
    release_slots(live);
    wake_parent(live).await;
    if failures.is_empty() {
        match state {
            ExecutionState::Cancelled => RunError::Cancelled { workflow, execution },
            ExecutionState::TimedOut => RunError::TimedOut { workflow, execution, failure: Box::new(failure) },
            _ => RunError::Compensated { workflow, execution, failure: Box::new(failure) },
        }
    } else {
        RunError::CompensationFailed {
            workflow,
            execution,
            failure: Box::new(failure),
            compensation_failures: failures,
        }
    }
}

/// While compensating: the error to return if the execution was given up meanwhile (a store
/// error, a lost lease). A cancellation or a deadline while compensating changes nothing: the
/// compensation goes on.
fn given_up(live: &LiveExecution) -> Option<RunError> {
    match live.take_abort() {
        Some(Abort::Store(error)) => Some(interrupted(live, error)),
        Some(Abort::LeaseLost(why)) => Some(gave_up(live, &why)),
        _ => None,
    }
}

/// Compensates a completed child execution as a unit (its parent compensates): the child
/// becomes `compensating` and runs its own compensations in reverse order. Returns the
/// failure if the child could not be compensated.
pub(crate) async fn compensate_child(
    live: &Arc<LiveExecution>,
    seq: u32,
    key: CallKey,
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
        let (lease_from, reopen) = inner.reopen_request(child, Reopening::ParentCompensates, why.clone());
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
            Reopened::No(ExecutionState::Blocked) => {
                return Ok(Err(format!(
                    "child execution {child} is blocked: cancel it, or deploy code that replays it"
                )));
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
        let failure = record.failure.clone().unwrap_or_else(|| why.clone());
        // Compensated as a unit, with no parent to hear of it: its parent compensates.
        let record = crate::execution::ExecutionRecord { parent: None, deadline: None, ..*record };
        let child_live = match inner.compensating(record, lease_from).await {
            Ok(live) => Arc::new(live),
            Err(RunError::Store(error)) => return Err(error),
            Err(other) => return Ok(Err(format!("child execution {child}: {other}"))),
        };
        // Tracked like a task of its own while it compensates, so that its lease is renewed.
        let compensating = inner.track(&child_live, Box::pin(compensate(&child_live, failure, false)));
        return Ok(match compensating.await {
            RunError::Compensated { .. } => Ok(()),
            RunError::Interrupted { reason, .. } => Err(format!("child execution {child} was interrupted: {reason}")),
            other => Err(format!("child execution {child}: {other}")),
        });
    }
}

impl EngineInner {
    /// A request to take execution `id` over for `purpose` (see [`Reopen`]), and when the write
    /// that will grant its lease began: the lease is provable from then on.
    pub(crate) fn reopen_request(
        &self,
        id: &ExecutionId,
        purpose: Reopening,
        failure: Failure,
    ) -> (tokio::time::Instant, Reopen) {
        let lease_from = tokio::time::Instant::now();
        let now = Timestamp::now();
        let owner = self.owner.to_string();
        (lease_from, Reopen { execution: id.clone(), owner, now, lease_until: now + self.lease, failure, purpose })
    }

    /// The live execution of a record taken into `compensating` (its lease granted by a write
    /// that began at `lease_from`), to run its compensations from its journal. A version not
    /// linked here is given back, for a process that has its code.
    pub(crate) async fn compensating(
        self: &Arc<Self>,
        record: ExecutionRecord,
        lease_from: tokio::time::Instant,
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

/// Settles the children the parent started and has not heard back from, before the parent
/// compensates: each one still running is cancelled (it compensates itself) and waited for,
/// in whichever process drives it; then its outcome is journaled in the parent, so that a
/// child that completed — before the cancellation reached it, or before the parent took its
/// result — is compensated as a unit with the parent's other completed steps.
pub(crate) async fn settle_children(live: &Arc<LiveExecution>) {
    let children = live.with_progress(|p| p.running_children());
    for (seq, key, child) in children {
        match live.engine.cancel(&child).await {
            Ok(()) | Err(RunError::NotCancellable { .. } | RunError::NotFound { .. }) => {}
            Err(error) => tracing::warn!(execution = %child, %error, "could not cancel a child execution"),
        }
        take_over_if_stranded(&live.engine, &child).await;
        let event = match live.engine.store.execution(&child).await {
            Ok(None) => {
                // The parent stopped before the child was created: nothing to undo.
                let why = Failure::new(FailureKind::Cancelled, format!("child execution {child} was never created"));
                JournalEvent::ChildFailed { seq, key, error: Box::new(why) }
            }
            Ok(Some(_)) => match handle::finished(&live.engine, &child).await {
                Ok(record) if record.state == ExecutionState::Completed => {
                    let output = record.result.unwrap_or_else(crate::journal::replay::null);
                    JournalEvent::ChildCompleted { seq, key, output }
                }
                Ok(record) => {
                    let failure = record.failure.unwrap_or_else(|| {
                        Failure::new(FailureKind::Workflow, format!("child execution {child} ended {}", record.state))
                    });
                    JournalEvent::ChildFailed { seq, key, error: Box::new(failure) }
                }
                Err(error) => {
                    tracing::warn!(execution = %child, %error, "could not wait for a cancelled child execution");
                    continue;
                }
            },
            Err(error) => {
                live.abort(Abort::Store(error));
                return;
            }
        };
        let ack = match &event {
            JournalEvent::ChildCompleted { .. } => live.append([event], None, WriteMode::Durable, |p| {
                p.completed(seq, None, None);
            }),
            JournalEvent::ChildFailed { error, .. } => {
                let failure = (**error).clone();
                live.append([event], None, WriteMode::Durable, |p| p.failed(seq, failure))
            }
            _ => unreachable!("only child outcomes are journaled here"),
        };
        live.defer(ack);
    }
}

/// A child created by this engine whose task never started (the parent's call was dropped
/// while the child was being created) holds a lease nobody here renews: give it back, and
/// take it over at once, rather than wait for the lease to expire.
async fn take_over_if_stranded(inner: &Arc<EngineInner>, child: &ExecutionId) {
    if inner.live_execution(child).is_some() {
        return;
    }
    let Ok(Some(record)) = inner.store.execution(child).await else { return };
    if record.state.is_active() && record.owner.as_deref() == Some(&*inner.owner) {
        let released = inner.store.release_execution(child, record.epoch).await;
        if matches!(released, Ok(true))
            && let Err(error) = inner.resume_one(child).await
        {
            tracing::warn!(execution = %child, %error, "could not take over a child execution");
        }
    }
}
