use workflows_runtime::prelude::*;

#[step(retries = 3)]
async fn flaky() -> Result<u32, StepError> {
    Ok(1)
}

fn main() {}
