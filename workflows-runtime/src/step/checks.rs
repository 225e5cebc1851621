//! What `#[step]` asks of the user's types, as traits whose errors read like the rule broken.
//!
//! The macro states each requirement as a bound spanned at the user's own tokens (a parameter's
//! type, the output type, the `compensate = path`), so the compiler reports one error there,
//! naming the type and the step, instead of an error at `#[step]` about generated names. Each
//! trait has a single blanket impl marked `do_not_recommend`, so the compiler reports the
//! requirement itself rather than the serde bounds behind it. None of this is public API.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::function::StepFn;

/// A step whose inputs, output and compensation input are all serde types: what the runtime
/// needs to journal, replay and compensate it. Every `StepFn` the macro accepts is one.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "step `{Self}` cannot be called: a type in its signature is not a serde type",
    label = "see the errors at the step's parameters and return type",
    note = "step inputs, outputs and compensation inputs are stored in the journal as JSON"
)]
pub trait Step:
    StepFn<
        Input: Serialize + DeserializeOwned,
        Output: Serialize + DeserializeOwned,
        Compensation: Serialize + DeserializeOwned,
    >
{
}

#[diagnostic::do_not_recommend]
impl<S> Step for S where
    S: StepFn<
            Input: Serialize + DeserializeOwned,
            Output: Serialize + DeserializeOwned,
            Compensation: Serialize + DeserializeOwned,
        >
{
}

/// An input of step `Step` (bound at the parameter's type).
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "the input `{Self}` of step `{Step}` is not a serde type",
    label = "step inputs are hashed into the journal and kept for retries: `{Self}` must implement `Serialize` and `Deserialize`",
    note = "derive them: `#[derive(Serialize, Deserialize)]` on `{Self}` (both are in `workflows_runtime::prelude`)"
)]
pub trait StepInput<Step> {}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned, Step> StepInput<Step> for T {}

/// The output of step `Step` (bound at the output type).
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "the output `{Self}` of step `{Step}` is not a serde type",
    label = "step outputs are journaled and replayed after a restart: `{Self}` must implement `Serialize` and `Deserialize`",
    note = "derive them: `#[derive(Serialize, Deserialize)]` on `{Self}` (both are in `workflows_runtime::prelude`)"
)]
pub trait StepOutput<Step> {}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned, Step> StepOutput<Step> for T {}

/// The compensation input of step `Step`, the `C` of `StepResponse<T, C>` (bound at `C`).
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "the compensation input `{Self}` of step `{Step}` is not a serde type",
    label = "compensation inputs are journaled with the step's output: `{Self}` must implement `Serialize` and `Deserialize`",
    note = "derive them: `#[derive(Serialize, Deserialize)]` on `{Self}` (both are in `workflows_runtime::prelude`)"
)]
pub trait CompensationInput<Step> {}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned, Step> CompensationInput<Step> for T {}

/// The conversion a compensation call passes its input through: `Self` is the type the
/// compensation function `Name` takes (inferred from its signature), `C` the type step `Step`
/// gives it. They must be the same; when they are not, this trait's message names both
/// functions and both types, where a plain call would only say "expected `u64`, found `String`".
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "compensation `{Name}` of step `{Step}` takes `{Self}`, but the step gives it `{C}`",
    label = "`{Name}` must take `(&StepContext, {C})`",
    note = "a compensation receives the `C` of its step's `StepResponse<T, C>` (by default the output `T`): \
            make `{Name}` take `{C}`, or have step `{Step}` return `StepResponse<_, {Self}>`"
)]
pub trait CompensationTakes<Step, Name, C> {
    /// The input, unchanged.
    fn take(input: C) -> Self;
}

#[diagnostic::do_not_recommend]
impl<T, Step, Name> CompensationTakes<Step, Name, T> for T {
    #[inline(always)]
    fn take(input: T) -> T {
        input
    }
}
