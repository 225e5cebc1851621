use workflows_runtime::prelude::*;

#[step]
async fn add_one(n: u32) -> Result<u32, StepError> {
    Ok(n + 1)
}

#[workflow]
async fn forgets_wf(_wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    Ok(add_one(n).await?)
}

fn main() {}
