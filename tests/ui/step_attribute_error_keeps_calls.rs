// An error in a step's attribute is reported once, at the attribute; the step's callers still
// see its call (`reserve(wf, sku, quantity)` returning its output) and report nothing.
use workflows_runtime::prelude::*;

#[step(retries = 3)]
async fn reserve(sku: String, quantity: u32) -> Result<u64, StepError> {
    Ok(u64::from(quantity) + sku.len() as u64)
}

#[step(on_failure = "skip", timeout = "soon")]
async fn notify(_order: u64) -> Result<(), StepError> {
    Ok(())
}

#[workflow]
async fn order(wf: &Workflow, sku: String) -> Result<u64, WorkflowError> {
    let reservation: u64 = reserve(wf, sku, 2).await?;
    let notified: Option<()> = notify(wf, reservation).await?;
    let _ = notified;
    Ok(reservation)
}

fn main() {}
