//! Durable timers: `wf.sleep(..)` and `wf.sleep_until(..)`.

use std::future::Future;
use std::time::{Duration, SystemTime};

use super::Workflow;
use crate::engine::live::{CallGuard, LiveExecution};
use crate::journal::replay::{Decision, Mismatch};
use crate::journal::{JournalEvent, StepKey};
use crate::store::WriteMode;
use crate::time::Timestamp;

/// When a timer fires.
enum Target {
    After(Duration),
    At(Timestamp),
}

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
        self.timer(Target::After(duration))
    }

    /// Waits until `time`, durably (see [`Workflow::sleep`]). A time in the past fires at once.
    pub fn sleep_until(&self, time: SystemTime) -> impl Future<Output = ()> + Send + '_ {
        self.timer(Target::At(Timestamp::from(time)))
    }

    fn timer(&self, target: Target) -> impl Future<Output = ()> + Send + '_ {
        // The key is assigned at the call, like a step's.
        let (seq, key) = self.live.with_progress(|p| p.next_call("@sleep"));
        let live = &*self.live;
        let guard = CallGuard::new(live, seq);
        async move {
            let _guard = guard;
            let wake_at = match live.with_progress(|p| p.decide(seq, &key, 0)) {
                Decision::Completed(_) => return live.turn(Some(seq)).await,
                // Started before a restart: the journaled time stands.
                Decision::Wait { until: Some(at), .. } => at,
                Decision::Run { .. } => {
                    let at = match target {
                        Target::After(duration) => Timestamp::now() + duration,
                        Target::At(at) => at,
                    };
                    let started = JournalEvent::TimerStarted { seq, key: key.clone(), wake_at: at };
                    let progress_key = key.clone();
                    let ack = live
                        .append([started], None, WriteMode::Durable, |p| p.waiting(seq, progress_key, Some(at), None));
                    live.defer(ack);
                    at
                }
                other => return unexpected(live, seq, &key, other).await,
            };
            {
                let _wait = live.wait(seq, Some(wake_at), false);
                tokio::time::sleep(wake_at.duration_since(Timestamp::now())).await;
            }
            let fired = JournalEvent::TimerFired { seq, key };
            drop(live.append([fired], None, WriteMode::Lazy, |p| p.completed(seq, None, None)));
            live.turn(None).await;
        }
    }
}

/// A journal entry of another kind at this position: the workflow changed. Never returns.
pub(super) async fn unexpected<T>(live: &LiveExecution, seq: u32, key: &StepKey, decision: Decision) -> T {
    let mismatch = match decision {
        Decision::Mismatch(mismatch) => mismatch,
        _ => Mismatch {
            seq,
            recorded: live.with_progress(|p| p.recorded(seq)),
            called: Some((key.clone(), 0)),
            waiting: false,
        },
    };
    live.abort_mismatch(&mismatch);
    std::future::pending().await
}
