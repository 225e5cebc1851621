use workflows_runtime::prelude::*;

#[step(compensate = release)]
async fn reserve(_sku: String) -> Result<StepResponse<String, u64>, StepError> {
    Ok(StepResponse::new("r-1".to_owned()).compensate_with(1))
}

async fn release(_ctx: &StepContext, _reservation: String) -> Result<(), StepError> {
    Ok(())
}

fn main() {}
