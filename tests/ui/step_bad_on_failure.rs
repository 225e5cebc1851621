use workflows_runtime::prelude::*;

#[step(on_failure = "ignore")]
async fn swallow() -> Result<u32, StepError> {
    Ok(1)
}

fn main() {}
