use workflows_runtime::prelude::*;

#[step]
async fn plain() -> u32 {
    1
}

#[step]
async fn nothing() {}

fn main() {}
