//! How a step call runs: replay it from the journal or run its body, and journal the result.
//!
//! This is the per-step hot path. It takes the execution's lock twice (to decide, and to
//! append the completion), never across an await; serializes the output once; and keeps the
//! output in memory only if the step has a compensation (then as its compensation input).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::{StepContext, StepResponse};
use crate::engine::live::{Abort, LiveExecution};
use crate::engine::panic::catch_unwind;
use crate::error::{Failure, FailureKind, StepError};
use crate::journal::replay::{Compensation, Decision};
use crate::journal::{JournalEvent, StepKey, input_hash};
use crate::registry::StepDefinition;
use crate::store::WriteMode;
use crate::time::Timestamp;
use crate::workflow::Workflow;

/// A `#[step]` function, as the macro describes it to the runtime. Not public API.
#[doc(hidden)]
pub trait StepFn: 'static {
    /// The step's inputs as a tuple.
    type Input: Serialize + Send + 'static;
    /// The step's output.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// The compensation's input.
    type Compensation: Serialize + DeserializeOwned + Send + 'static;

    /// The step's registered definition.
    fn definition() -> &'static StepDefinition;

    /// Runs the body once.
    fn call(
        ctx: &StepContext,
        input: Self::Input,
    ) -> impl Future<Output = Result<StepResponse<Self::Output, Self::Compensation>, StepError>> + Send + '_;

    /// Runs the compensation once. Steps without a compensation keep this default, which the
    /// engine never calls (their definition has no compensation hook).
    fn compensate(
        ctx: &StepContext,
        input: Self::Compensation,
    ) -> impl Future<Output = Result<(), StepError>> + Send + '_ {
        let _ = (ctx, input);
        std::future::ready(Ok(()))
    }
}

/// The step call made inside a workflow: `reserve_stock(wf, order)`. Not public API.
///
/// The call's position and key are assigned here, when the function is called, so the steps of
/// a `join!` get their keys in program order however their futures are polled.
#[doc(hidden)]
pub fn call_step<S: StepFn>(
    wf: &Workflow,
    input: S::Input,
) -> impl Future<Output = Result<S::Output, StepError>> + Send + '_ {
    let definition = S::definition();
    let (seq, key) = wf.live.with_progress(|p| p.next_call(definition.name()));
    // The writes submitted before this call must be durable before its body runs; steps
    // called together (a `join!`) do not wait for each other.
    let barrier = wf.live.submitted();
    run_step::<S>(&wf.live, definition, seq, key, barrier, input)
}

async fn run_step<S: StepFn>(
    live: &Arc<LiveExecution>,
    definition: &'static StepDefinition,
    seq: u32,
    key: StepKey,
    barrier: u64,
    input: S::Input,
) -> Result<S::Output, StepError> {
    // Only what depends on the step's types is generic; the journaling is shared code.
    let input_hash = input_hash(&input);
    let attempt = match begin(live, seq, &key, input_hash) {
        Begin::Run { attempt } => attempt,
        Begin::Replay(output) => match serde_json::from_str::<S::Output>(output.get()) {
            Ok(output) => return Ok(output),
            Err(error) => {
                live.abort_decode(format!("the stored output of step `{key}` does not decode"), &error);
                return std::future::pending().await;
            }
        },
        Begin::Failed(error) => return Err(error),
        Begin::Stop => return std::future::pending().await,
    };
    if let Err(error) = live.barrier(barrier).await {
        live.abort(Abort::Store(error));
        return std::future::pending().await;
    }
    let started_at = Timestamp::now();
    let ctx = StepContext { live: live.clone(), key, attempt };
    let result = {
        let mut call = std::pin::pin!(catch_unwind(S::call(&ctx, input)));
        // An attempt that finishes within its first poll is journaled by its outcome alone;
        // one that suspends (awaits I/O) journals its start now, so that a crash during it
        // still counts as an attempt.
        match std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
            Poll::Ready(result) => result,
            Poll::Pending => {
                journal_start(&ctx, seq, input_hash);
                call.await
            }
        }
    };
    let (value, outcome) = match result {
        Ok(Ok(response)) => match encode(&response, definition) {
            Ok(encoded) => (Some(response.output), Ok(encoded)),
            Err(error) => (None, Err(error)),
        },
        Ok(Err(error)) => (None, Err(error)),
        Err(panic) => (None, Err(StepError::permanent(format!("the step panicked: {panic}")))),
    };
    record(ctx, seq, input_hash, started_at, definition, outcome)?;
    Ok(value.expect("a recorded completion has a value"))
}

/// What a step call does first, decided from the journal.
enum Begin {
    Run {
        attempt: u32,
    },
    Replay(Box<RawValue>),
    Failed(StepError),
    /// The execution was aborted (non-determinism): never resolve.
    Stop,
}

/// Decides from the journal whether the step runs, replays, or stops the execution.
fn begin(live: &LiveExecution, seq: u32, key: &StepKey, input_hash: u64) -> Begin {
    match live.with_progress(|p| p.decide(seq, key, input_hash)) {
        Decision::Run { attempt } => Begin::Run { attempt },
        Decision::Completed(output) => Begin::Replay(output),
        Decision::Failed(failure) => Begin::Failed(StepError::from_failure(&failure)),
        Decision::Mismatch(mismatch) => {
            live.abort_mismatch(&mismatch);
            Begin::Stop
        }
    }
}

/// Journals that an attempt is under way. Nobody waits for this record: it is committed
/// with the next durable write (or soon after, by the store).
fn journal_start(ctx: &StepContext, seq: u32, input_hash: u64) {
    let (key, attempt) = (ctx.key.clone(), ctx.attempt);
    let started = JournalEvent::StepStarted { seq, key: key.clone(), attempt, input_hash };
    drop(ctx.live.append([started], None, WriteMode::Lazy, |p| p.started(seq, key, input_hash, attempt)));
}

/// Journals an attempt's outcome and returns the step's error, if it failed. The write is
/// durable before the workflow's next side effect (see [`LiveExecution::defer`]): the next
/// step's body, a compensation, or the result going back to the caller.
fn record(
    ctx: StepContext,
    seq: u32,
    input_hash: u64,
    started_at: Timestamp,
    definition: &'static StepDefinition,
    outcome: Result<(Box<RawValue>, Option<Box<RawValue>>), StepError>,
) -> Result<(), StepError> {
    let StepContext { live, key, attempt } = ctx;
    let (ack, result) = match outcome {
        Ok((output, compensation)) => {
            let kept = compensation.clone();
            let progress_key = key.clone();
            let completed =
                JournalEvent::StepCompleted { seq, key, attempt, input_hash, started_at, output, compensation };
            let ack = live.append([completed], None, WriteMode::Durable, |p| {
                p.started(seq, progress_key, input_hash, attempt);
                p.completed(seq, None, kept);
            });
            (ack, Ok(()))
        }
        Err(error) => {
            let error = error.with_step(definition.name(), &key.to_string(), attempt);
            let failure = error.to_failure();
            let kept = failure.clone();
            let progress_key = key.clone();
            let failed = JournalEvent::StepFailed {
                seq,
                key,
                attempt,
                input_hash,
                started_at,
                error: Box::new(failure),
                retry_at: None,
            };
            let ack = live.append([failed], None, WriteMode::Durable, |p| {
                p.started(seq, progress_key, input_hash, attempt);
                p.failed(seq, kept);
            });
            (ack, Err(error))
        }
    };
    live.defer(ack);
    result
}

/// Serializes a step's output and, if the step has a compensation, its compensation input.
fn encode<T: Serialize, C: Serialize>(
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

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The type-erased compensation of step `S`, run from its stored JSON input. Not public API.
#[doc(hidden)]
pub fn compensation_hook<'a, S: StepFn>(
    ctx: &'a StepContext,
    input: &'a RawValue,
) -> BoxFuture<'a, Result<(), StepError>> {
    Box::pin(async move {
        let input: S::Compensation = serde_json::from_str(input.get()).map_err(|e| {
            StepError::permanent(format!(
                "the stored compensation input of step `{}` does not decode as `{}`: {e}",
                ctx.key,
                std::any::type_name::<S::Compensation>()
            ))
        })?;
        S::compensate(ctx, input).await
    })
}

/// Runs one planned compensation and journals it. Returns its failure, if it failed.
pub(crate) async fn run_compensation(
    live: &Arc<LiveExecution>,
    seq: u32,
    key: StepKey,
    input: &RawValue,
) -> Option<Failure> {
    let hook = live.engine.registry.step(key.name()).and_then(|s| s.compensation().map(|c| c.hook));
    let started = JournalEvent::CompensationStarted { seq, key: key.clone() };
    drop(live.append([started], None, WriteMode::Lazy, |p| p.compensation(seq, Compensation::Started)));

    // The previous compensation (and everything before it) is durable before this one runs.
    let upto = live.submitted();
    if let Err(error) = live.barrier(upto).await {
        live.abort(Abort::Store(error));
        return None;
    }
    let ctx = StepContext { live: live.clone(), key, attempt: 1 };
    let result = match hook {
        Some(hook) => match catch_unwind(hook(&ctx, input)).await {
            Ok(result) => result,
            Err(panic) => Err(StepError::permanent(format!("the compensation panicked: {panic}"))),
        },
        None => Err(StepError::permanent(format!(
            "step `{}` has no registered compensation in this program (was it renamed or removed?)",
            ctx.key.name()
        ))),
    };
    let StepContext { key, .. } = ctx;
    let (event, state, failure) = match result {
        Ok(()) => (JournalEvent::CompensationCompleted { seq, key }, Compensation::Done, None),
        Err(error) => {
            let failure = Failure {
                kind: FailureKind::Compensation,
                message: error.message().to_owned(),
                step: Some(key.name().to_owned()),
                key: Some(key.to_string()),
                attempts: Some(1),
                permanent: error.is_permanent(),
            };
            let event = JournalEvent::CompensationFailed { seq, key, error: Box::new(failure.clone()) };
            (event, Compensation::Failed(Box::new(failure.clone())), Some(failure))
        }
    };
    live.defer(live.append([event], None, WriteMode::Durable, |p| p.compensation(seq, state)));
    failure
}
