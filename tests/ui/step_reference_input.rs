use workflows_runtime::prelude::*;

#[step]
async fn borrowed(name: &str) -> Result<usize, StepError> {
    Ok(name.len())
}

fn main() {}
