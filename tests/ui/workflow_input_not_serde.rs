use workflows_runtime::prelude::*;

struct Opaque;

#[workflow]
async fn opaque_input(_wf: &Workflow, _input: Opaque) -> Result<u32, WorkflowError> {
    Ok(1)
}

fn main() {}
