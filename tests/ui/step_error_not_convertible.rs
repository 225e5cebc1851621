use workflows_runtime::prelude::*;

struct NotAnError;

#[step]
async fn odd_error() -> Result<u32, NotAnError> {
    Ok(1)
}

fn main() {}
