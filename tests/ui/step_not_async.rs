use workflows_runtime::prelude::*;

#[step]
fn not_async() -> Result<u32, StepError> {
    Ok(1)
}

fn main() {}
