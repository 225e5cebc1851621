//! Running a step's compensation from its stored input, with the step's retry budget.

use std::sync::Arc;

use tracing::Instrument;

use serde_json::value::RawValue;

use super::core::{Abort, LiveExecution};
use super::panic::catch_unwind;
use crate::error::StepError;
use crate::failure::{Failure, FailureKind};
use crate::journal::replay::Compensation;
use crate::journal::{CallKey, JournalEvent};
use crate::step::{Step, StepContext};
use crate::store::WriteMode;
use futures_util::future::BoxFuture;

/// The type-erased compensation of step `S`, run from its stored JSON input. Not public API.
#[doc(hidden)]
pub fn compensation_hook<'a, S: Step>(
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
        #[cfg(feature = "testing")]
        if let Some(observe) = &ctx.live.engine.body_observer {
            observe(&ctx.live.id, &ctx.key, super::double::Began::Compensation);
        }
        #[cfg(feature = "testing")]
        let input = match ctx.live.engine.doubles.compensate::<S>(input) {
            Ok(compensated) => return compensated,
            Err(input) => input,
        };
        S::compensate(ctx, input).await
    })
}

/// Runs one planned compensation and journals it. Returns its failure, if it failed; `None`
/// also when the execution was aborted (a store error, a lost lease: nothing is journaled).
pub(crate) async fn run_compensation(
    live: &Arc<LiveExecution>,
    seq: u32,
    key: CallKey,
    input: &RawValue,
) -> Option<Failure> {
    let step = crate::registry::Registry::checked().step(key.name());
    let hook = step.and_then(|s| s.compensation().map(|c| c.hook));
    // A compensation has the retry budget and attempt timeout of the step it undoes.
    let retry = step.and_then(|s| s.policy().retry).or(live.engine.default_retry).unwrap_or_default();
    let timeout = step.and_then(|s| s.policy().timeout);
    if !begin(live, seq, &key).await {
        return None;
    }
    let mut attempt = 1;
    let result = loop {
        // After every wait (the barrier, a backoff), with no await before the attempt starts.
        if !live.lease_proven() {
            return None;
        }
        let ctx = StepContext { live: live.clone(), key: key.clone(), attempt, body: false };
        let error = match hook {
            Some(hook) => {
                let attempted = attempt_compensation(&ctx, hook, input, timeout)
                    .instrument(tracing::info_span!("compensation", key = %key, attempt));
                // Given up meanwhile (the lease is lost): stop at once, write nothing.
                let attempted = tokio::select! {
                    biased;
                    result = attempted => result,
                    () = live.given_up() => return None,
                };
                match attempted {
                    Ok(()) => break Ok(()),
                    Err(error) => error,
                }
            }
            None => StepError::permanent(format!(
                "step `{}` has no registered compensation in this program (was it renamed or removed?)",
                key.name()
            )),
        };
        if error.is_permanent() || attempt >= retry.max_attempts() {
            break Err(error);
        }
        tokio::time::sleep(retry.delay(attempt, 0.5)).await;
        attempt += 1;
    };
    let result = result.map_err(|error| Failure {
        kind: FailureKind::Compensation,
        message: error.message().to_owned(),
        step: Some(key.name().to_owned()),
        key: Some(key.to_string()),
        attempts: Some(attempt),
        permanent: error.is_permanent(),
    });
    finish(live, seq, key, result)
}

/// Journals that the compensation of the call at `seq` begins, and waits until the previous
/// compensation (and everything before it) is durable. False if the store failed (the
/// execution is aborted).
pub(crate) async fn begin(live: &LiveExecution, seq: u32, key: &CallKey) -> bool {
    let started = JournalEvent::CompensationStarted { seq, key: key.clone() };
    drop(live.append([started], None, WriteMode::Lazy, |p| p.compensation(seq, Compensation::Started)));
    let upto = live.submitted();
    match live.barrier(upto).await {
        Ok(()) => live.lease_proven(),
        Err(error) => {
            live.abort(Abort::Store(error));
            false
        }
    }
}

/// Journals how the compensation of the call at `seq` ended; returns its failure.
pub(crate) fn finish(live: &LiveExecution, seq: u32, key: CallKey, result: Result<(), Failure>) -> Option<Failure> {
    let (event, state, failure) = match result {
        Ok(()) => (JournalEvent::CompensationCompleted { seq, key }, Compensation::Done, None),
        Err(failure) => {
            let event = JournalEvent::CompensationFailed { seq, key, error: Box::new(failure.clone()) };
            (event, Compensation::Failed(Box::new(failure.clone())), Some(failure))
        }
    };
    live.defer(live.append([event], None, WriteMode::Durable, |p| p.compensation(seq, state)));
    failure
}

/// One attempt of a compensation, within the step's attempt timeout, catching panics.
async fn attempt_compensation(
    ctx: &StepContext,
    hook: crate::registry::CompensationHook,
    input: &RawValue,
    timeout: Option<std::time::Duration>,
) -> Result<(), StepError> {
    let attempt = catch_unwind(hook(ctx, input));
    let result = match timeout {
        Some(timeout) => match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => {
                return Err(StepError::new(format!(
                    "the compensation timed out after {}",
                    humantime::format_duration(timeout)
                )));
            }
        },
        None => attempt.await,
    };
    result.unwrap_or_else(|panic| Err(StepError::permanent(format!("the compensation panicked: {panic}"))))
}
