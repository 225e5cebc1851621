//! Driving an execution: poll the workflow body, then complete it, compensate it, or fail it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use serde::Serialize;

use super::core::{Abort, LiveExecution};
use super::finish::{gave_up, interrupted, release_slots, wake_parent};
use super::handle::{Sent, Waiter};
use super::panic::catch_unwind;
use super::rollback::compensate;
use crate::error::{RunError, WorkflowError};
use crate::events::EventKind;
use crate::execution::ExecutionState;
use crate::failure::{Failure, FailureKind};
use crate::store::{StoreError, Suspend, Suspended};
use crate::time::Timestamp;
use crate::workflow::Workflow;

/// A suspended execution is one whose wake-up (if it has one) is at least this far away:
/// shorter waits keep their future in memory rather than pay for a suspension and a replay.
const SUSPEND_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

enum Body<T> {
    Returned(T),
    Panicked(String),
    Aborted(Abort),
    /// Every branch waits on something durable.
    Suspend,
}

/// Waits until a queued execution holds its exclusive key (it is the oldest waiting for it,
/// and no other execution holds it). A cancellation meanwhile ends it `cancelled`.
///
/// Boxed: few executions queue for a key, and inline this wait's state (its timer, its
/// notification, the store call) would make every execution's task larger, and every spawn
/// copy more.
pub(crate) fn wait_for_key(
    live: &Arc<LiveExecution>,
) -> Pin<Box<dyn Future<Output = Result<(), RunError>> + Send + '_>> {
    Box::pin(wait_for_key_unboxed(live))
}

async fn wait_for_key_unboxed(live: &Arc<LiveExecution>) -> Result<(), RunError> {
    let mut pause = std::time::Duration::from_millis(2);
    loop {
        // Registered before checking, so a release between the check and the wait wakes us.
        let released = live.engine.key_released.notified();
        match live.engine.store.acquire(&live.id, live.epoch).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => return Err(interrupted(live, error)),
        }
        if live.is_stopping() {
            let why = live.stop_reason().unwrap_or_else(Failure::cancellation);
            return Err(compensate(live, why, true).await);
        }
        let until_deadline = live.deadline.map(|at| at.duration_since(Timestamp::now()));
        if until_deadline == Some(std::time::Duration::ZERO) {
            return Err(compensate(live, timed_out(live), true).await);
        }
        // Released by an execution of this engine, or polled (the holder may be elsewhere).
        tokio::select! {
            () = released => {}
            () = tokio::time::sleep(until_deadline.map_or(pause, |left| left.min(pause))) => {}
            () = live.stopped() => {}
        }
        pause = (pause * 2).min(std::time::Duration::from_millis(200));
    }
}

/// Runs the workflow body to its end and records the outcome.
///
/// The body is on the heap (moving it stays cheap), and the driver owns it: once it stops
/// polling it, it drops it before anything else, so that the step bodies still running in it
/// are handed to the execution and run to their end (see [`crate::step`]'s attempts) before
/// the execution completes, fails or compensates.
pub(crate) async fn drive<O: Serialize, F: Future<Output = Result<O, WorkflowError>> + ?Sized>(
    wf: &Workflow,
    mut body: Pin<Box<F>>,
    waiter: Option<Waiter<O>>,
) {
    let live = &wf.live;
    // Epoch 1 is the engine that created it; a later epoch took it over or woke it.
    live.emit(|| Some(if live.epoch == 1 { EventKind::Started } else { EventKind::Resumed }));
    let ended = loop {
        match run_body(live, body.as_mut()).await {
            Body::Suspend => match Box::pin(suspend(live)).await {
                Ok(true) => {
                    tracing::debug!(execution = %live.id, "suspended execution");
                    live.emit(|| Some(EventKind::Suspended { wake_at: live.wake_at() }));
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(Sent::Suspended);
                    }
                    return;
                }
                Ok(false) => continue,
                Err(error) => break Body::Aborted(Abort::Store(error)),
            },
            ended => break ended,
        }
    };
    // Stored data that does not decode fails the execution (a damaged row, not a failing store).
    let ended = match ended {
        Body::Aborted(Abort::Store(StoreError::Corrupt { execution, what, detail })) => {
            let message = format!("execution {execution} cannot go on: {what} cannot be decoded: {detail}");
            Body::Aborted(Abort::Fail(Failure::new(FailureKind::Decode, message)))
        }
        ended => ended,
    };
    if matches!(ended, Body::Aborted(Abort::Store(_) | Abort::LeaseLost(_) | Abort::ReplayEnd)) {
        // Given up: the step bodies under way are dropped with the body, as in a crash.
        live.tear_down();
    }
    drop(body);
    // The failure paths are boxed: inline, their state would make every task larger (and
    // every spawn copy more) for the rare execution that fails.
    let result = match ended {
        Body::Returned(Ok(output)) => complete(live, output).await,
        Body::Returned(Err(error)) => Err(Box::pin(compensate(live, error.into_failure(), true)).await),
        Body::Panicked(message) => {
            let failure = Failure::new(FailureKind::Panic, format!("the workflow body panicked: {message}"));
            Err(Box::pin(compensate(live, failure, true)).await)
        }
        Body::Aborted(Abort::Fail(failure)) => Err(Box::pin(fail(live, failure)).await),
        Body::Aborted(Abort::Block(failure)) => Err(Box::pin(super::blocked::block(live, failure)).await),
        Body::Aborted(Abort::Pause(failure)) => Err(Box::pin(super::blocked::pause(live, failure)).await),
        Body::Aborted(Abort::Compensate(failure) | Abort::Stop(failure)) => {
            Err(Box::pin(compensate(live, failure, true)).await)
        }
        Body::Aborted(Abort::Store(error)) => Err(interrupted(live, error)),
        Body::Aborted(Abort::LeaseLost(why)) => Err(gave_up(live, &why)),
        Body::Aborted(Abort::ReplayEnd) => Err(RunError::Interrupted {
            execution: live.id.clone(),
            reason: "the replay reached the end of the journal".to_owned(),
        }),
        Body::Suspend => unreachable!("handled above"),
    };
    release_slots(live);
    // Done here before the caller hears of it: `Engine::running` no longer counts it.
    live.engine.untrack(&live.id, Arc::as_ptr(live));
    if let Some(waiter) = waiter {
        // The caller may have stopped waiting; the outcome is stored either way.
        let _ = waiter.send(Sent::Done(result));
    }
}

/// Suspends an execution whose branches all wait: once its writes are durable, the store
/// marks it `waiting` (unless a delivery arrived meanwhile). Returns true if it did.
async fn suspend(live: &LiveExecution) -> Result<bool, StoreError> {
    let upto = live.submitted();
    live.barrier(upto).await?;
    let request = Suspend {
        execution: live.id.clone(),
        epoch: live.epoch,
        wake_at: live.wake_at(),
        observed_wakeups: live.wakeups_seen(),
    };
    match live.engine.store.suspend(&request).await? {
        Suspended::Yes => {
            if request.wake_at.is_some() {
                live.engine.timer_set();
            }
            Ok(true)
        }
        Suspended::Woken(wakeups) => {
            live.wake_waits(Some(wakeups));
            Ok(false)
        }
        Suspended::Cancelled => {
            live.request_stop(Failure::cancellation(), true);
            Ok(false)
        }
    }
}

/// Polls the body until it returns, panics, or something aborts the execution (a step, a
/// cancellation, the workflow's deadline).
async fn run_body<F: Future + ?Sized>(live: &LiveExecution, body: Pin<&mut F>) -> Body<F::Output> {
    let mut body = catch_unwind(body);
    // Only executions of workflows with a timeout pay for the timer.
    let mut deadline = live.deadline.map(|at| Box::pin(tokio::time::sleep(at.duration_since(Timestamp::now()))));
    std::future::poll_fn(|cx| {
        live.register_waker(cx.waker());
        if let Some(timer) = &mut deadline
            && timer.as_mut().poll(cx).is_ready()
        {
            deadline = None;
            // Running steps may finish (their results are then compensated); no new one starts.
            live.request_stop(timed_out(live), false);
        }
        let polled = Pin::new(&mut body).poll(cx);
        if polled.is_pending() {
            live.check_stuck();
        }
        // Step bodies whose calls the body dropped (a `select!`, a failed `try_join!`) go on.
        let _ = live.poll_detached(cx);
        // A step that aborts never resolves, so the body is pending; checking after the poll
        // catches the abort in the same wake-up.
        if let Some(abort) = live.take_abort() {
            return Poll::Ready(Body::Aborted(abort));
        }
        match polled {
            Poll::Ready(Ok(output)) => Poll::Ready(Body::Returned(output)),
            Poll::Pending if suspend_now(live) => Poll::Ready(Body::Suspend),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(message)) => Poll::Ready(Body::Panicked(message)),
        }
    })
    .await
}

/// Why an execution past its deadline stops.
fn timed_out(live: &LiveExecution) -> Failure {
    let timeout = live.definition.timeout().map(humantime::format_duration);
    let why = format!(
        "the execution ran longer than the workflow's timeout ({})",
        timeout.map_or_else(String::new, |t| t.to_string())
    );
    Failure::new(FailureKind::TimedOut, why)
}

/// True if the pending body should be suspended: every branch waits durably, and the
/// earliest wake-up is not soon.
fn suspend_now(live: &LiveExecution) -> bool {
    live.suspendable() && live.wake_at().is_none_or(|at| at.duration_since(Timestamp::now()) >= SUSPEND_AFTER)
}

async fn complete<O: Serialize>(live: &Arc<LiveExecution>, output: O) -> Result<O, RunError> {
    // Step bodies whose calls the body dropped end first, and their outcomes are journaled.
    live.finish_detached().await;
    // A journal entry the body never reached means the body took another path than before.
    if let Some(mismatch) = live.with_progress(|p| p.unreached(p.calls())) {
        return Err(Box::pin(super::blocked::block(live, live.non_determinism(&mismatch))).await);
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
        Ok(()) => {
            wake_parent(live).await;
            Ok(output)
        }
        Err(error) => Err(interrupted(live, error)),
    }
}

/// Ends the execution `failed`, without compensation.
pub(crate) async fn fail(live: &Arc<LiveExecution>, failure: Failure) -> RunError {
    live.finish_detached().await;
    if let Err(error) = live.durable(live.transition(ExecutionState::Failed, None, Some(failure.clone()))).await {
        return interrupted(live, error);
    }
    wake_parent(live).await;
    RunError::Failed {
        workflow: live.definition.name().to_owned(),
        execution: live.id.clone(),
        failure: Box::new(failure),
    }
}
