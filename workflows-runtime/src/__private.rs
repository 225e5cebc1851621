//! The one door generated code goes through. Not public API: anything here may change in any
//! release without notice.

pub use inventory;
pub use serde;
pub use serde_json::value::RawValue;

pub use crate::emitted::check_event_input;
pub use crate::engine::child_call::call_child;
pub use crate::engine::compensation::compensation_hook;
pub use crate::engine::step_call::{call_step, call_step_or_skip, check_output};
pub use crate::policy::{Backoff, OnFailure, RetryPolicy, StepPolicy};
pub use crate::registry::definition::{
    StepParts, StepRegistration, WorkflowParts, WorkflowRegistration, step_definition, workflow_definition,
};
pub use crate::registry::{Flow, SourceLocation, StepDefinition, WorkflowDefinition};
pub use crate::schedule::{Overlap, ScheduleSpec, tick_input};
pub use crate::step::{CompensationInput, CompensationTakes, Outcome, Step, StepCall, StepFn, StepInput, StepOutput};
pub use crate::workflow::{WorkflowFn, check_input, erased_entry};

pub use std::future::Future;
pub use std::marker::Send;
pub use std::option::Option::{self, None, Some};
pub use std::result::Result;

/// Converts a step body's error into a `StepError` (any `E: Into<StepError>`).
#[inline]
pub fn step_error<E: Into<crate::StepError>>(error: E) -> crate::StepError {
    error.into()
}

/// Converts a workflow body's error into a `WorkflowError` (any `E: Into<WorkflowError>`).
#[inline]
pub fn workflow_error<E: Into<crate::WorkflowError>>(error: E) -> crate::WorkflowError {
    error.into()
}
