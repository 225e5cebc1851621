//! What the `#[step]` macro implements for each step: [`StepFn`], the step as the runtime
//! sees it. Not public API.

use std::future::Future;

use super::context::StepContext;
use super::response::Outcome;
use crate::error::StepError;
use crate::registry::StepDefinition;

/// A `#[step]` function, as the macro describes it to the runtime. Not public API.
#[doc(hidden)]
// An unmet bound of the generated impl (a type that is not a serde type) is reported at that
// type; this message is for the uses of the step that follow from it.
#[diagnostic::on_unimplemented(
    message = "step `{Self}` cannot be called: a type in its signature is not a serde type",
    label = "see the errors at the step's parameters and return type"
)]
pub trait StepFn: 'static {
    /// The step's inputs as a tuple (decoded again from JSON for retries).
    ///
    /// The serde bounds the runtime needs are on [`Step`], not here: the macro states them per
    /// type, at the user's tokens, so an error names the parameter that is not a serde type.
    type Input: Send + 'static;
    /// The step's output.
    type Output: Send + 'static;
    /// The compensation's input.
    type Compensation: Send + 'static;

    /// The step's registered definition.
    fn definition() -> &'static StepDefinition;

    /// Runs the body once.
    fn call(
        ctx: &StepContext,
        input: Self::Input,
    ) -> impl Future<Output = Result<Outcome<Self::Output, Self::Compensation>, StepError>> + Send + '_;

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

/// What a `#[step]` function's call returns names its step and the step's types (the step's
/// type, which the user cannot name, is reached through the function: see the `testing`
/// feature's `Double::of`). Not public API: the macro adds it to every step function's return
/// type, with the types of the step's signature.
#[doc(hidden)]
pub trait StepCall {
    /// The step.
    type Step: 'static;
    /// Its arguments (after the workflow), as a tuple.
    type Input;
    /// Its output.
    type Output;
    /// Its compensation's input.
    type Compensation;
}
