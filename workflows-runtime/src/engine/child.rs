//! Child executions: started by a parent's body, compensated as a unit when the parent
//! compensates, cancelled with the parent.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::core::LiveExecution;
use super::create::Created;
use super::options::RunOptions;
use super::{driver, handle};
use crate::error::RunError;
use crate::execution::ExecutionId;
use crate::failure::{Failure, FailureKind};
use crate::registry::WorkflowDefinition;
use crate::workflow::Workflow;

/// Starts the child execution `id` of `definition` for the parent `live` (which knows it as
/// `key`), and drives it here; if it exists already (the parent is replaying), leaves it to
/// whoever drives it. Its outcome arrives in the parent's inbox.
pub(crate) async fn start_child(
    live: &Arc<LiveExecution>,
    definition: &'static WorkflowDefinition,
    id: ExecutionId,
    key: String,
    input: Box<RawValue>,
) -> Result<(), RunError> {
    let engine = &live.engine;
    let options = RunOptions::new().id(id).parent(live.id.clone(), key);
    let child = match engine.create(definition, input.clone(), options).await? {
        Created::New(child, _) => child,
        Created::Exists(record)
            if record.workflow != definition.name() || !handle::same_json(&input, &record.input) =>
        {
            return Err(RunError::Conflict {
                execution: record.id,
                reason: format!(
                    "it is not the child this call starts (workflow `{}` with input {})",
                    definition.name(),
                    input.get()
                ),
            });
        }
        Created::Exists(_) => return Ok(()),
        // A client-only engine runs no body, so starts no child; were it to, a worker runs it.
        Created::ForWorkers(_) => return Ok(()),
    };
    engine.spawn(&child.clone(), async move {
        let wf = Workflow { live: child };
        match (definition.entry)(&wf, &input) {
            Ok(body) => driver::drive(&wf, body, None).await,
            Err(error) => {
                let message = format!("the child's input does not decode as `{}`: {error}", definition.input_type());
                driver::fail(&wf.live, Failure::new(FailureKind::Decode, message)).await;
            }
        }
    });
    Ok(())
}
