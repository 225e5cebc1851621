use workflows_runtime::prelude::*;

struct Service;

impl Service {
    #[step]
    async fn method(&self) -> Result<u32, StepError> {
        Ok(1)
    }
}

fn main() {}
