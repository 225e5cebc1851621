//! What the `#[workflow]` macro implements for each workflow: [`WorkflowFn`], and the
//! type-erased entry points the registry keeps.

use std::future::Future;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::context::Workflow;
use crate::error::WorkflowError;
use crate::registry::WorkflowDefinition;

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
