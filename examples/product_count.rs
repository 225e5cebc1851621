//! A step resolves a service from the engine's container:
//! `cargo run -p workflows-examples --example product_count`

use workflows_examples::product_count::{ProductService, product_count};
use workflows_runtime::{Container, Engine};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    workflows_examples::exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let products = ProductService::new(["t-shirt", "mug", "poster"]);
    let engine = Engine::builder().container(Container::new().with(products)).start().await?;
    let output = product_count::run(&engine, ()).await?;
    println!("{}", serde_json::to_string(&output)?);
    Ok(())
}
