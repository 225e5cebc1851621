//! Child workflows: a `#[workflow]` fn called from another workflow's body.

use std::future::Future;

use super::core::Abort;
use super::live::CallGuard;
use super::wait::{delivery, unexpected};
use crate::error::StepError;
use crate::execution::ExecutionId;
use crate::failure::Failure;
use crate::journal::replay::{Decision, null};
use crate::journal::{JournalEvent, input_hash};
use crate::store::{InboxKind, WriteMode};
use crate::workflow::{Workflow, WorkflowFn};

/// The call of workflow `W` from another workflow's body: runs it as a child execution with
/// the id `<parent id>:@child:<name>#<occurrence>`, and returns its output (or its failure,
/// after it compensated itself). The parent journals the result; if the parent compensates
/// later, the completed child is compensated as a unit; cancelling the parent cancels a
/// running child. Not public API: the `#[workflow]` macro generates the calls.
#[doc(hidden)]
pub fn call_child<W: WorkflowFn>(
    wf: &Workflow,
    input: W::Input,
) -> impl Future<Output = Result<W::Output, StepError>> + Send + '_ {
    let definition = W::definition();
    // The key is assigned at the call, like a step's.
    let (seq, key) = wf.live.with_progress(|p| p.next_call(format!("@child:{}", definition.name())));
    let barrier = wf.live.submitted();
    let live = &wf.live;
    let guard = CallGuard::new(live, seq);
    async move {
        let _guard = guard;
        let decode = |output: &serde_json::value::RawValue| {
            serde_json::from_str::<W::Output>(output.get()).map_err(|e| {
                StepError::permanent(format!(
                    "the output of child workflow `{}` does not decode as `{}`: {e}",
                    definition.name(),
                    std::any::type_name::<W::Output>()
                ))
            })
        };
        let hash = input_hash(&input);
        let child = match live.with_progress(|p| p.decide(seq, &key, hash)) {
            Decision::Completed(output) => {
                live.turn(Some(seq)).await;
                return decode(&output);
            }
            Decision::Failed(failure) => {
                live.turn(Some(seq)).await;
                return Err(StepError::from_failure(&failure));
            }
            Decision::Wait { child: Some(child), .. } => {
                // Journaled before the child was created: after a crash in between, the child
                // may not exist yet.
                match live.engine.store.execution(&child).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        let input = crate::journal::json::to_raw(&input).map_err(|e| {
                            StepError::permanent(format!(
                                "the child workflow's input cannot be serialized to JSON: {e}"
                            ))
                        })?;
                        if !live.may_start() {
                            return std::future::pending().await;
                        }
                        let started =
                            super::child::start_child(live, definition, child.clone(), key.to_string(), input);
                        if let Err(error) = started.await {
                            return Err(could_not_start(live, seq, &key, definition.name(), error));
                        }
                    }
                    Err(error) => {
                        live.abort(Abort::Store(error));
                        return std::future::pending().await;
                    }
                }
                child
            }
            // A replay check starts no child: the journal ends here.
            Decision::Run { .. } if live.engine.replay_only => {
                live.abort(Abort::ReplayEnd);
                return std::future::pending().await;
            }
            Decision::Run { .. } => {
                let _busy = live.busy();
                let input = crate::journal::json::to_raw(&input).map_err(|e| {
                    StepError::permanent(format!("the child workflow's input cannot be serialized to JSON: {e}"))
                })?;
                // Starting a child is a side effect: what came before is durable first, and
                // this engine must hold the parent's lease.
                if let Err(error) = live.barrier(barrier).await {
                    live.abort(Abort::Store(error));
                    return std::future::pending().await;
                }
                if !live.may_start() {
                    return std::future::pending().await;
                }
                let child = ExecutionId::from(format!("{}:{key}", live.id));
                // Journaled before the child exists (writes land in order): whoever stops this
                // execution finds the child — to cancel it, or compensate it — even if this
                // call is dropped while the child is being created.
                let progress_key = key.clone();
                let event = JournalEvent::ChildStarted { seq, key: key.clone(), child: child.clone() };
                let ack = live.append([event], None, WriteMode::Durable, |p| {
                    p.waiting(seq, progress_key, None, Some(child.clone()))
                });
                live.defer(ack);
                let started = super::child::start_child(live, definition, child.clone(), key.to_string(), input);
                if let Err(error) = started.await {
                    return Err(could_not_start(live, seq, &key, definition.name(), error));
                }
                child
            }
            other => return unexpected(live, seq, &key, other).await,
        };
        let name = key.to_string();
        let delivered = delivery(live, seq, InboxKind::Completion, &name, 0, None).await;
        // Without a deadline a wait ends only with a delivery.
        let entry = delivered.ok_or_else(|| StepError::permanent(format!("child {child} did not finish")))?;
        let result = match entry.failure {
            None => {
                let output = entry.payload.unwrap_or_else(null);
                let value = decode(&output);
                let event = JournalEvent::ChildCompleted { seq, key, output };
                drop(live.append([event], None, WriteMode::Lazy, |p| p.completed(seq, None, None)));
                value
            }
            Some(failure) => {
                let failure = Failure { step: Some(definition.name().to_owned()), ..failure };
                let error = StepError::from_failure(&failure);
                let event = JournalEvent::ChildFailed { seq, key, error: Box::new(failure.clone()) };
                drop(live.append([event], None, WriteMode::Lazy, |p| p.failed(seq, failure)));
                Err(error)
            }
        };
        live.turn(None).await;
        result
    }
}

/// The child could not be created: journaled as the child's failure, returned to the body.
fn could_not_start(
    live: &crate::engine::core::LiveExecution,
    seq: u32,
    key: &crate::journal::CallKey,
    workflow: &str,
    error: crate::RunError,
) -> StepError {
    let error = StepError::permanent(format!("child workflow `{workflow}` could not start: {error}"));
    let failure = Failure { step: Some(workflow.to_owned()), ..error.to_failure() };
    let event = JournalEvent::ChildFailed { seq, key: key.clone(), error: Box::new(failure.clone()) };
    live.defer(live.append([event], None, WriteMode::Durable, |p| p.failed(seq, failure)));
    error
}
