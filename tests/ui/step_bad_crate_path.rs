use workflows_runtime::prelude::*;

#[step(crate = "not_the_runtime")]
async fn misrouted() -> Result<u32, StepError> {
    Ok(1)
}

fn main() {}
