use workflows_runtime::prelude::*;

#[workflow]
fn blocking(_wf: &Workflow, input: u32) -> Result<u32, WorkflowError> {
    Ok(input)
}

fn main() {}
