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
