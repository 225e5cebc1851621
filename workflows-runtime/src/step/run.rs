//! How a step call runs: replay it from the journal or run its body, and journal the result.
//!
//! This is the per-step hot path. It takes the execution's lock twice (to decide, and to
//! append the completion), never across an await; serializes the output once; and keeps the
//! output in memory only if the step has a compensation (then as its compensation input).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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
    run_step::<S>(&wf.live, definition, seq, key, input)
}

async fn run_step<S: StepFn>(
    live: &Arc<LiveExecution>,
    definition: &'static StepDefinition,
    seq: u32,
    key: StepKey,
    input: S::Input,
) -> Result<S::Output, StepError> {
    let input_hash = input_hash(&input);
    let attempt = match live.with_progress(|p| p.decide(seq, &key, input_hash)) {
        Decision::Run { attempt } => attempt,
        Decision::Completed(output) => match serde_json::from_str::<S::Output>(output.get()) {
            Ok(output) => return Ok(output),
            Err(error) => {
                live.abort_decode(format!("the stored output of step `{key}` does not decode"), &error);
                return std::future::pending().await;
            }
        },
        Decision::Failed(failure) => return Err(StepError::from_failure(&failure)),
        Decision::Mismatch(mismatch) => {
            live.abort_mismatch(&mismatch);
            return std::future::pending().await;
        }
    };

    // Nobody waits for this record: it is committed with the next durable write.
    let started = JournalEvent::StepStarted { seq, key: key.clone(), input_hash, attempt };
    drop(live.append([started], None, WriteMode::Lazy, |p| p.started(seq, key.clone(), input_hash, attempt)));

    let ctx = StepContext { live: live.clone(), key, attempt };
    let outcome = match catch_unwind(S::call(&ctx, input)).await {
        Ok(Ok(response)) => {
            encode(&response, definition).map(|(output, compensation)| (response.output, output, compensation))
        }
        Ok(Err(error)) => Err(error),
        Err(panic) => Err(StepError::permanent(format!("the step panicked: {panic}"))),
    };
    let StepContext { key, .. } = ctx;

    match outcome {
        Ok((value, output, compensation)) => {
            let kept = compensation.clone();
            let completed = JournalEvent::StepCompleted { seq, key, output, compensation };
            let ack = live.append([completed], None, WriteMode::Durable, |p| p.completed(seq, None, kept));
            // The completion is durable before the workflow goes on.
            if let Err(error) = ack.await {
                live.abort(Abort::Store(error));
                return std::future::pending().await;
            }
            Ok(value)
        }
        Err(error) => {
            let error = error.with_step(definition.name(), &key.to_string(), attempt);
            let failure = error.to_failure();
            let kept = failure.clone();
            let failed = JournalEvent::StepFailed { seq, key, attempt, error: failure, retry_at: None };
            let ack = live.append([failed], None, WriteMode::Durable, |p| p.failed(seq, kept));
            if let Err(error) = ack.await {
                live.abort(Abort::Store(error));
                return std::future::pending().await;
            }
            Err(error)
        }
    }
}

/// Serializes a step's output and, if the step has a compensation, its compensation input.
fn encode<T: Serialize, C: Serialize>(
    response: &StepResponse<T, C>,
    definition: &StepDefinition,
) -> Result<(Box<RawValue>, Option<Box<RawValue>>), StepError> {
    let output = serde_json::value::to_raw_value(&response.output)
        .map_err(|e| StepError::permanent(format!("the step's output cannot be serialized to JSON: {e}")))?;
    let compensation = match (&definition.compensation, &response.compensation) {
        (None, _) => None,
        (Some(_), None) => Some(output.clone()),
        (Some(_), Some(input)) => Some(serde_json::value::to_raw_value(input).map_err(|e| {
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
            let event = JournalEvent::CompensationFailed { seq, key, error: failure.clone() };
            (event, Compensation::Failed(failure.clone()), Some(failure))
        }
    };
    if let Err(error) = live.append([event], None, WriteMode::Durable, |p| p.compensation(seq, state)).await {
        live.abort(Abort::Store(error));
    }
    failure
}
