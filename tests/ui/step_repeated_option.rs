use workflows_runtime::prelude::*;

#[step(name = "a", name = "b")]
async fn twice() -> Result<u32, StepError> {
    Ok(1)
}

fn main() {}
