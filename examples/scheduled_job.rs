//! A scheduled job, as in Medusa's scheduled-jobs docs: the product count every hour, on the
//! hour (Europe/Paris), printed. Exactly once per tick however many processes run it.
//!
//! `cargo run -p workflows-examples --example scheduled_job` shows the schedule and its next
//! fire times, runs it once now (a manual trigger), and exits; with `--serve` it stays up and
//! runs it at every tick until Ctrl-C.

use workflows_examples::product_count::{ProductCount, ProductService, product_count};
use workflows_runtime::Tick;
use workflows_runtime::prelude::*;

/// Counts the products at each tick (the shared `product_count` workflow, as a child) and
/// prints the count.
#[workflow(schedule = "0 * * * *", tz = "Europe/Paris")]
async fn hourly_product_count(wf: &Workflow, tick: Tick) -> Result<ProductCount, WorkflowError> {
    let counted = product_count(wf, ()).await?;
    announce(wf, (tick, counted.count)).await?;
    Ok(counted)
}

#[step]
async fn announce(_ctx: &StepContext, (tick, count): (Tick, usize)) -> Result<(), StepError> {
    println!("[{}] {count} products", tick.at);
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    workflows_examples::exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let serve = std::env::args().any(|a| a == "--serve");
    let products = ProductService::new(["t-shirt", "mug", "poster"]);
    let engine = Engine::builder().container(Container::new().with(products)).start().await?;
    for schedule in engine.schedules().await? {
        let next: Vec<String> = schedule.next.iter().map(ToString::to_string).collect();
        println!("{}: {}, next at {}", schedule.name, schedule.schedule, next.join(", "));
    }
    let output = engine.trigger_schedule("hourly_product_count").await?.await?;
    println!("triggered now: {}", output.get());
    if serve {
        println!("running every tick; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    engine.shutdown().await;
    Ok(())
}
