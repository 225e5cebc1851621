//! The fleet test's saga: three steps of a few milliseconds each; an order marked to fail has
//! its last step fail for good, so the two before it are compensated. Every step body and
//! compensation records, in the side-effect log, the execution, the step, the attempt, the
//! process and the moment it began and ended, so the test can check who ran what and when.

use std::time::Duration;

use workflows_runtime::prelude::*;

use super::SideEffects;

/// One order of the fleet test.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    /// The last step fails for good: the order is compensated.
    pub fail: bool,
}

fn now_micros() -> i64 {
    workflows_runtime::Timestamp::now().as_micros()
}

/// `body EXEC STEP ATTEMPT PID begin|end|failed MICROS`
fn record(ctx: &StepContext, order: &str, step: u32, what: &str) -> Result<(), StepError> {
    let line = format!("body {order} {step} {} {} {what} {}", ctx.attempt(), std::process::id(), now_micros());
    ctx.resolve::<SideEffects>()?.record(line);
    Ok(())
}

/// A few milliseconds, the same for a step of an order on every run.
fn pause(order: &str, step: u32) -> Duration {
    let hash = order.bytes().fold(u64::from(step), |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    Duration::from_millis(5 + hash % 25)
}

/// Step `step` of an order (steps 1 to 3; 11 to 13 in the second version of the saga).
#[step(compensate = fleet_undo)]
pub async fn fleet_step(ctx: &StepContext, order: Order, step: u32) -> Result<(String, u32), StepError> {
    record(ctx, &order.id, step, "begin")?;
    tokio::time::sleep(pause(&order.id, step)).await;
    if order.fail && step % 10 == 3 {
        record(ctx, &order.id, step, "failed")?;
        return Err(StepError::permanent("declined as planned"));
    }
    record(ctx, &order.id, step, "end")?;
    Ok((order.id, step))
}

/// `comp EXEC STEP PID begin|end MICROS`
async fn fleet_undo(ctx: &StepContext, (order, step): (String, u32)) -> Result<(), StepError> {
    let effects = ctx.resolve::<SideEffects>()?;
    effects.record(format!("comp {order} {step} {} begin {}", std::process::id(), now_micros()));
    tokio::time::sleep(pause(&order, step + 10)).await;
    effects.record(format!("comp {order} {step} {} end {}", std::process::id(), now_micros()));
    Ok(())
}

#[workflow]
pub async fn fleet_saga(wf: &Workflow, order: Order) -> Result<u32, WorkflowError> {
    let mut done = 0;
    for step in 1..=3 {
        fleet_step(wf, order.clone(), step).await?;
        done += 1;
    }
    Ok(done)
}

/// The queue the fleet's queued orders go to, and its concurrency.
pub const QUEUE: &str = "fleet";
pub const QUEUE_CONCURRENCY: u32 = 4;

/// Starts orders `PREFIX-0` .. `PREFIX-{n-1}` (every fifth fails), one every millisecond or so,
/// for the workers to run, on [`QUEUE`] if `queued` (a restarted client starts the same ids
/// again: idempotent), on the highest version of `fleet_saga` this program links.
pub async fn start_orders(engine: &Engine, prefix: &str, n: u32, queued: bool) {
    for k in 0..n {
        let order = Order { id: format!("{prefix}-{k}"), fail: k % 5 == 4 };
        let options = RunOptions::new().id(&order.id);
        let options = if queued { options.queue(QUEUE) } else { options };
        let _ = engine.start_workflow_by_name("fleet_saga", &order, options).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The event the events test emits: one per order.
pub const ORDER_EVENT: &str = "fleet.order";

#[step]
async fn handle_order_event(ctx: &StepContext, order: String) -> Result<(), StepError> {
    record(ctx, &order, 1, "begin")?;
    tokio::time::sleep(pause(&order, 1)).await;
    record(ctx, &order, 1, "end")?;
    Ok(())
}

/// Handles each [`ORDER_EVENT`]: one step of a few milliseconds, recorded in the side-effect
/// log like the saga's.
#[workflow(on_event = "fleet.order")]
pub async fn on_fleet_order(wf: &Workflow, event: Event<Order>) -> Result<(), WorkflowError> {
    Ok(handle_order_event(wf, event.payload.id).await?)
}

/// Emits events `PREFIX-0` .. `PREFIX-{n-1}`, one every millisecond or so, each under its own
/// id (a restarted client emits the same ids again: each is one event).
pub async fn emit_orders(engine: &Engine, prefix: &str, n: u32) {
    for k in 0..n {
        let order = Order { id: format!("{prefix}-{k}"), fail: false };
        let _ = engine.emit_with_id(&order.id, ORDER_EVENT, &order).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[step]
async fn record_tick(ctx: &StepContext, tick: workflows_runtime::Tick) -> Result<(), StepError> {
    let effects = ctx.resolve::<SideEffects>()?;
    effects.record(format!("tick {} {}", tick.at.as_micros(), std::process::id()));
    Ok(())
}

/// The schedules test's hourly workflow (Paris time, three hours of catch-up). The crash
/// workers never run schedules by themselves: the test drives them (`schedules` command).
#[workflow(schedule = "0 * * * *", tz = "Europe/Paris", overlap = "allow", catch_up = "3h")]
pub async fn fleet_hourly(wf: &Workflow, tick: workflows_runtime::Tick) -> Result<(), WorkflowError> {
    Ok(record_tick(wf, tick).await?)
}

/// Runs a schedules pass at each instant (microseconds) read from standard input, answering
/// `ok` once it is done, until standard input ends.
pub async fn drive_schedules(engine: &Engine) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(micros) = line.trim().parse::<i64>() else { continue };
        engine.run_schedules_at(workflows_runtime::Timestamp::from_micros(micros)).await.expect("a schedules pass");
        println!("ok");
    }
}
