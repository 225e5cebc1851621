use workflows_runtime::prelude::*;

#[step]
async fn broken() -> Result<u32, StepError> {
    let count = ;
    Ok(count)
}

fn main() {}
