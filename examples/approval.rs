//! Two orders that wait for a manager's approval and for a payment webhook: the first is paid
//! and ships; the second is never paid, its wait times out, and its stock is released. The
//! approvals and the payment arrive over HTTP, at the application's axum server, as they would
//! from a manager's e-mail and a payment provider.
//! `cargo run -p workflows-examples --example approval`

use std::sync::Arc;
use std::time::Duration;

use workflows_examples::approval::{ApprovalDesk, Decision, Payment, PendingOrder, approval, router};
use workflows_examples::http::post_json;
use workflows_runtime::{Container, Engine, ExecutionId, RunOptions};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    workflows_examples::exit_code(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let desk = Arc::new(ApprovalDesk::default());
    let engine = Engine::builder().container(Container::new().with(desk.clone())).start().await?;
    // The application's HTTP server, on a port of its own.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = format!("http://{}", listener.local_addr()?);
    tokio::spawn(axum::serve(listener, router(engine.clone())).into_future());

    // Fresh ids on every run (the default store is a file that keeps earlier runs).
    let suffix: String = ExecutionId::new().as_str().chars().rev().take(6).collect();
    let order = |n: u32| PendingOrder {
        id: format!("{n}-{suffix}"),
        sku: "lamp".into(),
        amount_cents: 12_900,
        payment_timeout_ms: 1_500,
    };
    let (paid, unpaid) = (order(2001), order(2002));
    let paid_run = approval::start_with(&engine, paid.clone(), RunOptions::new().id(&paid.id)).await?;
    let unpaid_run = approval::start_with(&engine, unpaid.clone(), RunOptions::new().id(&unpaid.id)).await?;

    // A manager approves both orders: the link in the approval request is the step's token.
    for order in [&paid, &unpaid] {
        let token = wait_for_token(&desk, &order.id).await;
        let decision = Decision { approved: true, by: "ada".into() };
        let (status, body) = post_json(&format!("{server}/approvals/{token}"), &decision).await?;
        println!("POST /approvals/<token of order {}> -> {status} {body}", order.id);
    }
    // The payment provider confirms the first order only.
    let payment = Payment { payment_id: "pay_42".into(), amount_cents: 12_900 };
    let (status, body) = post_json(&format!("{server}/webhooks/payment/{}", paid.id), &payment).await?;
    println!("POST /webhooks/payment/{} -> {status} {body}", paid.id);

    println!("order {}: {:?}", paid.id, paid_run.await?);
    match unpaid_run.await {
        Ok(confirmation) => println!("order {}: {confirmation:?}", unpaid.id),
        Err(error) => println!("order {}: rolled back: {error}", unpaid.id),
    }
    println!("what happened:");
    for line in desk.log.lock().unwrap().iter() {
        println!("  {line}");
    }
    Ok(())
}

async fn wait_for_token(desk: &ApprovalDesk, order: &str) -> String {
    loop {
        if let Some(token) = desk.token_for(order) {
            return token;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
