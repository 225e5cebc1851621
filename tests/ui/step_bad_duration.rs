use workflows_runtime::prelude::*;

#[step(timeout = "soon")]
async fn vague() -> Result<u32, StepError> {
    Ok(1)
}

#[step(timeout = "0s")]
async fn zero() -> Result<u32, StepError> {
    Ok(1)
}

#[step(timeout = 30)]
async fn not_a_string() -> Result<u32, StepError> {
    Ok(1)
}

#[step(retry(max_attempts = 3, backoff = "10s..1s"))]
async fn inverted_backoff() -> Result<u32, StepError> {
    Ok(1)
}

fn main() {}
