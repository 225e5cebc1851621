//! An event subscriber, as in Medusa's subscriber docs: a `product.created` event starts a
//! workflow, once per event however many processes dispatch it.
//!
//! `cargo run -p workflows-examples --example subscriber` emits three `product.created` events
//! (one of them twice, under the same id: one event), waits until each was handled, and prints
//! what the subscriber did.

use std::time::Duration;

use workflows_runtime::prelude::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProductCreated {
    id: String,
    title: String,
}

#[step]
async fn index_product(_ctx: &StepContext, product: ProductCreated) -> Result<String, StepError> {
    println!("indexed product {} ({})", product.id, product.title);
    Ok(product.id)
}

/// Starts on every `product.created` event: the event's payload is the product.
#[workflow(on_event = "product.created")]
async fn on_product_created(wf: &Workflow, event: Event<ProductCreated>) -> Result<String, WorkflowError> {
    Ok(index_product(wf, event.payload).await?)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    workflows_examples::exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::builder().memory().start().await?;
    let products = [("prod_1", "T-shirt"), ("prod_2", "Mug"), ("prod_3", "Poster")];
    for (id, title) in products {
        let event = ProductCreated { id: id.into(), title: title.into() };
        engine.emit_with_id(&format!("{id}-created"), "product.created", &event).await?;
    }
    // The same id again (a retried request, a redelivered message): one event.
    let again = ProductCreated { id: "prod_1".into(), title: "T-shirt".into() };
    let recorded = engine.emit_with_id("prod_1-created", "product.created", &again).await?;
    println!("prod_1-created emitted again: recorded anew = {recorded}");
    // Each handling is an execution under `<workflow>@<event id>`: wait for the three.
    for (id, _) in products {
        let execution = ExecutionId::from(format!("on_product_created@{id}-created"));
        loop {
            match engine.execution(&execution).await? {
                Some(record) if record.state.is_finished() => {
                    println!("{execution}: {}", record.state);
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
    engine.shutdown().await;
    Ok(())
}
