//! Driving an execution: poll the workflow body, then complete it, compensate it, or fail it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use serde::Serialize;
use tokio::sync::oneshot;

use super::live::{Abort, LiveExecution};
use super::panic::catch_unwind;
use crate::error::{Failure, FailureKind, RunError, WorkflowError};
use crate::execution::ExecutionState;
use crate::step::run::run_compensation;
use crate::store::StoreError;
use crate::workflow::Workflow;

/// Where the result of a run goes, when a caller waits for it in this process.
pub(crate) type Waiter<O> = oneshot::Sender<Result<O, RunError>>;

enum Body<T> {
    Returned(T),
    Panicked(String),
    Aborted(Abort),
}

/// Runs the workflow body to its end and records the outcome.
///
/// The body is pinned by the caller and passed down by reference: a workflow body's future
/// holds its current step's future, and every by-value hand-over would store another copy
/// in the task.
pub(crate) async fn drive<O: Serialize, F: Future<Output = Result<O, WorkflowError>> + ?Sized>(
    wf: &Workflow,
    body: Pin<&mut F>,
    waiter: Option<Waiter<O>>,
) {
    let live = &wf.live;
    // The failure paths are boxed: inline, their state would make every task larger (and
    // every spawn copy more) for the rare execution that fails.
    let result = match run_body(live, body).await {
        Body::Returned(Ok(output)) => complete(live, output).await,
        Body::Returned(Err(error)) => Err(Box::pin(compensate(live, error.into_failure(), true)).await),
        Body::Panicked(message) => {
            let failure = Failure::new(FailureKind::Panic, format!("the workflow body panicked: {message}"));
            Err(Box::pin(compensate(live, failure, true)).await)
        }
        Body::Aborted(Abort::Fail(failure)) => Err(Box::pin(fail(live, failure)).await),
        Body::Aborted(Abort::Store(error)) => Err(interrupted(live, error)),
    };
    if let Some(waiter) = waiter {
        // The caller may have stopped waiting; the outcome is stored either way.
        let _ = waiter.send(result);
    }
}

/// Polls the body until it returns, panics, or a step aborts the execution.
async fn run_body<F: Future + ?Sized>(live: &LiveExecution, body: Pin<&mut F>) -> Body<F::Output> {
    let mut body = catch_unwind(body);
    std::future::poll_fn(|cx| {
        let polled = Pin::new(&mut body).poll(cx);
        // A step that aborts never resolves, so the body is pending; checking after the poll
        // catches the abort in the same wake-up.
        if let Some(abort) = live.take_abort() {
            return Poll::Ready(Body::Aborted(abort));
        }
        match polled {
            Poll::Ready(Ok(output)) => Poll::Ready(Body::Returned(output)),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(message)) => Poll::Ready(Body::Panicked(message)),
        }
    })
    .await
}

async fn complete<O: Serialize>(live: &Arc<LiveExecution>, output: O) -> Result<O, RunError> {
    // A journal entry the body never reached means the body took another path than before.
    if let Some(mismatch) = live.with_progress(|p| p.unreached(p.calls())) {
        return Err(Box::pin(fail(live, live.non_determinism(&mismatch))).await);
    }
    let json = match crate::journal::json::to_raw(&output) {
        Ok(json) => json,
        Err(e) => {
            let failure =
                Failure::new(FailureKind::Workflow, format!("the workflow's output cannot be serialized to JSON: {e}"));
            return Err(Box::pin(compensate(live, failure, true)).await);
        }
    };
    match live.durable(live.transition(ExecutionState::Completed, Some(json), None)).await {
        Ok(()) => Ok(output),
        Err(error) => Err(interrupted(live, error)),
    }
}

/// Ends the execution `failed`, without compensation.
pub(crate) async fn fail(live: &Arc<LiveExecution>, failure: Failure) -> RunError {
    if let Err(error) = live.durable(live.transition(ExecutionState::Failed, None, Some(failure.clone()))).await {
        return interrupted(live, error);
    }
    RunError::Failed {
        workflow: live.definition.name().to_owned(),
        execution: live.id.clone(),
        failure: Box::new(failure),
    }
}

/// Compensates every completed step in reverse completion order, then ends the execution
/// `compensated` or `compensation_failed`. `transition` is false when resuming an execution
/// that is already `compensating`.
pub(crate) async fn compensate(live: &Arc<LiveExecution>, failure: Failure, transition: bool) -> RunError {
    if transition {
        // Durable before any compensation runs: a restart then resumes compensating instead
        // of re-running the body.
        let state = ExecutionState::Compensating;
        if let Err(error) = live.durable(live.transition(state, None, Some(failure.clone()))).await {
            return interrupted(live, error);
        }
    }
    let (plan, mut failures) = live.with_progress(|p| p.compensation_plan());
    for item in plan {
        if let Some(failure) = run_compensation(live, item.seq, item.key, &item.input).await {
            failures.push(failure);
        }
        if let Some(Abort::Store(error)) = live.take_abort() {
            return interrupted(live, error);
        }
    }
    let workflow = live.definition.name().to_owned();
    let execution = live.id.clone();
    let state = if failures.is_empty() { ExecutionState::Compensated } else { ExecutionState::CompensationFailed };
    if let Err(error) = live.durable(live.transition(state, None, Some(failure.clone()))).await {
        return interrupted(live, error);
    }
    if failures.is_empty() {
        RunError::Compensated { workflow, execution, failure: Box::new(failure) }
    } else {
        RunError::CompensationFailed {
            workflow,
            execution,
            failure: Box::new(failure),
            compensation_failures: failures,
        }
    }
}

/// The store refused a write: this engine stops driving the execution, which stays as stored,
/// and gives up its ownership (unless another engine owns it already) so that it is taken over
/// once the store works again.
fn interrupted(live: &LiveExecution, error: StoreError) -> RunError {
    tracing::warn!(execution = %live.id, %error, "stopped driving an execution after a store error");
    if !matches!(error, StoreError::Fenced { .. }) {
        live.engine.abandon(live.id.clone(), live.epoch);
    }
    RunError::Interrupted { execution: live.id.clone(), reason: format!("a store write failed: {error}") }
}
