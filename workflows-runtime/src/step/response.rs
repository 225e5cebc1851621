//! What a step body returns: [`StepResponse`] (its output, and its compensation's input) or, for
//! an async step, a [`Completion`].

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
    /// `fail_step`) is called with its [completion token](crate::StepContext::completion_token).
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
