use workflows_runtime::prelude::*;

#[step(compensate = release)]
async fn reserve(sku: String) -> Result<String, StepError> {
    Ok(sku)
}

fn release(_ctx: &StepContext, _sku: String) -> Result<(), StepError> {
    Ok(())
}

fn main() {}
