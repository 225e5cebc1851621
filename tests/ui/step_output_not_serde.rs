use workflows_runtime::prelude::*;

struct Opaque;

#[step]
async fn opaque() -> Result<Opaque, StepError> {
    Ok(Opaque)
}

fn main() {}
