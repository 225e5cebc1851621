use workflows_runtime::prelude::*;

#[step(name = 5, compensate = "undo")]
async fn bad_values() -> Result<u32, StepError> {
    Ok(1)
}

#[step(name = "")]
async fn empty_name() -> Result<u32, StepError> {
    Ok(1)
}

fn main() {}
