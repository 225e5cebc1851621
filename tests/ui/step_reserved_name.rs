use workflows_runtime::prelude::*;

#[step(name = "@sleep")]
async fn nap() -> Result<(), StepError> {
    Ok(())
}

fn main() {}
