//! [`Workflow`]: the context of a running workflow.

use std::fmt;
use std::sync::Arc;

use crate::engine::core::LiveExecution;
use crate::execution::ExecutionId;

/// The context of a running workflow: the first parameter of every `#[workflow]` fn, passed on
/// to every step call (`step_2(wf, input).await?`).
///
/// The body of a workflow runs again from the top whenever its execution resumes (after a
/// crash, a restart, or on another worker); completed steps return their recorded output
/// without running. So the body must be deterministic: clocks, random values and I/O belong
/// inside steps.
///
/// ```
/// use std::time::Duration;
/// use workflows_runtime::prelude::*;
///
/// #[step]
/// async fn remind_customer(order: u32) -> Result<(), StepError> {
///     let _ = order;
///     Ok(())
/// }
///
/// #[workflow]
/// async fn follow_up_order(wf: &Workflow, order: u32) -> Result<bool, WorkflowError> {
///     wf.sleep(Duration::from_millis(10)).await;               // durable: survives a restart
///     remind_customer(wf, order).await?;
///     // Waits (suspended, holding nothing) for `engine.send_event(id, "paid", ..)`.
///     let paid: bool = wf.wait_for_event("paid").await?;
///     Ok(paid)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::builder().memory().start().await?;
/// let handle = follow_up_order::start(&engine, 7).await?;
/// engine.send_event(handle.id(), "paid", true).await?;
/// assert!(handle.await?);
/// # Ok(()) }
/// ```
pub struct Workflow {
    pub(crate) live: Arc<LiveExecution>,
}

impl Workflow {
    /// The execution's id.
    pub fn id(&self) -> &ExecutionId {
        &self.live.id
    }

    /// The workflow's registered name.
    pub fn name(&self) -> &'static str {
        self.live.definition.name()
    }
}

impl fmt::Debug for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workflow").field("name", &self.name()).field("execution", self.id()).finish()
    }
}
