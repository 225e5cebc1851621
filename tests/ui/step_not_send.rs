use std::rc::Rc;

use workflows_runtime::prelude::*;

#[step]
async fn holds_rc() -> Result<u32, StepError> {
    let shared = Rc::new(1);
    tokio::task::yield_now().await;
    Ok(*shared)
}

fn main() {}
