use workflows_runtime::prelude::*;

#[workflow]
async fn two_inputs(_wf: &Workflow, a: u32, b: u32) -> Result<u32, WorkflowError> {
    Ok(a + b)
}

#[workflow]
async fn only_context(_wf: &Workflow) -> Result<u32, WorkflowError> {
    Ok(1)
}

fn main() {}
