//! The workflow context and the trait every `#[workflow]` implements, and what a workflow
//! body can wait on besides steps: timers, events, child workflows.

mod child;
mod event;
mod fan_out;
mod timer;
pub(crate) mod wait;

#[doc(hidden)]
pub use child::call_child;
pub use event::{EventWait, WaitError};

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::engine::live::LiveExecution;
use crate::error::WorkflowError;
use crate::execution::ExecutionId;
use crate::registry::WorkflowDefinition;
use futures_util::future::BoxFuture;

/// The context of a running workflow: the first parameter of every `#[workflow]` fn, passed on
/// to every step call (`step_2(wf, input).await?`).
///
/// The body of a workflow runs again from the top whenever its execution resumes (after a
/// crash, a restart, or on another worker); completed steps return their recorded output
/// without running. So the body must be deterministic: clocks, random values and I/O belong
/// inside steps.
pub struct Workflow {
    pub(crate) live: Arc<LiveExecution>,
}

impl Workflow {
    /// The execution's id.
    pub fn id(&self) -> &ExecutionId {
        &self.live.id
    }

    /// The workflow's registered name.
    pub fn name(&self) -> &'static str {
        self.live.definition.name()
    }
}

impl fmt::Debug for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workflow").field("name", &self.name()).field("execution", self.id()).finish()
    }
}

/// A `#[workflow]` function. The macro implements it on a type named like the function, which
/// also carries the typed entry points (`hello_world::run(&engine, input)`); generic code can
/// use [`Engine::run_workflow`](crate::Engine::run_workflow) and friends with it.
pub trait WorkflowFn: Send + Sync + 'static {
    /// The workflow's input.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// The workflow's output.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// The registered definition.
    fn definition() -> &'static WorkflowDefinition;

    /// Runs the body once (the engine calls this; users call `run`/`start`).
    fn call(wf: &Workflow, input: Self::Input)
    -> impl Future<Output = Result<Self::Output, WorkflowError>> + Send + '_;
}

/// The type-erased entry point of workflow `W`: JSON in, JSON out. Used to resume executions
/// from their stored input. Not public API.
#[doc(hidden)]
#[allow(clippy::type_complexity)]
pub fn erased_entry<'a, W: WorkflowFn>(
    wf: &'a Workflow,
    input: &RawValue,
) -> Result<BoxFuture<'a, Result<Box<RawValue>, WorkflowError>>, serde_json::Error> {
    let input: W::Input = serde_json::from_str(input.get())?;
    Ok(Box::pin(async move {
        let output = W::call(wf, input).await?;
        crate::journal::json::to_raw(&output)
            .map_err(|e| WorkflowError::new(format!("the workflow's output cannot be serialized to JSON: {e}")))
    }))
}

/// Checks that `input` decodes as workflow `W`'s input type. Not public API.
#[doc(hidden)]
pub fn check_input<W: WorkflowFn>(input: &RawValue) -> Result<(), serde_json::Error> {
    serde_json::from_str::<W::Input>(input.get()).map(drop)
}
