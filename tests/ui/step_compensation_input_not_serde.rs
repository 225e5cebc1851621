use workflows_runtime::prelude::*;

struct Handle;

#[step(compensate = release)]
async fn reserve() -> Result<StepResponse<u32, Handle>, StepError> {
    Ok(StepResponse::new(1).compensate_with(Handle))
}

async fn release(_ctx: &StepContext, _handle: Handle) -> Result<(), StepError> {
    Ok(())
}

fn main() {}
