use workflows_runtime::prelude::*;

#[step(retry(backoff = "1s"))]
async fn no_attempts() -> Result<u32, StepError> {
    Ok(1)
}

#[step(retry(max_attempts = 0))]
async fn zero_attempts() -> Result<u32, StepError> {
    Ok(1)
}

#[step(retry(max_attempts = 3, backoff = "1s", factor = 2))]
async fn factor_without_exponential() -> Result<u32, StepError> {
    Ok(1)
}

#[step(retry(max_attempts = 3, jitter = 2.5, delay = "1s"))]
async fn bad_jitter_and_key() -> Result<u32, StepError> {
    Ok(1)
}

#[step(retry = 3)]
async fn retry_not_a_list() -> Result<u32, StepError> {
    Ok(1)
}

fn main() {}
