use workflows_runtime::prelude::*;

#[step]
async fn ask(_ctx: &StepContext) -> Result<Completion<bool>, StepError> {
    Ok(Completion::later())
}

fn main() {}
