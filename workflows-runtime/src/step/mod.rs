//! Steps as the user sees them: the context a step body gets ([`StepContext`]), the response it
//! returns ([`StepResponse`], [`Completion`]), and what `#[step]` implements ([`StepFn`]). How a
//! step call runs is the engine's: `engine/step_call.rs`.

mod checks;
mod context;
mod function;
mod response;

#[doc(hidden)]
pub use checks::{CompensationInput, CompensationTakes, Step, StepInput, StepOutput};
pub use context::StepContext;
#[doc(hidden)]
pub use function::{StepCall, StepFn};
#[doc(hidden)]
pub use response::Outcome;
pub use response::{Completion, StepResponse};
