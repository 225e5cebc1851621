use workflows_runtime::prelude::*;

// A workflow started by an event takes the event; and it starts on an event or a schedule.
#[workflow(on_event = "order.placed")]
async fn on_order(_wf: &Workflow, order: u32) -> Result<u32, WorkflowError> {
    Ok(order)
}

#[workflow(schedule = "0 * * * *", on_event = "order.placed")]
async fn both(_wf: &Workflow, _: ()) -> Result<(), WorkflowError> {
    Ok(())
}

fn main() {}
