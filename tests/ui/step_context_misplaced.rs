use workflows_runtime::prelude::*;

#[step]
async fn second(n: u32, ctx: &StepContext) -> Result<u32, StepError> {
    let _ = ctx;
    Ok(n)
}

#[step]
async fn by_value(ctx: StepContext) -> Result<u32, StepError> {
    let _ = ctx;
    Ok(1)
}

fn main() {}
