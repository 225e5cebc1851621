//! [`StepContext`]: what a step body (or a compensation) is given.

use std::fmt;
use std::sync::Arc;

use crate::container::ResolveError;
use crate::engine::core::LiveExecution;
use crate::execution::ExecutionId;
use crate::journal::CallKey;

/// What a step body (or a compensation) gets as its optional first parameter
/// `ctx: &StepContext`: who it is, which attempt this is, and the application's services.
///
/// ```
/// use workflows_runtime::prelude::*;
///
/// struct Payments; // one of the application's services
///
/// impl Payments {
///     async fn charge(&self, cents: u64, idempotency_key: &str) -> Result<String, std::io::Error> {
///         Ok(format!("{idempotency_key}: {cents}"))
///     }
/// }
///
/// #[step(retry(max_attempts = 3, backoff = "10ms"))]
/// async fn charge_with_key(ctx: &StepContext, cents: u64) -> Result<String, StepError> {
///     let payments = ctx.resolve::<Payments>()?;                 // the container
///     // The same key on every attempt of this call: the provider charges once.
///     Ok(payments.charge(cents, &ctx.idempotency_key()).await?)
/// }
///
/// #[workflow]
/// async fn pay_with_key(wf: &Workflow, cents: u64) -> Result<String, WorkflowError> {
///     Ok(charge_with_key(wf, cents).await?)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::builder().memory().container(Container::new().with(Payments)).start().await?;
/// assert!(pay_with_key::run(&engine, 1200).await?.ends_with(": 1200"));
/// # Ok(()) }
/// ```
pub struct StepContext {
    pub(crate) live: Arc<LiveExecution>,
    pub(crate) key: CallKey,
    pub(crate) attempt: u32,
    /// A step body's context (it may emit events), not a compensation's.
    pub(crate) body: bool,
}

impl StepContext {
    /// The execution this step belongs to.
    pub fn execution_id(&self) -> &ExecutionId {
        &self.live.id
    }

    /// The name of the workflow this step runs in.
    pub fn workflow_name(&self) -> &'static str {
        self.live.definition.name()
    }

    /// The step's registered name.
    pub fn step_name(&self) -> &str {
        self.key.name()
    }

    /// The step call's key (`name#occurrence`).
    pub fn key(&self) -> &CallKey {
        &self.key
    }

    /// The attempt number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A key that is the same for every attempt of this step call, in this and any later
    /// process, and different for every other call: `<execution id>/<call key>`.
    /// Pass it to the services a step calls so that a retried or re-run step does not repeat
    /// its side effect (a payment captured twice, for example).
    pub fn idempotency_key(&self) -> String {
        format!("{}/{}", self.live.id, self.key)
    }

    /// The token that completes this async step (`#[step(async)]`) from outside, with
    /// [`Engine::complete_step`](crate::Engine::complete_step) or
    /// [`Engine::fail_step`](crate::Engine::fail_step), in any process sharing the store. The
    /// same for every attempt; URL-safe (`wf1.` then base64url parts and dots: put it in a path,
    /// a query string or a header as it is); and signed with a key kept in the store, so that
    /// it cannot be made up from the execution's id: hand it to third parties.
    pub fn completion_token(&self) -> String {
        self.live.engine.token_key.issue(&self.live.id, &self.key)
    }

    /// True once the execution is being cancelled or ran out of time. Long-running step
    /// bodies (and tasks they spawn) can check it to stop early.
    pub fn is_cancelled(&self) -> bool {
        self.live.is_stopping()
    }

    /// Resolves once the execution is being cancelled or ran out of time: race it against
    /// long work (`tokio::select!`) to stop cleanly. The engine waits for a running body to
    /// return (bounded by the step's timeout) and journals its outcome — a body that completed
    /// is compensated with the others —, so return as soon as the work can stop safely.
    pub async fn cancelled(&self) {
        self.live.stopped().await
    }

    /// Emits event `name` with `payload` from this step: it is recorded with the step's
    /// completion — a replayed step emits nothing again, and only the attempt that completes
    /// emits (a failed attempt's events are dropped) — and published when the execution
    /// completes: if it is compensated, cancelled, times out or fails, the event is dropped and
    /// no subscriber sees it (an order rolled back was never placed). Its id is
    /// `<execution>/<call key>/<n>`, the n-th event of the step (from 0).
    pub fn emit(&self, name: &str, payload: impl serde::Serialize) -> Result<(), crate::StepError> {
        self.hold_event(name, payload, true)
    }

    /// [`emit`](Self::emit), published as soon as the step's completion is recorded, whatever
    /// becomes of the execution.
    pub fn emit_now(&self, name: &str, payload: impl serde::Serialize) -> Result<(), crate::StepError> {
        self.hold_event(name, payload, false)
    }

    fn hold_event(&self, name: &str, payload: impl serde::Serialize, held: bool) -> Result<(), crate::StepError> {
        if !self.body {
            return Err(crate::StepError::permanent(format!(
                "event `{name}`: events are emitted by step bodies, not by compensations"
            )));
        }
        let payload = crate::journal::json::to_raw(&payload).map_err(|e| {
            crate::StepError::permanent(format!("the payload of event `{name}` does not serialize as JSON: {e}"))
        })?;
        let pending = crate::engine::core::PendingEvent {
            key: self.key.clone(),
            attempt: self.attempt,
            name: name.to_owned(),
            payload,
            held,
        };
        self.live.step_events.lock().push(pending);
        self.live.emitted.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The service of type `T` from the run's container or, failing that, the engine's.
    ///
    /// A missing service is an error naming the type; `?` turns it into a [`StepError`](crate::StepError).
    pub fn resolve<T: Send + Sync + 'static>(&self) -> Result<&T, ResolveError> {
        let engine = &self.live.engine.container;
        match &self.live.container {
            Some(run) => {
                run.get::<T>().or_else(|| engine.get::<T>()).ok_or_else(|| ResolveError::new::<T>(&[run, engine]))
            }
            None => engine.get::<T>().ok_or_else(|| ResolveError::new::<T>(&[engine])),
        }
    }
}

impl fmt::Debug for StepContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepContext")
            .field("execution", &self.live.id)
            .field("key", &self.key)
            .field("attempt", &self.attempt)
            .finish()
    }
}
