//! Patches: `wf.patched(..)` and `wf.deprecate_patch(..)`, to change a workflow's code while
//! executions that started with the old code are in flight.

use super::context::Workflow;
use crate::engine::patch;

impl Workflow {
    /// True where this execution takes the patch `id`'s new branch: it reached this point for
    /// the first time in code that has the patch. False where it went past this point before
    /// the patch existed (replaying a journal that the old code wrote). The answer is
    /// journaled, so it never changes for an execution.
    ///
    /// ```
    /// use workflows_runtime::prelude::*;
    ///
    /// #[step]
    /// async fn patch_doc_fraud_check(order: u32) -> Result<(), StepError> {
    ///     let _ = order;
    ///     Ok(())
    /// }
    ///
    /// #[step]
    /// async fn patch_doc_charge(order: u32) -> Result<u32, StepError> {
    ///     Ok(order)
    /// }
    ///
    /// #[workflow]
    /// async fn patch_doc_order(wf: &Workflow, order: u32) -> Result<u32, WorkflowError> {
    ///     // Added while orders were in flight: they go on without it.
    ///     if wf.patched("fraud-check") {
    ///         patch_doc_fraud_check(wf, order).await?;
    ///     }
    ///     Ok(patch_doc_charge(wf, order).await?)
    /// }
    /// ```
    ///
    /// Once no execution that needs the old branch is left (`workflows replay-check` says which
    /// would block), replace the check by [`Workflow::deprecate_patch`] and keep only the new
    /// branch; once the executions that took the patch are gone too, remove that call.
    pub fn patched(&self, id: &str) -> bool {
        patch::patched(&self.live, id)
    }

    /// Retires the patch `id` (see [`Workflow::patched`]): the code keeps only the new branch.
    /// An execution that took the patch replays as before, a new one records nothing; one that
    /// went past this point before the patch existed cannot be replayed by this code any more:
    /// it is blocked, with an error that names it and the patch, until a build that still has
    /// the check takes it (or an operator cancels it).
    pub async fn deprecate_patch(&self, id: &str) {
        patch::deprecate(&self.live, id).await
    }
}
