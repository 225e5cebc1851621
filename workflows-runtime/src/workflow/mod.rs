//! Workflows as the user sees them: the context a body gets ([`Workflow`]) and what it can wait
//! on besides steps — timers, events, child workflows, fan-out —, and what `#[workflow]`
//! implements ([`WorkflowFn`]). How those waits run is the engine's (`engine/timer.rs`,
//! `engine/event.rs`, `engine/child_call.rs`, `engine/patch.rs`).

mod context;
mod event;
mod fan_out;
mod function;
mod patch;
mod timer;

pub use context::Workflow;
pub use event::{EventWait, WaitError};
pub use function::WorkflowFn;
#[doc(hidden)]
pub use function::{check_input, erased_entry};
