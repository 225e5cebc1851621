//! A saga whose last step fails, so the completed steps are compensated in reverse order:
//! `cargo run -p workflows-examples --example order_saga`

use workflows_examples::order_saga::{Backends, Order, order_saga};
use workflows_runtime::{Container, Engine, RunError};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    workflows_examples::exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let backends = std::sync::Arc::new(Backends::with_carrier_down());
    let mut container = Container::new();
    container.insert_shared(backends.clone());
    let engine = Engine::builder().container(container).start().await?;
    let order = Order { id: "1001".into(), sku: "tee".into(), quantity: 2, amount_cents: 4000 };
    println!("running order_saga for order {}:", order.id);
    let outcome = order_saga::run(&engine, order).await;
    for line in backends.log() {
        println!("  {line}");
    }
    match outcome {
        Ok(fulfilment) => println!("fulfilled: {fulfilment:?}"),
        Err(error @ RunError::Compensated { .. }) => {
            println!("the order failed and was rolled back:\n  {error}");
            println!("failed step: {}", error.step().unwrap_or("-"));
        }
        Err(error) => return Err(error.into()),
    }
    Ok(())
}
