use workflows_runtime::prelude::*;

// A scheduled workflow's input is the tick or nothing: an order id cannot come from a clock.
#[workflow(schedule = "0 * * * *")]
async fn nightly(_wf: &Workflow, order: String) -> Result<String, WorkflowError> {
    Ok(order)
}

fn main() {}
