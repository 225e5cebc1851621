use workflows_runtime::prelude::*;

#[step(async)]
async fn ask(ctx: &StepContext) -> Result<bool, StepError> {
    let _ = ctx.completion_token();
    Ok(true)
}

fn main() {}
