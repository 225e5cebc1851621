//! The saga both observability test binaries watch: three steps, the first two compensated;
//! the third fails when the input is 0.

use workflows_runtime::prelude::*;

#[step(compensate = undo_book)]
async fn book(n: u32) -> Result<u32, StepError> {
    Ok(n)
}

async fn undo_book(_: &StepContext, _n: u32) -> Result<(), StepError> {
    Ok(())
}

#[step(compensate = undo_pay)]
async fn pay(n: u32) -> Result<u32, StepError> {
    Ok(n * 10)
}

async fn undo_pay(_: &StepContext, _n: u32) -> Result<(), StepError> {
    Ok(())
}

#[step]
async fn ship(n: u32) -> Result<u32, StepError> {
    if n == 0 { Err(StepError::permanent("nothing to ship")) } else { Ok(n) }
}

/// Books, pays, ships `n`; with `n == 0` shipping fails and the payment and booking are undone.
#[workflow]
pub async fn observed_saga(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    let booked = book(wf, n).await?;
    let paid = pay(wf, booked).await?;
    Ok(ship(wf, paid).await?)
}
