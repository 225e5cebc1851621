use workflows_runtime::prelude::*;

#[workflow(version = "two", timeout_after = 5)]
async fn options(_wf: &Workflow, input: u32) -> Result<u32, WorkflowError> {
    Ok(input)
}

fn main() {}
