use workflows_runtime::prelude::*;

#[step]
async fn generic<T: Serialize>(value: T) -> Result<u32, StepError> {
    let _ = value;
    Ok(1)
}

fn main() {}
