//! How a step call runs: replay it from the journal or run its body, and journal the result.
//!
//! This is the per-step hot path. It takes the execution's lock twice (to decide, and to
//! append the completion), never across an await; serializes the output once; and keeps the
//! output in memory only if the step has a compensation (then as its compensation input).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use serde_json::value::RawValue;

use super::core::{Abort, LiveExecution};
use super::live::CallGuard;
use super::step_attempt::{
    Failed, Running, Started, Waiting, encode, journal_start_durably, journal_waiting, later_without_async,
    record_completion, record_failure,
};
use crate::error::StepError;
use crate::journal::replay::Decision;
use crate::journal::{CallKey, JournalEvent, input_hash};
use crate::policy::OnFailure;
use crate::registry::StepDefinition;
use crate::step::{Outcome, Step, StepCall};
use crate::store::{InboxKind, WriteMode};
use crate::time::Timestamp;
use crate::workflow::Workflow;

/// The step call made inside a workflow: `reserve_stock(wf, order)`. Not public API.
///
/// The call's sequence number and key are assigned here, when the function is called, so the steps of
/// a `join!` get their keys in program order however their futures are polled.
#[doc(hidden)]
#[inline(always)]
pub fn call_step<S: Step>(
    wf: &Workflow,
    input: S::Input,
) -> impl Future<Output = Result<S::Output, StepError>>
+ Send
+ StepCall<Step = S, Input = S::Input, Output = S::Output, Compensation = S::Compensation>
+ '_ {
    Named { call: Required { call: prepare::<S>(wf, input) }, step: PhantomData }
}

pin_project_lite::pin_project! {
    /// A step call that names its step in its type (see [`StepCall`]); costs nothing.
    struct Named<S, F> {
        #[pin]
        call: F,
        step: PhantomData<fn() -> S>,
    }
}

impl<S, F: Future> Future for Named<S, F> {
    type Output = F::Output;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        self.project().call.poll(cx)
    }
}

impl<S: Step, F> StepCall for Named<S, F> {
    type Step = S;
    type Input = S::Input;
    type Output = S::Output;
    type Compensation = S::Compensation;
}

pin_project_lite::pin_project! {
    /// A step call whose output is required (not skippable). A struct rather than an `async`
    /// block, which would hold the call's future twice (captured, and awaited).
    struct Required<F> {
        #[pin]
        call: F,
    }
}

impl<T, F: Future<Output = Result<Option<T>, StepError>>> Future for Required<F> {
    type Output = Result<T, StepError>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match std::task::ready!(self.project().call.poll(cx))? {
            Some(output) => Ok(output),
            // Only steps with `on_failure = "skip"` are skipped, and they use `call_step_or_skip`.
            None => Err(StepError::permanent("the step was skipped")),
        })
    }
}

/// Checks that `output`, delivered to async step `S`, decodes as its output. Not public API.
#[doc(hidden)]
pub fn check_output<S: Step>(output: &RawValue) -> Result<(), serde_json::Error> {
    serde_json::from_str::<S::Output>(output.get()).map(drop)
}

/// The call of a step with `on_failure = "skip"`: `None` when it was skipped. Not public API.
#[doc(hidden)]
#[inline(always)]
pub fn call_step_or_skip<S: Step>(
    wf: &Workflow,
    input: S::Input,
) -> impl Future<Output = Result<Option<S::Output>, StepError>>
+ Send
+ StepCall<Step = S, Input = S::Input, Output = S::Output, Compensation = S::Compensation>
+ '_ {
    Named { call: prepare::<S>(wf, input), step: PhantomData }
}

#[inline(always)]
fn prepare<S: Step>(
    wf: &Workflow,
    input: S::Input,
) -> impl Future<Output = Result<Option<S::Output>, StepError>> + Send + '_ {
    let definition = S::definition();
    let (seq, key) = wf.live.with_progress(|p| p.next_call(definition.name()));
    // The writes submitted before this call must be durable before its body runs; steps
    // called together (a `join!`) do not wait for each other.
    let barrier = wf.live.submitted();
    run_step::<S>(CallGuard::new(&wf.live, seq), &wf.live, definition, seq, key, barrier, input)
}

/// The common case: the first attempt of a step that is not async and has no retries left to
/// prepare for, and that ends within its attempt. Everything else (replay, async steps, retries,
/// failures) is in [`run_step_general`], boxed: inline, its state would make every step call's
/// future larger, and every step pays for moving that future into the workflow's.
async fn run_step<S: Step>(
    _guard: CallGuard<'_>,
    live: &Arc<LiveExecution>,
    definition: &'static StepDefinition,
    seq: u32,
    key: CallKey,
    barrier: u64,
    input: S::Input,
) -> Result<Option<S::Output>, StepError> {
    // Only what depends on the step's types is generic; the journaling is shared code.
    let input_hash = input_hash(&input);
    let begin = begin(live, seq, &key, input_hash);
    // Steps with an attempt budget journal each attempt's start before its body runs, and
    // async steps too (a completion may arrive before the body returns): the general path.
    let attempt = match begin {
        Begin::Run { attempt, not_before: None, .. }
            if !definition.is_async() && live.engine.retry_budget(definition).is_none() =>
        {
            attempt
        }
        begin => return general::<S>(Call { live, definition, seq, key, barrier }, input, input_hash, begin).await,
    };
    let _busy = live.busy();
    if let Err(error) = live.barrier(barrier).await {
        live.abort(Abort::Store(error));
        return std::future::pending().await;
    }
    if live.is_stopping() {
        // Cancelled or past its deadline: no further attempt starts.
        live.stop_at_boundary();
        return std::future::pending().await;
    }
    // No await from here to the body's first poll: the lease check holds for it.
    if !live.may_start() {
        return std::future::pending().await;
    }
    // The same attempt as in `run_step_general`'s loop, written out: a shared `async` helper
    // returning the attempt's context and guard cost 120 instructions more per step.
    let started_at = Timestamp::now();
    let started = Started { live: live.clone(), definition, seq, key, attempt, input_hash, started_at, inbox_from: 0 };
    let mut running = Running::<S>::start(started, input, false);
    let error = match (&mut running).await {
        Ok(Outcome::Done(response)) => match encode(&response, definition) {
            Ok((output, compensation)) => {
                record_completion(running.started(), output, compensation);
                drop(running);
                live.turn(None).await;
                return Ok(Some(response.output));
            }
            Err(error) => error,
        },
        Ok(Outcome::Later) => later_without_async(),
        Err(error) => error,
    };
    let key = running.started().key.clone();
    drop(running);
    let failed = Failed { seq, key: &key, attempt, input_hash, started_at, consumed: None };
    let error = error.with_step(definition.name(), &key.to_string(), attempt);
    failed_for_good_boxed(live, definition, failed, error).await
}

/// Futures of rare paths, boxed by functions that return them, so that no unboxed copy of
/// them takes space in the calling future.
type StepFuture<'a, T> = Pin<Box<dyn Future<Output = Result<Option<T>, StepError>> + Send + 'a>>;

/// [`run_step_general`], boxed.
fn general<'a, S: Step>(call: Call<'a>, input: S::Input, input_hash: u64, begin: Begin) -> StepFuture<'a, S::Output> {
    Box::pin(run_step_general::<S>(call, input, input_hash, begin))
}

/// A step call, as [`run_step_general`] gets it.
struct Call<'a> {
    live: &'a Arc<LiveExecution>,
    definition: &'static StepDefinition,
    seq: u32,
    key: CallKey,
    /// The durable writes that must be durable before the body runs.
    barrier: u64,
}

/// [`failed_for_good`], boxed.
fn failed_for_good_boxed<'a, T: Send + 'a>(
    live: &'a LiveExecution,
    definition: &'a StepDefinition,
    failed: Failed<'a>,
    error: StepError,
) -> StepFuture<'a, T> {
    Box::pin(async move { failed_for_good(live, definition, &failed, error).await })
}

/// Every other case of a step call (see [`run_step`]): replay, async steps, retries with their
/// backoff, failures.
async fn run_step_general<S: Step>(
    call: Call<'_>,
    input: S::Input,
    input_hash: u64,
    begin: Begin,
) -> Result<Option<S::Output>, StepError> {
    let Call { live, definition, seq, key, barrier } = call;
    let (mut attempt, mut not_before, mut inbox_from, mut waiting, base) = match begin {
        Begin::Run { attempt, not_before, inbox_from, base } => (attempt, not_before, inbox_from, None, base),
        Begin::Await { attempt, started_at, deadline, position, base } => {
            (attempt, None, position, Some(Waiting { attempt, input_hash, started_at, deadline, position }), base)
        }
        Begin::Replay(output) => {
            live.turn(Some(seq)).await;
            return match serde_json::from_str::<S::Output>(output.get()) {
                Ok(output) => Ok(Some(output)),
                Err(error) => {
                    live.abort_decode(format!("the stored output of step `{key}` does not decode"), &error);
                    std::future::pending().await
                }
            };
        }
        Begin::Skipped => {
            live.turn(Some(seq)).await;
            return Ok(None);
        }
        Begin::Failed(error) => {
            live.turn(Some(seq)).await;
            return settle(live, definition, error).await.map(|()| None);
        }
        Begin::Stop => return std::future::pending().await,
    };
    let budget = live.engine.retry_budget(definition);
    let retry = budget.unwrap_or_default();
    if waiting.is_none()
        && let Some(budget) = budget
        && attempt - base > budget.max_attempts()
    {
        // The last attempt the budget allows started before (a crash or a lost lease
        // interrupted it, or a deploy lowered the budget): no further attempt starts.
        let error = out_of_attempts(budget.max_attempts(), attempt - base, not_before.is_none()).with_step(
            definition.name(),
            &key.to_string(),
            attempt - 1,
        );
        let failed =
            Failed { seq, key: &key, attempt: attempt - 1, input_hash, started_at: Timestamp::now(), consumed: None };
        return failed_for_good(live, definition, &failed, error).await;
    }
    // Each attempt's start is journaled before its body runs when attempts are counted (a
    // budget), or when a completion may arrive for it before the body returns (async steps).
    let journal_starts = budget.is_some() || definition.is_async();
    let mut busy = Some(live.busy());
    if let Err(error) = live.barrier(barrier).await {
        live.abort(Abort::Store(error));
        return std::future::pending().await;
    }
    // Attempts after the first decode their input from JSON: the first one consumed it.
    let retry_input = if retry.max_attempts() > attempt - base || waiting.is_some() {
        Some(
            crate::journal::json::to_raw(&input)
                .map_err(|e| StepError::permanent(format!("the step's input cannot be serialized to JSON: {e}")))?,
        )
    } else {
        None
    };
    let mut input = Some(input);
    loop {
        if live.is_stopping() {
            // Cancelled or past its deadline: no further attempt starts.
            live.stop_at_boundary();
            return std::future::pending().await;
        }
        let (started_at, outcome, consumed) = match waiting.take() {
            // An async step's attempt whose body ran before a restart: only its wait resumes.
            Some(resumed) => {
                busy = None;
                let (outcome, consumed) = Box::pin(await_completion::<S>(live, definition, seq, &key, &resumed)).await;
                (resumed.started_at, outcome, consumed)
            }
            None => {
                if let Some(at) = not_before.take() {
                    // A backoff that survives restarts: the next attempt's time is journaled;
                    // the execution is suspended while it waits, if that is long.
                    busy = None;
                    let _wait = live.wait(seq, Some(at), false);
                    Box::pin(tokio::time::sleep(at.duration_since(Timestamp::now()))).await;
                }
                busy = busy.or_else(|| Some(live.busy()));
                if journal_starts && !journal_start_durably(live, seq, &key, input_hash, attempt).await {
                    return std::future::pending().await;
                }
                let this_input = match input.take() {
                    Some(input) => input,
                    None => match retry_input.as_deref().map(|json| serde_json::from_str::<S::Input>(json.get())) {
                        Some(Ok(input)) => input,
                        Some(Err(e)) => {
                            return Err(StepError::permanent(format!(
                                "the step's input does not decode for a retry: {e}"
                            )));
                        }
                        None => return Err(StepError::permanent("the step's input is gone")),
                    },
                };
                // After every wait above (barrier, backoff), with no await from here to the
                // body's first poll.
                if live.is_stopping() {
                    live.stop_at_boundary();
                    return std::future::pending().await;
                }
                if !live.may_start() {
                    return std::future::pending().await;
                }
                let started_at = Timestamp::now();
                let started = Started {
                    live: live.clone(),
                    definition,
                    seq,
                    key: key.clone(),
                    attempt,
                    input_hash,
                    started_at,
                    inbox_from,
                };
                let mut running = Running::<S>::start(started, this_input, journal_starts);
                match (&mut running).await {
                    Ok(Outcome::Done(response)) => match encode(&response, definition) {
                        Ok((output, compensation)) => {
                            record_completion(running.started(), output, compensation);
                            drop(running);
                            live.turn(None).await;
                            return Ok(Some(response.output));
                        }
                        Err(error) => (started_at, Err(error), None),
                    },
                    Ok(Outcome::Later) if definition.is_async() => {
                        // The body sent its request: wait (suspended, if nothing else runs)
                        // for the completion, within the attempt's timeout.
                        drop(running);
                        busy = None;
                        let deadline = definition.policy.timeout.map(|timeout| started_at + timeout);
                        let waits = Waiting { attempt, input_hash, started_at, deadline, position: inbox_from };
                        journal_waiting(live, seq, &key, &waits);
                        let (outcome, consumed) =
                            Box::pin(await_completion::<S>(live, definition, seq, &key, &waits)).await;
                        (started_at, outcome, consumed)
                    }
                    Ok(Outcome::Later) => (started_at, Err(later_without_async()), None),
                    Err(error) => (started_at, Err(error), None),
                }
            }
        };
        let error = match outcome {
            Ok(value) => {
                live.turn(None).await;
                return Ok(Some(value));
            }
            Err(error) => error.with_step(definition.name(), &key.to_string(), attempt),
        };
        if let Some(position) = consumed {
            inbox_from = position + 1;
        }
        let failed = Failed { seq, key: &key, attempt, input_hash, started_at, consumed };
        if error.is_permanent() || attempt - base >= retry.max_attempts() {
            return failed_for_good(live, definition, &failed, error).await;
        }
        let retry_at = Timestamp::now() + retry.delay(attempt - base, random_unit());
        record_failure(live, &failed, error.to_failure(), Some(retry_at));
        // The failure is durable before the next attempt runs.
        let upto = live.submitted();
        if let Err(error) = live.barrier(upto).await {
            live.abort(Abort::Store(error));
            return std::future::pending().await;
        }
        not_before = Some(retry_at);
        attempt += 1;
    }
}

/// The last attempt failed: skips the step, hands the error to the body, or fails the
/// workflow, as the step's `on_failure` says.
async fn failed_for_good<T>(
    live: &LiveExecution,
    definition: &StepDefinition,
    failed: &Failed<'_>,
    error: StepError,
) -> Result<Option<T>, StepError> {
    let failure = error.to_failure();
    if definition.policy.on_failure == OnFailure::Skip {
        let Failed { seq, key, attempt, input_hash, .. } = *failed;
        let skipped =
            JournalEvent::StepSkipped { seq, key: key.clone(), attempt, input_hash, error: Box::new(failure) };
        let ack = live.append([skipped], None, WriteMode::Durable, |p| {
            p.started(seq, key.clone(), input_hash, attempt);
            p.skipped(seq);
        });
        live.defer(ack);
        live.turn(None).await;
        return Ok(None);
    }
    record_failure(live, failed, failure, None);
    live.turn(None).await;
    settle(live, definition, error).await.map(|()| None)
}

/// Waits for an async step's completion; journals it if it is a success. Returns the outcome
/// and, for a delivered failure, its inbox position.
async fn await_completion<S: Step>(
    live: &LiveExecution,
    definition: &StepDefinition,
    seq: u32,
    key: &CallKey,
    waits: &Waiting,
) -> (Result<S::Output, StepError>, Option<u64>) {
    let name = key.to_string();
    let delivered =
        super::wait::delivery(live, seq, InboxKind::Completion, &name, waits.position, waits.deadline).await;
    let Some(entry) = delivered else {
        let waited = waits.deadline.map(|d| d.duration_since(waits.started_at)).unwrap_or_default();
        let error = StepError::new(format!(
            "no completion was delivered within the step's timeout ({})",
            humantime::format_duration(waited)
        ));
        return (Err(error), None);
    };
    if let Some(failure) = entry.failure {
        return (Err(StepError::from_failure(&failure)), Some(entry.position));
    }
    let payload = entry.payload.unwrap_or_else(crate::journal::replay::null);
    let output = match serde_json::from_str::<S::Output>(payload.get()) {
        Ok(output) => output,
        Err(e) => {
            let error = StepError::permanent(format!("the delivered output does not decode as the step's output: {e}"));
            return (Err(error), Some(entry.position));
        }
    };
    // An async step's compensation gets its output.
    let compensation = definition.compensation.is_some().then(|| payload.clone());
    let completed = JournalEvent::StepCompleted {
        seq,
        key: key.clone(),
        attempt: waits.attempt,
        input_hash: waits.input_hash,
        started_at: waits.started_at,
        output: payload,
        compensation: compensation.clone(),
        by: Some(live.engine.process.clone()),
    };
    let ack = live.append([completed], None, WriteMode::Durable, |p| p.completed(seq, None, compensation));
    live.defer(ack);
    (Ok(output), None)
}

/// Applies the step's `on_failure` policy to its final failure: with `fail` (the default) the
/// workflow fails here, whatever its body would do with the error; with `continue` the body
/// gets the error.
async fn settle(live: &LiveExecution, definition: &StepDefinition, error: StepError) -> Result<(), StepError> {
    match definition.policy.on_failure {
        OnFailure::Continue | OnFailure::Skip => Err(error),
        OnFailure::Fail => {
            live.abort(Abort::Compensate(error.to_failure()));
            std::future::pending().await
        }
        OnFailure::Pause => {
            live.abort(Abort::Pause(error.to_failure()));
            std::future::pending().await
        }
    }
}

/// The error of a step whose attempt budget is spent before its next attempt: the attempt
/// before it was `interrupted` (its outcome is unknown), or the budget is smaller than the
/// attempts the journal has (a deploy lowered it).
fn out_of_attempts(max_attempts: u32, next: u32, interrupted: bool) -> StepError {
    let made = next - 1;
    if interrupted {
        StepError::permanent(format!(
            "attempt {made} of {max_attempts} was interrupted before it finished (the process driving it stopped or \
             lost its lease), so its outcome is unknown; the step's retry policy allows no further attempt"
        ))
    } else {
        StepError::permanent(format!(
            "{made} attempts were made and the step's retry policy allows {max_attempts}; no further attempt starts"
        ))
    }
}

/// A number in `0..1` for jitter: randomness need not be reproducible here.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// What a step call does first, decided from the journal.
enum Begin {
    Run {
        attempt: u32,
        not_before: Option<Timestamp>,
        inbox_from: u64,
        /// The attempts before an operator's retry: the budget counts after them.
        base: u32,
    },
    Await {
        attempt: u32,
        started_at: Timestamp,
        deadline: Option<Timestamp>,
        position: u64,
        base: u32,
    },
    Replay(Box<RawValue>),
    Skipped,
    Failed(StepError),
    /// The execution was aborted (non-determinism): never resolve.
    Stop,
}

/// Decides from the journal whether the step runs, replays, or stops the execution.
fn begin(live: &LiveExecution, seq: u32, key: &CallKey, input_hash: u64) -> Begin {
    if live.is_stopping() {
        // Cancelled or past its deadline: no new step starts.
        live.stop_at_boundary();
        return Begin::Stop;
    }
    match live.with_progress(|p| p.decide(seq, key, input_hash)) {
        // A replay check runs no step body: the journal ends here.
        Decision::Run { .. } if live.engine.replay_only => {
            live.abort(Abort::ReplayEnd);
            Begin::Stop
        }
        Decision::Run { attempt, not_before, inbox_from, base } => Begin::Run { attempt, not_before, inbox_from, base },
        Decision::AwaitCompletion { attempt, started_at, deadline, position, base } => {
            Begin::Await { attempt, started_at, deadline, position, base }
        }
        // Timers, events and children have their own keys (`@...`): these cannot meet a step.
        decision @ (Decision::Wait { .. } | Decision::TimedOut) => {
            let recorded = live.with_progress(|p| p.recorded(seq));
            drop(decision);
            live.abort_mismatch(&crate::journal::replay::Mismatch {
                seq,
                recorded,
                called: Some((key.clone(), input_hash)),
                waiting: false,
            });
            Begin::Stop
        }
        Decision::Completed(output) => Begin::Replay(output),
        Decision::Skipped => Begin::Skipped,
        Decision::Failed(failure) => Begin::Failed(StepError::from_failure(&failure)),
        Decision::Mismatch(mismatch) => {
            live.abort_mismatch(&mismatch);
            Begin::Stop
        }
    }
}
