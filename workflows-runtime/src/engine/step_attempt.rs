//! One attempt of a step: its body, run on the heap so that it can outlive its call, and the
//! journaling of its outcome.
//!
//! A step call's future can be dropped while its body runs: a `try_join!` sibling failed, a
//! `select!` took another branch, `fan_out` returned an error, or the workflow is being
//! cancelled, timed out or compensated. The body may have had its side effect already (a card
//! charged), so it is never abandoned silently: the dropped call hands it to the execution
//! ([`LiveExecution::detach`]), which runs it to its end — bounded by the step's timeout; it
//! sees `ctx.cancelled()` when the workflow stops —, journals its outcome, and, if it
//! completed, compensates it with the other completed steps. Only when the execution is given
//! up (a store error, a lost lease, a shutdown) is a running body dropped, as in a crash.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;

use super::core::{Abort, LiveExecution};
use super::panic::panic_message;
use crate::error::StepError;
use crate::events::EventKind;
use crate::failure::Failure;
use crate::journal::{CallKey, JournalEvent};
use crate::registry::StepDefinition;
use crate::step::{Outcome, Step, StepContext, StepResponse};
use crate::store::WriteMode;
use crate::time::Timestamp;

/// A step body's outcome.
type BodyOutput<S> =
    Result<Outcome<<S as crate::step::StepFn>::Output, <S as crate::step::StepFn>::Compensation>, StepError>;

/// A step body, with the context it borrows, on the heap: it can outlive its call.
type Body<S> = Pin<Box<dyn Future<Output = BodyOutput<S>> + Send>>;

/// An attempt that started running its body.
pub(super) struct Started {
    pub live: Arc<LiveExecution>,
    pub definition: &'static StepDefinition,
    pub seq: u32,
    pub key: CallKey,
    pub attempt: u32,
    pub input_hash: u64,
    pub started_at: Timestamp,
    /// For an async step: the inbox position its completion will be at (or after).
    pub inbox_from: u64,
}

/// An attempt's body, running, within the step's attempt timeout, with panics caught. Await it
/// for the body's outcome; drop it after journaling that outcome. Dropped while the body runs,
/// it hands itself to the execution (see the module's documentation). While it exists the
/// execution counts a running step (no suspension; a stopping execution stops at the next
/// step boundary).
pub(super) struct Running<S: Step> {
    /// `None` once it ended.
    body: Option<Body<S>>,
    /// `None` once handed over (see `Drop`).
    started: Option<Started>,
    /// The attempt's start is journaled (before the body ran, or when it first suspended).
    journaled: bool,
    /// When the attempt times out, and the timer that fires then (made once the body first
    /// suspends: most bodies end within their first poll).
    deadline: Option<(tokio::time::Instant, Duration)>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    span: tracing::Span,
}

impl<S: Step> Running<S> {
    /// Starts the body of `started`'s attempt with `input`. `journaled` is true if the
    /// attempt's start was journaled already.
    pub fn start(started: Started, input: S::Input, journaled: bool) -> Self {
        let Started { live, definition, key, attempt, .. } = &started;
        live.step_started();
        #[cfg(feature = "testing")]
        let double = live.engine.doubles.doubles::<S>();
        #[cfg(not(feature = "testing"))]
        let double = false;
        live.emit(|| Some(EventKind::StepStarted { key: key.clone(), attempt: *attempt, double }));
        let span =
            tracing::info_span!("step", step = definition.name(), key = %key, attempt, double = tracing::field::Empty);
        let deadline = definition.policy.timeout.map(|timeout| (tokio::time::Instant::now() + timeout, timeout));
        let ctx = StepContext { live: live.clone(), key: key.clone(), attempt: *attempt, body: true };
        #[cfg(feature = "testing")]
        if let Some(observe) = &live.engine.body_observer {
            observe(&live.id, key, super::double::Began::Step);
        }
        #[cfg(feature = "testing")]
        let input = match live.engine.doubles.run::<S>(input, *attempt) {
            Ok(outcome) => {
                span.record("double", true);
                let body: Body<S> = Box::pin(std::future::ready(outcome));
                return Self { body: Some(body), started: Some(started), journaled, deadline, timer: None, span };
            }
            Err(input) => input,
        };
        let body: Body<S> = Box::pin(async move { S::call(&ctx, input).await });
        Self { body: Some(body), started: Some(started), journaled, deadline, timer: None, span }
    }

    /// The attempt, as started.
    pub fn started(&self) -> &Started {
        self.started.as_ref().unwrap_or_else(|| unreachable!("taken only when dropped"))
    }

    /// The attempt ran out of time: its body is dropped (a hanging step never holds a worker).
    fn timed_out(&mut self, timeout: Duration) -> Poll<BodyOutput<S>> {
        self.body = None;
        self.timer = None;
        let error = format!("the attempt timed out after {}", humantime::format_duration(timeout));
        Poll::Ready(Err(StepError::new(error)))
    }
}

impl<S: Step> Future for Running<S> {
    type Output = BodyOutput<S>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<BodyOutput<S>> {
        let this = &mut *self;
        let Some(body) = &mut this.body else {
            return Poll::Ready(Err(StepError::permanent("the step's attempt was polled after it ended")));
        };
        let polled = {
            let _entered = this.span.enter();
            // The body is dropped right after a panic, never polled again.
            std::panic::catch_unwind(AssertUnwindSafe(|| body.as_mut().poll(cx)))
        };
        match polled {
            Ok(Poll::Ready(outcome)) => {
                this.body = None;
                this.timer = None;
                Poll::Ready(outcome)
            }
            Err(payload) => {
                this.body = None;
                this.timer = None;
                Poll::Ready(Err(StepError::permanent(format!(
                    "the step panicked: {}",
                    panic_message(payload.as_ref())
                ))))
            }
            Ok(Poll::Pending) => {
                // An attempt that ends within its first poll is journaled by its outcome alone;
                // one that suspends (awaits I/O) journals its start now, so that a crash during
                // it still counts as an attempt.
                if !this.journaled {
                    this.journaled = true;
                    if let Some(started) = &this.started {
                        journal_start(started);
                    }
                }
                let Some((deadline, timeout)) = this.deadline else { return Poll::Pending };
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => this.timed_out(timeout),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: Step> Drop for Running<S> {
    fn drop(&mut self) {
        let Some(started) = self.started.take() else { return };
        if self.body.is_none() || !started.live.may_detach() {
            // Ended (the call journals its outcome), or given up with the execution.
            started.live.step_boundary();
            return;
        }
        let live = started.live.clone();
        let running = Running::<S> {
            body: self.body.take(),
            started: Some(started),
            journaled: self.journaled,
            deadline: self.deadline,
            timer: self.timer.take(),
            span: self.span.clone(),
        };
        live.detach(Box::pin(finish_detached(running)));
    }
}

/// Runs a detached attempt to its end and journals its outcome: a completion (compensated with
/// the others if the workflow compensates), a failure (final: the workflow has moved on), or,
/// for an async step that sent its request, that it waits.
async fn finish_detached<S: Step>(mut running: Running<S>) {
    let outcome = (&mut running).await;
    let started = running.started();
    let Started { ref live, definition, seq, ref key, attempt, input_hash, started_at, inbox_from } = *started;
    let error = match outcome {
        Ok(Outcome::Done(response)) => match encode(&response, definition) {
            Ok((output, compensation)) => return record_completion(started, output, compensation),
            Err(error) => error,
        },
        Ok(Outcome::Later) if definition.is_async() => {
            let deadline = definition.policy.timeout.map(|timeout| started_at + timeout);
            let waits = Waiting { attempt, input_hash, started_at, deadline, position: inbox_from };
            return journal_waiting(live, seq, key, &waits);
        }
        Ok(Outcome::Later) => later_without_async(),
        Err(error) => error,
    };
    let error = error.with_step(definition.name(), &key.to_string(), attempt);
    let failed = Failed { seq, key, attempt, input_hash, started_at, consumed: None };
    record_failure(live, &failed, error.to_failure(), None);
    // Dropping `running` (ended) is the step boundary.
}

/// The error of a step that returned `Completion::later()` without being async.
pub(super) fn later_without_async() -> StepError {
    StepError::permanent("the step returned `Completion::later()` but is not async; mark it `#[step(async)]`")
}

/// An async step's attempt waiting for its completion.
pub(super) struct Waiting {
    pub attempt: u32,
    pub input_hash: u64,
    pub started_at: Timestamp,
    pub deadline: Option<Timestamp>,
    /// The inbox position its completion will be at (or after).
    pub position: u64,
}

/// Journals that an async step's attempt ran its body and now waits for its completion.
pub(super) fn journal_waiting(live: &LiveExecution, seq: u32, key: &CallKey, waits: &Waiting) {
    let Waiting { attempt, input_hash, started_at, deadline, position } = *waits;
    let by = Some(live.engine.process.clone());
    let event =
        JournalEvent::StepWaiting { seq, key: key.clone(), attempt, input_hash, started_at, deadline, position, by };
    let progress_key = key.clone();
    let ack = live.append([event], None, WriteMode::Durable, |p| {
        p.started(seq, progress_key, input_hash, attempt);
        p.awaiting(seq, started_at, deadline, position);
    });
    live.defer(ack);
}

/// Journals that `attempt` starts and waits until that record (and every write before it) is
/// durable, so that the attempt counts even if the process dies inside its body. False if the
/// store failed (the execution is aborted).
pub(super) async fn journal_start_durably(
    live: &LiveExecution,
    seq: u32,
    key: &CallKey,
    input_hash: u64,
    attempt: u32,
) -> bool {
    let by = Some(live.engine.process.clone());
    let started = JournalEvent::StepStarted { seq, key: key.clone(), attempt, input_hash, by };
    let progress_key = key.clone();
    let ack = live.append([started], None, WriteMode::Durable, |p| p.started(seq, progress_key, input_hash, attempt));
    live.defer(ack);
    // Writes land in order: this one durable means every earlier one is too.
    let upto = live.submitted();
    match live.barrier(upto).await {
        Ok(()) => true,
        Err(error) => {
            live.abort(Abort::Store(error));
            false
        }
    }
}

/// Journals that an attempt is under way. Nobody waits for this record: it is committed
/// with the next durable write (or soon after, by the store).
fn journal_start(started: &Started) {
    let Started { ref live, seq, ref key, attempt, input_hash, .. } = *started;
    let by = Some(live.engine.process.clone());
    let event = JournalEvent::StepStarted { seq, key: key.clone(), attempt, input_hash, by };
    let progress_key = key.clone();
    drop(live.append([event], None, WriteMode::Lazy, |p| p.started(seq, progress_key, input_hash, attempt)));
}

/// Journals a completion. The write is durable before the workflow's next side effect (see
/// [`LiveExecution::defer`]): the next step's body, a compensation, or the result going back
/// to the caller.
pub(super) fn record_completion(started: &Started, output: Box<RawValue>, compensation: Option<Box<RawValue>>) {
    let Started { ref live, seq, ref key, attempt, input_hash, started_at, .. } = *started;
    let kept = compensation.clone();
    let progress_key = key.clone();
    let by = Some(live.engine.process.clone());
    let completed = JournalEvent::StepCompleted {
        seq,
        key: key.clone(),
        attempt,
        input_hash,
        started_at,
        output,
        compensation,
        by,
    };
    let ack = live.append_completion([completed], key, attempt, |p| {
        p.started(seq, progress_key, input_hash, attempt);
        p.completed(seq, None, kept);
    });
    live.defer(ack);
}

/// A failed attempt, as journaled.
pub(super) struct Failed<'a> {
    pub seq: u32,
    pub key: &'a CallKey,
    pub attempt: u32,
    pub input_hash: u64,
    pub started_at: Timestamp,
    /// The inbox position of a delivered failure (async steps).
    pub consumed: Option<u64>,
}

/// Journals a failed attempt; `retry_at` is when the next one is due, `None` if it was the last.
pub(super) fn record_failure(
    live: &LiveExecution,
    attempt: &Failed<'_>,
    failure: Failure,
    retry_at: Option<Timestamp>,
) {
    let Failed { seq, key, attempt, input_hash, started_at, consumed } = *attempt;
    let kept = failure.clone();
    let failed = JournalEvent::StepFailed {
        seq,
        key: key.clone(),
        attempt,
        input_hash,
        started_at,
        error: Box::new(failure),
        retry_at,
        consumed,
        by: Some(live.engine.process.clone()),
    };
    // The events the failed attempt emitted are dropped: only a completion publishes.
    drop(live.take_step_events(key, attempt));
    let ack = live.append([failed], None, WriteMode::Durable, |p| {
        p.started(seq, key.clone(), input_hash, attempt);
        if let Some(position) = consumed {
            p.consumed(seq, position);
        }
        match retry_at {
            None => p.failed(seq, kept),
            Some(at) => p.retry_scheduled(seq, at),
        }
    });
    live.defer(ack);
}

/// Serializes a step's output and, if the step has a compensation, its compensation input.
pub(super) fn encode<T: Serialize, C: Serialize>(
    response: &StepResponse<T, C>,
    definition: &StepDefinition,
) -> Result<(Box<RawValue>, Option<Box<RawValue>>), StepError> {
    let output = crate::journal::json::to_raw(&response.output)
        .map_err(|e| StepError::permanent(format!("the step's output cannot be serialized to JSON: {e}")))?;
    let compensation = match (&definition.compensation, &response.compensation) {
        (None, _) => None,
        (Some(_), None) => Some(output.clone()),
        (Some(_), Some(input)) => Some(crate::journal::json::to_raw(input).map_err(|e| {
            StepError::permanent(format!("the step's compensation input cannot be serialized to JSON: {e}"))
        })?),
    };
    Ok((output, compensation))
}
