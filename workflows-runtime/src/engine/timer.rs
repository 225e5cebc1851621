//! Durable timers: what `wf.sleep(..)` and `wf.sleep_until(..)` do. The wake-up time is
//! journaled; while only timers are pending the execution is suspended, and the timer
//! scheduler (`engine/background.rs`) resumes it when it is due.

use std::future::Future;
use std::time::Duration;

use super::core::LiveExecution;
use super::live::CallGuard;
use super::wait::unexpected;
use crate::journal::JournalEvent;
use crate::journal::replay::Decision;
use crate::store::WriteMode;
use crate::time::Timestamp;

/// When a timer fires.
pub(crate) enum Target {
    /// After this long from the first call.
    After(Duration),
    /// At this time.
    At(Timestamp),
}

/// A durable sleep at the current call: journals the wake-up time (or finds it journaled),
/// waits for it, and journals that it fired.
pub(crate) fn sleep(live: &LiveExecution, target: Target) -> impl Future<Output = ()> + Send + '_ {
    // The key is assigned at the call, like a step's.
    let (seq, key) = live.with_progress(|p| p.next_call("@sleep"));
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
                let ack =
                    live.append([started], None, WriteMode::Durable, |p| p.waiting(seq, progress_key, Some(at), None));
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
