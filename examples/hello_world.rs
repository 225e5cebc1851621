//! Runs the seed workflow once and prints its output:
//! `cargo run -p workflows-examples --example hello_world`

use workflows_examples::hello_world::{HelloInput, hello_world};
use workflows_runtime::Engine;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    workflows_examples::exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::builder().start().await?;
    let output = hello_world::run(&engine, HelloInput { name: "John".into() }).await?;
    println!("{}", serde_json::to_string(&output)?);
    Ok(())
}
