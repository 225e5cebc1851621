//! Deliveries from outside: completing async steps and sending events.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use super::core::EngineInner;
use super::engine::Engine;
use super::token::Token;
use crate::error::StepError;
use crate::execution::{ExecutionId, ExecutionState};
use crate::failure::Failure;
use crate::journal::CallKey;
use crate::store::{Delivered, Delivery, InboxKind, StoreError};
use crate::time::Timestamp;

/// A completion or an event that was not delivered; nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The token is not one [`StepContext::completion_token`](crate::StepContext::completion_token) gives.
    #[error(
        "`{token}` is not a completion token of this store (or not one it still accepts); pass the token the async \
         step got from `ctx.completion_token()` (`wf1.…`; `workflows inspect ID` shows it)"
    )]
    InvalidToken {
        /// The token given.
        token: String,
    },
    /// No execution has this id (it never existed, or was purged).
    #[error("no execution `{execution}` in the store (it never existed, or it was purged after its retention)")]
    NotFound {
        /// The execution.
        execution: ExecutionId,
    },
    /// The execution finished: nothing waits for this any more.
    #[error("execution {execution} is {state} already: nothing waits for this any more")]
    Finished {
        /// The execution.
        execution: ExecutionId,
        /// Its final state.
        state: ExecutionState,
    },
    /// The execution's timeout passed: it is (or is being) compensated, and nothing it waited
    /// for counts any more.
    #[error(
        "execution {execution} timed out at {deadline} (its workflow's timeout): nothing it waited for counts any more"
    )]
    TimedOut {
        /// The execution.
        execution: ExecutionId,
        /// When it timed out.
        deadline: crate::time::Timestamp,
    },
    /// The step was completed before (completions are accepted once).
    #[error("step `{key}` of execution {execution} was completed already; a completion is accepted once")]
    AlreadyCompleted {
        /// The execution.
        execution: ExecutionId,
        /// The step call.
        key: String,
    },
    /// The step failed for good, or its current attempt was failed already: one completion or
    /// failure is accepted per attempt.
    #[error(
        "step `{key}` of execution {execution} failed already (for good, or this attempt was failed); one \
         completion or failure is accepted per attempt"
    )]
    AlreadyFailed {
        /// The execution.
        execution: ExecutionId,
        /// The step call.
        key: String,
    },
    /// No attempt of the step runs or waits for a completion: it has not started yet (or its
    /// next attempt has not), or the token names a call the workflow does not make.
    #[error(
        "step `{key}` of execution {execution} is not waiting for a completion: it has not started (or its next \
         attempt has not), or the workflow never makes this call; only a running or waiting async step can be \
         completed or failed"
    )]
    NotStarted {
        /// The execution.
        execution: ExecutionId,
        /// The step call.
        key: String,
    },
    /// The token names a step that is not an async step.
    #[error("{reason}")]
    NotAsync {
        /// What is wrong.
        reason: String,
    },
    /// The output does not have the step's output type.
    #[error("the output for step `{key}` does not decode as the step's output: {source}; nothing was changed")]
    Output {
        /// The step call.
        key: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The output or payload cannot be serialized to JSON.
    #[error("the value cannot be serialized to JSON: {0}")]
    Serialize(#[source] serde_json::Error),
    /// The store failed; nothing was delivered.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Engine {
    /// Completes the async step (`#[step(async)]`) whose
    /// [completion token](crate::StepContext::completion_token) is `token`, with `output`: the
    /// workflow goes on from that step, in this process or whichever process resumes it. Works
    /// from any process that shares the store and links the step (to check the output's type),
    /// also after restarts.
    ///
    /// One completion or failure is accepted per attempt, and only while the attempt runs or
    /// waits for it (the store decides atomically: of a completion and a failure racing on one
    /// token, exactly one wins). Anything else — a step that has not started (or never will), one
    /// that completed or failed already, an unknown or finished execution, an output that does
    /// not decode as the step's output — is a [`DeliveryError`] saying why, and changes nothing.
    ///
    /// ```no_run
    /// # use workflows_runtime::prelude::*;
    /// # async fn demo(engine: Engine, token: String) -> Result<(), Box<dyn std::error::Error>> {
    /// engine.complete_step(&token, serde_json::json!({ "approved": true })).await?;
    /// # Ok(()) }
    /// ```
    pub async fn complete_step(&self, token: &str, output: impl Serialize) -> Result<(), DeliveryError> {
        let output = crate::journal::json::to_raw(&output).map_err(DeliveryError::Serialize)?;
        let token = self.async_step(token)?;
        if let Some(check) = crate::registry::Registry::checked().step(token.step.name()).and_then(|s| s.check_output) {
            check(&output).map_err(|source| DeliveryError::Output { key: token.step.to_string(), source })?;
        }
        self.deliver(completion(token, Some(output), None)).await
    }

    /// Fails the current attempt of the async step whose completion token is `token`. The
    /// step's retry policy applies (a retry runs the step body again, which sends a new
    /// request); [`StepError::permanent`] fails it for good, and the workflow compensates
    /// (unless the step's `on_failure` says otherwise).
    pub async fn fail_step(&self, token: &str, error: impl Into<StepError>) -> Result<(), DeliveryError> {
        let token = self.async_step(token)?;
        let error = error.into().with_step(token.step.name(), &token.step.to_string(), 1);
        let failure: Failure = error.to_failure();
        self.deliver(completion(token, None, Some(failure))).await
    }

    /// Sends the event `name` with `payload` to an execution: the workflow's next (or current)
    /// [`wait_for_event`](crate::Workflow::wait_for_event) for `name` returns it. An event
    /// sent before the workflow waits for it is kept. Sending to an unknown or finished
    /// execution is a [`DeliveryError`].
    pub async fn send_event(
        &self,
        execution: &ExecutionId,
        name: &str,
        payload: impl Serialize,
    ) -> Result<(), DeliveryError> {
        let payload = crate::journal::json::to_raw(&payload).map_err(DeliveryError::Serialize)?;
        self.deliver(Delivery {
            execution: execution.clone(),
            kind: InboxKind::Event,
            name: name.to_owned(),
            payload: Some(payload),
            failure: None,
            at: Timestamp::now(),
            for_async_step: false,
            legacy_token: false,
        })
        .await
    }

    /// The completion token of the step call `step` of `execution` (as
    /// [`StepContext::completion_token`](crate::StepContext::completion_token) gives it to the
    /// step): for operators and tests that complete a step they know from the journal.
    pub fn completion_token(&self, execution: &ExecutionId, step: &CallKey) -> String {
        self.inner.token_key.issue(execution, step)
    }

    /// Checks a completion token's signature and that it names an async step.
    fn async_step(&self, token: &str) -> Result<Token, DeliveryError> {
        let token = self
            .inner
            .token_key
            .verify(token)
            .ok_or_else(|| DeliveryError::InvalidToken { token: token.to_owned() })?;
        match crate::registry::Registry::checked().step(token.step.name()) {
            Some(step) if step.is_async() => Ok(token),
            Some(_) => Err(DeliveryError::NotAsync {
                reason: format!(
                    "step `{}` is not an async step: it completes by itself; only `#[step(async)]` steps are \
                     completed with a token",
                    token.step.name()
                ),
            }),
            None => Err(DeliveryError::NotAsync {
                reason: format!(
                    "no step `{}` is registered in this program; complete async steps from a program that links \
                     the workflow's steps",
                    token.step.name()
                ),
            }),
        }
    }

    async fn deliver(&self, delivery: Delivery) -> Result<(), DeliveryError> {
        match self.inner.store.deliver(&delivery).await? {
            Delivered::Stored { .. } => {
                self.inner.wake(&delivery.execution).await;
                Ok(())
            }
            Delivered::AlreadyCompleted => {
                Err(DeliveryError::AlreadyCompleted { execution: delivery.execution, key: delivery.name })
            }
            Delivered::AlreadyFailed => {
                Err(DeliveryError::AlreadyFailed { execution: delivery.execution, key: delivery.name })
            }
            Delivered::LegacyToken => {
                Err(DeliveryError::InvalidToken { token: format!("{}/{}", delivery.execution, delivery.name) })
            }
            Delivered::NotStarted => {
                Err(DeliveryError::NotStarted { execution: delivery.execution, key: delivery.name })
            }
            Delivered::Finished(state) => Err(DeliveryError::Finished { execution: delivery.execution, state }),
            Delivered::PastDeadline(deadline) => {
                // It is timing out: make sure whoever can drives it there now.
                self.inner.wake(&delivery.execution).await;
                Err(DeliveryError::TimedOut { execution: delivery.execution, deadline })
            }
            Delivered::NotFound => Err(DeliveryError::NotFound { execution: delivery.execution }),
        }
    }
}

/// A completion (`payload`) or failure delivered with `token`.
fn completion(token: Token, payload: Option<Box<RawValue>>, failure: Option<Failure>) -> Delivery {
    Delivery {
        execution: token.execution,
        kind: InboxKind::Completion,
        name: token.step.to_string(),
        payload,
        failure,
        at: Timestamp::now(),
        for_async_step: true,
        legacy_token: token.legacy,
    }
}

impl EngineInner {
    /// Something was delivered to execution `id`: if this engine drives it, its waits look
    /// again; if it was suspended, this engine resumes it (when it runs its workflow).
    pub(crate) async fn wake(self: &Arc<Self>, id: &ExecutionId) {
        if let Some(live) = self.live_execution(id) {
            live.wake_waits(None);
        }
        if let Err(error) = self.resume_one(id).await {
            tracing::warn!(execution = %id, %error, "could not resume a woken execution; the scheduler will");
        }
    }
}
