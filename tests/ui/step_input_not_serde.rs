use workflows_runtime::prelude::*;

struct Plain;

#[step]
async fn takes(_count: u32, _plain: Plain) -> Result<u32, StepError> {
    Ok(1)
}

#[workflow]
async fn uses(wf: &Workflow, input: u32) -> Result<u32, WorkflowError> {
    Ok(takes(wf, input, Plain).await?)
}

fn main() {}
