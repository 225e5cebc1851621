use workflows_runtime::prelude::*;

#[workflow]
async fn no_context(input: u32) -> Result<u32, WorkflowError> {
    Ok(input)
}

#[workflow]
async fn no_parameters() -> Result<u32, WorkflowError> {
    Ok(1)
}

fn main() {}
