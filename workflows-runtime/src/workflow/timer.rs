//! Durable timers: `wf.sleep(..)` and `wf.sleep_until(..)`.

use std::future::Future;
use std::time::{Duration, SystemTime};

use super::context::Workflow;
use crate::engine::timer::{self, Target};
use crate::time::Timestamp;

impl Workflow {
    /// Waits `duration`, durably: the wake-up time is journaled, so after a restart the sleep
    /// continues where it was (it does not start over). While the workflow only sleeps (for a
    /// second or more), it is suspended: it holds no task and no memory, and the engine's timer
    /// scheduler resumes it when it is due.
    ///
    /// ```no_run
    /// # use workflows_runtime::prelude::*;
    /// # use std::time::Duration;
    /// #[workflow]
    /// async fn reminder(wf: &Workflow, user: String) -> Result<(), WorkflowError> {
    ///     wf.sleep(Duration::from_secs(3 * 24 * 3600)).await;
    ///     // ... send the reminder in a step
    ///     Ok(())
    /// }
    /// ```
    pub fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + '_ {
        timer::sleep(&self.live, Target::After(duration))
    }

    /// Waits until `time`, durably (see [`Workflow::sleep`]). A time in the past fires at once.
    pub fn sleep_until(&self, time: SystemTime) -> impl Future<Output = ()> + Send + '_ {
        timer::sleep(&self.live, Target::At(Timestamp::from(time)))
    }
}
