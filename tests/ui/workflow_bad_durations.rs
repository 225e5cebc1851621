use workflows_runtime::prelude::*;

#[workflow(timeout = "forever", retention = 7)]
async fn endless(_wf: &Workflow, input: u32) -> Result<u32, WorkflowError> {
    Ok(input)
}

fn main() {}
