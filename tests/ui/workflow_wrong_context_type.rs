use workflows_runtime::prelude::*;

#[workflow]
async fn step_context_instead(_ctx: &StepContext, input: u32) -> Result<u32, WorkflowError> {
    Ok(input)
}

fn main() {}
