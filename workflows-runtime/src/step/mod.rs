//! Steps: the context a step body gets, the response it returns, and how a step call runs.

mod attempt;
pub(crate) mod checks;
pub(crate) mod compensation;
pub(crate) mod run;

use std::fmt;
use std::sync::Arc;

use crate::container::ResolveError;
use crate::engine::live::LiveExecution;
use crate::execution::ExecutionId;
use crate::journal::StepKey;

#[doc(hidden)]
pub use checks::{CompensationInput, CompensationTakes, Step, StepInput, StepOutput};
#[doc(hidden)]
pub use compensation::compensation_hook;
pub use run::{StepFn, call_step, call_step_or_skip, check_output};

/// What a step body (or a compensation) gets as its optional first parameter
/// `ctx: &StepContext`: who it is, which attempt this is, and the application's services.
pub struct StepContext {
    pub(crate) live: Arc<LiveExecution>,
    pub(crate) key: StepKey,
    pub(crate) attempt: u32,
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
    pub fn key(&self) -> &StepKey {
        &self.key
    }

    /// The attempt number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A key that is the same for every attempt of this step call, in this and any later
    /// process, and different for every other call: `<execution id>/<step key>`.
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

/// A step's output together with the input its compensation will receive.
///
/// By default the compensation receives the output itself; use
/// [`compensate_with`](StepResponse::compensate_with) to give it something else (an id, a
/// reservation handle):
///
/// ```
/// # use workflows_runtime::prelude::*;
/// # #[derive(Clone, Serialize, Deserialize)] struct Reservation { id: u64, sku: String }
/// let reservation = Reservation { id: 7, sku: "tee".into() };
/// let response: StepResponse<Reservation, u64> =
///     StepResponse::new(reservation.clone()).compensate_with(reservation.id);
/// ```
#[derive(Debug)]
pub struct StepResponse<T, C = T> {
    pub(crate) output: T,
    pub(crate) compensation: Option<C>,
}

impl<T> StepResponse<T, T> {
    /// A response whose compensation input is the output.
    pub fn new(output: T) -> Self {
        Self { output, compensation: None }
    }
}

/// What an async step (`#[step(async)]`) body returns: the step completes `later`, when its
/// completion is delivered from outside, or (when the work finished at once) `now`.
///
/// ```
/// # use workflows_runtime::prelude::*;
/// #[step(async)]
/// async fn request_approval(ctx: &StepContext, order: u64) -> Result<Completion<bool>, StepError> {
///     // Send `ctx.completion_token()` to whoever approves; they call `engine.complete_step`.
///     let _token = ctx.completion_token();
///     Ok(Completion::later())
/// }
/// ```
#[derive(Debug)]
pub struct Completion<T>(pub(crate) Option<T>);

impl<T> Completion<T> {
    /// The step completes when [`Engine::complete_step`](crate::Engine::complete_step) (or
    /// `fail_step`) is called with its [completion token](StepContext::completion_token).
    pub fn later() -> Self {
        Self(None)
    }

    /// The step completed already, with `output`.
    pub fn now(output: T) -> Self {
        Self(Some(output))
    }
}

/// What a step body produced: a response, or (async steps) a completion to wait for. Not
/// public API.
#[doc(hidden)]
pub enum Outcome<T, C> {
    Done(StepResponse<T, C>),
    Later,
}

impl<T> From<Completion<T>> for Outcome<T, T> {
    fn from(completion: Completion<T>) -> Self {
        match completion.0 {
            Some(output) => Outcome::Done(StepResponse::new(output)),
            None => Outcome::Later,
        }
    }
}

impl<T, C> From<StepResponse<T, C>> for Outcome<T, C> {
    fn from(response: StepResponse<T, C>) -> Self {
        Outcome::Done(response)
    }
}

impl<T, C> StepResponse<T, C> {
    /// The same output, with `input` for the compensation.
    pub fn compensate_with<C2>(self, input: C2) -> StepResponse<T, C2> {
        StepResponse { output: self.output, compensation: Some(input) }
    }

    /// The output.
    pub fn output(&self) -> &T {
        &self.output
    }
}
