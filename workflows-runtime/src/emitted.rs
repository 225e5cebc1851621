//! Events the application emits (`engine.emit("order.placed", payload)`), and the workflows
//! that start on them (`#[workflow(on_event = "order.placed")]`): each (event, subscriber) pair
//! is handled exactly once to completion, as an execution whose id derives from both
//! (`<workflow>@<event id>`), whichever process dispatches it and however often.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// An event as a subscribing workflow receives it: its id, its name, its payload, and when it
/// was emitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event<T> {
    /// The event's id (a UUIDv7, or the id the emitter chose).
    pub id: String,
    /// Its name: `order.placed`.
    pub name: String,
    /// What was emitted with it.
    pub payload: T,
    /// When it was recorded.
    pub emitted_at: Timestamp,
}

/// The input types a workflow started by an event may take: [`Event<T>`].
#[diagnostic::on_unimplemented(
    message = "a workflow started by an event takes `workflows_runtime::Event<T>` as its input (T: the payload's type), not `{Self}`",
    label = "the input of a `#[workflow(on_event = ...)]` fn"
)]
pub trait FromEvent {}

impl<T> FromEvent for Event<T> {}

/// Checks at compile time that workflow `W` can be started by an event.
pub const fn check_event_input<W: crate::WorkflowFn>()
where
    W::Input: FromEvent,
{
}

/// The execution id of subscriber `workflow`'s handling of event `event`.
pub fn handling_id(workflow: &str, event: &str) -> String {
    format!("{workflow}@{event}")
}
